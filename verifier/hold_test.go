package verifier_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// fastHeartbeat replaces the test policy with one whose heartbeat is
// short: deadlines run on the database's clock, so a test that wants an
// agent overdue waits for it (the policy's grace, counted on the replica's
// injected clock from its start, can still be ended with clock.Advance).
func fastHeartbeat(interval string, missed int, grace string) func(*config.Config) {
	hb := fmt.Sprintf("\n  heartbeat {\n    interval = %q\n    missed   = %d\n    grace    = %q\n  }\n", interval, missed, grace)
	pol := strings.Replace(testPolicy, `tpm = "optional"`, `tpm = "optional"`+hb, 1)
	pol = strings.Replace(pol, `tpm = "required"`, `tpm = "required"`+hb, 1)
	return func(c *config.Config) {
		if err := os.WriteFile(c.Policy[0], []byte(pol), 0o644); err != nil {
			panic(err)
		}
	}
}

// pastDeadline reports whether the agent's deadline has passed by the
// database's clock.
func pastDeadline(t *testing.T, st *store.Store, id string) bool {
	t.Helper()
	ops, err := st.GetAgentOps(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	now, err := st.Now(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return !ops.Deadline.IsZero() && ops.Deadline.Before(now)
}

func waitPastDeadline(t *testing.T, st *store.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		waitFor(t, id+" past its deadline", func() bool { return pastDeadline(t, st, id) })
	}
}

func held(t *testing.T, st *store.Store, id string) bool {
	t.Helper()
	h, err := st.IsolationHeld(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func quarantined(t *testing.T, st *store.Store) []store.Quarantine {
	t.Helper()
	qs, err := st.ListQuarantine(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return qs
}

// compromise replaces the agent's binary outside any window: its next
// pulse is UNTRUSTED (BINARY_CHANGED), which the fleet policy isolates.
func compromise(t *testing.T, a *verifiertest.Client) {
	t.Helper()
	a.Binary = sha256.Sum256([]byte("implant"))
	a.MeasureBinary()
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
}

// recover reboots the agent's device into its approved build: TRUSTED.
func recover(t *testing.T, e *env, a *verifiertest.Client, build [32]byte) {
	t.Helper()
	if err := e.sw.Reboot(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sw.Boot(e.fwLog); err != nil {
		t.Fatal(err)
	}
	a.Binary, a.Records, a.SentUpTo = build, nil, 0
	a.MeasureBinary()
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
}

func release(t *testing.T, e *env, addr string) {
	t.Helper()
	if err := e.daemon.Verifier.Release(context.Background(), addr, "operator:test"); err != nil {
		t.Fatal(err)
	}
}

// TestReleaseWhileTrustedThenCompromise: an operator releases an agent
// that is trusted again; its next accepted pulse ends the hold, so a later
// compromise isolates it again. Before that pulse the hold suppresses the
// isolation with an isolation_suppressed alert, not silently.
func TestReleaseWhileTrustedThenCompromise(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-rel")
	build := a.Binary
	compromise(t, a)
	qs := quarantined(t, st)
	if len(qs) != 1 || qs[0].Offender != "edge-rel" {
		t.Fatalf("compromise not isolated: %+v", qs)
	}
	addr := qs[0].Address
	recover(t, e, a, build)

	// Released while TRUSTED: held until an accepted pulse.
	release(t, e, addr)
	if !held(t, st, "edge-rel") || len(quarantined(t, st)) != 0 {
		t.Fatal("release did not hold off isolation and lift the quarantine")
	}
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	if held(t, st, "edge-rel") {
		t.Fatal("an accepted pulse after the release kept the hold")
	}
	compromise(t, a)
	if qs := quarantined(t, st); len(qs) != 1 || qs[0].Offender != "edge-rel" {
		t.Fatalf("a compromise after the hold ended was not isolated: %+v", qs)
	}
	if n := len(alertsOf(t, st, "edge-rel", verifier.AlertIsolated)); n != 2 {
		t.Fatalf("%d isolated alerts, want 2", n)
	}

	// Attack side: released and compromised again with no accepted pulse
	// in between: the hold suppresses the isolation, loudly.
	release(t, e, addr)
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
	if qs := quarantined(t, st); len(qs) != 0 {
		t.Fatalf("isolated under a hold: %+v", qs)
	}
	sup := alertsOf(t, st, "edge-rel", verifier.AlertIsolationSuppressed)
	if len(sup) != 1 || sup[0].Severity != 2 || sup[0].Reason != pulsev1.Reason_REASON_BINARY_CHANGED.String() {
		t.Fatalf("isolation_suppressed alerts: %+v", sup)
	}
}

// TestReleaseHoldMTLSOnly: an mTLS-only agent is never TRUSTED; its
// accepted (DEGRADED) pulse ends a hold all the same.
func TestReleaseHoldMTLSOnly(t *testing.T) {
	e := newEnv(t, "rhel8-uefi")
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.agent("lab-rel", nil)
	a.Partition = "lab"
	if res := a.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), pulsev1.Verdict_VERDICT_DEGRADED, pulsev1.Reason_REASON_OK)
	const addr = "192.0.2.50"
	if isNew, err := st.AddQuarantine(context.Background(), store.Quarantine{Address: addr, Offender: "lab-rel", Reason: "REASON_SILENT", Since: time.Now()}); err != nil || !isNew {
		t.Fatalf("isolate: %v %v", isNew, err)
	}
	release(t, e, addr)
	if !held(t, st, "lab-rel") {
		t.Fatal("release set no hold")
	}
	a.Challenge()
	wantVerdict(t, a.Pulse(nil), pulsev1.Verdict_VERDICT_DEGRADED, pulsev1.Reason_REASON_OK)
	if held(t, st, "lab-rel") {
		t.Fatal("a DEGRADED pulse after the release kept the hold")
	}
}

// TestReleaseHoldExpires: an agent that stays UNTRUSTED after its release
// is held off isolation (one isolation_suppressed alert) only until the
// hold expires (isolation_hold); then it is isolated again.
func TestReleaseHoldExpires(t *testing.T) {
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) { c.IsolationHold = 2 * time.Second })
	if e == nil {
		return
	}
	st := openStore(t, e)
	a := e.enrolled("edge-exp")
	compromise(t, a)
	qs := quarantined(t, st)
	if len(qs) != 1 {
		t.Fatalf("compromise not isolated: %+v", qs)
	}
	release(t, e, qs[0].Address)
	for range 2 {
		wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
	}
	if qs := quarantined(t, st); len(qs) != 0 {
		t.Fatalf("isolated under a hold: %+v", qs)
	}
	if n := len(alertsOf(t, st, "edge-exp", verifier.AlertIsolationSuppressed)); n != 1 {
		t.Fatalf("%d isolation_suppressed alerts, want 1", n)
	}
	waitFor(t, "the hold to expire", func() bool { return !held(t, st, "edge-exp") })
	wantVerdict(t, a.Pulse(nil), untrusted, pulsev1.Reason_REASON_BINARY_CHANGED)
	if qs := quarantined(t, st); len(qs) != 1 || qs[0].Offender != "edge-exp" {
		t.Fatalf("not isolated after the hold expired: %+v", qs)
	}
}
