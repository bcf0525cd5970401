package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// enrolled adds agents with no deadline yet.
func enrolled(t *testing.T, s *store.Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := s.EnrollAgent(context.Background(), &store.Agent{ID: id, EnrolledAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
}

// pulse commits a pulse of the agent at its current nonce epoch: accepted
// ones carry a deadline (as the verifier's settle does), rejected ones not.
func pulse(t *testing.T, s *store.Store, id string, accepted bool) {
	t.Helper()
	ctx := context.Background()
	a, err := s.GetAgent(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	u := store.PulseUpdate{At: time.Now(), Verdict: 3}
	if accepted {
		u.Verdict, u.DeadlineIn, u.Interval = 1, time.Hour, 20*time.Minute
	}
	if st, err := s.CommitPulse(ctx, id, a.NonceEpoch, u); err != nil || st != store.NonceOK {
		t.Fatalf("commit pulse of %s: %v %v", id, st, err)
	}
}

// TestDeadlinesOnDatabaseClock: deadlines are written and compared on the
// database's clock; no replica's time takes part.
func TestDeadlinesOnDatabaseClock(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			tests := []struct {
				id      string
				in      time.Duration
				overdue bool
			}{
				{"due-in-an-hour", time.Hour, false},
				{"due-in-a-minute", time.Minute, false},
				{"due-a-second-ago", -time.Second, true},
			}
			for _, tc := range tests {
				enrolled(t, s, tc.id)
				if err := s.SetFirstDeadline(ctx, tc.id, 30*time.Second, tc.in); err != nil {
					t.Fatal(err)
				}
			}
			over, err := s.Overdue(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, a := range over {
				got[a.ID] = true
			}
			for _, tc := range tests {
				if got[tc.id] != tc.overdue {
					t.Errorf("%s: overdue %v, want %v", tc.id, got[tc.id], tc.overdue)
				}
			}
			// A first deadline is set once: re-enrolling does not move it.
			if err := s.SetFirstDeadline(ctx, "due-a-second-ago", 30*time.Second, time.Hour); err != nil {
				t.Fatal(err)
			}
			if over, _ := s.Overdue(ctx); len(over) != 1 {
				t.Fatalf("a second first deadline moved the deadline: %d overdue", len(over))
			}
			// The deadline is the database's clock plus the interval.
			now, err := s.Now(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ops, err := s.GetAgentOps(ctx, "due-in-an-hour")
			if err != nil || ops.Deadline.After(now.Add(time.Hour)) || ops.Deadline.Before(now.Add(59*time.Minute)) {
				t.Fatalf("deadline %s, database clock %s (%v)", ops.Deadline, now, err)
			}
		})
	}
}

// TestSilenceConfirmation: a BLINDED mark isolates only once confirmed by
// a later sweep, at least the given time after the mark, while the agent
// is still overdue; an accepted pulse in between cancels it.
func TestSilenceConfirmation(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrolled(t, s, "silent", "back")
			for _, id := range []string{"silent", "back"} {
				if err := s.SetDeadline(ctx, id, 30*time.Second, -time.Second); err != nil {
					t.Fatal(err)
				}
				if won, err := s.MarkBlinded(ctx, id, 5, 94, "silent"); err != nil || !won {
					t.Fatalf("mark %s: %v %v", id, won, err)
				}
			}
			// The sweep that marked it cannot confirm it: too soon.
			if pending, err := s.SilencesToConfirm(ctx, time.Hour); err != nil || len(pending) != 0 {
				t.Fatalf("pending an hour after the mark: %d %v", len(pending), err)
			}
			if won, err := s.ConfirmSilence(ctx, "silent", time.Hour); err != nil || won {
				t.Fatalf("confirmed within the minimum time: %v %v", won, err)
			}
			// "back" pulses (accepted) before the confirming sweep.
			pulse(t, s, "back", true)
			pending, err := s.SilencesToConfirm(ctx, 0)
			if err != nil || len(pending) != 1 || pending[0].ID != "silent" {
				t.Fatalf("pending: %v %v", pending, err)
			}
			tests := []struct {
				id   string
				want bool
			}{
				{"back", false},  // heard from since the mark
				{"silent", true}, // still silent: confirmed once
				{"silent", false},
			}
			for _, tc := range tests {
				if won, err := s.ConfirmSilence(ctx, tc.id, 0); err != nil || won != tc.want {
					t.Errorf("confirm %s: %v %v, want %v", tc.id, won, err, tc.want)
				}
			}
			if ops, _ := s.GetAgentOps(ctx, "back"); !ops.BlindedAt.IsZero() {
				t.Fatal("an accepted pulse kept the BLINDED mark")
			}
		})
	}
}

// TestIsolationHold: a release holds off the next isolation of its
// offender until an accepted pulse is committed after it, or it expires;
// a rejected pulse does not end it.
func TestIsolationHold(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			tests := []struct {
				name     string
				holdFor  time.Duration
				after    func(t *testing.T, id string)
				isolates bool
			}{
				{"no pulse since the release", time.Hour, func(*testing.T, string) {}, false},
				{"rejected pulse", time.Hour, func(t *testing.T, id string) { pulse(t, s, id, false) }, false},
				{"accepted pulse", time.Hour, func(t *testing.T, id string) { pulse(t, s, id, true) }, true},
				{"expired", 50 * time.Millisecond, func(t *testing.T, id string) {
					for {
						held, err := s.IsolationHeld(ctx, id)
						if err != nil {
							t.Fatal(err)
						}
						if !held {
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
				}, true},
			}
			for i, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					id, addr := fmt.Sprintf("held-%d", i), fmt.Sprintf("192.0.2.%d", 10+i)
					enrolled(t, s, id)
					q := store.Quarantine{Address: addr, Offender: id, Reason: "REASON_BINARY_CHANGED", Since: time.Now()}
					if isNew, err := s.AddQuarantine(ctx, q); err != nil || !isNew {
						t.Fatalf("isolate: %v %v", isNew, err)
					}
					if _, err := s.ReleaseQuarantine(ctx, addr, "operator:alice", tc.holdFor); err != nil {
						t.Fatal(err)
					}
					if _, err := s.ReleaseQuarantine(ctx, addr, "operator:alice", tc.holdFor); !errors.Is(err, store.ErrNotFound) {
						t.Fatalf("second release: %v", err)
					}
					tc.after(t, id)
					isNew, err := s.AddQuarantine(ctx, q)
					if tc.isolates {
						if err != nil || !isNew {
							t.Fatalf("isolation after the hold ended: %v %v", isNew, err)
						}
						return
					}
					var he *store.HoldError
					if !errors.Is(err, store.ErrIsolationHeld) || !errors.As(err, &he) || he.Hold.By != "operator:alice" || isNew {
						t.Fatalf("isolation under a hold: %v %v", isNew, err)
					}
					if qs, _ := s.ListQuarantine(ctx); len(qs) != 0 {
						t.Fatalf("a held isolation was written: %+v", qs)
					}
				})
			}
		})
	}
}

// TestIsolateReleaseRace: an isolation racing a release never leaves the
// address isolated under the hold the release set: both serialise on the
// offender's row.
func TestIsolateReleaseRace(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrolled(t, s, "racer")
			q := store.Quarantine{Address: "192.0.2.99", Offender: "racer", Reason: "REASON_SILENT", Since: time.Now()}
			for round := range 30 {
				if err := s.ClearIsolationHold(ctx, "racer"); err != nil {
					t.Fatal(err)
				}
				if _, err := s.AddQuarantine(ctx, q); err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				wg.Add(2)
				go func() {
					defer wg.Done()
					if _, err := s.ReleaseQuarantine(ctx, q.Address, "operator:bob", time.Hour); err != nil && !errors.Is(err, store.ErrNotFound) {
						t.Error(err)
					}
				}()
				go func() {
					defer wg.Done()
					if _, err := s.AddQuarantine(ctx, q); err != nil && !errors.Is(err, store.ErrIsolationHeld) {
						t.Error(err)
					}
				}()
				wg.Wait()
				held, err := s.IsolationHeld(ctx, "racer")
				if err != nil {
					t.Fatal(err)
				}
				qs, err := s.ListQuarantine(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if held && len(qs) != 0 {
					t.Fatalf("round %d: isolated under an operator's hold", round)
				}
			}
		})
	}
}
