package verifier

import (
	"errors"
	"testing"

	"github.com/pulse-attest/pulse/internal/kernelev"
	"github.com/pulse-attest/pulse/internal/sentinelrec"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// The pure judgement of kernel evidence (judgeKernel over readKernelLog):
// the real-kernel, real-TPM cases are in kernel_test.go and
// e2e/kernel_evidence_test.go.

var (
	tagIngress = [8]byte{1, 1, 1, 1, 1, 1, 1, 1}
	tagEgress  = [8]byte{2, 2, 2, 2, 2, 2, 2, 2}
	tagXDP     = [8]byte{3, 3, 3, 3, 3, 3, 3, 3}
	tagForeign = []byte{9, 9, 9, 9, 9, 9, 9, 9}
)

func mapsRec(t testing.TB, ms map[string]uint32) cel.Record {
	t.Helper()
	data, err := kernelev.EncodeMaps(ms)
	if err != nil {
		t.Fatal(err)
	}
	return cel.Record{Content: &cel.Generic{Name: kernelev.MapsRecordName, Data: data}}
}

func progRec(name, point string, tag [8]byte) cel.Record {
	return cel.Record{Content: &cel.EBPFProgram{Name: name, ProgramType: "sched_cls", AttachPoint: point, Tag: tag}}
}

func chain(hook, target string, progs ...*pulsev1.ChainProgram) *pulsev1.HookChain {
	return &pulsev1.HookChain{Hook: hook, Target: target, Ifindex: 7, Programs: progs}
}

func prog(id uint32, tag []byte, maps ...uint32) *pulsev1.ChainProgram {
	return &pulsev1.ChainProgram{Id: id, Tag: tag, Name: "p", MapIds: maps, LinkId: id + 100}
}

// tcxLoad is an honest tcx-mode load on eth0: maps 11 (quarantine) and 12
// (a sentinel map), both Shield programs measured at their hooks.
func tcxLoad(t testing.TB) []cel.Record {
	return []cel.Record{
		mapsRec(t, map[string]uint32{"shield_quarantine": 11, "sentinel_cfg": 12}),
		progRec("shield_ingress", "tcx/ingress:eth0", tagIngress),
		progRec("shield_egress", "tcx/egress:eth0", tagEgress),
		progRec("sentinel_signal", "tracepoint/signal/signal_generate", [8]byte{5}),
	}
}

// sentRec is a Sentinel configuration record (one per agent load).
func sentRec(agent, manager uint32) cel.Record {
	return cel.Record{Content: &cel.Generic{Name: sentinelrec.RecordName, Data: sentinelrec.Encode(sentinelrec.Config{AgentTGID: agent, ManagerTGID: manager, MapID: 12})}}
}

func ifRec(t testing.TB, ifs map[string]uint32) cel.Record {
	t.Helper()
	data, err := kernelev.EncodeMaps(ifs)
	if err != nil {
		t.Fatal(err)
	}
	return cel.Record{Content: &cel.Generic{Name: kernelev.InterfacesRecordName, Data: data}}
}

// tcxLoadIf is tcxLoad with eth0's ifindex (7) measured before Shield.
func tcxLoadIf(t testing.TB) []cel.Record {
	rs := tcxLoad(t)
	return append([]cel.Record{rs[0], ifRec(t, map[string]uint32{"eth0": 7})}, rs[1:]...)
}

func honestTCX() *pulsev1.BPFSnapshot {
	return &pulsev1.BPFSnapshot{
		Hooks: []*pulsev1.HookChain{
			chain(kernelev.HookTCXIngress, "eth0", prog(1, tagIngress[:], 11)),
			chain(kernelev.HookTCXEgress, "eth0", prog(2, tagEgress[:], 11)),
			chain(kernelev.HookXDP, "eth0"),
		},
		Maps:   []*pulsev1.MapIdentity{{Name: "shield_quarantine", Id: 11}, {Name: "sentinel_cfg", Id: 12}},
		Pinned: []*pulsev1.PinnedProgram{{Name: "shield_ingress", Tag: tagIngress[:]}, {Name: "shield_egress", Tag: tagEgress[:]}},
	}
}

func TestJudgeKernel(t *testing.T) {
	xdpLoad := func(t testing.TB) []cel.Record {
		return []cel.Record{mapsRec(t, map[string]uint32{"shield_quarantine": 21}), progRec("shield_xdp", "xdp:eth0", tagXDP)}
	}
	honestXDP := func() *pulsev1.BPFSnapshot {
		return &pulsev1.BPFSnapshot{
			Hooks: []*pulsev1.HookChain{
				chain(kernelev.HookTCXIngress, "eth0"), chain(kernelev.HookTCXEgress, "eth0"),
				chain(kernelev.HookXDP, "eth0", prog(3, tagXDP[:], 21)),
			},
			Maps:   []*pulsev1.MapIdentity{{Name: "shield_quarantine", Id: 21}},
			Pinned: []*pulsev1.PinnedProgram{{Name: "shield_xdp", Tag: tagXDP[:]}},
		}
	}
	tests := []struct {
		name string
		log  func(testing.TB) []cel.Record
		snap func() *pulsev1.BPFSnapshot
		want pulsev1.Reason // REASON_OK: no finding
	}{
		{"honest tcx", tcxLoad, honestTCX, pulsev1.Reason_REASON_OK},
		{"honest xdp", xdpLoad, honestXDP, pulsev1.Reason_REASON_OK},
		{"no eBPF at all", func(testing.TB) []cel.Record { return nil }, func() *pulsev1.BPFSnapshot { return nil }, pulsev1.Reason_REASON_OK},
		{"tcx: foreign program ahead of Shield on ingress", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[0].Programs = append([]*pulsev1.ChainProgram{prog(50, tagForeign)}, s.Hooks[0].Programs...)
			return s
		}, pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM},
		{"tcx: foreign program after Shield on egress", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[1].Programs = append(s.Hooks[1].Programs, prog(50, tagForeign))
			return s
		}, pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM},
		{"tcx: ingress program on the egress hook", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[1].Programs[0].Tag = tagIngress[:]
			return s
		}, pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM},
		{"tcx: foreign XDP program on the Shield interface", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[2].Programs = []*pulsev1.ChainProgram{prog(51, tagForeign)}
			return s
		}, pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM},
		{"xdp: Shield's XDP program replaced", xdpLoad, func() *pulsev1.BPFSnapshot {
			s := honestXDP()
			s.Hooks[2].Programs = []*pulsev1.ChainProgram{prog(52, tagForeign)}
			return s
		}, pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM},
		{"xdp mode: a tcx program is not Pulse's business", xdpLoad, func() *pulsev1.BPFSnapshot {
			s := honestXDP()
			s.Hooks[0].Programs = []*pulsev1.ChainProgram{prog(53, tagForeign)}
			return s
		}, pulsev1.Reason_REASON_OK},
		{"tcx: Shield detached from ingress", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[0].Programs = nil
			return s
		}, pulsev1.Reason_REASON_BPF_PROGRAM_MISSING},
		{"tcx: Shield bound to a planted map", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[0].Programs[0].MapIds = []uint32{99}
			return s
		}, pulsev1.Reason_REASON_BPF_MAP_FOREIGN},
		{"agent reports another map id than it measured", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Maps[0].Id = 99
			return s
		}, pulsev1.Reason_REASON_BPF_MAP_FOREIGN},
		{"a later load adopted the earlier load's quarantine map", func(t testing.TB) []cel.Record {
			return append(tcxLoad(t), tcxLoad(t)...)
		}, honestTCX, pulsev1.Reason_REASON_BPF_MAP_FOREIGN},
		{"a later load with fresh maps", func(t testing.TB) []cel.Record {
			second := tcxLoad(t)
			second[0] = mapsRec(t, map[string]uint32{"shield_quarantine": 31, "sentinel_cfg": 12})
			return append(tcxLoad(t), second...)
		}, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[0].Programs[0].MapIds = []uint32{31}
			s.Hooks[1].Programs[0].MapIds = []uint32{31}
			s.Maps[0].Id = 31
			return s
		}, pulsev1.Reason_REASON_OK},
		{"the previous load's Shield still attached after a new load", func(t testing.TB) []cel.Record {
			second := tcxLoad(t)
			second[0] = mapsRec(t, map[string]uint32{"shield_quarantine": 31, "sentinel_cfg": 12})
			return append(tcxLoad(t), second...)
		}, honestTCX, pulsev1.Reason_REASON_BPF_MAP_FOREIGN},
		{"tracepoint: Sentinel's program on the measured maps", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks = append(s.Hooks, chain(kernelev.HookTracepoint, "signal/signal_generate", prog(4, []byte{5, 0, 0, 0, 0, 0, 0, 0}, 12)))
			return s
		}, pulsev1.Reason_REASON_OK},
		{"tracepoint: Sentinel's program bound to a planted map", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks = append(s.Hooks, chain(kernelev.HookTracepoint, "signal/signal_generate", prog(4, []byte{5, 0, 0, 0, 0, 0, 0, 0}, 98)))
			return s
		}, pulsev1.Reason_REASON_BPF_MAP_FOREIGN},
		{"tracepoint: another program there is not Pulse's business", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks = append(s.Hooks, chain(kernelev.HookTracepoint, "signal/signal_generate", prog(54, tagForeign, 98)))
			return s
		}, pulsev1.Reason_REASON_OK},
		{"measured ifindex matches", tcxLoadIf, honestTCX, pulsev1.Reason_REASON_OK},
		{"guarded interface renamed, another one given its name", tcxLoadIf, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			for _, h := range s.Hooks {
				h.Ifindex = 8
			}
			return s
		}, pulsev1.Reason_REASON_BPF_PROGRAM_MISSING},
		{"only the XDP hook on another device", tcxLoadIf, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[2].Ifindex = 8
			return s
		}, pulsev1.Reason_REASON_BPF_PROGRAM_MISSING},
		{"an earlier load's interfaces do not bind", func(t testing.TB) []cel.Record {
			first := tcxLoadIf(t)
			first[1] = ifRec(t, map[string]uint32{"eth0": 3})
			second := tcxLoad(t)
			second[0] = mapsRec(t, map[string]uint32{"shield_quarantine": 31, "sentinel_cfg": 12})
			return append(first, second...)
		}, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[0].Programs[0].MapIds = []uint32{31}
			s.Hooks[1].Programs[0].MapIds = []uint32{31}
			s.Maps[0].Id = 31
			return s
		}, pulsev1.Reason_REASON_OK},
		{"interfaces record that does not decode", func(t testing.TB) []cel.Record {
			rs := tcxLoadIf(t)
			rs[1] = cel.Record{Content: &cel.Generic{Name: kernelev.InterfacesRecordName, Data: []byte("eth0 7")}}
			return rs
		}, honestTCX, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING},
		{"lying agent: no hook chains", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks = nil
			return s
		}, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING},
		{"lying agent: XDP chain left out", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks = s.Hooks[:2]
			return s
		}, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING},
		{"lying agent: a hook reported twice", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks = append(s.Hooks, chain(kernelev.HookTCXIngress, "eth0", prog(1, tagIngress[:], 11)))
			return s
		}, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING},
		{"lying agent: maps left out", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Maps = nil
			return s
		}, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING},
		{"hook the kernel could not be asked about", tcxLoad, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[2] = &pulsev1.HookChain{Hook: kernelev.HookXDP, Target: "eth0", Error: "interface eth0: no such network interface"}
			return s
		}, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING},
		{"Shield measured but no maps record", func(t testing.TB) []cel.Record {
			return tcxLoad(t)[1:]
		}, honestTCX, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING},
		{"maps record that does not decode", func(t testing.TB) []cel.Record {
			rs := tcxLoad(t)
			rs[0] = cel.Record{Content: &cel.Generic{Name: kernelev.MapsRecordName, Data: []byte("shield_quarantine 011\n")}}
			return rs
		}, honestTCX, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING},
		// Records root appends to the runtime log after the agent's load
		// (issue 20 attack review; the real-kernel exploits are in
		// attack20_test.go).
		{"forged maps record without Shield's maps after the load", func(t testing.TB) []cel.Record {
			return append(tcxLoad(t), mapsRec(t, map[string]uint32{"sentinel_cfg": 12}))
		}, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[0].Programs = append([]*pulsev1.ChainProgram{prog(50, tagForeign)}, s.Hooks[0].Programs...)
			return s
		}, pulsev1.Reason_REASON_BPF_MAP_FOREIGN},
		{"forged empty maps record after the load", func(t testing.TB) []cel.Record {
			return append(tcxLoad(t), cel.Record{Content: &cel.Generic{Name: kernelev.MapsRecordName}})
		}, honestTCX, pulsev1.Reason_REASON_BPF_MAP_FOREIGN},
		{"forged record measures a foreign XDP program on the Shield interface", func(t testing.TB) []cel.Record {
			return append(tcxLoad(t), progRec("foreign_pass", "xdp:eth0", [8]byte(tagForeign)))
		}, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[2].Programs = []*pulsev1.ChainProgram{prog(51, tagForeign)}
			return s
		}, pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM},
		{"forged record measures a foreign program under Shield's name", func(t testing.TB) []cel.Record {
			return append(tcxLoad(t), progRec("shield_ingress", "tcx/ingress:eth0", [8]byte(tagForeign)))
		}, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[0].Programs = []*pulsev1.ChainProgram{prog(50, tagForeign)}
			return s
		}, pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM},
		{"forged Sentinel configuration record after the load's own", func(t testing.TB) []cel.Record {
			return append(tcxLoad(t), sentRec(1234, 1), sentRec(1234, 666))
		}, honestTCX, pulsev1.Reason_REASON_SENTINEL_TAMPERED},
		{"one Sentinel configuration record per load", func(t testing.TB) []cel.Record {
			second := tcxLoad(t)
			second[0] = mapsRec(t, map[string]uint32{"shield_quarantine": 31, "sentinel_cfg": 12})
			return append(append(append(tcxLoad(t), sentRec(1234, 1)), second...), sentRec(1240, 1))
		}, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			s.Hooks[0].Programs[0].MapIds = []uint32{31}
			s.Hooks[1].Programs[0].MapIds = []uint32{31}
			s.Maps[0].Id = 31
			return s
		}, pulsev1.Reason_REASON_OK},
		// The agent's own report that the guarded name now names another
		// device, whatever a root-appended interfaces record says (issue
		// 20 attack review; real kernel: attack20_test.go).
		{"forged interfaces record names the decoy; the agent reports the renamed device", func(t testing.TB) []cel.Record {
			return append(tcxLoadIf(t), ifRec(t, map[string]uint32{"eth0": 8}))
		}, func() *pulsev1.BPFSnapshot {
			s := honestTCX()
			for _, h := range s.Hooks {
				h.Ifindex, h.Error = 8, "interface eth0 is ifindex 8; Shield was attached at ifindex 7"
			}
			return s
		}, pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := judgeKernel(tc.snap(), readKernelLog(tc.log(t)))
			if tc.want == pulsev1.Reason_REASON_OK {
				if f != nil {
					t.Fatalf("finding %s: %v, want none", f.reason, f)
				}
				return
			}
			var kf *kernelFinding
			if !errors.As(error(f), &kf) || kf == nil {
				t.Fatalf("no finding, want %s", tc.want)
			}
			if kf.reason != tc.want {
				t.Fatalf("finding %s (%v), want %s", kf.reason, kf, tc.want)
			}
		})
	}
}

// TestReadKernelLogScopesHooksToTheLatestLoad: a new maps record starts a
// new load; hooks measured before it no longer bind.
func TestReadKernelLogScopesHooksToTheLatestLoad(t *testing.T) {
	rs := tcxLoad(t)
	rs = append(rs, mapsRec(t, map[string]uint32{"shield_quarantine": 31}), progRec("shield_xdp", "xdp:eth1", tagXDP))
	kl := readKernelLog(rs)
	if len(kl.hooks) != 1 {
		t.Fatalf("hooks %v, want only xdp:eth1", kl.hooks)
	}
	if m, ok := kl.hooks[kernelev.Hook{Kind: kernelev.HookXDP, Target: "eth1"}]; !ok || m.program != "shield_xdp" {
		t.Fatalf("hooks %v, want xdp:eth1 shield_xdp", kl.hooks)
	}
	if kl.maps[31] != "shield_quarantine" || len(kl.maps) != 1 || kl.adopted != "" {
		t.Fatalf("maps %v adopted %q", kl.maps, kl.adopted)
	}
}

// BenchmarkKernelJudgement is the verifier's per-pulse cost of kernel
// evidence over a runtime log at its size limit: reading the log, then
// judging an honest snapshot.
func BenchmarkKernelJudgement(b *testing.B) {
	load := tcxLoad(b)
	var rs []cel.Record
	for len(rs)+len(load) <= MaxRuntimeRecords {
		rs = append(rs, load[1:]...) // program records only: one load's maps
	}
	rs = append(rs, load...)
	snap := honestTCX()
	for b.Loop() {
		if f := judgeKernel(snap, readKernelLog(rs)); f != nil {
			b.Fatal(f)
		}
	}
}
