package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestRemoveAgent: a decommissioned agent is gone with its pending
// enrollments; the others stay; removing it again is ErrNotFound.
func TestRemoveAgent(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			for _, id := range []string{"edge-1", "edge-2"} {
				if err := s.EnrollAgent(ctx, &store.Agent{ID: id, Partition: "fleet", TPM: true, EKPublic: []byte(id), EKSHA256: sum(id), AKPublic: []byte("ak"), EnrolledAt: time.Unix(1000, 0)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.CreateEnrollment(ctx, &store.Enrollment{ID: "e1", AgentID: "edge-1", SecretSHA256: sum("s"), Expires: time.Now().Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			// What the verifier keeps per agent goes with it.
			if err := s.SetMaintenance(ctx, store.Maintenance{AgentID: "edge-1", Until: time.Now().Add(time.Hour), By: "op", At: time.Now()}); err != nil {
				t.Fatal(err)
			}
			if err := s.RecordSentinel(ctx, "edge-1", store.SentinelCursor{Boot: "1.0", LastSeq: 1}, []store.SentinelEvent{{Boot: "1.0", Seq: 1, Kind: "signal", At: time.Now()}}, time.Now()); err != nil {
				t.Fatal(err)
			}
			ra, err := s.RemoveAgent(ctx, "edge-1")
			if err != nil {
				t.Fatal(err)
			}
			if ra.ID != "edge-1" || !ra.TPM || ra.Partition != "fleet" || string(ra.EKSHA256) != string(sum("edge-1")) || !ra.EnrolledAt.Equal(time.Unix(1000, 0)) {
				t.Fatalf("removed %+v", ra)
			}
			if _, err := s.GetAgent(ctx, "edge-1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("removed agent still there: %v", err)
			}
			if _, err := s.TakeEnrollment(ctx, "e1", "edge-1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("pending enrollment of a removed agent: %v", err)
			}
			if m, err := s.OpenMaintenance(ctx, "edge-1", time.Now()); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("maintenance window of a removed agent: %+v, %v", m, err)
			}
			if _, err := s.GetSentinelCursor(ctx, "edge-1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("sentinel cursor of a removed agent: %v", err)
			}
			if evs, err := s.SentinelEvents(ctx, "edge-1"); err != nil || len(evs) != 0 {
				t.Fatalf("sentinel events of a removed agent: %v, %v", evs, err)
			}
			if _, err := s.GetAgent(ctx, "edge-2"); err != nil {
				t.Fatalf("another agent went too: %v", err)
			}
			if _, err := s.RemoveAgent(ctx, "edge-1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("second removal: %v, want ErrNotFound", err)
			}
		})
	}
}
