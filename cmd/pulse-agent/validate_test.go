package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"agent.crt", "agent.key", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	src := "verifier = \"verifier.example:7443\"\ntls {\n  cert = \"agent.crt\"\n  key  = \"agent.key\"\n  ca   = \"ca.crt\"\n}\n" + extra
	p := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateCommand(t *testing.T) {
	var out, errb bytes.Buffer
	good := writeConfig(t, "interval = \"10s\"\n")
	if code := commands.Main([]string{"validate", "--config", good}, &out, &errb); code != 0 {
		t.Fatalf("good config: exit %d\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "configuration ok") || !strings.Contains(out.String(), "interval=10s") {
		t.Fatalf("output %q", out.String())
	}

	out.Reset()
	errb.Reset()
	bad := writeConfig(t, "runtime_pcr = 16\ncolour = \"red\"\n")
	if code := commands.Main([]string{"validate", "--config", bad}, &out, &errb); code != 1 {
		t.Fatalf("bad config: exit %d", code)
	}
	msg := errb.String()
	for _, want := range []string{"agent.hcl:8:1: Unsupported argument", "colour"} {
		if !strings.Contains(msg, want) {
			t.Errorf("diagnostics lack %q:\n%s", want, msg)
		}
	}

	errb.Reset()
	pcr := writeConfig(t, "runtime_pcr = 16\n")
	if code := commands.Main([]string{"validate", "--config", pcr}, &out, &errb); code != 1 {
		t.Fatalf("pcr 16: exit %d", code)
	}
	if !strings.Contains(errb.String(), "agent.hcl:7:15: unusable runtime_pcr") || !strings.Contains(errb.String(), "reset by any root process") {
		t.Fatalf("pcr 16 diagnostics:\n%s", errb.String())
	}

	errb.Reset()
	if code := commands.Main([]string{"validate", "--config", filepath.Join(t.TempDir(), "none.hcl")}, &out, &errb); code != 1 {
		t.Fatalf("missing file: exit %d", code)
	}
}

func TestRunAndLaunchRefuseBadConfig(t *testing.T) {
	bad := writeConfig(t, "runtime_pcr = 23\n")
	for _, cmd := range [][]string{{"run", "--config", bad}, {"launch", "--config", bad, "--", "run"}} {
		var out, errb bytes.Buffer
		if code := commands.Main(cmd, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d", cmd, code)
		}
		if !strings.Contains(errb.String(), "unusable runtime_pcr") {
			t.Errorf("%v: %s", cmd, errb.String())
		}
	}
}
