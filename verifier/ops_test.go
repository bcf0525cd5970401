package verifier_test

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/internal/directivesig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/audit"
	"github.com/pulse-attest/pulse/verifier/store"
)

func openStore(t *testing.T, e *env) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.EngineSQLite, e.dir+"/state.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func alertsOf(t *testing.T, s *store.Store, agent, kind string) []*store.Alert {
	t.Helper()
	all, err := s.ListAlerts(context.Background(), store.AlertFilter{AgentID: agent})
	if err != nil {
		t.Fatal(err)
	}
	var out []*store.Alert
	for _, a := range all {
		if a.Kind == kind {
			out = append(out, a)
		}
	}
	return out
}

// TestLastKnownGood: an agent binary change outside an approved window is
// UNTRUSTED with one Severity 1 alert; inside a window it becomes the new
// last-known-good.
func TestLastKnownGood(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.agent("edge-u", e.openTPM(e.sw))
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	a.MeasureBinary()
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)

	// The agent is replaced by another build, measured by the launcher.
	a.Binary = sha256.Sum256([]byte("unapproved build"))
	a.MeasureBinary()
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
	if n := len(alertsOf(t, st, "edge-u", "binary_changed")); n != 1 {
		t.Fatalf("%d binary_changed alerts, want exactly 1", n)
	}
	if al := alertsOf(t, st, "edge-u", "binary_changed"); al[0].Severity != 1 {
		t.Fatalf("severity %d", al[0].Severity)
	}

	// An operator approves a new build for edge-*: the agent moves to it.
	approved := sha256.Sum256([]byte("approved build"))
	if err := st.AddUpdateWindow(context.Background(), &store.UpdateWindow{Digest: hexOf(approved[:]), Agents: []string{"edge-*"},
		Start: time.Now().Add(-time.Minute), End: time.Now().Add(time.Hour), CreatedBy: "operator:test"}); err != nil {
		t.Fatal(err)
	}
	a.Binary = approved
	a.MeasureBinary()
	// The unapproved build's record stays in the runtime PCR for the rest of
	// the boot: an approved build started after it does not clear it.
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
	// After a reboot the approved build alone is a change the window covers.
	if err := e.sw.Reboot(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sw.Boot(e.fwLog); err != nil {
		t.Fatal(err)
	}
	a.Records, a.SentUpTo = nil, 0
	a.MeasureBinary()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	lkg, err := st.GetLKG(context.Background(), "edge-u")
	if err != nil || lkg.BinarySHA256 != hexOf(approved[:]) {
		t.Fatalf("last-known-good %+v %v", lkg, err)
	}
	if n := len(alertsOf(t, st, "edge-u", "binary_changed")); n != 1 {
		t.Fatalf("approved update raised an alert (%d)", n)
	}
	// The alert is in the hash-chained audit log, and the chain verifies.
	f, err := os.Open(filepath.Join(e.dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := audit.Verify(f); err != nil || n < 1 {
		t.Fatalf("audit log: %d records, %v", n, err)
	}
}

// TestBlinded: an agent silent past its deadline becomes BLINDED with one
// alert; during the startup grace it does not.
func TestBlinded(t *testing.T) {
	// Deadlines are on the database's clock: a 1s heartbeat, 2 missed.
	// The startup grace is counted on the replica's (injected) clock.
	e := newEnvCfg(t, "rhel8-uefi", fastHeartbeat("1s", 2, "1m"))
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.agent("edge-quiet", e.openTPM(e.sw))
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	a.MeasureBinary()
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	// Another agent enrolls and never pulses: it has a deadline too.
	ghost := e.agent("edge-ghost", nil)
	if res := ghost.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}

	// Past the deadline but inside the startup grace.
	waitPastDeadline(t, st, "edge-quiet", "edge-ghost")
	time.Sleep(2500 * time.Millisecond)
	if ag, _ := st.GetAgent(context.Background(), "edge-quiet"); pulsev1.Verdict(ag.LastVerdict) == pulsev1.Verdict_VERDICT_BLINDED {
		t.Fatal("BLINDED during the startup grace")
	}
	e.clock.Advance(2 * time.Minute)
	waitFor(t, "BLINDED", func() bool {
		ag, _ := st.GetAgent(context.Background(), "edge-quiet")
		return pulsev1.Verdict(ag.LastVerdict) == pulsev1.Verdict_VERDICT_BLINDED
	})
	time.Sleep(2 * time.Second) // further sweeps must not raise again
	if n := len(alertsOf(t, st, "edge-quiet", "compromised")); n != 1 {
		t.Fatalf("%d compromised alerts, want 1", n)
	}
	if g, _ := st.GetAgent(context.Background(), "edge-ghost"); pulsev1.Verdict(g.LastVerdict) != pulsev1.Verdict_VERDICT_BLINDED {
		t.Fatalf("an agent that enrolled and never pulsed is %s, want BLINDED", pulsev1.Verdict(g.LastVerdict))
	}
	// It speaks again: trusted, no sticky failure.
	a.Challenge()
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.Time = timestampNow(e) }), trusted, pulsev1.Reason_REASON_OK)
}

// TestIsolationReachesTrustedAgents: an UNTRUSTED agent under a policy that
// isolates is quarantined (the address it enrolled and failed from, its
// own), and a trusted agent's directive stream gets it, signed for it.
func TestIsolationReachesTrustedAgents(t *testing.T) {
	// Two agent IDs on one TPM, each on its own address.
	withKey, pub := directiveKeyFile(t)
	e := newEnvCfg(t, "rhel8-uefi", both(ekBacks(2), withKey))
	if e == nil {
		return
	}
	dev := e.openTPM(e.sw)
	good := e.agentFrom("edge-good", dev, "127.0.0.2")
	if res := good.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	good.MeasureBinary()
	good.Challenge()
	wantVerdict(t, good.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	stream, err := good.Cl.Directives(ctx(t), &pulsev1.DirectivesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *pulsev1.Directive, 4)
	go func() {
		for {
			d, err := stream.Recv()
			if err != nil {
				close(got)
				return
			}
			got <- d
		}
	}()
	time.Sleep(300 * time.Millisecond)

	// Another agent fails (its binary was replaced on disk): the policy
	// isolates it, and the trusted agent is told to drop its address.
	bad := e.agentFrom("edge-bad", dev, "127.0.0.3")
	bad.Records, bad.SentUpTo, bad.Binary = good.Records, 0, good.Binary
	if res := bad.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	bad.Challenge()
	resp := bad.Pulse(func(p *parts) { p.Payload.AgentBinaryDiskSha256 = make([]byte, 32) })
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH)
	select {
	case d, ok := <-got:
		if !ok {
			t.Fatal("directive stream ended")
		}
		signed, err := directivesig.Open(pub, d, "edge-good")
		if err != nil {
			t.Fatalf("directive not signed for edge-good: %v", err)
		}
		q := signed.GetQuarantine()
		if q == nil || q.GetOffender() != "edge-bad" || len(q.GetAddresses()) != 1 || q.GetAddresses()[0] != "127.0.0.3" {
			t.Fatalf("directive %v", signed)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("trusted agent got no quarantine directive")
	}
	st := openStore(t, e)
	if qs, err := st.ListQuarantine(context.Background()); err != nil || len(qs) != 1 {
		t.Fatalf("quarantine %v %v", qs, err)
	}
}

func timestampNow(e *env) *timestamppb.Timestamp { return timestamppb.New(e.clock.Now()) }

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
