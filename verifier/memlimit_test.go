package verifier_test

import (
	"runtime/debug"
	"testing"

	"github.com/pulse-attest/pulse/verifier/config"
)

// TestDaemonAppliesMemoryLimit: a verifier started with memory_limit runs
// with that soft memory limit; one started without it leaves the
// process's limit as it was.
func TestDaemonAppliesMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })

	const before = 5 << 30
	debug.SetMemoryLimit(before)
	if e := newEnvCfg(t, "rhel8-uefi", nil); e == nil {
		return
	}
	if got := debug.SetMemoryLimit(-1); got != before {
		t.Fatalf("without memory_limit the limit became %d, want %d kept", got, int64(before))
	}

	const limit = 3 << 30
	if e := newEnvCfg(t, "rhel8-uefi", func(c *config.Config) { c.MemoryLimit = limit }); e == nil {
		return
	}
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Fatalf("with memory_limit = %d the limit is %d", int64(limit), got)
	}
}
