package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/verifier/store"
)

// bpfFleetPolicy is fleetPolicy for agents running eBPF on this shared
// test machine: the default sentinel rule, except that eBPF loads by Go
// test binaries ("bpf.test", "e2e.test": the other packages' tests, which
// may run at the same time), bpftool, ip and tc are allowed.
const bpfFleetPolicy = `
policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
    missed   = 3
    grace    = "2s"
  }
  measured_boot {
    secure_boot {}
  }
  sentinel {
    bpf_loaders = ["*.test", "bpftool", "ip", "tc"]
  }
}
`

// TestRealAgentSentinel: the real agent with its eBPF programs on the real
// kernel and swtpm. Honest, it is TRUSTED with none of Sentinel's findings
// (Fortress, refused by this kernel with EPERM, is a warning). Then, each
// two-sided: an eBPF program loaded by a foreign process is
// FOREIGN_BPF_LOAD; agent_tgid zeroed in the pinned sentinel_cfg map is
// SENTINEL_TAMPERED; a SIGKILL of the agent by a shell, once the agent is
// BLINDED and comes back, is AGENT_SIGNALLED naming the shell (pid, comm,
// uid) in the verdict, the alert and pulsectl agents show. After each the
// agent is TRUSTED again.
func TestRealAgentSentinel(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "sh")
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleet(t, bpfFleetPolicy, sw)
	suffix := make([]byte, 4)
	rand.Read(suffix) //nolint:errcheck
	pinDir := "/sys/fs/bpf/pulse-e2e-sentinel-" + hex.EncodeToString(suffix)
	t.Cleanup(func() { bpf.RemoveAll(pinDir) })
	const id = "edge-sentinel"
	cfg := f.agentConfig(id, sw, "")
	replaceInFile(t, cfg, "bpf {\n  enabled = false\n}", "bpf {\n  enabled = true\n  pin_dir = \""+pinDir+"\"\n}")
	f.launchAgent(id, cfg, bin("pulse-agent"))
	f.waitVerdict(id, trusted, "REASON_OK", 45*time.Second)
	noSentinelAlerts := func() {
		t.Helper()
		for _, k := range []string{"agent_signalled", "foreign_bpf_load", "sentinel_tampered"} {
			if n := f.alerts(id, k); n != 0 {
				t.Fatalf("honest agent raised %d %s alerts", n, k)
			}
		}
	}
	// A few pulses, honest.
	time.Sleep(5 * time.Second)
	f.waitVerdict(id, trusted, "REASON_OK", 5*time.Second)
	noSentinelAlerts()

	t.Run("foreign eBPF load", func(t *testing.T) {
		loadAs(t, "pulse-intruder")
		v := f.waitVerdict(id, untrusted, "REASON_FOREIGN_BPF_LOAD", 20*time.Second)
		if !strings.Contains(v.Message, `"pulse-intruder"`) {
			t.Errorf("verdict %q does not name the loader", v.Message)
		}
		f.waitVerdict(id, trusted, "REASON_OK", 20*time.Second)
		if f.alerts(id, "foreign_bpf_load") == 0 {
			t.Error("no foreign_bpf_load alert")
		}
	})

	t.Run("agent_tgid zeroed in sentinel_cfg", func(t *testing.T) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "maps", "sentinel_cfg"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		deadline := time.Now().Add(30 * time.Second)
		for {
			val := make([]byte, m.ValueSize())
			if err := m.Lookup(uint32(0), &val); err != nil {
				t.Fatal(err)
			}
			copy(val[:4], []byte{0, 0, 0, 0}) // agent_tgid
			if err := m.Update(uint32(0), val, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
			if v, ok := f.show(id); ok && v.Reason == "REASON_SENTINEL_TAMPERED" {
				break
			}
			if time.Now().After(deadline) {
				v, _ := f.show(id)
				t.Fatalf("verdict %s/%s (%s), want SENTINEL_TAMPERED", v.Verdict, v.Reason, v.Message)
			}
			time.Sleep(500 * time.Millisecond)
		}
		// The acknowledgement of the committed pulse restores it.
		f.waitVerdict(id, trusted, "REASON_OK", 20*time.Second)
		if f.alerts(id, "sentinel_tampered") == 0 {
			t.Error("no sentinel_tampered alert")
		}
	})

	t.Run("SIGKILL by a shell", func(t *testing.T) {
		f.mu.Lock()
		p := f.agents[id]
		delete(f.agents, id)
		f.mu.Unlock()
		killer := exec.Command("sh", "-c", "kill -KILL "+strconv.Itoa(p.cmd.Process.Pid))
		if out, err := killer.CombinedOutput(); err != nil {
			t.Fatalf("kill: %v: %s", err, out)
		}
		shPID := killer.Process.Pid
		<-p.done
		f.waitVerdict(id, "VERDICT_BLINDED", "", 40*time.Second)
		f.launchAgent(id, cfg, bin("pulse-agent"))
		want := []string{fmt.Sprintf("pid %d", shPID), `"sh"`, "uid 0", "SIGKILL"}
		var alertMsg string
		waitFor(t, "an agent_signalled alert naming the shell", func() bool {
			all, err := f.store().ListAlerts(context.Background(), store.AlertFilter{AgentID: id})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range all {
				if a.Kind == "agent_signalled" && strings.Contains(a.Message, want[0]) {
					alertMsg = a.Message
					return true
				}
			}
			return false
		})
		for _, w := range want {
			if !strings.Contains(alertMsg, w) {
				t.Errorf("alert %q does not name %q", alertMsg, w)
			}
		}
		out := run(t, "pulsectl", "agents", "show", "--config", f.vcfg, id)
		for _, w := range []string{strconv.Itoa(shPID), "sh", "REASON_AGENT_SIGNALLED"} {
			if !strings.Contains(out, w) {
				t.Errorf("agents show lacks %q:\n%s", w, out)
			}
		}
		f.waitVerdict(id, trusted, "REASON_OK", 30*time.Second)
	})
}

// loadAs loads a trivial eBPF program from a thread named comm, as a
// foreign process on the device would.
func loadAs(t *testing.T, comm string) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// The thread is renamed and never handed back: it exits with
		// the goroutine.
		runtime.LockOSThread()
		name := append([]byte(comm), 0)
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
			errc <- err
			return
		}
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "intruder", Type: ebpf.SocketFilter, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
		if err == nil {
			p.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
