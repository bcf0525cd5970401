package store_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestAlertOutboxClaim: a raised alert is claimed by its raiser; once the
// claim is stale it is pending, one conditional claim takes it, and after
// it is marked dispatched nobody can claim it again.
func TestAlertOutboxClaim(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			t0 := time.Unix(1_700_000_000, 0).UTC()
			a := &store.Alert{DedupKey: "takeover:edge-1:no-tpm:1", AgentID: "edge-1", Kind: "identity_takeover", Severity: 1, CreatedAt: t0}
			if raised, err := s.RaiseAlert(ctx, a); err != nil || !raised {
				t.Fatalf("raise: %v %v", raised, err)
			}
			pending := func(staleBefore time.Time) []*store.Alert {
				t.Helper()
				p, err := s.PendingAlerts(ctx, staleBefore, 10)
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			if p := pending(t0); len(p) != 0 {
				t.Fatalf("the raiser's fresh claim is pending: %+v", p[0])
			}
			p := pending(t0.Add(time.Second))
			if len(p) != 1 || p[0].ID != a.ID || !p[0].DispatchedAt.IsZero() || p[0].Severity != 1 || !p[0].CreatedAt.Equal(t0) {
				t.Fatalf("pending after the claim went stale: %+v", p)
			}
			now := t0.Add(10 * time.Second)
			steps := []struct {
				name        string
				now, before time.Time
				want        bool
			}{
				{"stale claim taken", now, t0.Add(time.Second), true},
				{"same claim again", now, t0.Add(time.Second), false},
				{"claim not stale yet", now.Add(time.Second), now, false},
				{"claim stale again", now.Add(time.Minute), now.Add(time.Nanosecond), true},
			}
			for _, st := range steps {
				got, err := s.ClaimAlert(ctx, a.ID, st.now, st.before)
				if err != nil || got != st.want {
					t.Fatalf("%s: claimed %v (%v), want %v", st.name, got, err, st.want)
				}
			}
			if p := pending(now.Add(30 * time.Second)); len(p) != 0 {
				t.Fatalf("claimed alert still pending: %+v", p)
			}
			at := now.Add(time.Minute)
			if err := s.MarkAlertDispatched(ctx, a.ID, at); err != nil {
				t.Fatal(err)
			}
			if err := s.MarkAlertDispatched(ctx, a.ID, at.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if got, err := s.ClaimAlert(ctx, a.ID, at.Add(time.Hour), at.Add(time.Hour)); err != nil || got {
				t.Fatalf("dispatched alert claimed: %v %v", got, err)
			}
			if p := pending(at.Add(time.Hour)); len(p) != 0 {
				t.Fatalf("dispatched alert pending: %+v", p)
			}
			list, err := s.ListAlerts(ctx, store.AlertFilter{AgentID: "edge-1"})
			if err != nil || len(list) != 1 || !list[0].DispatchedAt.Equal(at) {
				t.Fatalf("listed %+v %v; want dispatched at %s (the first mark)", list, err, at)
			}
			// Raising the same dedup key again is still a no-op.
			if raised, err := s.RaiseAlert(ctx, &store.Alert{DedupKey: a.DedupKey, AgentID: "edge-1", Kind: "identity_takeover", Severity: 1}); err != nil || raised {
				t.Fatalf("raise duplicate: %v %v", raised, err)
			}
		})
	}
}

// TestAlertOutboxPendingOrder: pending alerts come oldest first, bounded
// by the limit, and dispatched ones never come.
func TestAlertOutboxPendingOrder(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			t0 := time.Unix(1_700_000_000, 0).UTC()
			var ids []string
			for i, key := range []string{"c", "a", "b", "d"} {
				a := &store.Alert{DedupKey: key, AgentID: "edge-1", Kind: "untrusted", Severity: 2, CreatedAt: t0.Add(time.Duration(i) * time.Second)}
				if _, err := s.RaiseAlert(ctx, a); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, a.ID)
			}
			if err := s.MarkAlertDispatched(ctx, ids[1], t0); err != nil {
				t.Fatal(err)
			}
			p, err := s.PendingAlerts(ctx, t0.Add(time.Hour), 2)
			if err != nil || len(p) != 2 || p[0].ID != ids[0] || p[1].ID != ids[2] {
				t.Fatalf("pending %+v %v; want %s then %s", p, err, ids[0], ids[2])
			}
		})
	}
}

// TestAlertOutboxClaimRace: of many concurrent claims on one alert,
// exactly one wins, on each engine.
func TestAlertOutboxClaimRace(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			t0 := time.Unix(1_700_000_000, 0).UTC()
			a := &store.Alert{DedupKey: "race", AgentID: "edge-1", Kind: "compromised", Severity: 1, CreatedAt: t0}
			if _, err := s.RaiseAlert(ctx, a); err != nil {
				t.Fatal(err)
			}
			var (
				wg   sync.WaitGroup
				wins atomic.Int32
			)
			for i := range 8 {
				wg.Go(func() {
					ok, err := s.ClaimAlert(ctx, a.ID, t0.Add(time.Minute+time.Duration(i)), t0.Add(time.Second))
					if err != nil {
						t.Error(err)
					}
					if ok {
						wins.Add(1)
					}
				})
			}
			wg.Wait()
			if n := wins.Load(); n != 1 {
				t.Fatalf("%d claims won, want 1", n)
			}
		})
	}
}
