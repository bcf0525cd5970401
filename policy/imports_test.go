package policy

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// allowedImport is the import rule for package policy (README, "Layout"): the
// standard library, hcl, go-cty and go-hclog. No gRPC, TPM or storage code.
func allowedImport(path string) bool {
	first := strings.SplitN(path, "/", 2)[0]
	if !strings.Contains(first, ".") {
		return true // standard library
	}
	for _, p := range []string{"github.com/hashicorp/hcl/v2", "github.com/zclconf/go-cty/", "github.com/hashicorp/go-hclog"} {
		if path == strings.TrimSuffix(p, "/") || strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// TestPolicyImportRule checks the direct imports of the package's non-test files,
// and that nothing it depends on transitively is gRPC, TPM, eBPF, storage
// or another Pulse package.
func TestPolicyImportRule(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		n++
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !allowedImport(p) {
				t.Errorf("%s imports %s: package policy may import only the standard library, hcl, go-cty and go-hclog", f, p)
			}
		}
	}
	if n == 0 {
		t.Fatal("no source files")
	}

	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not on PATH: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"google.golang.org/grpc", "google.golang.org/protobuf", "github.com/google/go-tpm", "github.com/google/go-attestation",
		"github.com/google/go-tpm-tools", "github.com/cilium/ebpf", "database/sql", "modernc.org/sqlite", "github.com/jackc/pgx",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("package policy depends on %s", dep)
			}
		}
		if strings.HasPrefix(dep, "github.com/pulse-attest/pulse/") && dep != "github.com/pulse-attest/pulse/policy" {
			t.Errorf("package policy depends on %s", dep)
		}
	}
}
