package policy

import (
	"strings"
	"testing"
)

const clockPolicy = `policy "edge" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  clock {
    require_synchronized = true
    max_error            = "500ms"
    mode                 = "MODE"
  }
}
`

// TestPolicyClock: clock { require_synchronized, max_error } judges the
// clock discipline the pulse reports, warn or enforce like every rule; a
// pulse that reports none, or could not read it, fails the rule.
func TestPolicyClock(t *testing.T) {
	synced := &ClockEvidence{Synchronized: true, MaxErrorUs: 120_000, EstErrorUs: 3_000}
	for _, c := range []struct {
		name  string
		clock *ClockEvidence
		want  []string // finding messages, in order; none: accepted
	}{
		{"synchronised within max_error", synced, nil},
		{"at max_error", &ClockEvidence{Synchronized: true, MaxErrorUs: 500_000}, nil},
		{"unsynchronised (TIME_ERROR, the kernel's 16 s)", &ClockEvidence{MaxErrorUs: 16_000_000, EstErrorUs: 16_000_000},
			[]string{"reports its clock unsynchronised", "may be off by up to 16s"}},
		{"synchronised but too loose", &ClockEvidence{Synchronized: true, MaxErrorUs: 750_000}, []string{"may be off by up to 750ms (the kernel's maximum error), more than max_error 500ms"}},
		{"unsynchronised within max_error", &ClockEvidence{MaxErrorUs: 1_000}, []string{"reports its clock unsynchronised"}},
		{"not reported", nil, []string{"reports nothing about the agent's clock discipline"}},
		{"could not read", &ClockEvidence{Error: "adjtimex: operation not permitted"}, []string{"could not read its clock discipline: adjtimex"}},
	} {
		for _, mode := range []string{"enforce", "warn"} {
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				set := mustParse(t, "edge.hcl", strings.Replace(clockPolicy, "MODE", mode, 1))
				res := set.Evaluate(Evidence{AgentID: "e-1", TPM: true, Clock: c.clock}, at(defaultRunAt))
				if len(res.Findings) != len(c.want) {
					t.Fatalf("findings %+v, want %q", res.Findings, c.want)
				}
				for i, f := range res.Findings {
					if f.Rule != "clock" || f.Line != 6 || f.Mode.String() != mode || !strings.Contains(f.Message, c.want[i]) {
						t.Fatalf("finding %d %+v, want clock (edge.hcl:6, %s) %q", i, f, mode, c.want[i])
					}
				}
				if wantDenied := len(c.want) > 0 && mode == "enforce"; res.Denied != wantDenied {
					t.Fatalf("denied %t, want %t", res.Denied, wantDenied)
				}
			})
		}
	}
	// Only what the block asks is judged.
	only := mustParse(t, "only.hcl", strings.Replace(strings.Replace(clockPolicy, "    require_synchronized = true\n", "", 1), "MODE", "enforce", 1))
	if res := only.Evaluate(Evidence{AgentID: "e-1", TPM: true, Clock: &ClockEvidence{MaxErrorUs: 100}}, at(defaultRunAt)); res.Denied {
		t.Fatalf("max_error alone denied an unsynchronised clock within it: %+v", res.Findings)
	}
	// No clock block: no clock rule.
	none := mustParse(t, "none.hcl", strings.Replace(clockPolicy, "  clock {\n    require_synchronized = true\n    max_error            = \"500ms\"\n    mode                 = \"MODE\"\n  }\n", "", 1))
	if res := none.Evaluate(Evidence{AgentID: "e-1", TPM: true}, at(defaultRunAt)); len(res.Findings) != 0 {
		t.Fatalf("findings without a clock block: %+v", res.Findings)
	}
}

// TestPolicyClockEvidenceFile: the clock state round-trips through the
// evidence file format pulsectl policy test reads.
func TestPolicyClockEvidenceFile(t *testing.T) {
	ev := Evidence{AgentID: "e-1", TPM: true, Clock: &ClockEvidence{Synchronized: true, MaxErrorUs: 4_500, EstErrorUs: 120}}
	b, err := MarshalEvidence(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"max_error_us": 4500`) {
		t.Fatalf("evidence file lacks the clock: %s", b)
	}
	got, err := ParseEvidence(b)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Clock != *ev.Clock {
		t.Fatalf("clock %+v after a round trip, want %+v", got.Clock, ev.Clock)
	}
}
