package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/testutil"
)

// TestKernelEvidenceRealAgent: the real agent (through its measuring
// launcher, on swtpm, over mTLS to the real verifier) runs Shield in tcx
// mode on a veth interface and reports the hook chains the kernel lists.
// A foreign TCX_PASS program at the head of tcx ingress and egress, and a
// foreign XDP program on the Shield interface, are each UNTRUSTED with
// BPF_FOREIGN_PROGRAM once attached (their load alone is Sentinel's
// FOREIGN_BPF_LOAD, waited for first so that the load record is not carried
// by the pulse kernel evidence refuses), and TRUSTED again once removed; a
// compatible quarantine map pinned where the agent pins its own is not
// adopted by the agent's next load; an agent restarted without eBPF, while
// the runtime log says Shield is loaded, is KERNEL_EVIDENCE_MISSING.
func TestKernelEvidenceRealAgent(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "ip")
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleet(t, fleetPolicy, sw)
	ifname, ifindex := kernelEvidenceVeth(t)
	suffix := make([]byte, 4)
	rand.Read(suffix) //nolint:errcheck
	pinDir := "/sys/fs/bpf/pulse-e2e-kev-" + hex.EncodeToString(suffix)
	t.Cleanup(func() { bpf.RemoveAll(pinDir) }) //nolint:errcheck // best effort
	cfg := f.agentConfig("edge-kev", sw, "")
	bpfOn := fmt.Sprintf("bpf {\n  enabled    = true\n  pin_dir    = %q\n  interfaces = [%q]\n}", pinDir, ifname)
	replaceInFile(t, cfg, "bpf {\n  enabled = false\n}", bpfOn)
	f.launchAgent("edge-kev", cfg, bin("pulse-agent"))
	f.waitVerdict("edge-kev", trusted, "REASON_OK", 45*time.Second)

	t.Run("foreign TCX_PASS program ahead of Shield", func(t *testing.T) {
		// Loading it is Sentinel's finding, once; attaching it ahead of
		// Shield is kernel evidence's, every pulse while it stays.
		foreign := foreignPass(t, ebpf.SchedCLS)
		f.waitVerdict("edge-kev", untrusted, "REASON_FOREIGN_BPF_LOAD", 20*time.Second)
		var links []link.Link
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			l, err := link.AttachTCX(link.TCXOptions{Program: foreign, Interface: ifindex, Attach: at, Anchor: link.Head()})
			if err != nil {
				t.Fatalf("attach foreign tcx program: %v", err)
			}
			links = append(links, l)
		}
		v := f.waitVerdict("edge-kev", untrusted, "REASON_BPF_FOREIGN_PROGRAM", 20*time.Second)
		t.Logf("verdict: %s", v.Message)
		if n := f.alerts("edge-kev", "bpf_foreign_program"); n < 1 {
			t.Errorf("%d bpf_foreign_program alerts, want at least 1", n)
		}
		for _, l := range links {
			l.Close()
		}
		f.waitVerdict("edge-kev", trusted, "REASON_OK", 20*time.Second)
	})

	t.Run("foreign XDP program on the Shield interface", func(t *testing.T) {
		x := foreignPass(t, ebpf.XDP)
		f.waitVerdict("edge-kev", untrusted, "REASON_FOREIGN_BPF_LOAD", 20*time.Second)
		l, err := link.AttachXDP(link.XDPOptions{Program: x, Interface: ifindex})
		if err != nil {
			t.Fatalf("attach foreign XDP program: %v", err)
		}
		v := f.waitVerdict("edge-kev", untrusted, "REASON_BPF_FOREIGN_PROGRAM", 20*time.Second)
		t.Logf("verdict: %s", v.Message)
		l.Close()
		f.waitVerdict("edge-kev", trusted, "REASON_OK", 20*time.Second)
	})

	t.Run("compatible quarantine map planted before the agent's load", func(t *testing.T) {
		agentLog := filepath.Join(f.dir, "agent-edge-kev.log")
		const accepted = "pulse accepted: verdict=VERDICT_TRUSTED"
		f.stopAgent("edge-kev", syscall.SIGTERM)
		before := countInFile(t, agentLog, accepted)
		planted := plantQuarantineMap(t, filepath.Join(pinDir, "maps", "shield_quarantine"), netip.MustParseAddr("192.0.2.77"))
		plantedID := mapIDOf(t, planted)
		f.launchAgent("edge-kev", cfg, bin("pulse-agent"))
		// TRUSTED after the new load (the stored verdict is the previous
		// agent's until the restarted one pulses).
		waitFor(t, "a TRUSTED pulse from the restarted agent", func() bool { return countInFile(t, agentLog, accepted) > before })
		f.waitVerdict("edge-kev", trusted, "REASON_OK", 20*time.Second)
		// The agent created its own map, bound Shield to it and pinned it
		// in the planted one's place.
		pinned, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "maps", "shield_quarantine"), nil)
		if err != nil {
			t.Fatal(err)
		}
		ownID := mapIDOf(t, pinned)
		pinned.Close()
		if ownID == plantedID {
			t.Fatalf("the agent adopted the planted quarantine map (id %d)", plantedID)
		}
		for _, name := range []string{"shield_ingress", "shield_egress"} {
			p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, name), nil)
			if err != nil {
				t.Fatal(err)
			}
			info, err := p.Info()
			p.Close()
			if err != nil {
				t.Fatal(err)
			}
			ids, _ := info.MapIDs()
			if slices.Contains(ids, ebpf.MapID(plantedID)) || !slices.Contains(ids, ebpf.MapID(ownID)) {
				t.Errorf("%s is bound to maps %v; want the agent's %d, never the planted %d", name, ids, ownID, plantedID)
			}
		}
	})

	t.Run("agent restarted without eBPF while Shield is measured", func(t *testing.T) {
		f.stopAgent("edge-kev", syscall.SIGTERM)
		replaceInFile(t, cfg, bpfOn, "bpf {\n  enabled = false\n}")
		f.launchAgent("edge-kev", cfg, bin("pulse-agent"))
		v := f.waitVerdict("edge-kev", untrusted, "REASON_KERNEL_EVIDENCE_MISSING", 45*time.Second)
		t.Logf("verdict: %s", v.Message)
	})
}

// kernelEvidenceVeth creates a veth pair in this network namespace (no
// addresses: Shield needs only an Ethernet interface) and returns the name
// and index of the end Shield attaches to.
func kernelEvidenceVeth(t *testing.T) (string, int) {
	t.Helper()
	suffix := make([]byte, 3)
	rand.Read(suffix) //nolint:errcheck
	a, b := "pke"+hex.EncodeToString(suffix), "pkf"+hex.EncodeToString(suffix)
	sh(t, "ip", "link", "add", a, "type", "veth", "peer", "name", b)
	t.Cleanup(func() { exec.Command("ip", "link", "del", a).Run() }) //nolint:errcheck // best effort
	sh(t, "ip", "link", "set", a, "up")
	sh(t, "ip", "link", "set", b, "up")
	ifc, err := net.InterfaceByName(a)
	if err != nil {
		t.Fatal(err)
	}
	return a, ifc.Index
}

// foreignPass is a two-instruction program passing every packet: TCX_PASS
// (0) as a tcx program, XDP_PASS (2) as XDP.
func foreignPass(t *testing.T, typ ebpf.ProgramType) *ebpf.Program {
	t.Helper()
	ret, at := int32(0), ebpf.AttachNone
	if typ == ebpf.XDP {
		ret, at = 2, ebpf.AttachXDP
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "foreign_pass", Type: typ, AttachType: at, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}})
	if err != nil {
		t.Fatalf("load foreign program: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// plantQuarantineMap pins, at path (replacing what is there), a map with
// the layout of Shield's quarantine map holding addr.
func plantQuarantineMap(t *testing.T, path string, addr netip.Addr) *ebpf.Map {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(testutil.RepoRoot(t), "bpf", "shield_bpfel.o"))
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps["shield_quarantine"].Copy()
	ms.Pinning = ebpf.PinNone
	m, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	key := addr.As16()
	val := make([]byte, m.ValueSize())
	if err := m.Put(key[:], val); err != nil {
		t.Fatalf("planted map entry: %v", err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := m.Pin(path); err != nil {
		t.Fatal(err)
	}
	return m
}

// countInFile counts the occurrences of s in the file at path.
func countInFile(t *testing.T, path, s string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

func mapIDOf(t *testing.T, m *ebpf.Map) uint32 {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return uint32(id)
}
