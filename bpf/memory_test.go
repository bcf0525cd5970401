package bpf

import (
	"runtime"
	"testing"
)

// heapAfterGC is the live heap once a collection has run.
func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestLoadReleasesKernelBTF: the kernel's BTF (parsed for CO-RE while the
// objects load) is not kept by a loaded Manager, so its decoded types do not
// stay in the agent's heap (docs/performance.md, "A real agent on swtpm").
func TestLoadReleasesKernelBTF(t *testing.T) {
	requireKernel(t)
	before := heapAfterGC()
	m, _ := loadTestManager(t, Options{})
	after := heapAfterGC()
	if m.btfSpec != nil {
		t.Error("loaded Manager still holds the kernel BTF spec")
	}
	var grown int64
	if after > before {
		grown = int64(after - before)
	}
	t.Logf("live heap grew by %d KiB over Load", grown/1024)
	// A kept kernel spec alone is ≈ 3.5 MiB here; what a Manager keeps
	// (collections, maps, measurements) is far less.
	const limit = 2 << 20
	if grown > limit {
		t.Errorf("live heap grew by %d KiB over Load, want at most %d KiB", grown/1024, limit/1024)
	}
}
