package verifier_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/pulsesig"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/loadgen"
	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/quote"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/ektrust"
	"github.com/pulse-attest/pulse/verifier/store"
)

// benchAgents is how many virtual agents take turns: each timed batch sends
// one pulse per agent, each spending the next_nonce of the agent's previous
// answer (the protocol's steady state, one round trip per pulse).
const benchAgents = 64

// benchFixture is what every sub-benchmark shares: the fixture boot, a CA
// and the agents' identities, the policy file.
type benchFixture struct {
	boot   *loadgen.Boot
	ca     *pki.CA
	ids    []*loadgen.Identity
	policy string
}

func newBenchFixture(b *testing.B) *benchFixture {
	b.Helper()
	fx := testutil.LoadFixture(b, "rhel8-uefi")
	boot, err := loadgen.NewBoot(fx.Log)
	if err != nil {
		b.Fatal(err)
	}
	ca, err := pki.NewCA("bench CA", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, benchAgents)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%03d", i)
	}
	ids, err := loadgen.MintIdentities(context.Background(), ca, names, 0)
	if err != nil {
		b.Fatal(err)
	}
	pol := filepath.Join(b.TempDir(), "policy.hcl")
	hb := loadgen.Heartbeat{Interval: 30 * time.Second, Missed: 3, Grace: 10 * time.Second}
	if err := os.WriteFile(pol, []byte(loadgen.BenchPolicy(hb)), 0o644); err != nil {
		b.Fatal(err)
	}
	return &benchFixture{boot: boot, ca: ca, ids: ids, policy: pol}
}

// benchAgent is one agent's device, TLS peer context and protocol state.
type benchAgent struct {
	dev   *loadgen.Device
	ctx   context.Context
	nonce []byte
	state *pulsev1.VerifierState
}

// peerContext is what gRPC hands the handler after an mTLS handshake that
// verified the agent's certificate.
func peerContext(id *loadgen.Identity, ca *pki.CA, port int) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{
		Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
			Version:           tls.VersionTLS13,
			HandshakeComplete: true,
			PeerCertificates:  []*x509.Certificate{id.Cert},
			VerifiedChains:    [][]*x509.Certificate{{id.Cert, ca.Cert}},
		}},
	})
}

// newBenchVerifier opens a store, pre-registers the agents (the load-test
// path), builds a Verifier and brings every agent to the steady state: one
// trusted pulse carrying the firmware log and the runtime log.
func newBenchVerifier(b *testing.B, fx *benchFixture, engine, dsn string) (*verifier.Verifier, []*benchAgent) {
	b.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, engine, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	if err := loadgen.Preregister(ctx, st, fx.ids, "bench", 1); err != nil {
		b.Fatal(err)
	}
	w, err := policy.NewWatcher([]string{fx.policy}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	trust, err := ektrust.Load(nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := &config.Config{NonceTTL: 2 * time.Minute, ClockSkew: 30 * time.Second, StartupGrace: time.Minute,
		Enrollment: config.Enrollment{Timeout: time.Minute}}
	v, err := verifier.New(verifier.Options{Config: cfg, Store: st, Policies: w, EKTrust: trust, Replica: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	agents := make([]*benchAgent, len(fx.ids))
	for i, id := range fx.ids {
		dev, err := loadgen.NewDevice(id, fx.boot, "bench")
		if err != nil {
			b.Fatal(err)
		}
		a := &benchAgent{dev: dev, ctx: peerContext(id, fx.ca, 40000+i)}
		ch, err := v.Challenge(a.ctx, &pulsev1.ChallengeRequest{})
		if err != nil {
			b.Fatal(err)
		}
		a.nonce, a.state = ch.GetNonce().GetValue(), ch.GetState()
		req, err := dev.Build(loadgen.BuildOptions{Nonce: a.nonce, State: a.state})
		if err != nil {
			b.Fatal(err)
		}
		resp, err := v.Pulse(a.ctx, req)
		a.take(b, resp, err)
		agents[i] = a
	}
	return v, agents
}

func (a *benchAgent) take(b *testing.B, resp *pulsev1.PulseResponse, err error) {
	if err != nil {
		b.Fatal(err)
	}
	if resp.GetVerdict() != pulsev1.Verdict_VERDICT_TRUSTED {
		b.Fatalf("verdict %s/%s: %s", resp.GetVerdict(), resp.GetReason(), resp.GetMessage())
	}
	a.nonce, a.state = resp.GetNextNonce().GetValue(), resp.GetState()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// variantLog returns the firmware log with one more EV_NO_ACTION record
// (crypto-agile, no digests) carrying n: a log no verifier has seen, that
// replays to the same PCR values.
func variantLog(base []byte, n uint64) []byte {
	data := binary.BigEndian.AppendUint64([]byte("pulse-bench\x00"), n)
	ev := make([]byte, 0, 16+len(data))
	ev = binary.LittleEndian.AppendUint32(ev, 0) // PCR
	ev = binary.LittleEndian.AppendUint32(ev, 3) // EV_NO_ACTION
	ev = binary.LittleEndian.AppendUint32(ev, 0) // digest count
	ev = binary.LittleEndian.AppendUint32(ev, uint32(len(data)))
	ev = append(ev, data...)
	return append(append(make([]byte, 0, len(base)+len(ev)), base...), ev...)
}

var freshLogs atomic.Uint64

// BenchmarkPipeline measures the verifier's full TPM pulse path in process:
// (*verifier.Verifier).Pulse called directly with the context gRPC builds
// after an mTLS handshake (no network, no TLS record layer), on a real store.
// A pulse is verified end to end: payload parse, identity, ECDSA P-256 pulse
// signature, nonce spent in the store, TPM quote (software AK, the TPM's
// wire format) over PCRs 0-9 and 14, firmware log replay, runtime log replay,
// policy, last-known-good, deadline, pulse record, and the next nonce issued
// and stored. Nonce issuance is therefore INSIDE the timed Pulse call (each
// pulse spends the next_nonce of the agent's previous answer); building and
// signing the pulses (the agents' work) is outside the timer.
//
// cached-fwlog is the steady state: the payload names the firmware log by
// digest and the verifier holds it parsed. fresh-fwlog sends, with every
// pulse, a firmware log the verifier has never seen (the first pulse of a
// new boot configuration): digest, store, parse, replay.
//
// cached-fwlog-uncached-row is cached-fwlog without the verifier's agent
// cache (every pulse reads the agent's row from the store first).
//
// cached-fwlog-parallel is cached-fwlog with the pulses of each round
// verified by benchWorkers goroutines at once, as gRPC serves a fleet:
// concurrent pulses share store transactions (group commit) and use both
// cores, so pulses/s is the machine's, while pulses/cpu-s stays per core.
//
// Metrics: pulses/s (wall), pulses/cpu-s (pulses per second
// of process CPU while timed: per core), wire-B/pulse (proto.Size of the
// PulseRequest), floor-pulses/cpu-s (the crypto floor: what the two P-256
// verifications alone allow, measured right after the timed loop in the
// same process, cryptoFloor) and %floor (pulses/cpu-s as a share of it:
// the figure that stays comparable when the machine's load changes).
func BenchmarkPipeline(b *testing.B) {
	// fresh-fwlog moves every agent to a new log each round: evict the
	// least recently used one instead of refusing the fifth of the day.
	defer func(w time.Duration) { verifier.FirmwareLogQuotaWindow = w }(verifier.FirmwareLogQuotaWindow)
	verifier.FirmwareLogQuotaWindow = 0
	fx := newBenchFixture(b)
	var pg *loadgen.Postgres
	b.Cleanup(func() {
		if pg != nil {
			pg.Stop()
		}
	})
	var dbSeq atomic.Int64
	engines := []struct {
		name string
		dsn  func(b *testing.B) string
	}{
		{store.EngineSQLite, func(b *testing.B) string { return filepath.Join(b.TempDir(), "state.db") }},
		{store.EnginePostgres, func(b *testing.B) string {
			if pg == nil {
				if _, err := loadgen.PostgresBinDir(); err != nil {
					testutil.Unavailable(b, "%v", err)
					return ""
				}
				var err error
				if pg, err = loadgen.StartPostgres(false); err != nil {
					b.Fatal(err)
				}
			}
			admin, err := store.Open(context.Background(), store.EnginePostgres, pg.DSN())
			if err != nil {
				b.Fatal(err)
			}
			defer admin.Close()
			name := fmt.Sprintf("bench%d", dbSeq.Add(1))
			if _, err := admin.DB().Exec("CREATE DATABASE " + name); err != nil {
				b.Fatal(err)
			}
			return fmt.Sprintf("host=%s port=5432 user=postgres dbname=%s sslmode=disable", pg.Dir, name)
		}},
	}
	for _, eng := range engines {
		for _, m := range []struct {
			name     string
			fresh    bool
			parallel bool
			noCache  bool
		}{{"cached-fwlog", false, false, false}, {"cached-fwlog-parallel", false, true, false}, {"fresh-fwlog", true, false, false},
			{"cached-fwlog-uncached-row", false, false, true}} {
			fresh := m.fresh
			b.Run(m.name+"/"+eng.name, func(b *testing.B) {
				if m.noCache {
					// Every pulse reads the agent's row from the store, as
					// before the agent cache.
					defer func(n int) { verifier.AgentCacheSize = n }(verifier.AgentCacheSize)
					verifier.AgentCacheSize = 0
				}
				dsn := eng.dsn(b)
				v, agents := newBenchVerifier(b, fx, eng.name, dsn)
				reqs := make([]*pulsev1.PulseRequest, len(agents))
				var (
					cpu       time.Duration
					wireBytes int
				)
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; {
					n := min(len(agents), b.N-done)
					b.StopTimer()
					for i := 0; i < n; i++ {
						a := agents[i]
						if fresh {
							boot := *fx.boot
							boot.Log = variantLog(fx.boot.Log, freshLogs.Add(1))
							boot.Digest = sha256.Sum256(boot.Log)
							a.dev.Boot = &boot
						}
						req, err := a.dev.Build(loadgen.BuildOptions{Nonce: a.nonce, State: a.state})
						if err != nil {
							b.Fatal(err)
						}
						if fresh && len(req.GetFirmwareLog()) == 0 {
							b.Fatal("fresh firmware log not sent")
						}
						if !fresh && (len(req.GetFirmwareLog()) != 0 || req.GetQuote() == nil) {
							b.Fatal("steady-state pulse carries the firmware log or no quote")
						}
						wireBytes += proto.Size(req)
						reqs[i] = req
					}
					c0 := cpuTime()
					b.StartTimer()
					if m.parallel {
						pulseParallel(b, v, agents[:n], reqs[:n])
					} else {
						for i := 0; i < n; i++ {
							resp, err := v.Pulse(agents[i].ctx, reqs[i])
							if err != nil || resp.GetVerdict() != pulsev1.Verdict_VERDICT_TRUSTED {
								b.StopTimer()
								agents[i].take(b, resp, err)
							}
							agents[i].nonce, agents[i].state = resp.GetNextNonce().GetValue(), resp.GetState()
						}
					}
					b.StopTimer()
					cpu += cpuTime() - c0
					b.StartTimer()
					done += n
				}
				b.StopTimer()
				if el := b.Elapsed(); el > 0 {
					b.ReportMetric(float64(b.N)/el.Seconds(), "pulses/s")
				}
				if cpu > 0 {
					b.ReportMetric(float64(b.N)/cpu.Seconds(), "pulses/cpu-s")
				}
				b.ReportMetric(float64(wireBytes)/float64(b.N), "wire-B/pulse")
				// The crypto floor, measured now (same process, same load):
				// the two P-256 verifications of the last round's pulses.
				if floor := cryptoFloor(b, agents, reqs); floor > 0 && cpu > 0 {
					b.ReportMetric(floor, "floor-pulses/cpu-s")
					b.ReportMetric(100*float64(b.N)/cpu.Seconds()/floor, "%floor")
				}
			})
		}
	}
}

// floorVerifications is how many pulses' two verifications cryptoFloor
// times.
const floorVerifications = 2048

// cryptoFloor returns the pulses per CPU-second the cryptography alone
// allows: the two P-256 ECDSA verifications every TPM pulse needs (the
// pulse signature with the certificate's key, the quote's TPMT_SIGNATURE
// with the AK: SHA-256 and ecdsa.Verify each), over the given pulses
// again and again, nothing else.
func cryptoFloor(b *testing.B, agents []*benchAgent, reqs []*pulsev1.PulseRequest) float64 {
	b.Helper()
	type job struct {
		cert    crypto.PublicKey
		payload []byte
		sig     []byte
		ak      *ecdsa.PublicKey
		attest  []byte
		r, s    *big.Int
	}
	var jobs []job
	for i, req := range reqs {
		if req == nil || req.GetQuote() == nil {
			continue
		}
		id := agents[i].dev.ID
		pub, err := quote.ParseAKPublic(id.AKPublic)
		if err != nil {
			b.Fatal(err)
		}
		ak, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			b.Fatalf("AK is %T, want ECDSA", pub)
		}
		r, s, err := ecdsaTPMSignature(req.GetQuote().GetSignature())
		if err != nil {
			b.Fatal(err)
		}
		jobs = append(jobs, job{cert: id.Cert.PublicKey, payload: req.GetPayload(), sig: req.GetSignature(), ak: ak, attest: req.GetQuote().GetAttest(), r: r, s: s})
	}
	if len(jobs) == 0 {
		return 0
	}
	c0 := cpuTime()
	for i := 0; i < floorVerifications; i++ {
		j := jobs[i%len(jobs)]
		if err := pulsesig.Verify(j.cert, j.payload, j.sig); err != nil {
			b.Fatal(err)
		}
		d := sha256.Sum256(j.attest)
		if !ecdsa.Verify(j.ak, d[:], j.r, j.s) {
			b.Fatal("quote signature does not verify")
		}
	}
	cpu := cpuTime() - c0
	if cpu <= 0 {
		return 0
	}
	return floorVerifications / cpu.Seconds()
}

// ecdsaTPMSignature decodes an ECDSA TPMT_SIGNATURE (sigAlg, hash, R, S).
func ecdsaTPMSignature(raw []byte) (*big.Int, *big.Int, error) {
	if len(raw) < 6 || binary.BigEndian.Uint16(raw) != 0x0018 {
		return nil, nil, fmt.Errorf("not an ECDSA TPMT_SIGNATURE (%d bytes)", len(raw))
	}
	rest := raw[4:]
	var parts [2]*big.Int
	for i := range parts {
		if len(rest) < 2 || len(rest) < 2+int(binary.BigEndian.Uint16(rest)) {
			return nil, nil, fmt.Errorf("truncated TPMT_SIGNATURE")
		}
		n := int(binary.BigEndian.Uint16(rest))
		parts[i] = new(big.Int).SetBytes(rest[2 : 2+n])
		rest = rest[2+n:]
	}
	if len(rest) != 0 {
		return nil, nil, fmt.Errorf("%d bytes after the TPMT_SIGNATURE", len(rest))
	}
	return parts[0], parts[1], nil
}

// benchWorkers is how many goroutines verify at once in the parallel mode.
const benchWorkers = 16

// pulseParallel verifies one round of pulses from benchWorkers goroutines;
// a wrong answer fails the benchmark.
func pulseParallel(b *testing.B, v *verifier.Verifier, agents []*benchAgent, reqs []*pulsev1.PulseRequest) {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		bad  atomic.Value
	)
	for w := 0; w < benchWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(agents) {
					return
				}
				resp, err := v.Pulse(agents[i].ctx, reqs[i])
				if err == nil && resp.GetVerdict() != pulsev1.Verdict_VERDICT_TRUSTED {
					err = fmt.Errorf("verdict %s/%s: %s", resp.GetVerdict(), resp.GetReason(), resp.GetMessage())
				}
				if err != nil {
					bad.CompareAndSwap(nil, err)
					return
				}
				agents[i].nonce, agents[i].state = resp.GetNextNonce().GetValue(), resp.GetState()
			}
		}()
	}
	wg.Wait()
	if err, _ := bad.Load().(error); err != nil {
		b.Fatal(err)
	}
}
