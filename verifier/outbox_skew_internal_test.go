package verifier

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestOutboxSkewedReplicaStarvesNothing: a replica whose clock runs 24 h
// fast stores an alert and crashes before dispatching it, and claims an
// alert an honest replica could not dispatch, failing too. A claim is never
// dated after the database's clock, so the honest replica's outbox
// dispatches both within its next passes.
func TestOutboxSkewedReplicaStarvesNothing(t *testing.T) {
	ctx := context.Background()
	// Two replicas on one database (SQLite: no PostgreSQL cluster needed;
	// the claim logic is the same SQL on both engines).
	dsn := filepath.Join(t.TempDir(), "pulse.db")
	var stores [2]*store.Store
	for i := range stores {
		s, err := store.Open(ctx, store.EngineSQLite, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	base := time.Now()
	honestClock := &testClock{now: base}
	fastClock := &testClock{now: base.Add(24 * time.Hour)}
	honestRec, fastRec := newRecorder(), newRecorder()
	honest := newOutboxVerifier(t, stores[0], "r1", honestClock, honestRec)
	fast := newOutboxVerifier(t, stores[1], "r2-fast", fastClock, fastRec)

	// raised: the fast replica stores the alert and crashes before
	// dispatching it (no alerter at raise time).
	fast.alerter = nil
	a := &store.Alert{DedupKey: "skew:raised", AgentID: "edge-1", Kind: AlertCompromised, Severity: 1, Message: "device compromised"}
	fast.raise(ctx, a)
	if a.ID == "" {
		t.Fatal("alert not stored")
	}

	// hijacked: an honest replica stores one and cannot dispatch it (its
	// dispatcher refuses it); the fast replica's pass claims it, and its
	// own dispatch fails as well.
	honestRec.setFailing(true)
	b := &store.Alert{DedupKey: "skew:hijacked", AgentID: "edge-2", Kind: AlertCompromised, Severity: 1, Message: "device compromised"}
	honest.raise(ctx, b)
	honestRec.setFailing(false)
	fast.alerter = fastRec
	fastRec.setFailing(true)
	fast.RedispatchAlerts(ctx)

	// The honest replica's outbox passes (the fast replica is gone).
	dispatched := 0
	for range 30 {
		honestClock.Advance(AlertOutboxInterval)
		dispatched += honest.RedispatchAlerts(ctx)
	}
	if dispatched != 2 || honestRec.count(a.ID) != 1 || honestRec.count(b.ID) != 1 {
		t.Fatalf("honest replica dispatched %d (a %d, b %d), want both once", dispatched, honestRec.count(a.ID), honestRec.count(b.ID))
	}
	if dispatchedAt(t, stores[0], a.ID).IsZero() || dispatchedAt(t, stores[0], b.ID).IsZero() {
		t.Fatal("alerts not marked dispatched")
	}
}
