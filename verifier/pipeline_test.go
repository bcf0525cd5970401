package verifier_test

import (
	"crypto/sha256"
	"crypto/tls"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/internal/pki"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

func wantVerdict(t *testing.T, resp *pulsev1.PulseResponse, v pulsev1.Verdict, r pulsev1.Reason) {
	t.Helper()
	if resp.GetVerdict() != v || resp.GetReason() != r {
		t.Fatalf("verdict %s/%s (%s), want %s/%s", resp.GetVerdict(), resp.GetReason(), resp.GetMessage(), v, r)
	}
}

var (
	trusted   = pulsev1.Verdict_VERDICT_TRUSTED
	untrusted = pulsev1.Verdict_VERDICT_UNTRUSTED
)

// TestPipeline drives the verifier over mTLS with a real swtpm-backed client:
// the good path first, then each attack with its own typed reason. An
// attack never spoils the agent's next good pulse.
func TestPipeline(t *testing.T) {
	other := simtest.StartFresh(t, "rhel8-uefi")
	e := newEnv(t, "rhel8-uefi", other)
	if e == nil {
		return
	}
	dev := e.openTPM(e.sw)
	a := e.agent("edge-a", dev)
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatalf("enroll: %s %s", res.GetReason(), res.GetMessage())
	}
	a.MeasureBinary()
	a.Challenge()

	// The first pulse carries the firmware log; the verifier keeps it.
	resp := a.Pulse(nil)
	wantVerdict(t, resp, trusted, pulsev1.Reason_REASON_OK)
	if got := resp.GetState().GetRuntimeRecordsAcked(); got != 1 {
		t.Fatalf("runtime records acked %d, want 1", got)
	}
	fwSum := sha256.Sum256(e.fwLog)
	if string(resp.GetState().GetFirmwareLogSha256()) != string(fwSum[:]) {
		t.Fatal("verifier does not acknowledge the firmware log")
	}
	// Steady state: no log, no records.
	wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false }), trusted, pulsev1.Reason_REASON_OK)

	b := e.agent("edge-b", nil)
	otherDev := e.openTPM(other)
	thief := e.agent("edge-a-clone", otherDev)
	b.Nonce = nil

	captured := a.Build(func(p *parts) { p.SendLog = false })
	wantVerdict(t, a.Send(captured), trusted, pulsev1.Reason_REASON_OK)

	cases := []struct {
		name   string
		run    func() *pulsev1.PulseResponse
		v      pulsev1.Verdict
		reason pulsev1.Reason
	}{
		{"captured pulse replayed", func() *pulsev1.PulseResponse { return a.Send(captured) }, untrusted, pulsev1.Reason_REASON_NONCE_REPLAYED},
		{"nonce used twice", func() *pulsev1.PulseResponse {
			n := a.Nonce
			wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false }), trusted, pulsev1.Reason_REASON_OK)
			a.Nonce = n
			return a.Pulse(func(p *parts) { p.SendLog = false })
		}, untrusted, pulsev1.Reason_REASON_NONCE_REPLAYED},
		{"nonce never issued", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) { p.Payload.VerifierNonce = make([]byte, 32) })
		}, untrusted, pulsev1.Reason_REASON_NONCE_UNKNOWN},
		{"nonce of another agent", func() *pulsev1.PulseResponse {
			r, err := b.Cl.Challenge(ctx(t), &pulsev1.ChallengeRequest{})
			if err != nil {
				t.Fatal(err)
			}
			return a.Pulse(func(p *parts) { p.Payload.VerifierNonce = r.GetNonce().GetValue() })
		}, untrusted, pulsev1.Reason_REASON_NONCE_WRONG_AGENT},
		{"nonce expired", func() *pulsev1.PulseResponse {
			a.Challenge()
			e.clock.Advance(2 * time.Minute)
			defer e.clock.Advance(-2 * time.Minute)
			return a.Pulse(func(p *parts) { p.Payload.Time = timestamppb.New(e.clock.Now()) })
		}, untrusted, pulsev1.Reason_REASON_NONCE_EXPIRED},
		{"payload names another agent", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) { p.Payload.AgentId = "edge-b" })
		}, untrusted, pulsev1.Reason_REASON_IDENTITY_MISMATCH},
		{"signed by another agent's key", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) { p.Signer = b.Cert })
		}, untrusted, pulsev1.Reason_REASON_BAD_SIGNATURE},
		{"signature flipped", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) { p.After = func(r *pulsev1.PulseRequest) { r.Signature[len(r.Signature)/2] ^= 1 } })
		}, untrusted, pulsev1.Reason_REASON_BAD_SIGNATURE},
		{"malformed payload", func() *pulsev1.PulseResponse {
			return a.Send(&pulsev1.PulseRequest{Payload: []byte{0xff, 0xff, 0xff}, Signature: []byte{1}})
		}, untrusted, pulsev1.Reason_REASON_MALFORMED_PAYLOAD},
		{"quote from another TPM", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) { p.QuoteWith = thief })
		}, untrusted, pulsev1.Reason_REASON_QUOTE_SIGNATURE},
		{"quote over another payload", func() *pulsev1.PulseResponse {
			other := a.Build(nil)
			return a.Pulse(func(p *parts) { p.After = func(r *pulsev1.PulseRequest) { r.Quote = other.Quote } })
		}, untrusted, pulsev1.Reason_REASON_QUALIFYING_DATA},
		{"PCR values changed after the quote", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) {
				p.After = func(r *pulsev1.PulseRequest) { r.Quote.Pcrs[0].Digest = make([]byte, 32) }
			})
		}, untrusted, pulsev1.Reason_REASON_PCR_DIGEST},
		{"mTLS-only pulse from a TPM agent", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) { p.NoQuote = true; p.Payload.Tpm = false })
		}, untrusted, pulsev1.Reason_REASON_TPM_DOWNGRADE},
		{"clock ten minutes off", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) { p.Payload.Time = timestamppb.New(time.Now().Add(-10 * time.Minute)) })
		}, pulsev1.Verdict_VERDICT_CLOCK_DESYNC, pulsev1.Reason_REASON_CLOCK_DESYNC},
		{"running binary is not the measured one", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) { p.Payload.AgentBinarySha256 = make([]byte, 32) })
		}, untrusted, pulsev1.Reason_REASON_CLAIM_MISMATCH},
		{"agent binary replaced on disk", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) { p.Payload.AgentBinaryDiskSha256 = make([]byte, 32) })
		}, untrusted, pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH},
		{"resettable runtime PCR", func() *pulsev1.PulseResponse {
			return a.Pulse(func(p *parts) { p.Payload.RuntimePcr = 16 })
		}, untrusted, pulsev1.Reason_REASON_RUNTIME_PCR_MISMATCH},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := c.run()
			wantVerdict(t, resp, c.v, c.reason)
			if resp.GetMessage() == "" {
				t.Fatal("verdict without a message")
			}
			// The agent recovers at once with honest evidence.
			wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
		})
	}

	t.Run("tampered firmware log", func(t *testing.T) {
		bad := append([]byte(nil), e.fwLog...)
		l, err := eventlog.Parse(bad)
		if err != nil {
			t.Fatal(err)
		}
		// Flip a byte of the last PCR 4 event's SHA-256 digest.
		target := -1
		for _, ev := range l.Events {
			if ev.PCR == 4 {
				target = ev.Offset
			}
		}
		if target < 0 {
			t.Fatal("no PCR 4 event")
		}
		idx := strings.Index(string(bad[target:]), string(lastDigest(l, 4)))
		if idx < 0 {
			t.Fatal("digest not found in the raw log")
		}
		bad[target+idx] ^= 0x01
		resp := a.Pulse(func(p *parts) {
			s := sha256.Sum256(bad)
			p.Payload.FirmwareLogSha256 = s[:]
			p.FwLog = bad
		})
		wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_FIRMWARE_LOG_REPLAY)
		if !strings.Contains(resp.GetMessage(), "4") {
			t.Fatalf("replay failure does not name PCR 4: %s", resp.GetMessage())
		}
		wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	})

	t.Run("runtime PCR extended behind the agent's back", func(t *testing.T) {
		junk := sha256.Sum256([]byte("attacker"))
		if err := dev.Extend(runtimePCR, map[uint16][]byte{uint16(eventlog.AlgSHA256): junk[:]}); err != nil {
			t.Fatal(err)
		}
		resp := a.Pulse(nil)
		wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_RUNTIME_LOG_REPLAY)
		// This one does not recover: the PCR's history is spoiled until reboot.
		wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_RUNTIME_LOG_REPLAY)
	})

	t.Run("reboot is not tampering", func(t *testing.T) {
		if _, err := e.sw.Boot(e.fwLog); err != nil {
			t.Fatal(err)
		}
		a.Records, a.SentUpTo = nil, 0
		a.MeasureBinary()
		resp := a.Pulse(nil)
		wantVerdict(t, resp, trusted, pulsev1.Reason_REASON_OK)
		if len(resp.GetNotes()) == 0 || resp.GetNotes()[0] != pulsev1.Reason_REASON_REBOOTED {
			t.Fatalf("reboot not noted: %v", resp.GetNotes())
		}
	})

	t.Run("same agent ID from another TPM", func(t *testing.T) {
		clone := e.agent("edge-a", otherDev)
		clone.AK = thief.AK
		res := clone.Enroll()
		if res.GetEnrolled() || res.GetReason() != pulsev1.Reason_REASON_EK_MISMATCH {
			t.Fatalf("clone enrollment: %v %s", res.GetReason(), res.GetMessage())
		}
		if n := len(alertsOf(t, openStore(t, e), "edge-a", "identity_takeover")); n != 1 {
			t.Fatalf("%d identity_takeover alerts, want 1", n)
		}
		wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	})

	t.Run("not enrolled", func(t *testing.T) {
		n := e.agent("edge-new", dev)
		n.MeasureBinary()
		n.Challenge()
		wantVerdict(t, n.Pulse(nil), untrusted, pulsev1.Reason_REASON_NOT_ENROLLED)
	})
}

func lastDigest(l *eventlog.Log, pcr uint32) []byte {
	var d []byte
	for _, ev := range l.Events {
		if ev.PCR != pcr {
			continue
		}
		for _, dg := range ev.Digests {
			if dg.Alg == eventlog.AlgSHA256 {
				d = dg.Value
			}
		}
	}
	return d
}

// TestConcurrentCopiesOneWins sends copies of one pulse (and a second pulse
// for the same nonce) at once: the epoch is spent with the record, so
// exactly one is TRUSTED and every other is a replay, and the agent's next
// pulse is trusted again.
func TestConcurrentCopiesOneWins(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	a := e.agent("edge-race", e.openTPM(e.sw))
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	a.MeasureBinary()
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	for round := range 5 {
		reqs := make([]*pulsev1.PulseRequest, 8)
		copied := a.Build(func(p *parts) { p.SendLog = false })
		for i := range reqs {
			reqs[i] = copied
		}
		reqs[len(reqs)-1] = a.Build(func(p *parts) { p.SendLog = false })
		resps := make([]*pulsev1.PulseResponse, len(reqs))
		errs := make([]error, len(reqs))
		var wg sync.WaitGroup
		for i, req := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resps[i], errs[i] = a.Cl.Pulse(ctx(t), req)
			}()
		}
		wg.Wait()
		won := 0
		for i, resp := range resps {
			if errs[i] != nil {
				t.Fatalf("round %d: pulse rpc: %v", round, errs[i])
			}
			switch {
			case resp.GetVerdict() == trusted && resp.GetReason() == pulsev1.Reason_REASON_OK:
				won++
				a.Nonce = resp.GetNextNonce().GetValue()
			case resp.GetVerdict() != untrusted || resp.GetReason() != pulsev1.Reason_REASON_NONCE_REPLAYED:
				t.Fatalf("round %d: copy %d got %s/%s (%s), want TRUSTED once and replays", round, i, resp.GetVerdict(), resp.GetReason(), resp.GetMessage())
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d copies TRUSTED, want exactly 1", round, won)
		}
	}
	wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false }), trusted, pulsev1.Reason_REASON_OK)
}

// TestFirmwareLogRequested: a verifier that lacks the log asks for it and
// then accepts.
func TestFirmwareLogRequested(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	a := e.agent("edge-c", e.openTPM(e.sw))
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	a.MeasureBinary()
	a.Challenge()
	resp := a.Pulse(func(p *parts) { p.SendLog = false })
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING)
	if !resp.GetState().GetSendFirmwareLog() {
		t.Fatal("verifier did not ask for the firmware log")
	}
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
}

// TestPolicyDeniesInsecureBoot: Secure Boot off fails the policy with the
// rule's name and line.
func TestPolicyDeniesInsecureBoot(t *testing.T) {
	e := newEnv(t, "ubuntu-2104-no-secure-boot")
	if e == nil {
		return
	}
	a := e.agent("edge-d", e.openTPM(e.sw))
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	a.MeasureBinary()
	a.Challenge()
	resp := a.Pulse(nil)
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	if len(resp.GetFindings()) == 0 {
		t.Fatal("no findings")
	}
	f := resp.GetFindings()[0]
	if !strings.Contains(f.GetRule(), "secure_boot") || f.GetLine() != 15 || !f.GetEnforce() {
		t.Fatalf("finding %+v", f)
	}
}

// TestTPMlessAgents: mTLS-only agents are DEGRADED where policy allows and
// TPM_REQUIRED where it does not.
func TestTPMlessAgents(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	lab := e.agent("lab-1", nil)
	lab.Partition = "lab"
	if res := lab.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	lab.Challenge()
	wantVerdict(t, lab.Pulse(nil), pulsev1.Verdict_VERDICT_DEGRADED, pulsev1.Reason_REASON_OK)

	prod := e.agent("prod-1", nil)
	if res := prod.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	prod.Challenge()
	wantVerdict(t, prod.Pulse(nil), untrusted, pulsev1.Reason_REASON_TPM_REQUIRED)
}

// TestHandshakeRefusals: no client certificate, or one from another CA, is
// refused at the TLS handshake.
func TestHandshakeRefusals(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	dial := func(c *tls.Config) error {
		conn, err := tls.Dial("tcp", e.daemon.Addr(), c)
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3 reports a client-certificate refusal on the first read.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	if err := dial(e.tlsConfigFor(nil)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client without certificate: %v", err)
	}
	foreign := newForeignCert(t)
	if err := dial(e.tlsConfigFor(foreign)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client with a foreign certificate: %v", err)
	}
}

// TestAgentKeyTypes: ECDSA, Ed25519 and RSA-PSS agent keys all sign pulses
// the verifier accepts.
func TestAgentKeyTypes(t *testing.T) {
	// Three agent IDs on one TPM.
	e := newEnvCfg(t, "rhel8-uefi", ekBacks(3))
	if e == nil {
		return
	}
	dev := e.openTPM(e.sw)
	// The clients share one TPM, so each carries the runtime log so far.
	var records []cel.Record
	for _, kt := range []pki.KeyType{pki.KeyECDSAP256, pki.KeyEd25519, pki.KeyRSA3072} {
		t.Run(string(kt), func(t *testing.T) {
			a := verifiertest.NewClientWithKey(t, e.daemon.Addr(), e.caFile, e.ca, "edge-"+string(kt), kt, dev, e.fwLog)
			if res := a.Enroll(); !res.GetEnrolled() {
				t.Fatal(res.GetMessage())
			}
			a.Records = records
			a.MeasureBinary()
			records = a.Records
			a.Challenge()
			wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
			wantVerdict(t, a.Pulse(func(p *parts) { p.After = func(r *pulsev1.PulseRequest) { r.Signature[len(r.Signature)-1] ^= 1 } }),
				untrusted, pulsev1.Reason_REASON_BAD_SIGNATURE)
		})
	}
}
