// Package examples_test checks the example policies against the rules the
// project holds its own policies to.
package examples_test

import (
	"path/filepath"
	"slices"
	"testing"

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
