package config_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/config"
)

// TestIsolationSettings: agent_address_ttl defaults to 24h and is bounded
// to 1m-720h; directive_key resolves against the file and must exist.
func TestIsolationSettings(t *testing.T) {
	c, err := load(t, good)
	if err != nil {
		t.Fatal(err)
	}
	if c.AgentAddressTTL != config.DefaultAgentAddressTTL || c.DirectiveKey != "" {
		t.Fatalf("defaults: ttl %s key %q", c.AgentAddressTTL, c.DirectiveKey)
	}
	c, err = load(t, good+"agent_address_ttl = \"2h\"\ndirective_key = \"v-key.pem\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.AgentAddressTTL != 2*time.Hour || filepath.Base(c.DirectiveKey) != "v-key.pem" || !filepath.IsAbs(c.DirectiveKey) {
		t.Fatalf("ttl %s key %q", c.AgentAddressTTL, c.DirectiveKey)
	}
	for _, tc := range []struct{ src, want string }{
		{"agent_address_ttl = \"30s\"\n", "between 1m0s and 720h"},
		{"agent_address_ttl = \"800h\"\n", "between 1m0s and 720h"},
		{"directive_key = \"missing.pem\"\n", "missing.pem"},
	} {
		_, err := load(t, good+tc.src)
		if err == nil || !strings.Contains(err.Error(), "verifier.hcl:18:") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want a file:line error naming %s", tc.src, err, tc.want)
		}
	}
}
