package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

func tpmAgent(id, ek, ak string) *store.Agent {
	return &store.Agent{ID: id, Partition: "fleet", TPM: true, EKPublic: []byte(ek), EKSHA256: sum(ek),
		AKPublic: []byte(ak), AKName: sum(ak), EnrolledAt: time.Now()}
}

// TestEnrollAgentEKLimit: one EK backs at most the allowed number of agent
// IDs; re-enrolling an agent on its own EK is not a new ID, and reports the
// AK it replaced.
func TestEnrollAgentEKLimit(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			steps := []struct {
				name string
				a    *store.Agent
				max  int
				want error
				// wantNew and wantAKChanged describe the outcome.
				wantNew, wantAKChanged bool
			}{
				{"first agent on the EK", tpmAgent("a1", "ek", "ak1"), 1, nil, true, false},
				{"second agent ID on the EK", tpmAgent("a2", "ek", "ak2"), 1, store.ErrEKInUse, false, false},
				{"same agent, same AK", tpmAgent("a1", "ek", "ak1"), 1, nil, false, false},
				{"same agent, new AK", tpmAgent("a1", "ek", "ak9"), 1, nil, false, true},
				{"same agent, other EK", tpmAgent("a1", "ek-other", "ak9"), 1, store.ErrConflict, false, false},
				{"second agent ID allowed by a bound of 2", tpmAgent("a2", "ek", "ak2"), 2, nil, true, false},
				{"third agent ID over a bound of 2", tpmAgent("a3", "ek", "ak3"), 2, store.ErrEKInUse, false, false},
				{"another EK is its own count", tpmAgent("b1", "ek-b", "akb"), 1, nil, true, false},
				{"mTLS-only agents have no EK to count", &store.Agent{ID: "m1", EnrolledAt: time.Now()}, 1, nil, true, false},
				{"and neither do several", &store.Agent{ID: "m2", EnrolledAt: time.Now()}, 1, nil, true, false},
				{"unbounded", tpmAgent("a4", "ek", "ak4"), 0, nil, true, false},
			}
			for _, st := range steps {
				out, err := s.EnrollAgentLimited(ctx, st.a, st.max)
				if !errors.Is(err, st.want) || (st.want == nil && err != nil) {
					t.Fatalf("%s: got %v, want %v", st.name, err, st.want)
				}
				if err != nil {
					continue
				}
				if out.New != st.wantNew || out.AKChanged(st.a.AKName) != st.wantAKChanged {
					t.Fatalf("%s: outcome %+v (AK changed %t)", st.name, out, out.AKChanged(st.a.AKName))
				}
			}
			// The refusals wrote nothing.
			if _, err := s.GetAgent(ctx, "a3"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("refused agent a3 stored: %v", err)
			}
			got, err := s.GetAgent(ctx, "a1")
			if err != nil || !bytes.Equal(got.EKSHA256, sum("ek")) || !bytes.Equal(got.AKName, sum("ak9")) {
				t.Fatalf("a1 after a refused takeover: %+v %v", got, err)
			}
			if n, err := s.AgentsOnEK(ctx, sum("ek"), "a1"); err != nil || n != 2 {
				t.Fatalf("agents on EK besides a1: %d %v", n, err)
			}
		})
	}
}

// TestEnrollAgentEKLimitConcurrent: replicas enrolling different agent IDs
// on one EK at once cannot both pass the count.
func TestEnrollAgentEKLimitConcurrent(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			const n = 8
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = s.EnrollAgentLimited(ctx, tpmAgent(fmt.Sprintf("race-%d", i), "ek-race", fmt.Sprintf("ak-%d", i)), 1)
				}()
			}
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, store.ErrEKInUse):
					t.Fatalf("unexpected error: %v", err)
				}
			}
			if won != 1 {
				t.Fatalf("%d agent IDs enrolled on one EK, want 1", won)
			}
			if c, err := s.AgentsOnEK(ctx, sum("ek-race"), ""); err != nil || c != 1 {
				t.Fatalf("agents on the EK: %d %v", c, err)
			}
		})
	}
}

// TestExpiredEnrollmentsDeleted: expired pending enrollments are removed,
// live ones stay, and a new challenge replaces the agent's pending one.
func TestExpiredEnrollmentsDeleted(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Now()
			mk := func(id, agent string, expires time.Time) *store.Enrollment {
				e := &store.Enrollment{ID: id, AgentID: agent, SecretSHA256: sum(id), Expires: expires}
				if err := s.CreateEnrollment(ctx, e); err != nil {
					t.Fatal(err)
				}
				return e
			}
			mk("old-1", "a", now.Add(-time.Minute))
			mk("old-2", "b", now.Add(-time.Second))
			mk("live", "c", now.Add(time.Minute))
			if n, err := s.CountEnrollments(ctx); err != nil || n != 3 {
				t.Fatalf("pending: %d %v", n, err)
			}
			removed, err := s.DeleteExpiredEnrollments(ctx, now)
			if err != nil || removed != 2 {
				t.Fatalf("removed %d, %v; want 2", removed, err)
			}
			if _, err := s.TakeEnrollment(ctx, "old-1", "a"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("expired enrollment still there: %v", err)
			}
			if n, err := s.CountEnrollments(ctx); err != nil || n != 1 {
				t.Fatalf("pending after delete: %d %v", n, err)
			}
			if removed, err := s.DeleteExpiredEnrollments(ctx, now); err != nil || removed != 0 {
				t.Fatalf("second delete removed %d, %v", removed, err)
			}

			// A new challenge for c replaces its pending one.
			mk("live-2", "c", now.Add(time.Minute))
			if _, err := s.TakeEnrollment(ctx, "live", "c"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("replaced enrollment still there: %v", err)
			}
			if _, err := s.TakeEnrollment(ctx, "live-2", "c"); err != nil {
				t.Fatalf("current enrollment: %v", err)
			}
			if n, err := s.CountEnrollments(ctx); err != nil || n != 0 {
				t.Fatalf("pending at the end: %d %v", n, err)
			}
		})
	}
}
