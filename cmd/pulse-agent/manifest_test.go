package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/policy"
)

func TestManifest(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pulse-agent")
	if err := os.WriteFile(bin, []byte("a build"), 0o755); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := commands.Main([]string{"manifest", "--binary", bin}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var m buildManifest
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("a build"))
	if m.Format != manifestFormat || m.AgentBinarySHA256 != hex.EncodeToString(sum[:]) || len(m.EBPFObjects) != 3 {
		t.Fatalf("manifest %+v", m)
	}

	// The HCL form is a valid update_window of a policy.
	stdout.Reset()
	if code := commands.Main([]string{"manifest", "--binary", bin, "--hcl"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	src := "policy \"p\" {\n  tpm = \"required\"\n  match {\n    agents = [\"*\"]\n  }\n  agent_binary {\n" + stdout.String() + "  }\n}\n"
	set, diags := policy.Parse("p.hcl", []byte(src))
	if diags.HasErrors() {
		t.Fatalf("%s\n%s", diags, src)
	}
	w := set.Policies()[0].AgentBinary.Windows[0]
	if len(w.EBPFObjects) != 3 || w.Allow[0] != m.AgentBinarySHA256 || !strings.EqualFold(w.EBPFObjects[0], m.EBPFObjects[0].SHA256) {
		t.Fatalf("window %+v", w)
	}

	if code := commands.Main([]string{"manifest", "--binary", filepath.Join(t.TempDir(), "none")}, &stdout, &stderr); code != 1 {
		t.Fatalf("a missing binary: exit %d", code)
	}
}
