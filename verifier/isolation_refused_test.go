package verifier_test

import (
	"net/netip"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
)

// TestIsolationRefusedForSharedAddress: two devices reach the verifier from
// one address (a site NAT; here loopback). One is compromised: isolating
// its address would cut the other off too, so the verifier refuses and
// tells the operator instead.
func TestIsolationRefusedForSharedAddress(t *testing.T) {
	other := simtest.StartFresh(t, "rhel8-uefi")
	e := newEnv(t, "rhel8-uefi", other)
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-nat-a")
	b := e.agent("edge-nat-b", e.openTPM(other))
	if res := b.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	b.MeasureBinary()
	b.Challenge()
	wantVerdict(t, b.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	compromise(t, a)
	if qs := quarantined(t, st); len(qs) != 0 {
		t.Fatalf("a shared address was isolated: %+v", qs)
	}
	if al := alertsOf(t, st, "edge-nat-a", verifier.AlertIsolationRefused); len(al) != 1 || al[0].Severity != 2 {
		t.Fatalf("isolation_refused alerts %+v, want one", al)
	}
}

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
