package policy

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

var update = flag.Bool("update", false, "rewrite golden files and generated test data")

// TestPolicyInvalidGolden: every file in testdata/invalid yields exactly the
// diagnostics (file:line:col, message, quoted line, caret) in its .golden.
func TestPolicyInvalidGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.hcl")
	if err != nil || len(files) < 11 {
		t.Fatalf("want at least 11 invalid files, got %d (%v)", len(files), err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".hcl"), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			set, diags := Parse(f, src)
			if set != nil || !diags.HasErrors() {
				t.Fatalf("invalid file loaded: set=%v diags=%v", set != nil, diags)
			}
			for _, d := range diags {
				if d.Severity == hcl.DiagError && (d.Subject == nil || d.Subject.Filename != f) {
					t.Errorf("error without a position in %s: %s", f, d.Summary)
				}
			}
			got := DiagnosticsText(diags, []Source{{Name: f, Bytes: src}})
			golden := strings.TrimSuffix(f, ".hcl") + ".golden"
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
				t.Errorf("diagnostics of %s differ from %s\n--- got ---\n%s--- want ---\n%s", f, golden, got, want)
			}
		})
	}
}

// TestPolicyExamplesLoad: every example loads without error or warning.
func TestPolicyExamplesLoad(t *testing.T) {
	files, err := filepath.Glob("examples/*.hcl")
	if err != nil || len(files) < 3 {
		t.Fatalf("want examples, got %d (%v)", len(files), err)
	}
	for _, f := range files {
		set, diags := LoadFiles(f)
		if set == nil || len(diags) > 0 {
			src, _ := os.ReadFile(f)
			t.Errorf("%s:\n%s", f, DiagnosticsText(diags, []Source{{Name: f, Bytes: src}}))
		}
	}
}
