package verifier_test

import (
	"net/netip"
	"testing"

	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
)

// TestIsolationRefusedForProtectedAddress: a device behind the verifier's
// own proxy (its address protected by the operator) is compromised; the
// protected address is never quarantined. The honest case: the same
// compromise from an unprotected address is isolated (TestReleaseWhileTrustedThenCompromise).
func TestIsolationRefusedForProtectedAddress(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
		c.ProtectedAddresses = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-behind-proxy")
	compromise(t, a)
	if qs := quarantined(t, st); len(qs) != 0 {
		t.Fatalf("a protected address was isolated: %+v", qs)
	}
	if al := alertsOf(t, st, "edge-behind-proxy", verifier.AlertIsolationRefused); len(al) != 1 {
		t.Fatalf("isolation_refused alerts %+v, want one", al)
	}
}
