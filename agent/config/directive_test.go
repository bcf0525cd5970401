package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDirectiveKeyAndProtected: directive_key is a path relative to the
// file that must exist; protected_addresses takes addresses and prefixes
// (IPv4-mapped unmapped) and refuses anything else with file:line:col.
func TestDirectiveKeyAndProtected(t *testing.T) {
	dir := tlsFiles(t)
	if err := os.WriteFile(filepath.Join(dir, "directive.pub"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, src string
		key       string
		protected []string
		errs      []string
	}{
		{name: "unset", src: ""},
		{name: "both", src: `directive_key = "directive.pub"
protected_addresses = ["192.0.2.1", "::ffff:192.0.2.2", "10.1.0.0/16", "2001:db8::/32", "::ffff:10.2.0.0/112"]`,
			key: filepath.Join(dir, "directive.pub"), protected: []string{"192.0.2.1/32", "192.0.2.2/32", "10.1.0.0/16", "2001:db8::/32", "10.2.0.0/16"}},
		{name: "missing key file", src: `directive_key = "nope.pub"`, errs: []string{"agent.hcl:7", "nope.pub"}},
		{name: "bad address", src: `protected_addresses = ["192.0.2.300", "verifier.example"]`, errs: []string{"agent.hcl:7", "192.0.2.300", "verifier.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(filepath.Join(dir, "agent.hcl"), []byte(`verifier = "verifier.example:7443"`+"\n"+tlsBlock+tc.src+"\n"))
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatal("accepted")
				}
				for _, want := range tc.errs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q lacks %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range c.ProtectedAddresses {
				got = append(got, p.String())
			}
			if c.DirectiveKey != tc.key || !slices.Equal(got, tc.protected) {
				t.Fatalf("directive_key %q protected %v, want %q %v", c.DirectiveKey, got, tc.key, tc.protected)
			}
		})
	}
	if _, err := ParseProtected("::ffff:10.0.0.0/8"); err == nil {
		t.Error("a mapped prefix shorter than /96 accepted")
	}
	if p, err := ParseProtected("fe80::1%eth0"); err != nil || p != netip.MustParsePrefix("fe80::1/128") {
		t.Errorf("zoned address: %v %v", p, err)
	}
}
