package ebpf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/pulse-attest/pulse/agent"
	"github.com/pulse-attest/pulse/agent/config"
	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// TestShieldProtectsVerifier: the production wiring (agent.ProtectedAddresses
// into Factory, as pulse-agent run does) loads Shield on the real kernel so
// that it refuses to drop the verifier's address and the configured
// protected ones (bpf.ErrProtected), while any other address is dropped.
func TestShieldProtectsVerifier(t *testing.T) {
	testutil.RequireRoot(t)
	var b [4]byte
	rand.Read(b[:]) //nolint:errcheck
	pinDir := filepath.Join(bpf.BPFFSPath, "pulse-protected-"+hex.EncodeToString(b[:]))
	t.Cleanup(func() { bpf.RemoveAll(pinDir) })
	cfg := &config.Config{Verifier: "192.0.2.10:7443,[2001:db8::7]:7443",
		ProtectedAddresses: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/32")}}
	protected := agent.ProtectedAddresses(context.Background(), cfg, simtest.Logger(t))
	measure := func(context.Context, cel.Content) error { return nil }
	impl, err := Factory(pinDir, nil, simtest.Logger(t), protected...)(context.Background(), measure)
	if err != nil {
		t.Fatal(err)
	}
	defer impl.Close()
	for _, tc := range []struct {
		addr string
		want error
	}{
		{"192.0.2.10", bpf.ErrProtected},
		{"2001:db8::7", bpf.ErrProtected},
		{"198.51.100.1", bpf.ErrProtected},
		{"203.0.113.5", nil},
	} {
		if err := impl.Quarantine(netip.MustParseAddr(tc.addr)); !errors.Is(err, tc.want) {
			t.Errorf("quarantine %s: %v, want %v", tc.addr, err, tc.want)
		}
	}
	if got := impl.Quarantined(); len(got) != 1 || got[0] != netip.MustParseAddr("203.0.113.5") {
		t.Fatalf("Shield holds %v", got)
	}
}
