package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/config"
)

// TestTLSConnectionSettings: the tls block's connection settings default,
// parse, and refuse out-of-range values.
func TestTLSConnectionSettings(t *testing.T) {
	defaults := config.TLS{ReloadInterval: config.DefaultTLSReloadInterval, MaxConnectionAge: config.DefaultMaxConnectionAge,
		MaxConnectionAgeGrace: config.DefaultMaxConnectionAgeGrace, RevocationRefresh: config.DefaultRevocationRefresh,
		ProbeAlertAfter: config.DefaultProbeAlertAfter}
	probes := defaults
	probes.ProbeAlertAfter = 5
	tests := []struct {
		name    string
		extra   string
		want    config.TLS
		wantErr string
	}{
		{name: "defaults", want: defaults},
		{name: "set", extra: `reload_interval = "2s"
  max_connection_age = "30m"
  max_connection_age_grace = "10s"
  revocation_refresh = "1s"
  probe_alert_after = 50`,
			want: config.TLS{ReloadInterval: 2 * time.Second, MaxConnectionAge: 30 * time.Minute, MaxConnectionAgeGrace: 10 * time.Second, RevocationRefresh: time.Second, ProbeAlertAfter: 50}},
		{name: "probe alert threshold", extra: `probe_alert_after = 5`, want: probes},
		{name: "probe alert threshold zero", extra: `probe_alert_after = 0`, wantErr: "0: use 1-100000"},
		{name: "age too short", extra: `max_connection_age = "1s"`, wantErr: "1s must be between 1m0s"},
		{name: "refresh too slow", extra: `revocation_refresh = "1h"`, wantErr: "1h must be between 100ms"},
		{name: "grace malformed", extra: `max_connection_age_grace = "soon"`, wantErr: `"soon" is not a duration`},
		{name: "reload too fast", extra: `reload_interval = "10ms"`, wantErr: "10ms must be between 1s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, "v.pem", "v-key.pem", "ca.pem", "policy.hcl", "ek-root.pem")
			src := strings.Replace(good, `agent_ca = "ca.pem"`, `agent_ca = "ca.pem"
  `+tc.extra, 1)
			path := filepath.Join(dir, "verifier.hcl")
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(path)
			if tc.wantErr != "" {
				// The setting is on line 6 of the file.
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "verifier.hcl:6:") {
					t.Fatalf("Load = %v, want an error at line 6 saying %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := c.TLS
			got.Cert, got.Key, got.AgentCA, got.OperatorCA = "", "", "", ""
			if got != tc.want {
				t.Fatalf("TLS = %+v, want %+v", got, tc.want)
			}
		})
	}
}
