package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

const fileA = `policy "canaries" {
  match {
    agents = ["gw-canary-*"]
  }
  tpm = "required"
  fortress {}
}
`

const fileB = `policy "everyone" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  fortress {}
}
`

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func errorSummaries(diags hcl.Diagnostics) string {
	var s []string
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			s = append(s, d.Summary)
		}
	}
	return strings.Join(s, " | ")
}

// TestPolicyLoadFiles: files load as one set in the given order; a
// directory loads its *.hcl files in lexical order; cross-file mistakes are
// reported with both positions.
func TestPolicyLoadFiles(t *testing.T) {
	dir := t.TempDir()
	a := write(t, dir, "10-canaries.hcl", fileA)
	b := write(t, dir, "20-everyone.hcl", fileB)
	write(t, dir, "README.md", "not a policy")

	set, diags := LoadFiles(a, b)
	if set == nil || len(diags) != 0 {
		t.Fatalf("a, b: %v", diags)
	}
	if got := set.Select("gw-canary-3", "x"); got == nil || got.Name != "canaries" || got.Pos.File != a || got.Pos.Line != 1 {
		t.Errorf("canary selected %+v", got)
	}
	if got := set.Files(); len(got) != 2 || got[0] != a || got[1] != b {
		t.Errorf("files %v", got)
	}

	fromDir, diags := LoadFiles(dir)
	if fromDir == nil || len(diags) != 0 || fromDir.Digest() != set.Digest() {
		t.Fatalf("directory: %v (digest %s vs %s)", diags, fromDir.Digest(), set.Digest())
	}

	// The other order makes the canary policy unreachable, in the other file.
	_, diags = LoadFiles(b, a)
	if !diags.HasErrors() || !strings.Contains(errorSummaries(diags), `policy "canaries" is unreachable`) ||
		diags[0].Subject.Filename != a || diags[0].Subject.Start.Line != 1 || !strings.Contains(diags[0].Detail, b+":1") {
		t.Errorf("b, a: %v", diags)
	}

	// The same name in two files.
	c := write(t, t.TempDir(), "dup.hcl", strings.Replace(fileA, "gw-canary-*", "db-*", 1))
	_, diags = LoadFiles(a, c)
	if !strings.Contains(errorSummaries(diags), `duplicate policy name "canaries"`) || diags[0].Subject.Filename != c ||
		!strings.Contains(diags[0].Detail, a+":1") {
		t.Errorf("duplicate across files: %v", diags)
	}
}

// TestPolicyFailClosed: nothing to load is always an error, never an empty
// set that would select nobody (or everybody).
func TestPolicyFailClosed(t *testing.T) {
	dir, dir2 := t.TempDir(), t.TempDir()
	cases := map[string][]string{
		"no paths":       {},
		"missing file":   {filepath.Join(dir, "nope.hcl")},
		"empty dir":      {dir},
		"empty file":     {write(t, t.TempDir(), "e.hcl", "")},
		"whitespace":     {write(t, t.TempDir(), "w.hcl", "\n\n   \n")},
		"comments only":  {write(t, t.TempDir(), "c.hcl", "# policy \"x\" {}\n// nothing\n/* here */\n")},
		"listed twice":   {write(t, dir2, "x.hcl", fileA), filepath.Join(dir2, "x.hcl")},
		"one bad of two": {write(t, t.TempDir(), "ok.hcl", fileA), write(t, t.TempDir(), "bad.hcl", "policy \"x\" {")},
	}
	for name, paths := range cases {
		set, diags := LoadFiles(paths...)
		if set != nil || !diags.HasErrors() {
			t.Errorf("%s: loaded (set=%v, diags=%v)", name, set != nil, diags)
		}
		for _, d := range diags {
			if d.Severity == hcl.DiagError && d.Summary == "" {
				t.Errorf("%s: empty diagnostic", name)
			}
		}
	}
	if set, diags := Load(nil); set != nil || !diags.HasErrors() {
		t.Error("Load(nil) succeeded")
	}
}

// TestPolicyDigest: the digest changes with any byte of the files and with
// their order, and not with where the files live.
func TestPolicyDigest(t *testing.T) {
	s1 := mustParse(t, "a.hcl", fileA)
	s2 := mustParse(t, "/elsewhere/a.hcl", fileA)
	s3 := mustParse(t, "a.hcl", fileA+"\n")
	if s1.Digest() != s2.Digest() {
		t.Error("digest depends on the directory")
	}
	if s1.Digest() == s3.Digest() {
		t.Error("digest ignores content")
	}
	ab, _ := Load([]Source{{"a.hcl", []byte(fileA)}, {"b.hcl", []byte(fileB)}})
	ba, _ := Load([]Source{{"b.hcl", []byte(strings.Replace(fileB, `["*"]`, `["x"]`, 1))}, {"a.hcl", []byte(fileA)}})
	if ab == nil || ba == nil || ab.Digest() == ba.Digest() {
		t.Error("digest ignores order or content")
	}
}

// TestPolicyWarnings: a policy that checks nothing but the TPM loads with a
// warning, which check prints as such.
func TestPolicyWarnings(t *testing.T) {
	src := "policy \"bare\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n}\n"
	set, diags := Parse("bare.hcl", []byte(src))
	if set == nil || len(diags) != 1 || diags[0].Severity != hcl.DiagWarning {
		t.Fatalf("set=%v diags=%v", set != nil, diags)
	}
	text := DiagnosticsText(diags, []Source{{"bare.hcl", []byte(src)}})
	if !strings.HasPrefix(text, `bare.hcl:1:8: warning: policy "bare" has no rules;`) {
		t.Errorf("warning text:\n%s", text)
	}
}

// TestPolicyLoadError: the error the watcher keeps formats the first error.
func TestPolicyLoadError(t *testing.T) {
	src := []byte("policy \"x\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"maybe\"\n  clock_skew = \"1y\"\n}\n")
	_, diags := Parse("x.hcl", src)
	err := error(&LoadError{Diags: diags, Text: DiagnosticsText(diags, nil)})
	var le *LoadError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), `x.hcl:5:9: error: bad tpm mode "maybe"`) ||
		!strings.Contains(err.Error(), "and 1 more errors") {
		t.Errorf("%v", err)
	}
}

// TestPolicyDiagnosticFormat: carets line up under tabs and multi-byte
// text, and a range running past its line is cut at the line's end.
func TestPolicyDiagnosticFormat(t *testing.T) {
	src := []byte("policy \"e\" { # é\n\tmatch {\n\t\tagents = [\"*\"]\n\t}\n\ttpm = \"é-optional\"\n}\n")
	_, diags := Parse("t.hcl", src)
	text := DiagnosticsText(diags, []Source{{"t.hcl", src}})
	want := "t.hcl:5:8: error: bad tpm mode \"é-optional\"; tpm is \"required\", \"optional\" or \"none\"; did you mean \"optional\"?\n" +
		"  5 | \ttpm = \"é-optional\"\n" +
		"    | \t      ^^^^^^^^^^^^\n"
	if text != want {
		t.Errorf("got:\n%q\nwant:\n%q", text, want)
	}
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "s", Subject: &hcl.Range{Filename: "t.hcl",
		Start: hcl.Pos{Line: 2, Column: 2, Byte: 19}, End: hcl.Pos{Line: 4, Column: 1, Byte: 40}}}
	text = DiagnosticsText(hcl.Diagnostics{d}, []Source{{"t.hcl", src}})
	if !strings.HasSuffix(text, "  2 | \tmatch {\n    | \t^^^^^^^\n") {
		t.Errorf("multi-line range:\n%s", text)
	}
	if got := DiagnosticsText(hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "no file"}}, nil); got != "error: no file\n" {
		t.Errorf("no subject: %q", got)
	}
}
