package loadgen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// rpcTimeout bounds every RPC of a virtual agent.
const rpcTimeout = 15 * time.Second

// vagent is one virtual agent.
type vagent struct {
	role    Role
	dev     *Device
	conn    *grpc.ClientConn
	cl      pulsev1.AttestationClient
	nonce   []byte
	state   *pulsev1.VerifierState
	pulses  int
	trusted int
	// captured is the last pulse that was TRUSTED and spent its nonce.
	captured      *pulsev1.PulseRequest
	capturedNonce []byte
	wrongKey      *ecdsa.PrivateKey
	// silentSince is when a silent agent sent its last pulse.
	silentSince time.Time
	connected   bool
	// answered is set once the agent's first pulse was answered.
	answered bool
	// addr is the verifier replica this agent talks to.
	addr string
}

// dialOptions are the gRPC options of every virtual agent's connection:
// real TLS 1.3 with the agent's certificate, the verifier checked against
// the CA and its pulse://verifier identity, and the real agent's keepalive
// (agent/conn.go). Buffers are smaller than gRPC's 32 KiB defaults so ten
// thousand idle connections fit in little memory; messages of any size
// still pass.
func dialOptions(id *Identity, roots *x509.CertPool, serverName string) []grpc.DialOption {
	cert := id.TLS
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      roots,
		ServerName:   serverName,
		VerifyConnection: func(cs tls.ConnectionState) error {
			pid, err := tlsconfig.PeerIdentity(cs)
			if err != nil {
				return err
			}
			if pid.Role != pki.RoleVerifier {
				return fmt.Errorf("loadgen: server is %s, not a verifier", pid)
			}
			return nil
		},
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithReadBufferSize(8 << 10),
		grpc.WithWriteBufferSize(8 << 10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8 << 20)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 60 * time.Second, Timeout: 20 * time.Second}),
	}
}

// run is a virtual agent's life: start at startAt, pulse every interval
// (jittered) until quiet is closed, then hold the connection (and its
// directive stream) open without pulsing until stop is closed. quietDone
// is called once the agent has stopped pulsing (or never will pulse).
func (a *vagent) run(quiet, stop <-chan struct{}, quietDone func(), r *runner, startAt time.Time) {
	once := sync.OnceFunc(quietDone)
	defer once()
	if !sleepUntil(quiet, startAt) {
		return
	}
	conn, err := grpc.NewClient("passthrough:///"+a.addr, dialOptions(a.dev.ID, r.roots, r.cfg.ServerName)...)
	if err != nil {
		r.col.Error("dial", err)
		return
	}
	a.conn = conn
	defer conn.Close()
	a.cl = pulsev1.NewAttestationClient(conn)
	streamDone := func() {}
	defer func() { streamDone() }()
	for {
		select {
		case <-quiet:
			once()
			<-stop
			return
		default:
		}
		next := time.Now().Add(r.nextInterval())
		if a.nonce == nil {
			if !a.challenge(r) {
				sleepUntil(quiet, time.Now().Add(min(r.cfg.Interval, 2*time.Second)))
				continue
			}
			if !a.connected {
				a.connected = true
				r.connected.Add(1)
				if r.cfg.Directives {
					streamDone = a.directives(r)
				}
			}
		}
		resp, req, ok := a.honest(r)
		if ok && a.role == RoleSilent && resp.GetVerdict() == pulsev1.Verdict_VERDICT_TRUSTED {
			a.silentSince = time.Now()
			r.connected.Add(-1)
			return // goes silent (closing its connection); the verifier must notice
		}
		if ok && resp.GetVerdict() == pulsev1.Verdict_VERDICT_TRUSTED && a.role != RoleHonest && a.role != RoleSilent {
			a.captured = req
			if !sleepUntil(quiet, time.Now().Add(r.attackDelay())) {
				continue
			}
			a.attack(r)
		}
		if !sleepUntil(quiet, next) {
			continue // the loop's head holds the connection until stop
		}
	}
}

// directives keeps a Directives stream open, as the real agent does
// (agent/directives.go), until the returned function is called. Directives
// received are counted; a stream that ends before the run does is an error.
func (a *vagent) directives(r *runner) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	stream, err := a.cl.Directives(ctx, &pulsev1.DirectivesRequest{})
	if err != nil {
		cancel()
		r.col.Error("directives", err)
		return func() {}
	}
	r.streams.Add(1)
	go func() {
		defer close(done)
		defer r.streams.Add(-1)
		for {
			d, err := stream.Recv()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				r.col.Error("directives", err)
				return
			}
			if d != nil {
				r.directives.Add(1)
			}
		}
	}()
	return func() { cancel(); <-done }
}

func sleepUntil(stop <-chan struct{}, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-stop:
			return false
		default:
			return true
		}
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-stop:
		return false
	case <-tm.C:
		return true
	}
}

func (a *vagent) challenge(r *runner) bool {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	start := time.Now()
	resp, err := a.cl.Challenge(ctx, &pulsev1.ChallengeRequest{})
	r.col.Challenge(time.Since(start), err)
	if err != nil {
		return false
	}
	a.nonce, a.state = resp.GetNonce().GetValue(), resp.GetState()
	return len(a.nonce) > 0
}

// send submits a pulse, records it and takes the next nonce and state from
// the answer (as the agent does, whatever the verdict).
func (a *vagent) send(r *runner, k Kind, req *pulsev1.PulseRequest) (*pulsev1.PulseResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	start := time.Now()
	resp, err := a.cl.Pulse(ctx, req)
	lat := time.Since(start)
	var p pulsev1.PulsePayload
	hasRecords := false
	if proto.Unmarshal(req.GetPayload(), &p) == nil {
		hasRecords = len(p.GetRuntimeRecords()) > 0
	}
	r.col.Pulse(a.dev.ID.ID, k, start, lat, proto.Size(req), len(req.GetFirmwareLog()) > 0, hasRecords, resp, err)
	if err != nil {
		a.nonce = nil // unknown whether it was spent: ask again
		return nil, err
	}
	if !a.answered {
		a.answered = true
		r.col.FirstPulse(start.Add(lat))
	}
	a.pulses++
	a.nonce = resp.GetNextNonce().GetValue()
	if st := resp.GetState(); st != nil {
		a.state = st
	}
	return resp, nil
}

func (a *vagent) honest(r *runner) (*pulsev1.PulseResponse, *pulsev1.PulseRequest, bool) {
	nonce := a.nonce
	req, err := a.dev.Build(BuildOptions{Nonce: nonce, State: a.state})
	if err != nil {
		r.col.Error("build", err)
		return nil, nil, false
	}
	resp, err := a.send(r, KindHonest, req)
	if err != nil {
		return nil, nil, false
	}
	if resp.GetVerdict() == pulsev1.Verdict_VERDICT_TRUSTED {
		a.trusted++
		a.capturedNonce = nonce
	}
	return resp, req, true
}

// attack sends the agent's misbehaviour right after a trusted pulse.
func (a *vagent) attack(r *runner) {
	var req *pulsev1.PulseRequest
	switch a.role {
	case RoleReplay:
		// The captured pulse, byte for byte.
		req = a.captured
	case RoleBadSignature:
		if a.wrongKey == nil {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				r.col.Error("build", err)
				return
			}
			a.wrongKey = k
		}
		if a.nonce == nil {
			return
		}
		var err error
		if req, err = a.dev.Build(BuildOptions{Nonce: a.nonce, State: a.state, Signer: a.wrongKey}); err != nil {
			r.col.Error("build", err)
			return
		}
	case RoleStaleNonce:
		// A fresh, correctly signed and quoted pulse over the spent nonce.
		var err error
		if req, err = a.dev.Build(BuildOptions{Nonce: a.capturedNonce, State: a.state}); err != nil {
			r.col.Error("build", err)
			return
		}
	default:
		return
	}
	a.send(r, Kind(a.role), req) //nolint:errcheck // recorded by send
}

// runner holds what the virtual agents share.
type runner struct {
	cfg       *Config
	roots     *x509.CertPool
	col       *Collector
	connected atomic.Int64
	// streams counts open directive streams, directives those received.
	streams, directives atomic.Int64
}

// nextInterval is the interval with up to ±Jitter/2 relative jitter.
func (r *runner) nextInterval() time.Duration {
	iv := r.cfg.Interval
	if r.cfg.Jitter <= 0 {
		return iv
	}
	f := 1 + r.cfg.Jitter*(mrand.Float64()-0.5)
	return time.Duration(float64(iv) * f)
}

// attackDelay is how long a misbehaving agent waits after its honest pulse.
func (r *runner) attackDelay() time.Duration {
	maxD := min(r.cfg.Interval/4, time.Second)
	return time.Duration(mrand.Int64N(int64(maxD)) + 1)
}
