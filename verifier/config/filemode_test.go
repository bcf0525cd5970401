package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/verifier/config"
)

// TestPrivateKeyFileMode: the verifier's TLS key and directive key must be
// readable by the verifier only; a group or other permission bit is an
// error naming the key's line, so `validate` and `run` refuse it.
func TestPrivateKeyFileMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string // the key file whose mode is set
		mode os.FileMode
		want string // "" loads
	}{
		{name: "tls key 0600", file: "v-key.pem", mode: 0o600},
		{name: "tls key 0400", file: "v-key.pem", mode: 0o400},
		{name: "tls key group readable", file: "v-key.pem", mode: 0o640, want: "tls.key"},
		{name: "tls key world readable", file: "v-key.pem", mode: 0o644, want: "tls.key"},
		{name: "tls key group writable", file: "v-key.pem", mode: 0o620, want: "tls.key"},
		{name: "directive key 0600", file: "directive.pem", mode: 0o600},
		{name: "directive key world readable", file: "directive.pem", mode: 0o604, want: "directive_key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, "v.pem", "v-key.pem", "ca.pem", "policy.hcl", "ek-root.pem", "directive.pem")
			if err := os.Chmod(filepath.Join(dir, tc.file), tc.mode); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "verifier.hcl")
			if err := os.WriteFile(path, []byte(good+"directive_key = \"directive.pem\"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := config.Load(path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("load: %v", err)
				}
				return
			}
			var ce *hclconf.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a config error", err)
			}
			if !strings.Contains(err.Error(), "private key readable by others") || !strings.Contains(err.Error(), tc.file) {
				t.Fatalf("err = %v, want private key readable by others naming %s", err, tc.file)
			}
			var found bool
			for _, d := range ce.Diags {
				found = found || (d.Subject != nil && strings.Contains(string(readLine(t, path, d.Subject.Start.Line)), strings.TrimPrefix(tc.want, "tls.")))
			}
			if !found {
				t.Fatalf("no diagnostic points at the %s line: %v", tc.want, err)
			}
		})
	}
}

func readLine(t *testing.T, path string, n int) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	return lines[n-1]
}
