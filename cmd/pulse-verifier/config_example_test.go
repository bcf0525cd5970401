package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/verifier/config"
)

// TestConfigReference: docs/config.md documents exactly the keys the
// verifier's configuration accepts.
func TestConfigReference(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := hclconf.ReferenceKeys(string(doc), "pulse-verifier")
	var accepted []string
	for _, k := range config.Keys() {
		accepted = append(accepted, k.Path)
		if !slices.Contains(documented, k.Path) {
			t.Errorf("key %q is accepted by verifier/config but not documented in docs/config.md (## pulse-verifier): add a row (type, default, reload, meaning)", k.Path)
		}
	}
	for _, d := range documented {
		if !slices.Contains(accepted, d) {
			t.Errorf("docs/config.md (## pulse-verifier) documents %q, which verifier/config does not accept", d)
		}
	}
	if len(accepted) < 40 {
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

	// As installed: /etc/pulse/verifier.hcl with its certificates and
	// policy beside it, state under /var/lib/pulse (both moved into a
	// temporary root).
	root := t.TempDir()
	etc := filepath.Join(root, "etc", "pulse")
	for _, d := range []string{filepath.Join(etc, "tls"), filepath.Join(root, "var", "lib", "pulse")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	text := strings.ReplaceAll(out.String(), "/var/lib/pulse/", filepath.Join(root, "var", "lib", "pulse")+"/")
	cfgPath := filepath.Join(etc, "verifier.hcl")
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := os.ReadFile("../../packaging/etc/policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"policy.hcl": pol, "tls/verifier.pem": nil, "tls/verifier-key.pem": nil, "tls/agent-ca.pem": nil}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(etc, name), b, 0o600); err != nil {
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
	if cfg.Store.Engine != "sqlite" || cfg.Store.DSN != filepath.Join(root, "var/lib/pulse/verifier.db") ||
		cfg.Alerts.AuditLog != filepath.Join(root, "var/lib/pulse/audit.log") || cfg.TLS.AgentCA != filepath.Join(etc, "tls/agent-ca.pem") {
		t.Fatalf("example resolves to store %s %s, audit log %s, agent CA %s", cfg.Store.Engine, cfg.Store.DSN, cfg.Alerts.AuditLog, cfg.TLS.AgentCA)
	}

	// Without the certificates it names, it does not.
	if err := os.Remove(filepath.Join(etc, "tls/verifier-key.pem")); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if code := commands.Main([]string{"validate", "--config", cfgPath}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "verifier-key.pem") {
		t.Fatalf("example without its key: exit %d\n%s", code, errOut.String())
	}
}
