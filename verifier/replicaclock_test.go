package verifier_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pgtest"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// TestMain stops the throwaway PostgreSQL cluster the replica tests start.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestReplicaFastClockRaisesNothing: two replicas on one PostgreSQL, the
// second with its clock 100 s fast. Deadlines run on the database's clock,
// so while an agent pulses on time through the first replica, the fast
// one's sweeps find nobody overdue: no BLINDED, no alert, no isolation.
// When the agent really goes silent it is BLINDED once, after its
// deadline, and isolated once the silence is confirmed.
func TestReplicaFastClockRaisesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	dsn := pgtest.NewDatabase(t)
	if dsn == "" {
		return
	}
	var base config.Config
	e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) {
		fastHeartbeat("1s", 3, "0s")(c)
		c.Store = config.Store{Engine: store.EnginePostgres, DSN: dsn}
		c.Replica = "r1"
		base = *c
	})
	if e == nil {
		return
	}
	fast := &fakeClock{}
	fast.Advance(100 * time.Second)
	cfg := base
	cfg.Replica = "r2-fast"
	cfg.Alerts.AuditLog = filepath.Join(e.dir, "audit-r2.log")
	ctx, cancel := context.WithCancel(context.Background())
	d2, err := verifier.Start(ctx, &cfg, simtest.Logger(t), func(o *verifier.Options) { o.Now = fast.Now })
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Stop(); cancel() })
	st := e.daemon.Store

	a := e.enrolled("edge-live")
	// Pulsing on time (every 0.5 s, deadline 3 s) for several of the fast
	// replica's sweeps.
	for range 12 {
		time.Sleep(500 * time.Millisecond)
		a.Challenge()
		wantVerdict(t, a.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	}
	if ag, err := st.GetAgent(context.Background(), "edge-live"); err != nil || pulsev1.Verdict(ag.LastVerdict) != trusted {
		t.Fatalf("healthy agent after the fast replica's sweeps: %+v %v", ag, err)
	}
	if n := len(alertsOf(t, st, "edge-live", verifier.AlertCompromised)); n != 0 {
		t.Fatalf("%d false compromised alerts from a replica with a fast clock", n)
	}
	if qs := quarantined(t, st); len(qs) != 0 {
		t.Fatalf("a healthy agent isolated: %+v", qs)
	}

	// Honest detection still works: silent for real, it is BLINDED past its
	// deadline (the database's clock), once, and isolated once confirmed.
	waitFor(t, "the silent agent isolated", func() bool { return len(quarantined(t, st)) == 1 })
	ops, err := st.GetAgentOps(context.Background(), "edge-live")
	if err != nil || ops.BlindedAt.Before(ops.Deadline) {
		t.Fatalf("BLINDED at %s, deadline %s (%v)", ops.BlindedAt, ops.Deadline, err)
	}
	if qs := quarantined(t, st); qs[0].Offender != "edge-live" || qs[0].Reason != pulsev1.Reason_REASON_SILENT.String() {
		t.Fatalf("quarantine %+v", qs)
	}
	if n := len(alertsOf(t, st, "edge-live", verifier.AlertCompromised)); n != 1 {
		t.Fatalf("%d compromised alerts for one silence, want 1", n)
	}
}
