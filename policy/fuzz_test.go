package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary bytes to the parser. It must never panic; what
// loads must be internally consistent (a digest, selectable policies with
// positions, an evaluation that does not panic on empty or full evidence);
// what does not load must say where.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"examples/*.hcl", "testdata/invalid/*.hcl", "testdata/suite/*.hcl"} {
		files, _ := filepath.Glob(pattern)
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte(evalPolicy))
	f.Add([]byte("policy \"a\" {\n match { agents = [\"[\\\\]*?\"] }\n tpm = \"none\"\n}\n"))
	full := goodEvidence()
	full.Runtime.PreviousAgentBinarySHA256 = dAgent2
	f.Fuzz(func(t *testing.T, src []byte) {
		set, diags := Parse("fuzz.hcl", src)
		text := DiagnosticsText(diags, []Source{{Name: "fuzz.hcl", Bytes: src}})
		if set == nil {
			if !diags.HasErrors() {
				t.Fatal("nil set without an error")
			}
			if !strings.Contains(text, "error") {
				t.Fatalf("errors not formatted: %q", text)
			}
			return
		}
		if diags.HasErrors() || len(set.Digest()) != 64 || len(set.Policies()) == 0 {
			t.Fatalf("inconsistent set: %v %q %d", diags, set.Digest(), len(set.Policies()))
		}
		for _, p := range set.Policies() {
			if p.Pos.Line < 1 || p.TPM == 0 || len(p.Match.Agents) == 0 || len(p.Match.Partitions) == 0 {
				t.Fatalf("policy %q incomplete: %+v", p.Name, p)
			}
			for _, ev := range []Evidence{{}, full} {
				res := p.Evaluate(ev, time.Unix(1741060800, 0))
				for _, fd := range res.Findings {
					if fd.Rule == "" || fd.Line < 1 || fd.Severity < 1 || fd.Severity > 4 || (fd.Mode != Enforce && fd.Mode != Warn) {
						t.Fatalf("bad finding %+v", fd)
					}
				}
			}
		}
		_ = set.Evaluate(full, time.Now())
	})
}
