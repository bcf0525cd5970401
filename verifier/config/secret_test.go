package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/verifier/config"
)

// TestWebhookSecretFilePermissions: a webhook secret file must be 0600 (or
// stricter), a regular file and the verifier's own, like the admin token;
// anything else is an error at the secret_file line.
func TestWebhookSecretFilePermissions(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string // "" loads
	}{
		{name: "0600", setup: func(t *testing.T, p string) { writeSecret(t, p, 0o600) }},
		{name: "0400", setup: func(t *testing.T, p string) { writeSecret(t, p, 0o400) }},
		{name: "group readable", setup: func(t *testing.T, p string) { writeSecret(t, p, 0o640) }, want: "has mode 0640: make it 0600"},
		{name: "world readable", setup: func(t *testing.T, p string) { writeSecret(t, p, 0o644) }, want: "webhook secret file is readable by others"},
		{name: "directory", setup: func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
		}, want: "webhook secret file is not a regular file"},
		{name: "other owner", setup: func(t *testing.T, p string) {
			if os.Geteuid() != 0 {
				t.Skip("changing a file's owner needs root")
			}
			writeSecret(t, p, 0o600)
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, want: "owned by uid 65534"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, "v.pem", "v-key.pem", "ca.pem", "policy.hcl", "ek-root.pem")
			tc.setup(t, filepath.Join(dir, "hook.secret"))
			src := good + `alerts {
  webhook "siem" {
    url         = "https://siem.example/hook"
    secret_file = "hook.secret"
  }
}
`
			path := filepath.Join(dir, "verifier.hcl")
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(path)
			if tc.want == "" {
				if err != nil || len(c.Alerts.Webhooks) != 1 {
					t.Fatalf("load: %v", err)
				}
				return
			}
			var ce *hclconf.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a config error", err)
			}
			line := strings.Count(good, "\n") + 4 // the secret_file line
			wantPos := "verifier.hcl:" + itoa(line) + ":"
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), wantPos) {
				t.Errorf("err = %v\nwant %q at %s", err, tc.want, wantPos)
			}
		})
	}
}

func writeSecret(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("s3cret-for-the-webhook"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
