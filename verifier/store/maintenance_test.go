package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestMaintenanceWindows: a window is open until its end and not after,
// replaces the agent's previous one, lists only open windows, and needs an
// enrolled agent.
func TestMaintenanceWindows(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
			if err := s.EnrollAgent(ctx, &store.Agent{ID: "edge-m", TPM: true, EKSHA256: sum("ek-m"), AKPublic: []byte("ak"), EnrolledAt: t0}); err != nil {
				t.Fatal(err)
			}
			err := s.SetMaintenance(ctx, store.Maintenance{AgentID: "nobody", Until: t0.Add(time.Hour), By: "alice", At: t0})
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("window for an unknown agent: %v, want ErrNotFound", err)
			}
			if _, err := s.OpenMaintenance(ctx, "edge-m", t0); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("no window yet: %v, want ErrNotFound", err)
			}
			if err := s.SetMaintenance(ctx, store.Maintenance{AgentID: "edge-m", Until: t0.Add(30 * time.Minute), By: "alice", Reason: "kernel update", At: t0}); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				at   time.Time
				open bool
			}{
				{t0, true},
				{t0.Add(30*time.Minute - time.Nanosecond), true},
				{t0.Add(30 * time.Minute), false},
				{t0.Add(time.Hour), false},
			} {
				m, err := s.OpenMaintenance(ctx, "edge-m", c.at)
				switch {
				case c.open && (err != nil || m.By != "alice" || m.Reason != "kernel update" || !m.Until.Equal(t0.Add(30*time.Minute))):
					t.Errorf("at %s: %+v %v, want alice's window", c.at, m, err)
				case !c.open && !errors.Is(err, store.ErrNotFound):
					t.Errorf("at %s: %+v %v, want closed", c.at, m, err)
				}
			}
			// A second window replaces the first (shorter or longer).
			if err := s.SetMaintenance(ctx, store.Maintenance{AgentID: "edge-m", Until: t0.Add(5 * time.Minute), By: "bob", At: t0.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			if m, err := s.OpenMaintenance(ctx, "edge-m", t0.Add(10*time.Minute)); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("replaced window still open: %+v %v", m, err)
			}
			l, err := s.ListMaintenance(ctx, t0.Add(2*time.Minute))
			if err != nil || len(l) != 1 || l[0].By != "bob" || l[0].AgentID != "edge-m" {
				t.Fatalf("list: %+v %v", l, err)
			}
			if l, err := s.ListMaintenance(ctx, t0.Add(6*time.Minute)); err != nil || len(l) != 0 {
				t.Fatalf("list after the end: %+v %v", l, err)
			}
		})
	}
}
