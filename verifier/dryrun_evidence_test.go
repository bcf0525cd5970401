package verifier_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// explainSections is the fleet policy's body of explainEnv: the agent's
// default build allowed (and extra digests).
func explainSections(id string, extra string) string {
	build := sha256.Sum256([]byte("pulse-agent build for " + id))
	allow := fmt.Sprintf("%q", hexOf(build[:]))
	if extra != "" {
		allow = extra
	}
	return fmt.Sprintf("  measured_boot {\n    secure_boot {}\n  }\n  agent_binary {\n    allow = [%s]\n  }\n  fortress {\n    mode = \"warn\"\n  }\n", allow)
}

const explainToken = "explain-admin-0123456789abcdef"

// explainEnv: a real verifier (swtpm, gRPC over mTLS, admin listener) with
// a fleet policy allowing one agent binary and requiring Fortress, and one
// enrolled agent that is TRUSTED.
func explainEnv(t *testing.T, id string) (*env, *verifiertest.Client, *admin.Client) {
	t.Helper()
	pol := fleetPolicy(t, explainSections(id, ""))
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
		pol(c)
		c.AdminListen = "127.0.0.1:0"
		c.AdminTokenFile = filepath.Join(filepath.Dir(c.TLS.AgentCA), "admin-token")
		if err := os.WriteFile(c.AdminTokenFile, []byte("alice:"+explainToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if e == nil {
		return nil, nil, nil
	}
	a := e.agent(id, e.openTPM(e.sw))
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	a.MeasureBinary()
	a.Measure(&cel.EBPFProgram{Name: "fortress_task_kill", ProgramType: "lsm", AttachPoint: "lsm/task_kill", Tag: fortressTestTag, KernelRelease: "test"})
	setFortress(a, true)
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	cl, err := admin.NewClient(admin.ClientOptions{URL: "https://" + e.daemon.AdminAddr(), CAFile: e.caFile, ServerName: "localhost", Token: explainToken})
	if err != nil {
		t.Fatal(err)
	}
	return e, a, cl
}

func findingOf(fs []admin.Finding, rule string) *admin.Finding {
	for i := range fs {
		if fs[i].Rule == rule {
			return &fs[i]
		}
	}
	return nil
}

// TestAgentDetailExplainsVerdict: the admin API's agent detail returns the
// stored findings of the last verdict (expected vs. seen) and the verified
// evidence of the last verified pulse; a pulse that fails before its
// evidence verifies keeps the last verified evidence, and a rejected
// replay changes nothing.
func TestAgentDetailExplainsVerdict(t *testing.T) {
	e, a, cl := explainEnv(t, "edge-explain")
	if e == nil {
		return
	}
	c := ctx(t)
	build := a.Binary
	d, err := cl.GetAgent(c, "edge-explain")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Agent.EKSHA256) != 64 || d.Agent.AKName == "" || d.Agent.EnrolledAt.IsZero() {
		t.Fatalf("identity: ek %q ak %q enrolled %v", d.Agent.EKSHA256, d.Agent.AKName, d.Agent.EnrolledAt)
	}
	if d.Agent.Verdict != "TRUSTED" || len(d.Agent.Findings) != 0 || d.Agent.Policy != "fleet" {
		t.Fatalf("honest agent: verdict %s findings %v policy %q", d.Agent.Verdict, d.Agent.Findings, d.Agent.Policy)
	}
	var ev policy.Evidence
	if err := json.Unmarshal(d.Agent.Evidence, &ev); err != nil {
		t.Fatalf("evidence %s: %v", d.Agent.Evidence, err)
	}
	if !ev.TPM || ev.Runtime == nil || ev.Runtime.AgentBinarySHA256 != hexOf(build[:]) || ev.Boot == nil || len(ev.Boot.PCRs) == 0 || !d.Agent.EvidenceComplete {
		t.Fatalf("honest evidence: %s", d.Agent.Evidence)
	}

	// The same evidence again: not written again (verified unchanged
	// since the first pulse that showed it).
	// (The first pulse's evidence had no last-known-good binary yet.)
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	d, _ = cl.GetAgent(c, "edge-explain")
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	again, err := cl.GetAgent(c, "edge-explain")
	if err != nil || !again.Agent.EvidenceAt.Equal(d.Agent.EvidenceAt) || !again.Agent.FindingsAt.Equal(d.Agent.FindingsAt) {
		t.Fatalf("unchanged evidence rewritten: at %v, was %v (%v)", again.Agent.EvidenceAt, d.Agent.EvidenceAt, err)
	}

	// Fortress off (warn): TRUSTED with a stored warn finding.
	setFortress(a, false)
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	d, _ = cl.GetAgent(c, "edge-explain")
	if f := findingOf(d.Agent.Findings, "fortress"); f == nil || f.Enforce || f.Expected != "Fortress active" || f.Seen != "Fortress not active" {
		t.Fatalf("warn finding %+v in %+v", f, d.Agent.Findings)
	}
	setFortress(a, true)

	// An implant: UNTRUSTED, the failing rule with expected vs. seen.
	a.Binary = sha256.Sum256([]byte("implant"))
	a.MeasureBinary()
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	d, err = cl.GetAgent(c, "edge-explain")
	if err != nil {
		t.Fatal(err)
	}
	f := findingOf(d.Agent.Findings, "agent_binary")
	if d.Agent.Verdict != "UNTRUSTED" || f == nil || !f.Enforce || f.File == "" || f.Line == 0 {
		t.Fatalf("denied agent: %s findings %+v", d.Agent.Verdict, d.Agent.Findings)
	}
	if !strings.Contains(f.Expected, hexOf(build[:])[:16]) || !strings.Contains(f.Seen, hexOf(a.Binary[:])[:16]) {
		t.Fatalf("agent_binary finding expected %q seen %q", f.Expected, f.Seen)
	}
	if err := json.Unmarshal(d.Agent.Evidence, &ev); err != nil || ev.Runtime.AgentBinarySHA256 != hexOf(a.Binary[:]) {
		t.Fatalf("denied pulse's evidence not stored: %s", d.Agent.Evidence)
	}
	evidenceAt := d.Agent.EvidenceAt

	// A pulse whose quote does not verify (a forged PCR digest): rejected
	// before any evidence verified; the stored evidence stays the last
	// verified one, the findings are the new verdict's (none).
	a.Challenge()
	resp := a.Pulse(func(p *parts) {
		p.After = func(r *pulsev1.PulseRequest) { r.Quote.Signature[len(r.Quote.Signature)-1] ^= 1 }
	})
	if resp.GetVerdict() != untrusted {
		t.Fatalf("forged quote: %v", resp)
	}
	d, _ = cl.GetAgent(c, "edge-explain")
	if !d.Agent.EvidenceAt.Equal(evidenceAt) || len(d.Agent.Findings) != 0 {
		t.Fatalf("after a forged quote: evidence at %v (was %v), findings %+v", d.Agent.EvidenceAt, evidenceAt, d.Agent.Findings)
	}

	// Bounded per agent.
	st := openStore(t, e)
	avg, mx, err := st.ExplanationBytes(c)
	if err != nil || mx == 0 || mx > store.MaxExplanationBytes {
		t.Fatalf("stored explanation bytes avg %.0f max %d: %v", avg, mx, err)
	}
	t.Logf("stored explanation: %.0f bytes on average, %d at most", avg, mx)
}
