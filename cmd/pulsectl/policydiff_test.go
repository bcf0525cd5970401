package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/store"
)

func diffPolicy(allow ...string) string {
	q := make([]string, len(allow))
	for i, a := range allow {
		q[i] = fmt.Sprintf("%q", a)
	}
	return "policy \"fleet\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n  agent_binary {\n    allow = [" + strings.Join(q, ", ") + "]\n  }\n}\n"
}

// TestPolicyDiff: pulsectl policy diff reports, from the stored evidence,
// the agents whose verdict a candidate that tightens agent_binary would
// change, and nothing for the policy in force.
func TestPolicyDiff(t *testing.T) {
	dir := t.TempDir()
	cfgPath, cfg := writeVerifierConfig(t, dir)
	digA, digB := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte(diffPolicy(digA, digB)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, cfg.Store.Engine, cfg.Store.DSN)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Minute)
	for id, dig := range map[string]string{"edge-a": digA, "edge-b": digB, "edge-c": digA} {
		if err := st.EnrollAgent(ctx, &store.Agent{ID: id, Partition: "fleet", TPM: true, EnrolledAt: at}); err != nil {
			t.Fatal(err)
		}
		ev := policy.Evidence{AgentID: id, Partition: "fleet", TPM: true, Runtime: &policy.RuntimeEvidence{AgentBinarySHA256: dig, BPFPrograms: map[string]string{}}}
		b, err := verifier.EncodeEvidence(ev, store.MaxExplanationBytes)
		if err != nil {
			t.Fatal(err)
		}
		x := &store.Explanation{At: at, Verdict: int32(pulsev1.Verdict_VERDICT_TRUSTED), Reason: int32(pulsev1.Reason_REASON_OK), Policy: "fleet", Evidence: b}
		u := store.PulseUpdate{At: at, Verdict: x.Verdict, Reason: x.Reason, Explanation: x}
		if s, err := st.CommitPulse(ctx, id, 0, u); err != nil || s != store.NonceOK {
			t.Fatalf("%s: %v %v", id, s, err)
		}
	}
	st.Close()
	writeCandidate := func(src string) string {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, "fleet.hcl"), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := runPolicyDiff(append([]string{"--config", cfgPath}, args...), &out, &errb)
		return out.String(), errb.String(), code
	}

	// The policy in force as the candidate: no change, exit 0.
	out, stderr, code := run(writeCandidate(diffPolicy(digA, digB)))
	if code != 0 || !strings.Contains(out, "3 agents evaluated, 0 would change, 3 unchanged") {
		t.Fatalf("same policy: exit %d\n%s%s", code, out, stderr)
	}
	// Tightened: B no longer allowed. edge-b would be UNTRUSTED.
	cand := writeCandidate(diffPolicy(digA))
	out, stderr, code = run(cand)
	if code != 3 || !strings.Contains(out, "1 would change") || !strings.Contains(out, "edge-b") || strings.Contains(out, "edge-a ") ||
		!strings.Contains(out, "UNTRUSTED/POLICY_DENIED") || !strings.Contains(out, "agent_binary") {
		t.Fatalf("tightened: exit %d\n%s%s", code, out, stderr)
	}
	out, _, code = run("--json", cand)
	var rep verifier.DryRunReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 3 {
		t.Fatalf("json: %v %d %s", err, code, out)
	}
	if len(rep.Changed) != 1 || rep.Changed[0].AgentID != "edge-b" || rep.Changed[0].InForce.Verdict != "TRUSTED" || rep.Changed[0].Candidate.Reason != "POLICY_DENIED" {
		t.Fatalf("json report %+v", rep)
	}
	// A candidate that does not load: exit 1 with file:line.
	_, stderr, code = run(writeCandidate("policy \"x\" {\n  tpm = 3\n"))
	if code != 1 || !strings.Contains(stderr, "fleet.hcl:") {
		t.Fatalf("broken candidate: exit %d %s", code, stderr)
	}
	if _, _, code = run(); code != 2 {
		t.Fatalf("no candidate: exit %d", code)
	}
}
