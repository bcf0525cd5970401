package verifier

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/policy"
	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/ektrust"
	"github.com/pulse-attest/pulse/verifier/store"
)

// recordingAlerter counts the alerts it is handed, by ID; while failing,
// it refuses them as a closed dispatcher does.
type recordingAlerter struct {
	mu      sync.Mutex
	got     map[string]int
	failing bool
}

func newRecorder() *recordingAlerter { return &recordingAlerter{got: map[string]int{}} }

func (r *recordingAlerter) Alert(a *store.Alert) { _ = r.DispatchAlert(a) }

func (r *recordingAlerter) DispatchAlert(a *store.Alert) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		return alert.ErrClosed
	}
	r.got[a.ID]++
	return nil
}

func (r *recordingAlerter) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[id]
}

func (r *recordingAlerter) setFailing(f bool) {
	r.mu.Lock()
	r.failing = f
	r.mu.Unlock()
}

type noPolicies struct{}

func (noPolicies) Current() *policy.Set { return nil }

// testClock is a settable clock shared by the verifiers of a test.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// outboxEngines opens stores for the outbox tests: SQLite, and PostgreSQL
// on a throwaway cluster of this test's own (two stores on the one
// database, as two replicas have).
func outboxEngines(t *testing.T) map[string][2]*store.Store {
	t.Helper()
	ctx := context.Background()
	open := func(engine, dsn string) *store.Store {
		s, err := store.Open(ctx, engine, dsn)
		if err != nil {
			t.Fatalf("open %s: %v", engine, err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	dsn := filepath.Join(t.TempDir(), "pulse.db")
	out := map[string][2]*store.Store{store.EngineSQLite: {open(store.EngineSQLite, dsn), open(store.EngineSQLite, dsn)}}
	if testing.Short() {
		return out
	}
	bin, err := pgtest.BinDir()
	if err != nil {
		testutil.Unavailable(t, "%v", err)
		return out
	}
	c, err := pgtest.Start(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	pg := c.DSN("postgres")
	out[store.EnginePostgres] = [2]*store.Store{open(store.EnginePostgres, pg), open(store.EnginePostgres, pg)}
	return out
}

func newOutboxVerifier(t *testing.T, st *store.Store, replica string, clock *testClock, a Alerter) *Verifier {
	t.Helper()
	trust, err := ektrust.Load(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{NonceTTL: time.Minute, ClockSkew: 30 * time.Second, Enrollment: config.Enrollment{Timeout: time.Minute}}
	v, err := New(Options{Config: cfg, Store: st, Policies: noPolicies{}, EKTrust: trust, Now: clock.Now, Replica: replica, Alerter: a})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func dispatchedAt(t *testing.T, st *store.Store, id string) time.Time {
	t.Helper()
	all, err := st.ListAlerts(context.Background(), store.AlertFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range all {
		if a.ID == id {
			return a.DispatchedAt
		}
	}
	t.Fatalf("alert %s not stored", id)
	return time.Time{}
}

// TestAlertOutboxRedispatch: an alert stored while the alerter was absent
// (the crash between storing and dispatching) or refusing is dispatched by
// the outbox pass once its claim is stale, exactly once; an alert raise
// dispatched itself is never dispatched again.
func TestAlertOutboxRedispatch(t *testing.T) {
	cases := []struct {
		name string
		// prepare makes the verifier miss the alert at raise time.
		prepare func(v *Verifier, rec *recordingAlerter)
		// atRaise is how often the recorder saw the alert from raise.
		atRaise int
	}{
		{"alerter disconnected", func(v *Verifier, _ *recordingAlerter) { v.alerter = nil }, 0},
		{"alerter refusing (dispatcher closed)", func(_ *Verifier, rec *recordingAlerter) { rec.setFailing(true) }, 0},
		{"dispatched at raise", func(*Verifier, *recordingAlerter) {}, 1},
	}
	for name, stores := range outboxEngines(t) {
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				clock := &testClock{now: time.Unix(1_700_000_000, 0)}
				rec := newRecorder()
				v := newOutboxVerifier(t, stores[0], "r1", clock, rec)
				tc.prepare(v, rec)
				a := &store.Alert{DedupKey: "outbox:" + tc.name + ":" + name, AgentID: "edge-1", Kind: AlertCompromised, Severity: 1, Message: "test"}
				v.raise(ctx, a)
				if a.ID == "" {
					t.Fatal("alert not stored")
				}
				if n := rec.count(a.ID); n != tc.atRaise {
					t.Fatalf("recorder saw the alert %d times at raise, want %d", n, tc.atRaise)
				}
				v.alerter = rec
				rec.setFailing(false)
				// The raiser's claim holds for AlertClaimStaleAfter.
				if n := v.RedispatchAlerts(ctx); n != 0 {
					t.Fatalf("pass within the claim dispatched %d", n)
				}
				clock.Advance(AlertClaimStaleAfter + time.Second)
				want := 1 - tc.atRaise
				if n := v.RedispatchAlerts(ctx); n != want {
					t.Fatalf("pass after the claim went stale dispatched %d, want %d", n, want)
				}
				clock.Advance(time.Hour)
				if n := v.RedispatchAlerts(ctx); n != 0 {
					t.Fatalf("later pass dispatched %d again", n)
				}
				if n := rec.count(a.ID); n != 1 {
					t.Fatalf("alert dispatched %d times, want 1", n)
				}
				if dispatchedAt(t, stores[0], a.ID).IsZero() {
					t.Fatal("dispatched alert not marked")
				}
			})
		}
	}
}

// TestAlertOutboxTwoReplicas: alerts stored but never dispatched (written
// through the store, as by a replica that crashed) are dispatched once
// each by two verifiers sharing the database and passing concurrently.
func TestAlertOutboxTwoReplicas(t *testing.T) {
	for name, stores := range outboxEngines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clock := &testClock{now: time.Unix(1_700_000_000, 0)}
			recs := [2]*recordingAlerter{newRecorder(), newRecorder()}
			vs := [2]*Verifier{
				newOutboxVerifier(t, stores[0], "r1", clock, recs[0]),
				newOutboxVerifier(t, stores[1], "r2", clock, recs[1]),
			}
			const n = 40
			var ids []string
			for i := range n {
				a := &store.Alert{DedupKey: "crashed:" + string(rune('a'+i%26)) + string(rune('a'+i/26)), AgentID: "edge-1",
					Kind: AlertIdentityTakeover, Severity: 1, Replica: "r0", CreatedAt: clock.Now().Add(-time.Minute)}
				if raised, err := stores[0].RaiseAlert(ctx, a); err != nil || !raised {
					t.Fatalf("store alert: %v %v", raised, err)
				}
				ids = append(ids, a.ID)
			}
			for range 3 {
				var (
					wg    sync.WaitGroup
					total [2]int
				)
				for i := range vs {
					wg.Go(func() { total[i] = vs[i].RedispatchAlerts(ctx) })
				}
				wg.Wait()
				if ids == nil {
					if total[0]+total[1] != 0 {
						t.Fatalf("a later pass dispatched %v", total)
					}
					continue
				}
				if total[0]+total[1] != n {
					t.Fatalf("first passes dispatched %v, want %d in all", total, n)
				}
				for _, id := range ids {
					if c := recs[0].count(id) + recs[1].count(id); c != 1 {
						t.Fatalf("alert %s dispatched %d times", id, c)
					}
					if dispatchedAt(t, stores[1], id).IsZero() {
						t.Fatalf("alert %s not marked", id)
					}
				}
				ids = nil
				clock.Advance(AlertClaimStaleAfter * 2)
			}
		})
	}
}

// TestAlertOutboxNoAlerter: a verifier without an alerter never claims.
func TestAlertOutboxNoAlerter(t *testing.T) {
	stores := outboxEngines(t)[store.EngineSQLite]
	clock := &testClock{now: time.Unix(1_700_000_000, 0)}
	v := newOutboxVerifier(t, stores[0], "r1", clock, nil)
	a := &store.Alert{DedupKey: "k", AgentID: "edge-1", Kind: AlertCompromised, Severity: 1, CreatedAt: clock.Now().Add(-time.Hour)}
	if _, err := stores[0].RaiseAlert(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if n := v.RedispatchAlerts(context.Background()); n != 0 {
		t.Fatalf("dispatched %d without an alerter", n)
	}
	p, err := stores[0].PendingAlerts(context.Background(), clock.Now(), 10)
	if err != nil || len(p) != 1 {
		t.Fatalf("pending %v %v: the alert must stay for a replica with an alerter", p, err)
	}
}

// TestAlertTakeoverKeys: takeover and partition-mismatch alerts are one per
// agent, EK (or none) and AlertDedupWindow, and never fewer.
func TestAlertTakeoverKeys(t *testing.T) {
	stores := outboxEngines(t)[store.EngineSQLite]
	clock := &testClock{now: time.Unix(1_700_000_000, 0).Truncate(AlertDedupWindow)}
	v := newOutboxVerifier(t, stores[0], "r1", clock, newRecorder())
	ekA, ekB := []byte{0xaa, 1}, []byte{0xbb, 2}
	steps := []struct {
		name    string
		advance time.Duration
		raise   func()
		total   int // takeover and mismatch alerts stored so far
	}{
		{"first attempt with EK A", 0, func() { v.raiseTakeover(Peer{AgentID: "edge-1"}, ekA, 0, "x") }, 1},
		{"EK A again", time.Minute, func() { v.raiseTakeover(Peer{AgentID: "edge-1"}, ekA, 0, "y") }, 1},
		{"EK B", 0, func() { v.raiseTakeover(Peer{AgentID: "edge-1"}, ekB, 0, "x") }, 2},
		{"no TPM", 0, func() { v.raiseTakeover(Peer{AgentID: "edge-1"}, nil, 0, "x") }, 3},
		{"no TPM again", 0, func() { v.raiseTakeover(Peer{AgentID: "edge-1"}, nil, 0, "x") }, 3},
		{"EK A from another agent", 0, func() { v.raiseTakeover(Peer{AgentID: "edge-2"}, ekA, 0, "x") }, 4},
		{"EK A in the next window", AlertDedupWindow, func() { v.raiseTakeover(Peer{AgentID: "edge-1"}, ekA, 0, "x") }, 5},
		{"partition asked", 0, func() { v.raisePartitionMismatch(Peer{AgentID: "edge-1"}, "lab", "fleet") }, 6},
		{"another partition asked", 0, func() { v.raisePartitionMismatch(Peer{AgentID: "edge-1"}, "dev", "fleet") }, 6},
		{"partition in the next window", AlertDedupWindow, func() { v.raisePartitionMismatch(Peer{AgentID: "edge-1"}, "lab", "fleet") }, 7},
	}
	for _, st := range steps {
		clock.Advance(st.advance)
		st.raise()
		all, err := stores[0].ListAlerts(context.Background(), store.AlertFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != st.total {
			t.Fatalf("%s: %d alerts stored, want %d", st.name, len(all), st.total)
		}
	}
}
