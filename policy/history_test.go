package policy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

const historyPolicy = `policy "shim" {
  match {
    partitions = ["shim"]
  }
  tpm = "required"
  on_failure {
    severity = 3
  }
  measured_boot {
    severity            = 1
    isolate             = true
    runtime_pcr_history = ["MokList", "MokListX"]
  }
}

policy "no-shim" {
  match {
    partitions = ["no-shim"]
  }
  tpm = "required"
  measured_boot {
    mode                = "warn"
    runtime_pcr_history = []
  }
}

policy "lab" {
  match {
    partitions = ["lab"]
  }
  tpm = "optional"
  measured_boot {
    runtime_pcr_history = []
  }
}
`

// Lines of the runtime_pcr_history attributes in historyPolicy.
const (
	lineHistoryShim   = 12
	lineHistoryNoShim = 23
)

// TestPolicyRuntimePCRHistory: runtime_pcr_history passes only the exact
// list, in order; unknown history, missing boot evidence and another bank
// fail; the section's mode, severity and isolate apply.
func TestPolicyRuntimePCRHistory(t *testing.T) {
	set := mustParse(t, "history.hcl", historyPolicy)
	const rule = "measured_boot.runtime_pcr_history"
	for _, tc := range []struct {
		name      string
		partition string
		history   []string
		noBoot    bool
		noTPM     bool
		bank      string
		// want is "" for a pass, else a substring of the one finding.
		want    string
		line    int
		mode    Mode
		skipped bool
	}{
		{name: "equal list passes", partition: "shim", history: []string{"MokList", "MokListX"}},
		{name: "extra name fails", partition: "shim", history: []string{"MokList", "MokListX", "MokListTrusted"},
			want: "measured [MokList, MokListX, MokListTrusted] into the runtime PCR before the OS, but this policy allows exactly [MokList, MokListX] (not allowed: MokListTrusted)"},
		{name: "missing name fails", partition: "shim", history: []string{"MokList"}, want: "(missing: MokListX)"},
		{name: "different order fails", partition: "shim", history: []string{"MokListX", "MokList"}, want: "(same names in another order)"},
		{name: "none where shim is expected fails", partition: "shim", history: []string{},
			want: "measured nothing into the runtime PCR before the OS, but this policy allows exactly [MokList, MokListX] (missing: MokList, MokListX)"},
		{name: "unknown history fails", partition: "shim", history: nil, want: "pre-OS history is unknown"},
		{name: "no firmware log fails", partition: "shim", noBoot: true, want: "no verified firmware event log, so " + rule + " cannot be checked"},
		{name: "other bank fails", partition: "shim", history: []string{"MokList", "MokListX"}, bank: "sha1", want: "verified in the sha1 bank"},
		{name: "empty list and none passes", partition: "no-shim", history: []string{}},
		{name: "empty list and a MOK name warns", partition: "no-shim", history: []string{"MokList"},
			want: "measured [MokList] into the runtime PCR before the OS, but this policy allows exactly nothing (not allowed: MokList)", mode: Warn},
		{name: "unknown history warns", partition: "no-shim", history: nil, want: "unknown", mode: Warn},
		{name: "no TPM under tpm optional is skipped", partition: "lab", noBoot: true, noTPM: true, skipped: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := goodEvidence()
			ev.Partition = tc.partition
			ev.Runtime = nil
			ev.Boot.RuntimePCRHistory = tc.history
			if tc.bank != "" {
				ev.Boot.Bank = tc.bank
			}
			if tc.noBoot {
				ev.Boot = nil
			}
			ev.TPM = !tc.noTPM
			res := set.Evaluate(ev, at(defaultRunAt))
			if res.Policy != tc.partition {
				t.Fatalf("selected %q", res.Policy)
			}
			if tc.skipped {
				if len(res.Findings) != 0 || len(res.Skipped) != 1 || res.Skipped[0].Rule != rule || res.Denied {
					t.Errorf("want %s skipped, got %+v", rule, res)
				}
				return
			}
			if tc.want == "" {
				if len(res.Findings) != 0 || res.Denied {
					t.Errorf("want a pass, got %v", res.Findings)
				}
				return
			}
			if len(res.Findings) != 1 {
				t.Fatalf("want one finding, got %v", res.Findings)
			}
			f := res.Findings[0]
			wantMode, wantLine, wantSev, wantIsolate := Enforce, lineHistoryShim, 1, true
			if tc.mode == Warn {
				wantMode, wantLine, wantSev, wantIsolate = Warn, lineHistoryNoShim, DefaultSeverity, false
			}
			if f.Rule != rule || f.File != "history.hcl" || f.Line != wantLine || f.Mode != wantMode ||
				f.Severity != wantSev || f.Isolate != wantIsolate || !strings.Contains(f.Message, tc.want) {
				t.Errorf("finding %+v\nwant rule %s at line %d, %s, severity %d, isolate %v, message containing %q",
					f, rule, wantLine, wantMode, wantSev, wantIsolate, tc.want)
			}
			if res.Denied != (wantMode == Enforce) || res.Isolate != (wantMode == Enforce) {
				t.Errorf("denied %v isolate %v", res.Denied, res.Isolate)
			}
		})
	}
}

// TestPolicyRuntimePCRHistoryParse: the attribute alone is a measured_boot
// rule; [] means none; the names keep their order.
func TestPolicyRuntimePCRHistoryParse(t *testing.T) {
	for src, want := range map[string][]string{
		`[]`:                              {},
		`["MokList", "MokListX"]`:         {"MokList", "MokListX"},
		`["MokSBState", "MokList"]`:       {"MokSBState", "MokList"},
		`["MokListTrusted", "MokPolicy"]`: {"MokListTrusted", "MokPolicy"},
	} {
		text := fmt.Sprintf("policy \"p\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n  measured_boot {\n    runtime_pcr_history = %s\n  }\n}\n", src)
		set, diags := Parse("p.hcl", []byte(text))
		if set == nil || len(diags) > 0 {
			t.Fatalf("%s: %s", src, DiagnosticsText(diags, nil))
		}
		mb := set.Policies()[0].MeasuredBoot
		h := mb.RuntimePCRHistory
		if h == nil || h.Names == nil || !slices.Equal(h.Names, want) {
			t.Fatalf("%s: parsed %+v", src, h)
		}
		if h.Name != "measured_boot.runtime_pcr_history" || h.Pos.Line != 7 || h.Pos.Column != 5 || h.Mode != Enforce || h.Severity != DefaultSeverity {
			t.Errorf("%s: rule %+v", src, h.Rule)
		}
		if mb.SecureBoot != nil || len(mb.Allow) != 0 {
			t.Errorf("%s: other rules appeared: %+v", src, mb)
		}
	}
	// Without the attribute there is no rule.
	set := mustParse(t, "sb.hcl", "policy \"p\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n  measured_boot {\n    secure_boot {}\n  }\n}\n")
	if set.Policies()[0].MeasuredBoot.RuntimePCRHistory != nil {
		t.Error("runtime_pcr_history rule without the attribute")
	}
}

// TestPolicyRuntimePCRHistoryEvidence: evidence files keep [] (none) apart
// from an absent field (unknown) and refuse names shim does not measure and
// repeated names.
func TestPolicyRuntimePCRHistoryEvidence(t *testing.T) {
	file := func(history string) []byte {
		h := ""
		if history != "" {
			h = `, "runtime_pcr_history": ` + history
		}
		return []byte(`{"version": 1, "tpm": true, "boot": {"bank": "sha256", "pcrs": {}, "secure_boot": null, "events": []` + h + `}}`)
	}
	for _, tc := range []struct {
		history string
		want    []string
		err     string
	}{
		{history: "", want: nil},
		{history: "null", want: nil},
		{history: "[]", want: []string{}},
		{history: `["MokList", "MokListX"]`, want: []string{"MokList", "MokListX"}},
		{history: `["MokList", "Shim"]`, err: `boot.runtime_pcr_history[1]: "Shim" is not a MOK variable`},
		{history: `["MokList\u0000"]`, err: `boot.runtime_pcr_history[0]: "MokList\x00" is not a MOK variable`},
		{history: `["MokListX", "MokList", "MokListX"]`, err: `boot.runtime_pcr_history[2]: "MokListX" is listed twice`},
		{history: `"MokList"`, err: "cannot unmarshal"},
	} {
		ev, err := ParseEvidence(file(tc.history))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.history, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.history, err)
		}
		got := ev.Boot.RuntimePCRHistory
		if (got == nil) != (tc.want == nil) || !slices.Equal(got, tc.want) {
			t.Errorf("%s: parsed %#v, want %#v", tc.history, got, tc.want)
		}
		// A round trip keeps none and unknown apart.
		out, err := MarshalEvidence(*ev)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseEvidence(out)
		if err != nil {
			t.Fatal(err)
		}
		if b := back.Boot.RuntimePCRHistory; (b == nil) != (tc.want == nil) || !slices.Equal(b, tc.want) {
			t.Errorf("%s: round trip gives %#v\n%s", tc.history, b, out)
		}
	}
}

// TestPolicyRuntimePCRHistoryFixtures: the real logs booted through shim
// (rhel8-uefi, ubuntu-2104-no-secure-boot) measured MokList and MokListX
// into PCR 14; the others nothing. A policy saying so passes exactly them,
// in both banks; a derived policy pins each device's own history.
func TestPolicyRuntimePCRHistoryFixtures(t *testing.T) {
	shim := map[string]bool{"rhel8-uefi": true, "ubuntu-2104-no-secure-boot": true}
	for _, bank := range []string{"sha256", "sha1"} {
		evs := loadFixtureEvidence(t, bank)
		for _, history := range []string{`["MokList", "MokListX"]`, `[]`} {
			src := fmt.Sprintf("policy \"p\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n  measured_boot {\n    bank = %q\n    runtime_pcr_history = %s\n  }\n}\n", bank, history)
			set := mustParse(t, "fixtures.hcl", src)
			for _, name := range sortedNames(evs) {
				want := shim[name] == (history != "[]")
				if res := set.Evaluate(*evs[name], fixtureTime); res.Denied == want {
					t.Errorf("%s/%s with runtime_pcr_history = %s: %v", bank, name, history, res.Findings)
				}
			}
		}
		for _, name := range sortedNames(evs) {
			text, err := Derive(*evs[name], DeriveOptions{})
			if err != nil {
				t.Fatal(err)
			}
			h := mustParse(t, "derived.hcl", string(text)).Policies()[0].MeasuredBoot.RuntimePCRHistory
			if h == nil || !slices.Equal(h.Names, evs[name].Boot.RuntimePCRHistory) {
				t.Errorf("%s/%s: derived %+v, evidence %v", bank, name, h, evs[name].Boot.RuntimePCRHistory)
			}
		}
	}
	// Evidence that does not know the history derives no rule, and says so.
	ev := *loadFixtureEvidence(t, "sha256")["rhel8-uefi"]
	boot := *ev.Boot
	boot.RuntimePCRHistory = nil
	ev.Boot = &boot
	text, err := Derive(ev, DeriveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if mustParse(t, "derived.hcl", string(text)).Policies()[0].MeasuredBoot.RuntimePCRHistory != nil ||
		!strings.Contains(string(text), "no runtime_pcr_history rule was derived") {
		t.Errorf("derived from unknown history:\n%s", text)
	}
}
