package verifier_test

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/kernelev"
	"github.com/pulse-attest/pulse/internal/testutil"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
)

// TestKernelEvidenceRealKernel: the agent's eBPF adapter loads Shield into
// the real kernel on a veth interface, measuring every program and its maps
// into the runtime PCR of a real swtpm; the verifier, over real mTLS, judges
// the hook chains the adapter reads from the kernel against that log. Each
// attack on the kernel is refused with its own reason and the honest chain
// is TRUSTED again once the attack is undone.
func TestKernelEvidenceRealKernel(t *testing.T) {
	requireKernelBPF(t, "ip")
	// The test process is the agent here, so the signals its own `ip`
	// children send it (SIGCHLD) are Sentinel records. Records carried by
	// a pulse refused before the pipeline's Sentinel step are kept under
	// the quoted boot (the verifier's cursor moves), so the honest pulse
	// after each attack reports nothing lost: Sentinel's default rule
	// (lost records enforced) holds throughout.
	e := newEnvCfg(t, "rhel8-uefi", fleetPolicy(t, "  measured_boot {\n    secure_boot {}\n  }\n"))
	if e == nil {
		return
	}
	ifname, ifindex := vethPair(t)
	k := newKernelAgent(t, e, "edge-kernel", "pulse-vk-", []string{ifname})
	pinDir := k.pinDir

	// pulse sends what the adapter reads from the kernel now, as the agent
	// does, the snapshot changed by lie (a lying agent) when given.
	pulse := func(lie func(*pulsev1.BPFSnapshot)) *pulsev1.PulseResponse {
		t.Helper()
		return k.pulse(t, lie, nil)
	}
	honest := func(t *testing.T) {
		t.Helper()
		wantVerdict(t, pulse(nil), trusted, pulsev1.Reason_REASON_OK)
	}
	honest(t)

	t.Run("foreign TCX_PASS program at the head of tcx ingress and egress", func(t *testing.T) {
		foreign := passProgram(t, ebpf.SchedCLS)
		var links []link.Link
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			l, err := link.AttachTCX(link.TCXOptions{Program: foreign, Interface: ifindex, Attach: at, Anchor: link.Head()})
			if err != nil {
				t.Fatalf("attach foreign tcx program: %v", err)
			}
			links = append(links, l)
		}
		resp := pulse(nil)
		wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM)
		for _, l := range links {
			l.Close()
		}
		// Unloaded too: the test process is the agent, whose own loads
		// Sentinel does not record, so a program it loaded and left
		// loaded is one Sentinel did not see (host programs).
		foreign.Close()
		honest(t)
	})

	t.Run("foreign XDP program on the Shield interface", func(t *testing.T) {
		foreign := passProgram(t, ebpf.XDP)
		l, err := link.AttachXDP(link.XDPOptions{Program: foreign, Interface: ifindex})
		if err != nil {
			t.Fatalf("attach foreign XDP program: %v", err)
		}
		wantVerdict(t, pulse(nil), untrusted, pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM)
		l.Close()
		foreign.Close()
		honest(t)
	})

	t.Run("Shield's program swapped for a copy bound to a planted map", func(t *testing.T) {
		impostor := shieldOnPlantedMap(t, "shield_ingress")
		l, err := link.LoadPinnedLink(filepath.Join(pinDir, "links", "shield_ingress@"+ifname), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		own, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, "shield_ingress"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer own.Close()
		if err := l.Update(impostor); err != nil {
			t.Fatalf("swap shield_ingress: %v", err)
		}
		restored := false
		defer func() {
			if !restored {
				l.Update(own) //nolint:errcheck // the test failed already
			}
		}()
		// The honest agent's own pin check sees its link run another
		// program.
		wantVerdict(t, pulse(nil), untrusted, pulsev1.Reason_REASON_BPF_PROGRAM_MISSING)
		// An agent that hides that (root controls what it claims): the
		// copy has Shield's instructions, so the measured kernel tag, and
		// only the map binding the kernel lists tells it apart.
		hide := func(s *pulsev1.BPFSnapshot) {
			for _, p := range s.GetPinned() {
				p.ProblemKind, p.Problem = pulsev1.PinProblem_PIN_PROBLEM_UNSPECIFIED, ""
			}
		}
		wantVerdict(t, pulse(hide), untrusted, pulsev1.Reason_REASON_BPF_MAP_FOREIGN)
		if err := l.Update(own); err != nil {
			t.Fatal(err)
		}
		restored = true
		impostor.Close()
		honest(t)
	})

	t.Run("guarded interface renamed and Shield attached to a new one of its name", func(t *testing.T) {
		renamed := ifname + "r"
		ipLink(t, "set", ifname, "down")
		ipLink(t, "set", ifname, "name", renamed)
		t.Cleanup(func() { exec.Command("ip", "link", "del", renamed).Run() }) //nolint:errcheck // best effort
		// A new veth pair under the old name; cleaned up by its peer's
		// name, since the old name goes back to the guarded interface.
		newIf, peer := ifname, "pkn"+ifname[3:]
		ipLink(t, "add", newIf, "type", "veth", "peer", "name", peer)
		t.Cleanup(func() { exec.Command("ip", "link", "del", peer).Run() }) //nolint:errcheck // best effort
		ipLink(t, "set", newIf, "up")
		nif, err := net.InterfaceByName(newIf)
		if err != nil {
			t.Fatal(err)
		}
		newIndex := nif.Index
		var links []link.Link
		for _, x := range []struct {
			prog string
			at   ebpf.AttachType
		}{{"shield_ingress", ebpf.AttachTCXIngress}, {"shield_egress", ebpf.AttachTCXEgress}} {
			p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, x.prog), nil)
			if err != nil {
				t.Fatal(err)
			}
			l, err := link.AttachTCX(link.TCXOptions{Program: p, Interface: newIndex, Attach: x.at})
			p.Close()
			if err != nil {
				t.Fatalf("attach %s to %s: %v", x.prog, newIf, err)
			}
			links = append(links, l)
		}
		// Same name, Shield's own programs on the measured maps: only the
		// device differs.
		resp := pulse(nil)
		wantVerdict(t, resp, untrusted, pulsev1.Reason_REASON_BPF_PROGRAM_MISSING)
		if !strings.Contains(resp.GetMessage(), "ifindex") {
			t.Fatalf("message %q does not name the ifindex", resp.GetMessage())
		}
		for _, l := range links {
			l.Close()
		}
		ipLink(t, "del", newIf)
		ipLink(t, "set", renamed, "name", ifname)
		ipLink(t, "set", ifname, "up")
		honest(t)
	})

	t.Run("lying agent omits the kernel evidence", func(t *testing.T) {
		for _, lie := range []struct {
			name string
			f    func(*pulsev1.BPFSnapshot)
		}{
			{"no hook chains", func(s *pulsev1.BPFSnapshot) { s.Hooks = nil }},
			{"no XDP chain", func(s *pulsev1.BPFSnapshot) {
				var keep []*pulsev1.HookChain
				for _, h := range s.Hooks {
					if h.GetHook() != kernelev.HookXDP {
						keep = append(keep, h)
					}
				}
				s.Hooks = keep
			}},
			{"no maps", func(s *pulsev1.BPFSnapshot) { s.Maps = nil }},
			{"no snapshot at all", func(s *pulsev1.BPFSnapshot) { *s = pulsev1.BPFSnapshot{} }},
		} {
			t.Run(lie.name, func(t *testing.T) {
				wantVerdict(t, pulse(lie.f), untrusted, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING)
			})
		}
		honest(t)
	})
}

// vethPair creates a veth pair (both ends in this network namespace, no
// addresses: Shield only needs an Ethernet interface) and returns the name
// and index of the end Shield attaches to.
func vethPair(t *testing.T) (string, int) {
	t.Helper()
	suffix := randHex(t, 3)
	a, b := "pkv"+suffix, "pkw"+suffix
	if out, err := exec.Command("ip", "link", "add", a, "type", "veth", "peer", "name", b).CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", a).Run() }) //nolint:errcheck // best effort
	for _, n := range []string{a, b} {
		if out, err := exec.Command("ip", "link", "set", n, "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set %s up: %v: %s", n, err, out)
		}
	}
	ifc, err := net.InterfaceByName(a)
	if err != nil {
		t.Fatal(err)
	}
	return a, ifc.Index
}

func ipLink(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"link"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip link %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// passProgram is a foreign two-instruction program passing every packet:
// TCX_PASS (0) as a tcx program, XDP_PASS (2) as XDP.
func passProgram(t *testing.T, typ ebpf.ProgramType) *ebpf.Program {
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

// shieldOnPlantedMap loads Shield's own program from the agent's eBPF
// object, bound to a quarantine map root created (empty: it drops nothing).
func shieldOnPlantedMap(t *testing.T, program string) *ebpf.Program {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(filepath.Join(testutil.RepoRoot(t), "bpf", "shield_bpfel.o"))
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps["shield_quarantine"].Copy()
	ms.Pinning = ebpf.PinNone
	planted, err := ebpf.NewMap(ms)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { planted.Close() })
	for name, m := range spec.Maps {
		if m.Pinning == ebpf.PinByName {
			spec.Maps[name].Pinning = ebpf.PinNone
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{"shield_quarantine": planted}})
	if err != nil {
		t.Fatalf("load Shield's object with a planted map: %v", err)
	}
	t.Cleanup(func() { coll.Close() })
	p := coll.Programs[program]
	if p == nil {
		t.Fatalf("no program %s in Shield's object", program)
	}
	// Only the impostor stays loaded (closing it unloads it).
	for name, q := range coll.Programs {
		if name != program {
			q.Close()
		}
	}
	return p
}

// requireKernelBPF is what a real-kernel eBPF test needs: root, the tools it
// runs, and bpffs (and securityfs) mounted.
func requireKernelBPF(t *testing.T, tools ...string) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTools(t, tools...)
	if err := bpf.EnsureFilesystems(simtest.Logger(t)); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
}
