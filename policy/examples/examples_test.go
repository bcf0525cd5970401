// Package examples_test checks the example policies against the rules the
// project holds its own policies to.
package examples_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/policy"
)

// TestSecureBootRulesEnforced: a rule about Secure Boot or PCR 7 in warn
// mode reports a device booted with Secure Boot off and then trusts it.
// Examples are copied into production, so every such rule in them must be
// enforced: secure_boot, pcr "7", and allow/forbid blocks restricted to
// PCR 7.
func TestSecureBootRulesEnforced(t *testing.T) {
	files, err := filepath.Glob("*.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	checked := 0
	for _, f := range files {
		set, diags := policy.LoadFiles(f)
		if set == nil || diags.HasErrors() {
			t.Fatalf("%s: %v", f, diags)
		}
		for _, p := range set.Policies() {
			mb := p.MeasuredBoot
			if mb == nil {
				continue
			}
			var rules []policy.Rule
			if mb.SecureBoot != nil {
				rules = append(rules, *mb.SecureBoot)
			}
			for _, r := range mb.PCRs {
				if r.Index == 7 {
					rules = append(rules, r.Rule)
				}
			}
			for _, c := range append(append([]policy.Components(nil), mb.Allow...), mb.Forbid...) {
				if slices.Contains(c.PCRs, 7) {
					rules = append(rules, c.Rule)
				}
			}
			for _, r := range rules {
				checked++
				if r.Mode != policy.Enforce {
					t.Errorf("%s: policy %q: rule %s is %s, want enforce", r.Pos, p.Name, r.Name, r.Mode)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no Secure Boot or PCR 7 rule in the examples")
	}
}

// TestRuntimePCRHistoryMatchesFixtures: the examples pinned to a boot chain
// state the runtime PCR history of the real log they were written from
// (policy/testdata/evidence): payment-terminals the shim boot of rhel8-uefi,
// legacy-sha1 the Debian 10 scanners' boot, which measures nothing into PCR 14.
func TestRuntimePCRHistoryMatchesFixtures(t *testing.T) {
	const rule = "measured_boot.runtime_pcr_history"
	for _, tc := range []struct {
		file, policy string
		pass, fail   string // evidence under ../testdata/evidence
	}{
		{"production.hcl", "payment-terminals", "sha256/rhel8-uefi", "sha256/arch-linux-workstation"},
		{"legacy-and-no-tpm.hcl", "legacy-sha1", "sha1/debian-10", "sha1/rhel8-uefi"},
	} {
		set, diags := policy.LoadFiles(tc.file)
		if set == nil {
			t.Fatalf("%s: %v", tc.file, diags)
		}
		p := set.Policy(tc.policy)
		if p == nil || p.MeasuredBoot == nil || p.MeasuredBoot.RuntimePCRHistory == nil {
			t.Fatalf("%s: policy %q has no runtime_pcr_history", tc.file, tc.policy)
		}
		for _, ev := range []string{tc.pass, tc.fail} {
			e, err := policy.LoadEvidence(filepath.Join("..", "testdata", "evidence", ev+".json"))
			if err != nil {
				t.Fatal(err)
			}
			failed := false
			for _, f := range p.Evaluate(*e, time.Now()).Findings {
				failed = failed || f.Rule == rule
			}
			if failed != (ev == tc.fail) {
				t.Errorf("%s: policy %q on %s: %s failed = %v", tc.file, tc.policy, ev, rule, failed)
			}
		}
	}
}
