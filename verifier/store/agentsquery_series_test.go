package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestVerdictSeries: counts at each point replay the recorded changes,
// including those before the window; removed agents are not counted.
func TestVerdictSeries(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
			for _, id := range []string{"a", "b"} {
				enrollPlain(t, s, id)
			}
			add := func(id string, min int, v int32) {
				t.Helper()
				if err := s.AppendHistory(ctx, id, store.HistoryEntry{At: t0.Add(time.Duration(min) * time.Minute), Verdict: v}); err != nil {
					t.Fatal(err)
				}
			}
			add("a", -30, 1) // before the window
			add("b", 10, 1)
			add("a", 25, 2)
			add("b", 50, 2)
			add("gone", 5, 2)                                          // not enrolled
			pts, err := s.VerdictSeries(ctx, t0, t0.Add(time.Hour), 5) // 0, 15, 30, 45, 60 min
			if err != nil {
				t.Fatal(err)
			}
			want := []map[int32]int{{1: 1}, {1: 2}, {1: 1, 2: 1}, {1: 1, 2: 1}, {2: 2}}
			if len(pts) != len(want) {
				t.Fatalf("%d points", len(pts))
			}
			for i, p := range pts {
				if len(p.Counts) != len(want[i]) {
					t.Fatalf("point %d (%s): %v, want %v", i, p.At, p.Counts, want[i])
				}
				for k, n := range want[i] {
					if p.Counts[k] != n {
						t.Fatalf("point %d (%s): %v, want %v", i, p.At, p.Counts, want[i])
					}
				}
			}
			if _, err := s.VerdictSeries(ctx, t0, t0, 5); err == nil {
				t.Fatal("empty window accepted")
			}
			parts, err := s.AgentPartitions(ctx)
			if err != nil || len(parts) != 2 {
				t.Fatalf("partitions %v %v", parts, err)
			}
		})
	}
}
