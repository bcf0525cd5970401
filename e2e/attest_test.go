package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/internal/pki"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

const fleetPolicy = `
policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
    missed   = 3
    grace    = "2s"
  }
  measured_boot {
    secure_boot {}
  }
}
`

const (
	trusted   = "VERDICT_TRUSTED"
	untrusted = "VERDICT_UNTRUSTED"
)

// TestRealAgentAttests: the real agent, launched through the measuring
// launcher on a swtpm that booted a real firmware log, is TRUSTED; then each
// attack the real agent can suffer gets its own reason, and the verifier
// recovers or not as it should.
func TestRealAgentAttests(t *testing.T) {
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleet(t, fleetPolicy, sw)
	agentBin := filepath.Join(f.dir, "pulse-agent")
	copyBinary(t, bin("pulse-agent"), agentBin, nil)
	cfg := f.agentConfig("edge-1", sw, "")
	f.launchAgent("edge-1", cfg, agentBin)
	f.waitVerdict("edge-1", trusted, "REASON_OK", 30*time.Second)

	t.Run("agent binary replaced on disk", func(t *testing.T) {
		copyBinary(t, bin("pulse-agent"), agentBin, []byte("\x00implant"))
		f.waitVerdict("edge-1", untrusted, "REASON_AGENT_BINARY_MISMATCH", 20*time.Second)
	})

	t.Run("new binary outside an update window", func(t *testing.T) {
		// The replaced binary is restarted: the launcher measures it, the
		// claims match, but the change is not approved.
		f.stopAgent("edge-1", syscall.SIGTERM)
		f.launchAgent("edge-1", cfg, agentBin)
		f.waitVerdict("edge-1", untrusted, "REASON_BINARY_CHANGED", 30*time.Second)
		time.Sleep(3 * time.Second) // more pulses, still one alert
		if n := f.alerts("edge-1", "binary_changed"); n != 1 {
			t.Fatalf("%d binary_changed alerts, want 1", n)
		}
	})

	t.Run("same binary inside an approved window", func(t *testing.T) {
		b, err := os.ReadFile(agentBin)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if err := f.store().AddUpdateWindow(context.Background(), &store.UpdateWindow{Digest: hex.EncodeToString(sum[:]), Agents: []string{"edge-*"},
			Start: time.Now().Add(-time.Minute), End: time.Now().Add(time.Hour), CreatedBy: "operator:e2e"}); err != nil {
			t.Fatal(err)
		}
		f.waitVerdict("edge-1", trusted, "REASON_OK", 20*time.Second)
		if n := f.alerts("edge-1", "binary_changed"); n != 1 {
			t.Fatalf("approved update raised an alert: %d", n)
		}
	})

	t.Run("tampered firmware log", func(t *testing.T) {
		f.stopAgent("edge-1", syscall.SIGTERM)
		good, err := os.ReadFile(sw.BootLogPath())
		if err != nil {
			t.Fatal(err)
		}
		bad := flipLastDigest(t, good, 4)
		if err := os.WriteFile(sw.BootLogPath(), bad, 0o644); err != nil {
			t.Fatal(err)
		}
		f.launchAgent("edge-1", cfg, agentBin)
		f.waitVerdict("edge-1", untrusted, "REASON_FIRMWARE_LOG_REPLAY", 30*time.Second)
		f.stopAgent("edge-1", syscall.SIGTERM)
		if err := os.WriteFile(sw.BootLogPath(), good, 0o644); err != nil {
			t.Fatal(err)
		}
		f.launchAgent("edge-1", cfg, agentBin)
		f.waitVerdict("edge-1", trusted, "REASON_OK", 30*time.Second)
	})

	t.Run("runtime PCR extended behind the agent's back", func(t *testing.T) {
		f.stopAgent("edge-1", syscall.SIGTERM)
		dev, err := tpm.Open(sw.Spec(), simtest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		junk := sha256.Sum256([]byte("rootkit"))
		if err := dev.Extend(14, map[uint16][]byte{uint16(eventlog.AlgSHA256): junk[:]}); err != nil {
			t.Fatal(err)
		}
		dev.Close()
		f.launchAgent("edge-1", cfg, agentBin)
		f.waitVerdict("edge-1", untrusted, "REASON_RUNTIME_LOG_REPLAY", 30*time.Second)
	})
}

// TestCraftedPulsesAgainstRealVerifier: attacks a real agent would never
// make, sent by a test client built from the agent's parts to the real
// verifier binary, each refused with its own reason.
func TestCraftedPulsesAgainstRealVerifier(t *testing.T) {
	sw := startTPM(t, "rhel8-uefi", true)
	if sw == nil {
		return
	}
	other := startTPM(t, "rhel8-uefi", true)
	f := newFleet(t, fleetPolicy, sw, other)
	fwLog, err := os.ReadFile(sw.BootLogPath())
	if err != nil {
		t.Fatal(err)
	}
	open := func(s interface{ Spec() string }) *tpm.TPM {
		dev, err := tpm.Open(s.Spec(), simtest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dev.Close() })
		return dev
	}
	a := verifiertest.NewClient(t, f.addr(), f.caFile, f.ca, "edge-a", open(sw), fwLog)
	b := verifiertest.NewClient(t, f.addr(), f.caFile, f.ca, "edge-b", open(other), fwLog)
	for _, c := range []*verifiertest.Client{a, b} {
		if res := c.Enroll(); !res.GetEnrolled() {
			t.Fatalf("enroll %s: %s", c.ID, res.GetMessage())
		}
		c.MeasureBinary()
		c.Challenge()
	}
	want := func(t *testing.T, r *pulsev1.PulseResponse, v pulsev1.Verdict, reason pulsev1.Reason) {
		t.Helper()
		if r.GetVerdict() != v || r.GetReason() != reason {
			t.Fatalf("got %s/%s (%s), want %s/%s", r.GetVerdict(), r.GetReason(), r.GetMessage(), v, reason)
		}
	}
	ok := func(t *testing.T) {
		t.Helper()
		want(t, a.Pulse(nil), pulsev1.Verdict_VERDICT_TRUSTED, pulsev1.Reason_REASON_OK)
	}
	ok(t)
	captured := a.Build(nil)
	want(t, a.Send(captured), pulsev1.Verdict_VERDICT_TRUSTED, pulsev1.Reason_REASON_OK)

	cases := []struct {
		name   string
		run    func() *pulsev1.PulseResponse
		v      pulsev1.Verdict
		reason pulsev1.Reason
	}{
		{"captured pulse replayed", func() *pulsev1.PulseResponse { return a.Send(captured) },
			pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_NONCE_REPLAYED},
		{"nonce used twice", func() *pulsev1.PulseResponse {
			n := a.Nonce
			ok(t)
			a.Nonce = n
			return a.Pulse(nil)
		}, pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_NONCE_REPLAYED},
		{"nonce from another agent", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *verifiertest.Parts) { p.Payload.VerifierNonce = b.Nonce })
		}, pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_NONCE_WRONG_AGENT},
		{"pulse signed by another agent's key", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *verifiertest.Parts) { p.Signer = b.Cert })
		}, pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_BAD_SIGNATURE},
		{"quote from another TPM", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *verifiertest.Parts) { p.QuoteWith = b })
		}, pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_QUOTE_SIGNATURE},
		{"agent clock ten minutes off", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *verifiertest.Parts) { p.Payload.Time = timestamppb.New(time.Now().Add(-10 * time.Minute)) })
		}, pulsev1.Verdict_VERDICT_CLOCK_DESYNC, pulsev1.Reason_REASON_CLOCK_DESYNC},
		{"mTLS-only pulse from an agent enrolled with a TPM", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *verifiertest.Parts) { p.NoQuote = true; p.Payload.Tpm = false })
		}, pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_TPM_DOWNGRADE},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want(t, c.run(), c.v, c.reason)
			ok(t)
		})
	}

	t.Run("handshake refusals", func(t *testing.T) {
		pool, err := pki.ReadCertPool(f.caFile)
		if err != nil {
			t.Fatal(err)
		}
		dial := func(certs []tls.Certificate) error {
			c, err := tls.Dial("tcp", f.addr(), &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: certs, MinVersion: tls.VersionTLS13})
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			return err
		}
		if err := dial(nil); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("no client certificate: %v", err)
		}
		foreign, err := pki.NewCA("not the agent CA", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		is, err := pki.Issue(foreign, pki.Request{Role: pki.RoleAgent, ID: "edge-a"})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		if err := dial([]tls.Certificate{pair}); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("certificate from another CA: %v", err)
		}
	})
}

// flipLastDigest flips one bit of the SHA-256 digest of the last event of
// pcr in a raw firmware log.
func flipLastDigest(t *testing.T, raw []byte, pcr uint32) []byte {
	t.Helper()
	l, err := eventlog.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	var ev *eventlog.Event
	for i := range l.Events {
		if l.Events[i].PCR == pcr {
			ev = &l.Events[i]
		}
	}
	if ev == nil {
		t.Fatalf("no event for PCR %d", pcr)
	}
	d := ev.Digest(eventlog.AlgSHA256)
	out := append([]byte(nil), raw...)
	idx := strings.Index(string(out[ev.Offset:]), string(d))
	if idx < 0 {
		t.Fatal("digest not found")
	}
	out[ev.Offset+idx] ^= 1
	return out
}
