package bpf

import (
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/internal/testutil"
)

// BenchmarkSentinelPulseRead is the agent's per-pulse Sentinel cost on the
// real kernel: the sentinel_cfg check and a read of up to 256 records.
func BenchmarkSentinelPulseRead(b *testing.B) {
	requireKernel(b)
	testutil.RequireTools(b, "sleep")
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	m, _ := loadTestManager(b, Options{AgentPID: cmd.Process.Pid})
	s := m.Sentinel()
	for i := 0; i < 256; i++ {
		trivialProgram(b, "pulse_bench_t", 0).Close()
	}
	b.ResetTimer()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Check(); err != nil {
			b.Fatal(err)
		}
		rep, err := s.EventsUpTo(256)
		if err != nil || len(rep.Events) == 0 {
			b.Fatalf("%d records, %v", len(rep.Events), err)
		}
	}
}

// BenchmarkSentinelSignal is the cost sentinel_signal adds to every signal
// on the host: a SIGURG this process sends itself (not the agent, the
// common case: the target's tgid is read and compared) and one sent to the
// stand-in agent (recorded in the ring), against no Sentinel at all.
func BenchmarkSentinelSignal(b *testing.B) {
	requireKernel(b)
	testutil.RequireTools(b, "sleep")
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	agent := cmd.Process.Pid
	self := os.Getpid()
	send := func(b *testing.B, pid int) {
		b.Helper()
		for b.Loop() {
			if err := unix.Kill(pid, unix.SIGURG); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("no_sentinel", func(b *testing.B) { send(b, self) })
	loadTestManager(b, Options{AgentPID: agent})
	b.Run("other_target", func(b *testing.B) { send(b, self) })
	b.Run("agent_target", func(b *testing.B) { send(b, agent) })
}
