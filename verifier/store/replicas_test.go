package store_test

import (
	"context"
	"testing"
	"time"
)

// TestReplicas: each replica's latest digest is kept, one row per replica;
// the window leaves out replicas not seen lately.
func TestReplicas(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if err := s.RecordReplica(ctx, "", "d"); err == nil {
				t.Error("empty replica id recorded")
			}
			if rs, _, err := s.Replicas(ctx, time.Minute); err != nil || len(rs) != 0 {
				t.Fatalf("empty: %v %v", rs, err)
			}
			steps := []struct{ id, digest string }{{"r1", "aaa"}, {"r2", "bbb"}, {"r1", "ccc"}}
			for _, st := range steps {
				if err := s.RecordReplica(ctx, st.id, st.digest); err != nil {
					t.Fatal(err)
				}
			}
			rs, now, err := s.Replicas(ctx, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 2 || rs[0].ID != "r1" || rs[0].PolicyDigest != "ccc" || rs[1].ID != "r2" || rs[1].PolicyDigest != "bbb" {
				t.Fatalf("replicas %+v", rs)
			}
			for _, r := range rs {
				if r.SeenAt.IsZero() || r.SeenAt.After(now) || now.Sub(r.SeenAt) > time.Minute {
					t.Errorf("%s seen at %v, database now %v", r.ID, r.SeenAt, now)
				}
			}
			time.Sleep(20 * time.Millisecond)
			if err := s.RecordReplica(ctx, "r2", "bbb"); err != nil {
				t.Fatal(err)
			}
			recent, _, err := s.Replicas(ctx, 10*time.Millisecond)
			if err != nil || len(recent) != 1 || recent[0].ID != "r2" {
				t.Errorf("within 10ms: %+v %v", recent, err)
			}
			all, _, err := s.Replicas(ctx, 0)
			if err != nil || len(all) != 2 {
				t.Errorf("all: %+v %v", all, err)
			}
		})
	}
}
