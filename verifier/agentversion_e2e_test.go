package verifier_test

import (
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// TestAgentVersionShown: the version a verified pulse reports reaches the
// admin API (dashboard) sanitised; a pulse refused for a bad signature
// does not change it.
func TestAgentVersionShown(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	a := e.agent("edge-version", e.openTPM(e.sw))
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatalf("enroll: %s %s", res.GetReason(), res.GetMessage())
	}
	a.MeasureBinary()
	a.Challenge()
	backend := verifier.AdminBackend{V: e.daemon.Verifier}
	shown := func() string {
		t.Helper()
		d, err := backend.GetAgent(ctx(t), "edge-version")
		if err != nil {
			t.Fatal(err)
		}
		list, err := backend.ListAgents(ctx(t))
		if err != nil || len(list) != 1 || list[0].AgentVersion != d.AgentVersion {
			t.Fatalf("list %+v (%v) disagrees with detail %q", list, err, d.AgentVersion)
		}
		return d.AgentVersion
	}
	if v := shown(); v != "" {
		t.Fatalf("version %q before any pulse", v)
	}

	resp := a.Pulse(func(p *verifiertest.Parts) { p.Payload.AgentVersion = "v0.4.0+b6d9127a0c1e" })
	wantVerdict(t, resp, trusted, pulsev1.Reason_REASON_OK)
	if v := shown(); v != "v0.4.0+b6d9127a0c1e" {
		t.Fatalf("version %q after a verified pulse", v)
	}

	// Another agent's key signs: refused, the version stays.
	b := e.agent("edge-other", nil)
	a.Challenge()
	resp = a.Pulse(func(p *verifiertest.Parts) { p.Payload.AgentVersion = "v6.6.6"; p.Signer = b.Cert })
	wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_BAD_SIGNATURE)
	if v := shown(); v != "v0.4.0+b6d9127a0c1e" {
		t.Fatalf("a refused pulse changed the version to %q", v)
	}

	// Terminal escapes and markup from the agent are neutralised.
	a.Challenge()
	resp = a.Pulse(func(p *verifiertest.Parts) { p.Payload.AgentVersion = "v1\x1b[2J <b>" })
	wantVerdict(t, resp, trusted, pulsev1.Reason_REASON_OK)
	if v := shown(); v != "v1?[2J?<b>" {
		t.Fatalf("version %q, want the sanitised v1?[2J?<b>", v)
	}
}
