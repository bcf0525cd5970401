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

// load writes src as verifier.hcl beside the files good names and loads it.
func load(t *testing.T, src string) (*config.Config, error) {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, "v.pem", "v-key.pem", "ca.pem", "policy.hcl", "ek-root.pem")
	path := filepath.Join(dir, "verifier.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Load(path)
}

// withEnrollment is good with its enrollment block replaced by body.
func withEnrollment(body string) string {
	return strings.Replace(good, "enrollment {\n  ek_roots = [\"ek-root.pem\"]\n  timeout  = \"1m\"\n}\n", "enrollment {\n"+body+"}\n", 1)
}

// TestEnrollmentDefaults: without the new settings the verifier assigns
// every agent to "default", requires conforming EK certificates, lets one
// EK back one agent, rate-limits enrollment and records PCR 14.
func TestEnrollmentDefaults(t *testing.T) {
	c, err := load(t, good)
	if err != nil {
		t.Fatal(err)
	}
	e := c.Enrollment
	if c.RuntimePCR != config.DefaultRuntimePCR || e.DefaultPartition != config.DefaultPartition || e.AllowNonconformingEK ||
		e.EKMaxAgents != config.DefaultEKMaxAgents || e.RatePerMinute != config.DefaultEnrollRatePerMinute || len(e.Partitions) != 0 {
		t.Fatalf("defaults: runtime_pcr=%d %+v", c.RuntimePCR, e)
	}
	if got := e.PartitionOf("anything"); got != "default" {
		t.Fatalf("PartitionOf without rules = %q", got)
	}
	// A configuration built in code (tests, loadgen) falls back too.
	if got := (config.Enrollment{}).PartitionOf("x"); got != config.DefaultPartition {
		t.Fatalf("zero Enrollment.PartitionOf = %q", got)
	}
}

// TestEnrollmentSettings: good values are taken as written.
func TestEnrollmentSettings(t *testing.T) {
	c, err := load(t, "runtime_pcr = 11\n"+withEnrollment(`  ek_roots = ["ek-root.pem"]
  default_partition = "fleet"
  partition "lab" {
    agents = ["lab-*", "bench-?"]
  }
  partition "edge.west_1" {
    agents = ["edge-w*", "lab-special"]
  }
  allow_nonconforming_ek = true
  ek_max_agents = 4
  rate_per_minute = 600
`))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Enrollment
	if c.RuntimePCR != 11 || !e.AllowNonconformingEK || e.EKMaxAgents != 4 || e.RatePerMinute != 600 || len(e.Partitions) != 2 {
		t.Fatalf("settings: runtime_pcr=%d %+v", c.RuntimePCR, e)
	}
	cases := []struct{ agent, want string }{
		{"lab-1", "lab"},
		{"bench-7", "lab"},
		{"bench-77", "fleet"},
		{"edge-w3", "edge.west_1"},
		// First match in file order.
		{"lab-special", "lab"},
		{"edge-e1", "fleet"},
		{"", "fleet"},
	}
	for _, tc := range cases {
		if got := e.PartitionOf(tc.agent); got != tc.want {
			t.Errorf("PartitionOf(%q) = %q, want %q", tc.agent, got, tc.want)
		}
	}
}

// TestEnrollmentErrors: each bad value is refused at its file:line.
func TestEnrollmentErrors(t *testing.T) {
	long := strings.Repeat("p", config.MaxPartitionLen+1)
	cases := []struct {
		name, src, want string
	}{
		{"runtime PCR resettable", good + "runtime_pcr = 16\n", "verifier.hcl:18:15: invalid runtime PCR"},
		{"runtime PCR of the firmware", good + "runtime_pcr = 7\n", "verifier.hcl:18:15: invalid runtime PCR"},
		{"runtime PCR of IMA", good + "runtime_pcr = 10\n", "verifier.hcl:18:15: invalid runtime PCR"},
		{"runtime PCR not a number", good + "runtime_pcr = \"fourteen\"\n", "verifier.hcl:18:16: Unsuitable value type"},
		{"default partition with a space", withEnrollment("  default_partition = \"my fleet\"\n"), "verifier.hcl:13:23: invalid partition"},
		{"default partition too long", withEnrollment("  default_partition = \"" + long + "\"\n"), "verifier.hcl:13:23: invalid partition"},
		{"partition name with a slash", withEnrollment("  partition \"a/b\" {\n    agents = [\"a-*\"]\n  }\n"), "verifier.hcl:13:3: invalid partition"},
		{"partition without agents", withEnrollment("  partition \"lab\" {\n    agents = []\n  }\n"), "verifier.hcl:14:14: empty partition rule"},
		{"partition missing agents", withEnrollment("  partition \"lab\" {\n  }\n"), "verifier.hcl:13:19: Missing required argument"},
		{"partition defined twice", withEnrollment("  partition \"lab\" {\n    agents = [\"a-*\"]\n  }\n  partition \"lab\" {\n    agents = [\"b-*\"]\n  }\n"), "verifier.hcl:16:3: duplicate partition"},
		{"bad agent glob", withEnrollment("  partition \"lab\" {\n    agents = [\"lab-[\"]\n  }\n"), "verifier.hcl:14:14: invalid agent glob"},
		{"allow_nonconforming_ek not a bool", withEnrollment("  allow_nonconforming_ek = \"yes please\"\n"), "verifier.hcl:13:29: Unsuitable value type"},
		{"ek_max_agents zero", withEnrollment("  ek_max_agents = 0\n"), "verifier.hcl:13:19: value out of range"},
		{"ek_max_agents too many", withEnrollment("  ek_max_agents = 5000\n"), "verifier.hcl:13:19: value out of range"},
		{"rate_per_minute zero", withEnrollment("  rate_per_minute = 0\n"), "verifier.hcl:13:21: value out of range"},
		{"rate_per_minute negative", withEnrollment("  rate_per_minute = -5\n"), "verifier.hcl:13:21: value out of range"},
		{"unknown enrollment key", withEnrollment("  partitions = [\"lab\"]\n"), "verifier.hcl:13:3: Unsupported argument"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := load(t, c.src)
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

// TestValidPartition: the partition alphabet and length, from both sides.
func TestValidPartition(t *testing.T) {
	cases := []struct {
		p    string
		want bool
	}{
		{"fleet", true},
		{"edge.west_1-b", true},
		{"A", true},
		{strings.Repeat("x", config.MaxPartitionLen), true},
		{"", false},
		{strings.Repeat("x", config.MaxPartitionLen+1), false},
		{"a b", false},
		{"a/b", false},
		{"lab\n", false},
		{"läb", false},
		{"*", false},
	}
	for _, c := range cases {
		if got := config.ValidPartition(c.p); got != c.want {
			t.Errorf("ValidPartition(%q) = %t, want %t", c.p, got, c.want)
		}
	}
}

// TestProtectedAddresses: addresses and prefixes that are never
// quarantined; anything else is a file:line error.
func TestProtectedAddresses(t *testing.T) {
	c, err := load(t, good+"protected_addresses = [\"192.0.2.1\", \"10.0.0.0/8\", \"2001:db8::1\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{"192.0.2.1": true, "192.0.2.2": false, "10.1.2.3": true, "2001:db8::1": true, "::ffff:10.9.9.9": true, "not an address": false} {
		if got := c.Protected(addr); got != want {
			t.Errorf("Protected(%q) = %t, want %t", addr, got, want)
		}
	}
	_, err = load(t, good+"protected_addresses = [\"gateway\"]\n")
	if err == nil || !strings.Contains(err.Error(), "verifier.hcl:18:") || !strings.Contains(err.Error(), "invalid protected address") {
		t.Fatalf("got %v, want a file:line error", err)
	}
}
