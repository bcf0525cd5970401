package verifier_test

import (
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/admin"
)

// TestExplorerAPI: a real verifier's explorer endpoints: the policy in
// force with the agents it selects, verdict counts over time, a candidate
// dry-run uploaded over the API (a tightened rule changes the agent, a
// broken file is 400 with file:line), and an acknowledgement whose note
// goes on the audit record.
func TestExplorerAPI(t *testing.T) {
	e, a, cl := explainEnv(t, "edge-explore")
	if e == nil {
		return
	}
	c := ctx(t)
	ps, err := cl.PolicyStatus(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps.Policies) != 1 || ps.Policies[0].Name != "fleet" || ps.Policies[0].Agents != 1 || ps.Digest == "" || ps.Failing || len(ps.Files) != 1 {
		t.Fatalf("policy status %+v", ps)
	}

	// The implant: TRUSTED → UNTRUSTED, recorded as a change.
	a.Binary[0] ^= 0xff
	a.MeasureBinary()
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_POLICY_DENIED)
	s, err := cl.VerdictSeries(c, "hour")
	if err != nil {
		t.Fatal(err)
	}
	last := len(s.At) - 1
	if len(s.At) != 60 || s.Counts["UNTRUSTED"] == nil || s.Counts["UNTRUSTED"][last] != 1 {
		t.Fatalf("series: %d points, counts %v", len(s.At), s.Counts)
	}
	var apiErr *admin.APIError
	if _, err := cl.VerdictSeries(c, "century"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
		t.Fatalf("bad window: %v", err)
	}

	// Dry-run: agent_binary only warning would make it TRUSTED again.
	sections := strings.Replace(explainSections("edge-explore", ""), "agent_binary {\n", "agent_binary {\n    mode = \"warn\"\n", 1)
	cand := "policy \"fleet\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n" + sections + "}\n"
	r, err := cl.DryRun(c, []admin.PolicyFile{{Name: "fleet.hcl", Content: cand}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Evaluated != 1 || len(r.Changed) != 1 || r.Changed[0].AgentID != "edge-explore" || r.Changed[0].InForce != "UNTRUSTED/POLICY_DENIED" || r.Changed[0].Candidate != "TRUSTED/OK" {
		t.Fatalf("dry-run %+v", r)
	}
	for name, files := range map[string][]admin.PolicyFile{
		"broken":      {{Name: "fleet.hcl", Content: "policy \"x\" {\n  tpm = 3\n"}},
		"path":        {{Name: "../etc/x.hcl", Content: cand}},
		"not hcl":     {{Name: "fleet.txt", Content: cand}},
		"no files":    {},
		"twice named": {{Name: "a.hcl", Content: cand}, {Name: "a.hcl", Content: cand}},
	} {
		_, err := cl.DryRun(c, files)
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
			t.Errorf("%s: %v, want 400", name, err)
		}
		if name == "broken" && !strings.Contains(apiErr.Message, "fleet.hcl:") {
			t.Errorf("broken candidate: %q names no file:line", apiErr.Message)
		}
	}

	// The replica's health counters.
	hs, err := cl.HealthSummary(c)
	if err != nil {
		t.Fatal(err)
	}
	if hs.Pulses < 2 || hs.VerificationCount < 2 || len(hs.Buckets) == 0 || hs.Buckets[len(hs.Buckets)-1].Count > hs.VerificationCount {
		t.Fatalf("health %+v", hs)
	}

	// Acknowledge with a note: on the audit record.
	al, err := cl.ListAlerts(c, admin.AlertFilter{AgentID: "edge-explore", OpenOnly: true, Limit: 10})
	if err != nil || len(al.Alerts) == 0 {
		t.Fatalf("alerts %v %v", al, err)
	}
	if _, err := cl.AckAlertNote(c, al.Alerts[0].ID, "bad\x1bnote"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
		t.Fatalf("note with a control character: %v", err)
	}
	if _, err := cl.AckAlertNote(c, al.Alerts[0].ID, "implant under investigation, ticket 42"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the note on the audit record", func() bool {
		b, err := os.ReadFile(e.dir + "/audit.log")
		return err == nil && strings.Contains(string(b), "implant under investigation, ticket 42")
	})

	// The audit chain: whole, then broken by an edit of its first record.
	as, err := cl.AuditStatus(c)
	if err != nil || !as.Configured || !as.Whole || as.VerifiedUpTo < 2 || len(as.LastHash) != 64 || as.Problem != "" {
		t.Fatalf("audit status %+v %v", as, err)
	}
	raw, err := os.ReadFile(e.dir + "/audit.log")
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(raw), "POLICY_DENIED", "POLICY_DENIEZ", 1)
	if edited == string(raw) {
		t.Fatal("nothing to edit in the audit log")
	}
	if err := os.WriteFile(e.dir+"/audit.log", []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	as, err = cl.AuditStatus(c)
	if err != nil || as.Whole || as.Problem == "" || as.VerifiedUpTo != 0 {
		t.Fatalf("audit status after an edit of record 1: %+v %v", as, err)
	}
}
