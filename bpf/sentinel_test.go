package bpf

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/internal/testutil"
)

// startChild starts a process standing in for the agent and returns it; it
// is killed at the end of the test if still running.
func startChild(t *testing.T, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func findEvent(evs []Event, match func(Event) bool) (Event, bool) {
	for _, e := range evs {
		if match(e) {
			return e, true
		}
	}
	return Event{}, false
}

// TestSentinelReportsKillerAfterRestart: the "agent" (a sleep process) is
// killed by `kill -KILL`; the agent's eBPF manager is closed, as when the
// agent dies; a new manager loaded into the same directory (the restarted
// agent) reports who killed it, and the acknowledgement survives another
// restart.
func TestSentinelReportsKillerAfterRestart(t *testing.T) {
	requireKernel(t)
	testutil.RequireTools(t, "sleep", "kill")
	dir := tempPinDir(t)
	agent := startChild(t, exec.Command("sleep", "60"))
	agentPID := agent.Process.Pid

	m1, _ := loadTestManager(t, Options{PinDir: dir, AgentPID: agentPID})
	killer := exec.Command("kill", "-KILL", strconv.Itoa(agentPID))
	if out, err := killer.CombinedOutput(); err != nil {
		t.Fatalf("kill: %v: %s", err, out)
	}
	killerPID := killer.Process.Pid
	err := agent.Wait()
	if ws, ok := agent.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("agent stand-in did not die of SIGKILL: %v", err)
	}
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}

	m2, _ := loadTestManager(t, Options{PinDir: dir})
	rep, err := m2.Sentinel().Events()
	if err != nil {
		t.Fatal(err)
	}
	ev, ok := findEvent(rep.Events, func(e Event) bool { return e.Kind == EventSignal && e.TargetPID == agentPID })
	if !ok {
		t.Fatalf("no signal record for pid %d in %+v", agentPID, rep)
	}
	if ev.SenderPID != killerPID || ev.SenderComm != "kill" || ev.Signal != int(syscall.SIGKILL) || ev.SignalName != "SIGKILL" {
		t.Errorf("record %+v; want sender pid %d comm kill signal SIGKILL", ev, killerPID)
	}
	if ev.TargetComm != "sleep" || ev.Outcome != "delivered" || ev.SenderUID != uint32(os.Getuid()) {
		t.Errorf("record %+v; want target comm sleep, delivered, uid %d", ev, os.Getuid())
	}
	if d := time.Since(ev.Time); d < 0 || d > time.Minute {
		t.Errorf("record time %v is %v from now", ev.Time, d)
	}
	if rep.Through < ev.Seq {
		t.Errorf("through %d before the record's seq %d", rep.Through, ev.Seq)
	}
	exit, ok := findEvent(rep.Events, func(e Event) bool { return e.Kind == EventExit && e.TargetPID == agentPID })
	if !ok {
		t.Fatalf("no exit record for pid %d in %+v", agentPID, rep.Events)
	}
	if exit.Seq <= ev.Seq || exit.ExitCode&0x7f != int32(syscall.SIGKILL) || exit.Outcome != "killed by SIGKILL" || exit.SenderPID != agentPID {
		t.Errorf("exit record %+v; want after the signal, killed by SIGKILL, from the agent itself", exit)
	}

	if err := m2.Sentinel().Ack(rep.Through); err != nil {
		t.Fatal(err)
	}
	if err := m2.Sentinel().Ack(rep.Through + 1_000_000); err == nil {
		t.Error("ack beyond the last record accepted")
	}
	m2.Close()
	m3, _ := loadTestManager(t, Options{PinDir: dir})
	rep3, err := m3.Sentinel().Events()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rep3.Events {
		if e.Seq <= rep.Through {
			t.Errorf("acknowledged record %d reported again after restart", e.Seq)
		}
	}
}

// TestSentinelThreadDirectedSignal: a signal aimed at one of the agent's
// other threads (tgkill to a non-leader thread) is attributed to the agent.
func TestSentinelThreadDirectedSignal(t *testing.T) {
	requireKernel(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"=idle")
	agent := startChild(t, cmd)
	pid := agent.Process.Pid
	var tid int
	for deadline := time.Now().Add(5 * time.Second); tid == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		entries, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		for _, e := range entries {
			if n, _ := strconv.Atoi(e.Name()); n != 0 && n != pid {
				tid = n
			}
		}
	}
	if tid == 0 {
		t.Fatal("helper has no second thread")
	}
	m, _ := loadTestManager(t, Options{AgentPID: pid})
	if err := unix.Tgkill(pid, tid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait()
	rep, err := m.Sentinel().Events()
	if err != nil {
		t.Fatal(err)
	}
	ev, ok := findEvent(rep.Events, func(e Event) bool { return e.Kind == EventSignal && e.TargetTID == tid })
	if !ok {
		t.Fatalf("no record of the signal to thread %d: %+v", tid, rep.Events)
	}
	if ev.TargetPID != pid || ev.SenderPID != os.Getpid() || ev.Signal != int(unix.SIGTERM) {
		t.Errorf("record %+v; want target %d sender %d SIGTERM", ev, pid, os.Getpid())
	}
}

// TestSentinelRecordsProgramLoads: a program loaded by another process is
// recorded; the agent's own loads are not (they are measured instead).
func TestSentinelRecordsProgramLoads(t *testing.T) {
	requireKernel(t)
	testutil.RequireTools(t, "sleep")
	agent := startChild(t, exec.Command("sleep", "60"))
	m, _ := loadTestManager(t, Options{AgentPID: agent.Process.Pid})
	trivialProgram(t, "pulse_sent_t", 0)
	rep, err := m.Sentinel().Events()
	if err != nil {
		t.Fatal(err)
	}
	ev, ok := findEvent(rep.Events, func(e Event) bool { return e.Kind == EventBPFProgLoad && e.ProgName == "pulse_sent_t" })
	if !ok {
		t.Fatalf("load of pulse_sent_t not recorded: %+v", rep.Events)
	}
	if ev.SenderPID != os.Getpid() || ev.ProgType != "socket_filter" || ev.InsnCount != 2 {
		t.Errorf("record %+v; want sender %d socket_filter 2 instructions", ev, os.Getpid())
	}

	// This process as the agent: its own loads are filtered out.
	self, _ := loadTestManager(t, Options{})
	trivialProgram(t, "pulse_self_t", 0)
	rep, err = self.Sentinel().Events()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findEvent(rep.Events, func(e Event) bool { return e.ProgName == "pulse_self_t" }); ok {
		t.Error("the agent's own program load was recorded")
	}
}
