package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/verifier/config"
)

func writeFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

const good = `listen = "127.0.0.1:7443"
tls {
  cert     = "v.pem"
  key      = "v-key.pem"
  agent_ca = "ca.pem"
}
store {
  engine = "sqlite"
  dsn    = "state.db"
}
policy_files = ["policy.hcl"]
enrollment {
  ek_roots = ["ek-root.pem"]
  timeout  = "1m"
}
nonce_ttl     = "90s"
allow_tpmless = true
`

func TestLoadGood(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, "v.pem", "v-key.pem", "ca.pem", "policy.hcl", "ek-root.pem")
	path := filepath.Join(dir, "verifier.hcl")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if c.NonceTTL != 90*time.Second || c.Enrollment.Timeout != time.Minute || !c.AllowTPMless {
		t.Fatalf("values: %+v", c)
	}
	if c.Store.DSN != filepath.Join(dir, "state.db") || c.TLS.AgentCA != filepath.Join(dir, "ca.pem") {
		t.Fatalf("relative paths not resolved against the file: %+v", c)
	}
	if c.ClockSkew != config.DefaultClockSkew {
		t.Fatalf("default clock skew: %v", c.ClockSkew)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, "v.pem", "v-key.pem", "ca.pem", "policy.hcl", "ek-root.pem")
	cases := []struct {
		name, src, want string
	}{
		{"unknown key", good + "colour = \"blue\"\n", "verifier.hcl:18:1: Unsupported argument"},
		{"bad duration", strings.Replace(good, `"90s"`, `"ninety"`, 1), "verifier.hcl:16:17: invalid duration"},
		{"bad engine", strings.Replace(good, `"sqlite"`, `"mysql"`, 1), "verifier.hcl:8:12: unknown store engine"},
		{"missing file", strings.Replace(good, `"ca.pem"`, `"nope.pem"`, 1), "verifier.hcl:5:14: file not found"},
		{"wrong type", strings.Replace(good, `allow_tpmless = true`, `allow_tpmless = "perhaps"`, 1), "verifier.hcl:17:18: Unsuitable value type"},
		{"bad address", strings.Replace(good, `"127.0.0.1:7443"`, `"nowhere"`, 1), "verifier.hcl:1:10: invalid address"},
		{"no policy", strings.Replace(good, `policy_files = ["policy.hcl"]`, ``, 1), "no policy files"},
		{"empty file", "", "verifier.hcl:1:1: empty configuration file"},
		{"syntax", "tls {", "verifier.hcl:1:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, "verifier.hcl")
			if err := os.WriteFile(path, []byte(c.src), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := config.Load(path)
			var he *hclconf.Error
			if !errors.As(err, &he) {
				t.Fatalf("want *hclconf.Error, got %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
		})
	}
}
