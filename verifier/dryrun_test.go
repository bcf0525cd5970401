package verifier_test

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier"
)

func fleetSet(t *testing.T, tpm, sections string) *policy.Set {
	t.Helper()
	src := "policy \"fleet\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"" + tpm + "\"\n" + sections + "}\n"
	set, diags := policy.Parse("candidate/fleet.hcl", []byte(src))
	if diags.HasErrors() {
		t.Fatalf("candidate: %v", diags)
	}
	return set
}

// TestPolicyDryRun: real agents' stored evidence (swtpm quote and logs,
// an mTLS-only agent) judged by candidates: the same policy changes
// nothing; one tightening the agent_binary rule turns exactly the TPM
// agent UNTRUSTED with the rule's finding; one loosening tpm changes the
// mTLS-only agent's reason.
func TestPolicyDryRun(t *testing.T) {
	e, a, _ := explainEnv(t, "edge-dry")
	if e == nil {
		return
	}
	c := ctx(t)
	m := e.agent("lab-dry", nil)
	m.Partition = "lab"
	if res := m.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	m.Challenge()
	wantVerdict(t, m.Pulse(nil), untrusted, pulsev1.Reason_REASON_TPM_REQUIRED)
	// Enrolled, never verified: no evidence.
	if res := e.agent("edge-silent", nil).Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	st := openStore(t, e)
	inForce := fleetSet(t, "required", explainSections("edge-dry", ""))
	now := e.clock.Now()

	byID := func(r *verifier.DryRunReport) map[string]verifier.DryRunAgent {
		out := map[string]verifier.DryRunAgent{}
		for _, ch := range r.Changed {
			out[ch.AgentID] = ch
		}
		return out
	}
	// The policy in force: nothing changes.
	rep, err := verifier.DryRun(c, st, inForce, fleetSet(t, "required", explainSections("edge-dry", "")), now)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Evaluated != 2 || len(rep.Changed) != 0 || rep.Unchanged != 2 || rep.WithoutEvidence != 1 || rep.Unreadable != 0 {
		t.Fatalf("same policy: %+v", rep)
	}

	// Tightened: the agent's build is no longer allowed.
	other := sha256.Sum256([]byte("next build"))
	rep, err = verifier.DryRun(c, st, inForce, fleetSet(t, "required", explainSections("edge-dry", fmt.Sprintf("%q", hexOf(other[:])))), now)
	if err != nil {
		t.Fatal(err)
	}
	ch, ok := byID(rep)["edge-dry"]
	if len(rep.Changed) != 1 || !ok || ch.Current != "TRUSTED/OK" || ch.InForce.Verdict != "TRUSTED" ||
		ch.Candidate.Verdict != "UNTRUSTED" || ch.Candidate.Reason != "POLICY_DENIED" {
		t.Fatalf("tightened: %+v", rep)
	}
	var rule *policy.Finding
	for i, f := range ch.Candidate.Findings {
		if f.Rule == "agent_binary" && f.Mode == policy.Enforce {
			rule = &ch.Candidate.Findings[i]
		}
	}
	if rule == nil || !strings.Contains(rule.Message, hexOf(a.Binary[:])) || rule.File != "candidate/fleet.hcl" {
		t.Fatalf("tightened: candidate findings %+v", ch.Candidate.Findings)
	}

	// Loosened tpm: the mTLS-only agent is judged by the rules instead
	// (its evidence has no runtime measurement: agent_binary denies).
	rep, err = verifier.DryRun(c, st, inForce, fleetSet(t, "optional", explainSections("edge-dry", "")), now)
	if err != nil {
		t.Fatal(err)
	}
	ch, ok = byID(rep)["lab-dry"]
	if len(rep.Changed) != 1 || !ok || ch.InForce.Reason != "TPM_REQUIRED" || ch.Candidate.Reason != "POLICY_DENIED" || ch.Current != "UNTRUSTED/TPM_REQUIRED" {
		t.Fatalf("loosened: %+v", rep)
	}

	// A policy that selects nobody in "lab".
	set, diags := policy.Parse("c.hcl", []byte("policy \"edge\" {\n  match {\n    partitions = [\"fleet\"]\n  }\n  tpm = \"required\"\n"+explainSections("edge-dry", "")+"}\n"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	rep, err = verifier.DryRun(c, st, inForce, set, now)
	if err != nil {
		t.Fatal(err)
	}
	if ch, ok := byID(rep)["lab-dry"]; len(rep.Changed) != 1 || !ok || ch.Candidate.Reason != "NO_POLICY" {
		t.Fatalf("unselected: %+v", rep)
	}
}
