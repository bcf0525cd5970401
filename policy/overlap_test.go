package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// TestGlobIntersect: both sides — patterns that share a name give one both
// match; patterns that share none give nothing.
func TestGlobIntersect(t *testing.T) {
	tests := []struct {
		a, b string
		ok   bool
		want string // "" with ok: any name both match
	}{
		{"*-lab", "kiosk-*", true, "kiosk-lab"},
		{"kiosk-*", "*-lab", true, "kiosk-lab"},
		{"*", "kiosk-1", true, "kiosk-1"},
		{"gw-*", "gw-1?", true, ""},
		{"edge-*", "*-eu", true, "edge-eu"},
		{"[a-c]*", "b?", true, ""},
		{"[!a-z]*", "?x", true, ""},
		{`\*lit`, "*lit", true, "*lit"},
		{"kiosk-*", "lab-*", false, ""},
		{"a?", "a", false, ""},
		{"[a-c]*", "[d-f]*", false, ""},
		{"*-lab", "*-gpu", false, ""},
		{"x*y", "*z", false, ""},
		{"[", "*", false, ""}, // malformed: matches nothing
	}
	for _, tc := range tests {
		t.Run(tc.a+"&"+tc.b, func(t *testing.T) {
			got, ok := GlobIntersect(tc.a, tc.b)
			if ok != tc.ok {
				t.Fatalf("GlobIntersect(%q, %q) = %q, %v; want ok=%v", tc.a, tc.b, got, ok, tc.ok)
			}
			if !ok {
				return
			}
			if !Glob(tc.a, got) || !Glob(tc.b, got) {
				t.Errorf("example %q does not match both %q and %q", got, tc.a, tc.b)
			}
			if tc.want != "" && got != tc.want {
				t.Errorf("example %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPolicyOverlapGolden: each directory of testdata/overlap loads as one
// set and Overlaps yields exactly the warnings in its .golden (empty when
// the set only has covers, disjoint matches or overlaps inside one file).
func TestPolicyOverlapGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/overlap/*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, dir := range dirs {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			continue
		}
		n++
		t.Run(filepath.Base(dir), func(t *testing.T) {
			set, diags := LoadFiles(dir)
			if set == nil || len(diags) > 0 {
				t.Fatalf("%s does not load cleanly:\n%s", dir, DiagnosticsText(diags, nil))
			}
			over := set.Overlaps()
			for _, d := range over {
				if d.Severity != hcl.DiagWarning || d.Subject == nil || d.Subject.Start.Line == 0 {
					t.Errorf("overlap is not a positioned warning: %+v", d)
				}
			}
			got := DiagnosticsText(over, set.Sources())
			golden := dir + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./policy -run Golden -update)", err)
			}
			if got != string(want) {
				t.Errorf("overlaps of %s differ from %s\n--- got ---\n%s--- want ---\n%s", dir, golden, got, want)
			}
		})
	}
	if n < 3 {
		t.Fatalf("want at least 3 overlap cases, got %d", n)
	}
}

// TestPolicyOverlapSameFile: the same two matches in one file are not
// reported (the order is written down), in two files they are.
func TestPolicyOverlapSameFile(t *testing.T) {
	kiosk := "policy \"kiosk\" {\n  match {\n    agents = [\"kiosk-*\"]\n  }\n  tpm = \"required\"\n  measured_boot {\n    secure_boot {}\n  }\n}\n"
	lab := "policy \"lab\" {\n  match {\n    agents = [\"*-lab\"]\n  }\n  tpm = \"optional\"\n  measured_boot {\n    secure_boot {}\n  }\n}\n"
	one, diags := Load([]Source{{Name: "one.hcl", Bytes: []byte(kiosk + lab)}})
	if one == nil {
		t.Fatal(DiagnosticsText(diags, nil))
	}
	if d := one.Overlaps(); len(d) != 0 {
		t.Errorf("one file: %s", DiagnosticsText(d, nil))
	}
	two, diags := Load([]Source{{Name: "a.hcl", Bytes: []byte(kiosk)}, {Name: "b.hcl", Bytes: []byte(lab)}})
	if two == nil {
		t.Fatal(DiagnosticsText(diags, nil))
	}
	d := two.Overlaps()
	if len(d) != 1 || d[0].Subject.Filename != "b.hcl" || !strings.Contains(d[0].Summary, "a.hcl:1") ||
		!strings.Contains(d[0].Detail, `"kiosk-lab"`) {
		t.Errorf("two files: %s", DiagnosticsText(d, nil))
	}
	var nilSet *Set
	if nilSet.Overlaps() != nil {
		t.Error("nil set has overlaps")
	}
}
