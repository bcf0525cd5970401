package verifier_test

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
)

// TestSilenceUnderHoldIsolatedWhenHoldEnds: a device an operator has just
// released goes silent for good. While the release hold lasts its silence
// is not confirmed (nor isolated); once the hold ends, the silence is
// confirmed and the device isolated.
func TestSilenceUnderHoldIsolatedWhenHoldEnds(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
		fastHeartbeat("2s", 2, "0s")(c)
		c.IsolationHold = 10 * time.Second
	})
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-silent")
	compromise(t, a)
	qs := quarantined(t, st)
	if len(qs) != 1 || qs[0].Offender != "edge-silent" {
		t.Fatalf("compromise not isolated: %+v", qs)
	}
	addr := qs[0].Address
	release(t, e, addr)
	if !held(t, st, "edge-silent") {
		t.Fatal("no hold after release")
	}
	// The device now goes silent for good: BLINDED, but not isolated while
	// the hold lasts.
	waitFor(t, "the silent device BLINDED", func() bool {
		ops, err := st.GetAgentOps(context.Background(), "edge-silent")
		return err == nil && !ops.BlindedAt.IsZero()
	})
	if held(t, st, "edge-silent") {
		if qs := quarantined(t, st); len(qs) != 0 {
			t.Fatalf("isolated during the hold: %+v", qs)
		}
	}
	waitFor(t, "the hold to expire", func() bool { return !held(t, st, "edge-silent") })
	waitFor(t, "the silent device isolated", func() bool { return len(quarantined(t, st)) == 1 })
	ops, err := st.GetAgentOps(context.Background(), "edge-silent")
	if err != nil {
		t.Fatal(err)
	}
	if !pastDeadline(t, st, "edge-silent") {
		t.Fatal("agent not past its deadline")
	}
	if qs := quarantined(t, st); len(qs) != 1 || qs[0].Offender != "edge-silent" {
		t.Fatalf("silent agent not isolated once the hold ended (deadline %s, BLINDED %s): %+v",
			ops.Deadline.Format(time.RFC3339), ops.BlindedAt.Format(time.RFC3339), qs)
	}
}

// TestSilenceConfirmedWhileQuarantinedReisolated: a device isolated for a
// compromise goes silent; its silence is confirmed while its address is
// already quarantined. The operator releases the address: the release
// forgets the confirmation, so once the hold ends the still-silent device
// is isolated again.
func TestSilenceConfirmedWhileQuarantinedReisolated(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
		fastHeartbeat("1s", 2, "0s")(c)
		c.IsolationHold = time.Second
	})
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-dark")
	compromise(t, a)
	qs := quarantined(t, st)
	if len(qs) != 1 || qs[0].Offender != "edge-dark" {
		t.Fatalf("compromise not isolated: %+v", qs)
	}
	// Silent from now on: BLINDED, then confirmed by a later sweep.
	waitFor(t, "BLINDED", func() bool {
		ops, err := st.GetAgentOps(context.Background(), "edge-dark")
		return err == nil && !ops.BlindedAt.IsZero()
	})
	waitFor(t, "silence confirmed", func() bool {
		p, err := st.SilencesToConfirm(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range p {
			if x.ID == "edge-dark" {
				return false
			}
		}
		return true
	})
	release(t, e, qs[0].Address)
	waitFor(t, "the hold to expire", func() bool { return !held(t, st, "edge-dark") })
	time.Sleep(5 * time.Second) // five sweeps
	if !pastDeadline(t, st, "edge-dark") {
		t.Fatal("agent not past its deadline")
	}
	if qs := quarantined(t, st); len(qs) != 1 || qs[0].Offender != "edge-dark" {
		t.Fatalf("silent agent not isolated again once released and the hold over: %+v", qs)
	}
}

// TestTransientStreakAlertsBounded: a device runs streaks of transient
// failures (a firmware log it never sends), each ended by one accepted
// pulse. The transient_streak alert is raised at most once per agent and
// hour, however many streaks.
func TestTransientStreakAlertsBounded(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-noisy")
	bogus := sha256.Sum256([]byte("a firmware log the verifier never sees"))
	const cycles = 4
	for c := 0; c < cycles; c++ {
		for i := 0; i < config.DefaultTransientAlertAfter; i++ {
			resp := a.Pulse(func(p *parts) { p.SendLog = false; p.Payload.FirmwareLogSha256 = bogus[:] })
			wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING)
		}
		wantVerdict(t, a.Pulse(func(p *parts) { p.SendLog = false }), trusted, pulsev1.Reason_REASON_OK)
	}
	if n := len(alertsOf(t, st, "edge-noisy", verifier.AlertTransientStreak)); n != 1 {
		t.Fatalf("%d transient_streak alerts for %d streaks in one window, want 1", n, cycles)
	}
	if qs := quarantined(t, st); len(qs) != 0 {
		t.Fatalf("attacker isolated: %+v", qs)
	}
}
