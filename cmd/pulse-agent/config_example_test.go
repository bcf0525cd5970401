package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/agent/config"
	"github.com/pulse-attest/pulse/internal/hclconf"
)

// TestConfigReference: docs/config.md documents exactly the keys the
// agent's configuration accepts.
func TestConfigReference(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := hclconf.ReferenceKeys(string(doc), "pulse-agent")
	var accepted []string
	for _, k := range config.Keys() {
		accepted = append(accepted, k.Path)
		if !slices.Contains(documented, k.Path) {
			t.Errorf("key %q is accepted by agent/config but not documented in docs/config.md (## pulse-agent): add a row (type, default, reload, meaning)", k.Path)
		}
	}
	for _, d := range documented {
		if !slices.Contains(accepted, d) {
			t.Errorf("docs/config.md (## pulse-agent) documents %q, which agent/config does not accept", d)
		}
	}
	if len(accepted) < 15 {
		t.Fatalf("only %d keys found: the key walk is broken", len(accepted))
	}
}

// TestConfigExample: `config example` prints the example file, which shows
// every key and validates once the files it names exist.
func TestConfigExample(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := commands.Main([]string{"config", "example"}, &out, &errOut); code != 0 || errOut.Len() != 0 {
		t.Fatalf("config example: exit %d, stderr %q", code, errOut.String())
	}
	src, err := os.ReadFile("config_example.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(src) || len(src) == 0 {
		t.Fatal("config example does not print config_example.hcl")
	}
	if code := commands.Main([]string{"config", "example", "extra"}, &out, &errOut); code != 2 {
		t.Fatalf("config example with an argument: exit %d, want 2", code)
	}
	for _, k := range config.Keys() {
		if !hclconf.Mentions(out.String(), k) {
			t.Errorf("the example does not show %q (set or commented out)", k.Path)
		}
	}

	etc := filepath.Join(t.TempDir(), "etc", "pulse")
	if err := os.MkdirAll(filepath.Join(etc, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(etc, "agent.hcl")
	if err := os.WriteFile(cfgPath, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tls/agent.pem", "tls/agent-key.pem", "tls/ca.pem"} {
		if err := os.WriteFile(filepath.Join(etc, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	errOut.Reset()
	if code := commands.Main([]string{"validate", "--config", cfgPath}, &out, &errOut); code != 0 {
		t.Fatalf("the installed example does not validate: exit %d\n%s", code, errOut.String())
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.CA != filepath.Join(etc, "tls/ca.pem") || cfg.TPM != "auto" || cfg.BPF.Enabled {
		t.Fatalf("example resolves to CA %s, tpm %s, bpf %v", cfg.TLS.CA, cfg.TPM, cfg.BPF.Enabled)
	}
	if err := os.Remove(filepath.Join(etc, "tls/ca.pem")); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if code := commands.Main([]string{"validate", "--config", cfgPath}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "ca.pem") {
		t.Fatalf("example without its CA: exit %d\n%s", code, errOut.String())
	}
}
