package verifier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/directivesig"
	"github.com/pulse-attest/pulse/internal/quarset"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// TestLoadDirectiveKey: a 0600 PKCS#8 file is the key; a file readable by
// group or others, or not a key, is ErrDirectiveKey; without a file every
// replica of one store gets the same generated key.
func TestLoadDirectiveKey(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, err := directivesig.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), store.EngineSQLite, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, tc := range []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    error
	}{
		{"key 0600", pemKey, 0o600, nil},
		{"readable by others", pemKey, 0o644, ErrDirectiveKey},
		{"readable by group", pemKey, 0o640, ErrDirectiveKey},
		{"not a key", []byte("not a key"), 0o600, ErrDirectiveKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k.pem")
			if err := os.WriteFile(path, tc.content, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			k, err := loadDirectiveKey(context.Background(), &config.Config{DirectiveKey: path}, st, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("load: %v, want %v", err, tc.want)
			}
			if tc.want == nil && !k.Equal(priv) {
				t.Fatal("loaded another key")
			}
		})
	}
	k1, err := loadDirectiveKey(context.Background(), &config.Config{}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := loadDirectiveKey(context.Background(), &config.Config{}, st, nil)
	if err != nil || !k1.Equal(k2) || k1.Equal(priv) {
		t.Fatalf("stored key: replicas disagree or reuse the file's (%v)", err)
	}
}

// TestExpectedQuarantine: the table as one agent must hold it.
func TestExpectedQuarantine(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	qs := []store.Quarantine{
		{Address: "192.0.2.1", Offender: "x", Since: now.Add(-time.Hour)},
		{Address: "192.0.2.2", Offender: "me", Since: now.Add(-time.Hour)},
		{Address: "::ffff:192.0.2.3", Offender: "y", Since: now.Add(-time.Second)},
		{Address: "192.0.2.4", Offender: "z", Since: now.Add(-time.Hour)},
		{Address: "not an address", Offender: "z", Since: now.Add(-time.Hour)},
	}
	want, young, own := expectedQuarantine(qs, "me", []string{"192.0.2.4"}, now, time.Minute)
	if !slices.Equal(want, []string{"192.0.2.1", "192.0.2.3"}) || !slices.Equal(young, []string{"192.0.2.3"}) || !slices.Equal(own, []string{"192.0.2.2", "192.0.2.4"}) {
		t.Fatalf("want %v young %v own %v", want, young, own)
	}
}

// BenchmarkReconcileTable: the per-pulse cost of reconciliation's pure
// part on a 10,000-address quarantine table (the expected set and its
// digest), besides the two store reads.
func BenchmarkReconcileTable(b *testing.B) {
	now := time.Now()
	qs := make([]store.Quarantine, 10000)
	for i := range qs {
		qs[i] = store.Quarantine{Address: fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), Offender: fmt.Sprintf("a%d", i%50), Since: now.Add(-time.Hour)}
	}
	b.ReportAllocs()
	for b.Loop() {
		want, _, _ := expectedQuarantine(qs, "a7", nil, now, time.Minute)
		if _, n := quarset.DigestCanonical(want); n == 0 {
			b.Fatal("empty")
		}
	}
}

// TestNotIsolatable: addresses that name no single device fleet-wide are
// refused for isolation (issue 20 attack review; the link-local exploit
// over real mTLS is TestAttack20LinkLocalIsolation).
func TestNotIsolatable(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		refused bool
	}{
		{"192.0.2.1", false},
		{"2001:db8::1", false},
		{"fd00::1", false},
		{"127.0.0.5", false}, // loopback: Shield never drops it, but the test fleets use 127/8
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"169.254.169.254", true},
		{"::ffff:169.254.1.1", true},
		{"ff02::1", true},
		{"224.0.0.1", true},
		{"0.0.0.0", true},
		{"::", true},
		{"not-an-address", true},
		{"", true},
	} {
		if got := notIsolatable(tc.addr) != ""; got != tc.refused {
			t.Errorf("notIsolatable(%q) refused %v, want %v", tc.addr, got, tc.refused)
		}
	}
}
