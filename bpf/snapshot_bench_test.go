package bpf

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkSnapshot measures one pulse's snapshot (every loaded program on
// the host plus the agent's pins and links checked) with 50 extra programs
// loaded next to the agent's own.
func BenchmarkSnapshot(b *testing.B) {
	requireKernel(b)
	m, _ := loadTestManager(b, Options{})
	for i := 0; i < 50; i++ {
		trivialProgram(b, fmt.Sprintf("pulse_bench_%d", i), int32(i))
	}
	ctx := context.Background()
	snap, err := m.Snapshot(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if len(snap.Programs) < 50+len(snap.Pinned) {
		b.Fatalf("only %d programs loaded", len(snap.Programs))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		snap, err = m.Snapshot(ctx)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := snap.Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(snap.Programs)), "programs")
}
