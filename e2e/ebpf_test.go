package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/testutil"
)

// TestRealAgentEBPF: the real agent loads its eBPF programs, measured into
// the runtime log before they attach, and is TRUSTED; unpinning one is
// BPF_PROGRAM_MISSING and pinning another program under its name is
// BPF_PROGRAM_CHANGED, each in the next pulse.
func TestRealAgentEBPF(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "bpftool")
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleet(t, bpfFleetPolicy, sw)
	suffix := make([]byte, 4)
	rand.Read(suffix) //nolint:errcheck
	pinDir := "/sys/fs/bpf/pulse-e2e-" + hex.EncodeToString(suffix)
	t.Cleanup(func() { bpf.RemoveAll(pinDir) })
	cfg := f.agentConfig("edge-bpf", sw, "")
	replaceInFile(t, cfg, "bpf {\n  enabled = false\n}", "bpf {\n  enabled = true\n  pin_dir = \""+pinDir+"\"\n}")
	f.launchAgent("edge-bpf", cfg, bin("pulse-agent"))
	f.waitVerdict("edge-bpf", trusted, "REASON_OK", 45*time.Second)

	progs := pinnedPrograms(t, pinDir)
	if len(progs) < 2 {
		t.Fatalf("agent pinned %d programs under %s: %v", len(progs), pinDir, progs)
	}

	t.Run("program replaced under its pin", func(t *testing.T) {
		name := progs[0]
		path := filepath.Join(pinDir, name)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		impostor, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
		if err != nil {
			t.Fatal(err)
		}
		defer impostor.Close()
		if err := impostor.Pin(path); err != nil {
			t.Fatal(err)
		}
		f.waitVerdict("edge-bpf", untrusted, "REASON_BPF_PROGRAM_CHANGED", 20*time.Second)
	})

	// A restarted agent loads and pins its programs again.
	f.stopAgent("edge-bpf", syscall.SIGTERM)
	f.launchAgent("edge-bpf", cfg, bin("pulse-agent"))
	f.waitVerdict("edge-bpf", trusted, "REASON_OK", 45*time.Second)

	t.Run("program unpinned", func(t *testing.T) {
		if err := os.Remove(filepath.Join(pinDir, progs[1])); err != nil {
			t.Fatal(err)
		}
		f.waitVerdict("edge-bpf", untrusted, "REASON_BPF_PROGRAM_MISSING", 20*time.Second)
	})
}

// pinnedPrograms lists the program pins (not maps or links) in pinDir.
func pinnedPrograms(t *testing.T, pinDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, e.Name()), nil)
		if err != nil {
			continue
		}
		p.Close()
		out = append(out, e.Name())
	}
	return out
}
