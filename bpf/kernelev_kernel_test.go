package bpf

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/pulse-attest/pulse/internal/kernelev"
	"github.com/pulse-attest/pulse/internal/quarset"
	"github.com/pulse-attest/pulse/internal/testutil"
)

// passProgram is a foreign two-instruction program that passes every
// packet: it returns TCX_PASS (0) as a tcx program, XDP_PASS (2) as XDP.
func passProgram(t *testing.T, typ ebpf.ProgramType) *ebpf.Program {
	t.Helper()
	ret, at := int32(0), ebpf.AttachNone // TCX_PASS
	if typ == ebpf.XDP {
		ret, at = 2, ebpf.AttachXDP // XDP_PASS
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "foreign_pass", Type: typ, AttachType: at, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}})
	if err != nil {
		t.Fatalf("load foreign program: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func programID(t *testing.T, p *ebpf.Program) uint32 {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return uint32(id)
}

func chainOf(t *testing.T, ev KernelEvidence, hook, target string) HookChain {
	t.Helper()
	for _, h := range ev.Hooks {
		if h.Hook == hook && h.Target == target {
			if h.Err != "" {
				t.Fatalf("%s on %s: %s", hook, target, h.Err)
			}
			return h
		}
	}
	t.Fatalf("no %s chain for %s in %+v", hook, target, ev.Hooks)
	return HookChain{}
}

func chainIDs(h HookChain) []uint32 {
	var out []uint32
	for _, p := range h.Programs {
		out = append(out, p.ID)
	}
	return out
}

// TestKernelEvidenceForeignPrograms: the kernel lists, per hook Pulse
// enforces, every attached program in the order it runs. A foreign
// TCX_PASS program at the head of the chain lets a quarantined address
// through Shield, and a foreign XDP program runs before tc: both show up in
// the hook chains the agent reports, with their ID, tag and maps; Shield's
// programs show the measured quarantine map.
func TestKernelEvidenceForeignPrograms(t *testing.T) {
	requireKernel(t)
	for _, mode := range []ShieldMode{ShieldTCX, ShieldXDP} {
		t.Run(string(mode), func(t *testing.T) {
			p := newVethPair(t)
			m, _ := loadTestManager(t, Options{ShieldMode: mode})
			if err := inNetns(p.nsB, func() error { return m.Shield().Attach(context.Background(), p.ifB) }); err != nil {
				t.Fatal(err)
			}
			if err := m.Shield().Quarantine(p.a1); err != nil {
				t.Fatal(err)
			}
			evidence := func() KernelEvidence {
				var ev KernelEvidence
				if err := inNetns(p.nsB, func() error { ev = m.KernelEvidence(context.Background()); return nil }); err != nil {
					t.Fatal(err)
				}
				return ev
			}
			qmap := m.MapIDs()[shieldMapShieldQuarantine]
			if qmap == 0 {
				t.Fatalf("quarantine map not measured: %v", m.MapIDs())
			}
			ev := evidence()
			if want, n, _ := quarset.Digest([]string{p.a1.String()}); ev.QuarantineErr != nil || ev.QuarantineSHA256 != want || ev.QuarantineCount != n {
				t.Errorf("quarantine digest %x/%d (%v), want %x/%d", ev.QuarantineSHA256, ev.QuarantineCount, ev.QuarantineErr, want, n)
			}
			i := slices.IndexFunc(ev.Maps, func(mi MapIdentity) bool { return mi.Name == shieldMapShieldQuarantine })
			if i < 0 || ev.Maps[i].ID != qmap || ev.Maps[i].KeySize != 16 || ev.Maps[i].Type != ebpf.Hash.String() {
				t.Errorf("maps %+v, want shield_quarantine id %d", ev.Maps, qmap)
			}
			// Honest: Shield alone on the hooks it enforces, bound to the
			// measured map.
			own := map[string]string{kernelev.HookTCXIngress: "shield_ingress", kernelev.HookTCXEgress: "shield_egress"}
			if mode == ShieldXDP {
				own = map[string]string{kernelev.HookXDP: "shield_xdp"}
			}
			for _, hook := range []string{kernelev.HookTCXIngress, kernelev.HookTCXEgress, kernelev.HookXDP} {
				h := chainOf(t, ev, hook, p.ifB)
				name, ok := own[hook]
				if !ok {
					if len(h.Programs) != 0 {
						t.Errorf("%s: %+v, want no program", hook, h.Programs)
					}
					continue
				}
				if len(h.Programs) != 1 || h.Programs[0].Name != name || h.Programs[0].ID != m.progs[name].id ||
					h.Programs[0].Tag != m.progs[name].tag || !slices.Contains(h.Programs[0].MapIDs, qmap) || h.Programs[0].LinkID == 0 {
					t.Errorf("%s: %+v, want %s (id %d, tag %s) bound to map %d by a link", hook, h.Programs, name, m.progs[name].id, m.progs[name].tag, qmap)
				}
			}

			srv := listen(t, p.nsB, p.b)
			expectDrop(t, p.nsA, p.a1, srv)

			// Attack: a foreign program where it runs before Shield.
			var foreign *ebpf.Program
			var hooks []string
			if mode == ShieldTCX {
				// At the head of both tcx chains: the quarantined peer's
				// packets in and the answers out.
				foreign, hooks = passProgram(t, ebpf.SchedCLS), []string{kernelev.HookTCXIngress, kernelev.HookTCXEgress}
				for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
					var l link.Link
					if err := inNetns(p.nsB, func() error {
						ifc, err := net.InterfaceByName(p.ifB)
						if err != nil {
							return err
						}
						l, err = link.AttachTCX(link.TCXOptions{Program: foreign, Interface: ifc.Index, Attach: at, Anchor: link.Head()})
						return err
					}); err != nil {
						t.Fatalf("attach foreign program: %v", err)
					}
					t.Cleanup(func() { l.Close() })
				}
			} else {
				// XDP mode: one XDP program per interface, so the foreign
				// one takes Shield's place through Shield's own pinned link.
				foreign, hooks = passProgram(t, ebpf.XDP), []string{kernelev.HookXDP}
				l, err := link.LoadPinnedLink(filepath.Join(m.linksDir, "shield_xdp@"+p.ifB), nil)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				if err := l.Update(foreign); err != nil {
					t.Fatalf("replace shield_xdp: %v", err)
				}
			}
			fid := programID(t, foreign)
			// The attack works: the quarantined address gets through.
			expectPass(t, p.nsA, p.a1, srv)
			ev = evidence()
			for _, hook := range hooks {
				h := chainOf(t, ev, hook, p.ifB)
				if len(h.Programs) == 0 || h.Programs[0].ID != fid || h.Programs[0].Name != "foreign_pass" || len(h.Programs[0].Tag) != 16 {
					t.Errorf("head of %s: %+v, want the foreign program %d", hook, h.Programs, fid)
				}
			}

			// A foreign XDP program in tcx mode too: XDP runs before tc.
			if mode == ShieldTCX {
				x := passProgram(t, ebpf.XDP)
				var xl link.Link
				if err := inNetns(p.nsB, func() error {
					ifc, err := net.InterfaceByName(p.ifB)
					if err != nil {
						return err
					}
					xl, err = link.AttachXDP(link.XDPOptions{Program: x, Interface: ifc.Index})
					return err
				}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { xl.Close() })
				h := chainOf(t, evidence(), kernelev.HookXDP, p.ifB)
				if ids := chainIDs(h); len(ids) != 1 || ids[0] != programID(t, x) || h.Programs[0].LinkID == 0 {
					t.Errorf("xdp chain %+v, want the foreign XDP program %d", h.Programs, programID(t, x))
				}
			}
		})
	}
}

// TestKernelEvidenceTracepoints: for the agent's tracepoint programs the
// kernel has no chain to list, so the evidence names, per tracepoint, the
// program each of the agent's links runs there (link info), with its tag
// and the maps it is bound to: the ones this load measured.
func TestKernelEvidenceTracepoints(t *testing.T) {
	requireKernel(t)
	m, _ := loadTestManager(t, Options{})
	measured := m.MapIDs()
	ids := map[uint32]bool{}
	for _, id := range measured {
		ids[id] = true
	}
	want := map[string]string{} // tracepoint -> program measured there
	for _, pm := range m.Measurements() {
		if h, ok := kernelev.ParseAttachPoint(pm.AttachPoint); ok && h.Kind == kernelev.HookTracepoint {
			want[h.Target] = pm.Name
		}
	}
	if len(want) == 0 {
		t.Fatal("no tracepoint program measured")
	}
	ev := m.KernelEvidence(context.Background())
	got := map[string]bool{}
	for _, h := range ev.Hooks {
		if h.Hook != kernelev.HookTracepoint {
			continue
		}
		if h.Err != "" {
			t.Fatalf("tracepoint %s: %s", h.Target, h.Err)
		}
		name, ok := want[h.Target]
		if !ok || got[h.Target] {
			t.Fatalf("tracepoint %s reported but not measured, or twice: %+v", h.Target, ev.Hooks)
		}
		got[h.Target] = true
		if len(h.Programs) != 1 {
			t.Fatalf("tracepoint %s: %+v, want one program", h.Target, h.Programs)
		}
		p := h.Programs[0]
		if p.ID != m.progs[name].id || p.Tag != m.progs[name].tag || p.LinkID == 0 {
			t.Errorf("tracepoint %s: %+v, want %s (id %d, tag %s) by a link", h.Target, p, name, m.progs[name].id, m.progs[name].tag)
		}
		for _, id := range p.MapIDs {
			if !ids[id] {
				t.Errorf("tracepoint %s: %s uses map %d, which the load did not measure (%v)", h.Target, name, id, measured)
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("tracepoints reported %v, want %v", got, want)
	}
}

// BenchmarkKernelEvidence measures what one pulse costs the agent to read
// from the kernel: Shield's three hooks on one interface, the tracepoint
// links, the map identities and the quarantine digest.
func BenchmarkKernelEvidence(b *testing.B) {
	requireKernel(b)
	testutil.RequireTools(b, "ip")
	sfx := randomSuffix(b)[:6]
	ifname := "pkb" + sfx
	if out, err := exec.Command("ip", "link", "add", ifname, "type", "veth", "peer", "name", "pkc"+sfx).CombinedOutput(); err != nil {
		b.Fatalf("ip link add: %v: %s", err, out)
	}
	b.Cleanup(func() { _ = exec.Command("ip", "link", "del", ifname).Run() })
	m, _ := loadTestManager(b, Options{Interfaces: []string{ifname}})
	ctx := context.Background()
	for b.Loop() {
		ev := m.KernelEvidence(ctx)
		if len(ev.Hooks) < 3 || ev.QuarantineErr != nil {
			b.Fatalf("evidence %+v", ev)
		}
	}
}

// TestLoadMeasuresMapsAndInterfacesFirst: a load measures its maps, then
// the interfaces Shield is about to attach to with their ifindex, then the
// programs; when the interfaces are measured nothing is attached to them.
func TestLoadMeasuresMapsAndInterfacesFirst(t *testing.T) {
	requireKernel(t)
	testutil.RequireTools(t, "ip")
	sfx := randomSuffix(t)[:6]
	ifname := "pki" + sfx
	run(t, "ip", "link", "add", ifname, "type", "veth", "peer", "name", "pkj"+sfx)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", ifname).Run() })
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	var ifaces InterfaceMeasurement
	var attachedThen []uint32
	dir := tempPinDir(t)
	rm := &recordingMeasurer{pinDir: dir}
	_, _ = loadTestManager(t, Options{PinDir: dir, Interfaces: []string{ifname},
		Measurer: MeasurerFunc(func(ctx context.Context, pm ProgramMeasurement) error {
			order = append(order, "program "+pm.Name)
			return rm.MeasureProgram(ctx, pm)
		}),
		MapMeasurer: MapMeasurerFunc(func(_ context.Context, mm MapMeasurement) error {
			order = append(order, "maps")
			return nil
		}),
		InterfaceMeasurer: InterfaceMeasurerFunc(func(_ context.Context, im InterfaceMeasurement) error {
			order = append(order, "interfaces")
			ifaces = im
			for _, h := range []string{kernelev.HookTCXIngress, kernelev.HookTCXEgress} {
				attachedThen = append(attachedThen, chainIDs(QueryHook(HookChain{Hook: h, Target: ifname, Ifindex: uint32(ifc.Index)}))...)
			}
			return nil
		}),
	})
	if len(order) < 3 || order[0] != "maps" || order[1] != "interfaces" || slices.Contains(order[2:], "maps") || slices.Contains(order[2:], "interfaces") {
		t.Fatalf("measurement order %v, want maps, interfaces, then programs", order)
	}
	if len(ifaces) != 1 || ifaces[ifname] != uint32(ifc.Index) {
		t.Errorf("interfaces measured %v, want %s: %d", ifaces, ifname, ifc.Index)
	}
	if len(attachedThen) != 0 {
		t.Errorf("programs %v already attached when the interfaces were measured", attachedThen)
	}
	if _, violations := rm.snapshot(); len(violations) > 0 {
		t.Errorf("violations: %v", violations)
	}
}
