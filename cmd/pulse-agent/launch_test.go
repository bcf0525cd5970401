package main

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/agent/launcher"
	"github.com/pulse-attest/pulse/agent/runtimelog"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// dynamicLinking reports what makes an ELF file depend on the dynamic
// loader: a PT_INTERP or PT_DYNAMIC segment, or DT_NEEDED libraries.
func dynamicLinking(t *testing.T, path string) []string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []string
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			found = append(found, "PT_INTERP")
		case elf.PT_DYNAMIC:
			found = append(found, "PT_DYNAMIC")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, l := range libs {
		found = append(found, "DT_NEEDED "+l)
	}
	return found
}

// TestMakefileBuildsStaticAgent: the Makefile's build target builds the
// agent without cgo (the flags TestAgentBinaryIsStatic uses).
func TestMakefileBuildsStaticAgent(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\tCGO_ENABLED=0 \$\(GO\) build -trimpath -ldflags='-s -w[^']*' -o \$\(BIN\)/ \./cmd/(pulse-agent|\.\.\.)$`)
	if !re.Match(mk) {
		t.Fatal("the Makefile's build target no longer builds ./cmd/pulse-agent with CGO_ENABLED=0")
	}
}

// TestAgentBinaryIsStatic builds the agent as the Makefile does and checks
// it has nothing for the dynamic loader (so LD_PRELOAD and friends have
// nothing to act on), then launches it for real: the launcher hands the
// exec'ed agent the measured configuration and records it.
func TestAgentBinaryIsStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	testutil.RequireTools(t, "go")
	dir := t.TempDir()
	bin := filepath.Join(dir, "pulse-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	if dyn := dynamicLinking(t, bin); len(dyn) != 0 {
		t.Fatalf("the agent binary is dynamically linked: %v", dyn)
	}

	t.Run("the check sees a dynamic binary", func(t *testing.T) {
		for _, p := range []string{"/bin/sh", "/usr/bin/env", "/bin/ls"} {
			if _, err := os.Stat(p); err != nil {
				continue
			}
			if f, err := elf.Open(p); err == nil {
				f.Close()
				if dyn := dynamicLinking(t, p); len(dyn) == 0 {
					t.Logf("%s is static here; trying another", p)
					continue
				}
				return
			}
		}
		t.Skip("no dynamically linked system binary to compare with")
	})

	t.Run("launch then validate through the sealed configuration", func(t *testing.T) {
		rtlog := filepath.Join(t.TempDir(), "runtime.cel")
		cfgPath := writeConfig(t, "tpm = \"none\"\nruntime_log = \""+rtlog+"\"\npartition = \"measured\"\n")
		data, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		run := exec.Command(bin, "launch", "--config", cfgPath, "--binary", bin, "--", "validate", "--config", cfgPath)
		run.Env = append(os.Environ(), "LD_PRELOAD=/nonexistent/evil.so", "GODEBUG=tlsrsakex=1")
		run.Stdout, run.Stderr = &out, &errb
		if err := run.Run(); err != nil {
			t.Fatalf("launch: %v\n%s%s", err, out.String(), errb.String())
		}
		if !strings.Contains(out.String(), "configuration ok") || !strings.Contains(out.String(), "partition=measured") {
			t.Fatalf("validate output %q\n%s", out.String(), errb.String())
		}
		if !strings.Contains(errb.String(), "LD_PRELOAD") {
			t.Errorf("the launcher did not report dropping LD_PRELOAD:\n%s", errb.String())
		}
		l, err := runtimelog.Open(rtlog, runtimelog.Options{PCR: 14})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var recs []cel.Record
		if err := l.View(func(v *runtimelog.View) error { recs = v.Decoded(); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 {
			t.Fatalf("%d runtime log records, want the configuration's and the binary's", len(recs))
		}
		cr, ok, err := launcher.FindConfigRecord(recs, 1)
		if err != nil || !ok {
			t.Fatalf("no configuration record: %v", err)
		}
		if cr.ConfigSHA256 != sha256.Sum256(data) || cr.ConfigPath != cfgPath || strings.Join(cr.Args, " ") != "validate --config "+cfgPath {
			t.Fatalf("configuration record %+v", cr)
		}
		for _, kv := range cr.Env {
			if strings.HasPrefix(kv, "LD_") || strings.HasPrefix(kv, "GODEBUG=") {
				t.Errorf("measured environment holds %s", kv)
			}
		}
	})
}
