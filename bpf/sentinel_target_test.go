package bpf

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/internal/testutil"
)

// startHelperAgent starts the test binary as a multi-threaded stand-in
// agent and returns its pid and one of its threads other than the main one.
func startHelperAgent(t *testing.T) (pid, tid int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"=idle")
	pid = startChild(t, cmd).Process.Pid
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
	return pid, tid
}

// TestSentinelSignalTargetFromKernel: whether a signal is aimed at the agent
// is decided from the target's task_struct, not from the root-writable
// sentinel_threads map. Root empties the map and plants a foreign process
// in it as one of the agent's threads: signals to the agent's threads are
// still recorded (attributed to the agent), and the planted process's
// signals are not.
func TestSentinelSignalTargetFromKernel(t *testing.T) {
	requireKernel(t)
	testutil.RequireTools(t, "sleep")
	dir := tempPinDir(t)
	pid, tid := startHelperAgent(t)
	foreign := startChild(t, exec.Command("sleep", "60")).Process.Pid
	m, _ := loadTestManager(t, Options{PinDir: dir, AgentPID: pid})

	threads, err := ebpf.LoadPinnedMap(filepath.Join(dir, "maps", "sentinel_threads"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer threads.Close()
	var keys []uint32
	var k, v uint32
	for it := threads.Iterate(); it.Next(&k, &v); {
		keys = append(keys, k)
	}
	if len(keys) < 2 {
		t.Fatalf("sentinel_threads holds %v: the agent's threads were not seeded", keys)
	}
	for _, k := range keys {
		if err := threads.Delete(k); err != nil {
			t.Fatalf("delete %d: %v", k, err)
		}
	}
	if err := threads.Put(uint32(foreign), uint32(pid)); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		send     func() error
		tid      int
		recorded bool
	}{
		{"agent thread missing from the map", func() error { return unix.Tgkill(pid, tid, unix.SIGURG) }, tid, true},
		{"agent main thread missing from the map", func() error { return unix.Tgkill(pid, pid, unix.SIGURG) }, pid, true},
		{"foreign process planted in the map", func() error { return unix.Kill(foreign, unix.SIGURG) }, foreign, false},
	}
	for _, tc := range tests {
		if err := tc.send(); err != nil {
			t.Fatalf("%s: send: %v", tc.name, err)
		}
	}
	rep, err := m.Sentinel().Events()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, ok := findEvent(rep.Events, func(e Event) bool { return e.Kind == EventSignal && e.TargetTID == tc.tid })
			if ok != tc.recorded {
				t.Fatalf("recorded %v (%+v), want %v; events %+v", ok, ev, tc.recorded, rep.Events)
			}
			if !ok {
				return
			}
			if ev.TargetPID != pid || ev.SenderPID != os.Getpid() || ev.SenderUID != uint32(os.Getuid()) ||
				ev.Signal != int(unix.SIGURG) || ev.TargetComm == "" || ev.Outcome == "" {
				t.Errorf("record %+v; want target %d/%d, sender %d uid %d, SIGURG, target comm and outcome", ev, pid, tc.tid, os.Getpid(), os.Getuid())
			}
		})
	}
}

// TestSentinelSignalWhileAgentDown: sentinel_signal's link (a tracing link,
// pinned) keeps recording after the agent's manager is closed: a signal to
// the stand-in agent while no agent runs is in the next agent's report, and
// a signal to another process is not.
func TestSentinelSignalWhileAgentDown(t *testing.T) {
	requireKernel(t)
	testutil.RequireTools(t, "sleep")
	dir := tempPinDir(t)
	pid, tid := startHelperAgent(t)
	other := startChild(t, exec.Command("sleep", "60")).Process.Pid
	m1, _ := loadTestManager(t, Options{PinDir: dir, AgentPID: pid})
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Tgkill(pid, tid, unix.SIGURG); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(other, unix.SIGURG); err != nil {
		t.Fatal(err)
	}
	m2, _ := loadTestManager(t, Options{PinDir: dir, AgentPID: pid})
	rep, err := m2.Sentinel().Events()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findEvent(rep.Events, func(e Event) bool { return e.Kind == EventSignal && e.TargetPID == pid && e.TargetTID == tid }); !ok {
		t.Errorf("signal to thread %d while no agent ran not recorded: %+v", tid, rep.Events)
	}
	if ev, ok := findEvent(rep.Events, func(e Event) bool { return e.Kind == EventSignal && e.TargetTID == other }); ok {
		t.Errorf("signal to another process recorded: %+v", ev)
	}
}

// TestSignalGenerateProtoKernel: the running kernel's signal_generate
// tracepoint takes the arguments sentinel_signal reads.
func TestSignalGenerateProtoKernel(t *testing.T) {
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		testutil.Unavailable(t, "kernel BTF: %v", err)
	}
	if err := checkSignalGenerateProto(kernel); err != nil {
		t.Fatal(err)
	}
}

// TestCheckSignalParams: the prototype check accepts the kernel's
// trace_signal_generate arguments and refuses any other order or type.
func TestCheckSignalParams(t *testing.T) {
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	ptr := func(to btf.Type) btf.Type { return &btf.Pointer{Target: to} }
	void := ptr(&btf.Void{})
	info := ptr(&btf.Struct{Name: "kernel_siginfo"})
	task := ptr(&btf.Struct{Name: "task_struct"})
	constTask := ptr(&btf.Const{Type: &btf.Struct{Name: "task_struct"}})
	cred := ptr(&btf.Struct{Name: "cred"})
	params := func(ts ...btf.Type) *btf.FuncProto {
		fp := &btf.FuncProto{}
		for _, t := range ts {
			fp.Params = append(fp.Params, btf.FuncParam{Type: t})
		}
		return fp
	}
	tests := []struct {
		name  string
		proto *btf.FuncProto
		ok    bool
	}{
		{"the kernel's prototype", params(void, i32, info, task, i32, i32), true},
		{"typedef'd int and const task", params(void, &btf.Typedef{Name: "s32", Type: i32}, info, constTask, i32, i32), true},
		{"target moved", params(void, i32, task, info, i32, i32), false},
		{"target of another type", params(void, i32, info, cred, i32, i32), false},
		{"result dropped", params(void, i32, info, task, i32), false},
		{"extra argument", params(void, i32, info, task, i32, i32, i32), false},
		{"unsigned signal", params(void, u32, info, task, i32, i32), false},
		{"no private data", params(i32, info, task, i32, i32), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkSignalParams(tc.proto)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrSignalProto) {
				t.Fatalf("got %v, want ErrSignalProto", err)
			}
		})
	}
}
