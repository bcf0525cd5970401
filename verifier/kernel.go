package verifier

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/pulse-attest/pulse/internal/kernelev"
	"github.com/pulse-attest/pulse/internal/sentinelrec"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// Kernel evidence (docs/kernel-evidence.md): the chains of the hooks Pulse
// enforces and the maps its programs use, as the measured agent read them
// from the kernel, judged against the replayed runtime log. On a hook Pulse
// enforces (tcx ingress and egress where Shield was measured, XDP on every
// Shield interface) every program must be the one the runtime log measured
// last for that attach point; policy (allow_unlisted) has no say there.

// kernelLog is what the replayed runtime log says about kernel evidence.
type kernelLog struct {
	// hasMaps: the log holds a maps record; maps is its latest one, map
	// ID to name, and mapsErr why it did not decode.
	hasMaps bool
	maps    map[uint32]string
	mapsErr error
	// hooks is the latest measurement per hook of the current load: the
	// program records after the latest maps record (all of them in a log
	// without one), by the hook their attach point names.
	hooks map[kernelev.Hook]hookMeasurement
	// adopted names a Shield map whose kernel ID an earlier load of this
	// boot already measured: the later load adopted it instead of creating
	// it (Shield's maps are created fresh at every load).
	adopted   string
	adoptedID uint32
	// ifindex is the interfaces the current load measured before
	// attaching Shield to them: name to ifindex; ifErr why a record of
	// them did not decode.
	ifindex map[string]uint32
	ifErr   error
	// sentinelRecs counts the Sentinel configuration records of the
	// current load (of the whole log without a maps record): the agent
	// writes one per load, after its maps record.
	sentinelRecs int
}

type hookMeasurement struct {
	program string
	tag     [8]byte
}

// readKernelLog folds verified runtime records into a kernelLog.
func readKernelLog(records []cel.Record) kernelLog {
	kl := kernelLog{hooks: map[kernelev.Hook]hookMeasurement{}, ifindex: map[string]uint32{}}
	// earlier is every Shield map ID a previous load of this boot measured.
	earlier := map[uint32]bool{}
	for _, r := range records {
		switch c := r.Content.(type) {
		case *cel.Generic:
			if c.Name == sentinelrec.RecordName {
				kl.sentinelRecs++
				continue
			}
			if c.Name == kernelev.InterfacesRecordName {
				ifs, err := kernelev.DecodeMaps(c.Data)
				if err != nil {
					kl.ifErr = err
					continue
				}
				maps.Copy(kl.ifindex, ifs)
				continue
			}
			if c.Name != kernelev.MapsRecordName {
				continue
			}
			// A new load: its maps, and the hooks and interfaces it
			// measures from here.
			kl.hasMaps, kl.maps, kl.mapsErr = true, nil, nil
			kl.sentinelRecs = 0
			clear(kl.hooks)
			clear(kl.ifindex)
			kl.ifErr = nil
			ms, err := kernelev.DecodeMaps(c.Data)
			if err != nil {
				kl.mapsErr = err
				continue
			}
			kl.maps = make(map[uint32]string, len(ms))
			for name, id := range ms {
				kl.maps[id] = name
			}
			kl.adopted, kl.adoptedID = "", 0
			for _, name := range sortedNames(ms) {
				if !strings.HasPrefix(name, shieldMapPrefix) {
					continue
				}
				if earlier[ms[name]] && kl.adopted == "" {
					kl.adopted, kl.adoptedID = name, ms[name]
				}
				earlier[ms[name]] = true
			}
		case *cel.EBPFProgram:
			if h, ok := kernelev.ParseAttachPoint(c.AttachPoint); ok {
				kl.hooks[h] = hookMeasurement{program: c.Name, tag: c.Tag}
			}
		}
	}
	return kl
}

// shieldMapPrefix names Shield's maps: created fresh at every load, never
// adopted (docs/kernel-evidence.md, "Maps Pulse owns").
const shieldMapPrefix = "shield_"

func sortedNames(ms map[string]uint32) []string {
	names := make([]string, 0, len(ms))
	for n := range ms {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// kernelFinding is why kernel evidence refuses a pulse.
type kernelFinding struct {
	reason pulsev1.Reason
	msg    string
}

func (f *kernelFinding) Error() string { return f.msg }

func kernelFail(r pulsev1.Reason, format string, args ...any) *kernelFinding {
	return &kernelFinding{reason: r, msg: fmt.Sprintf(format, args...)}
}

// checkKernel judges the pulse's kernel evidence against the replayed
// runtime log (TPM agents only: rt is the verified log).
func checkKernel(o *Outcome, p *pulsev1.PulsePayload, rt *runtimeEvidence) *Outcome {
	if f := judgeKernel(p.GetBpf(), rt.kernel); f != nil {
		return o.untrusted(f.reason, "kernel evidence: %s", f.msg)
	}
	return nil
}

// judgeKernel is the pure judgement of checkKernel.
func judgeKernel(s *pulsev1.BPFSnapshot, kl kernelLog) *kernelFinding {
	if kl.sentinelRecs > 1 {
		// The runtime PCR is extendable by root: a second record in the
		// load would name another service manager (whose signals to the
		// agent are allowed) or another agent tgid (whose eBPF loads are
		// the agent's own) for Sentinel's judgement.
		return kernelFail(pulsev1.Reason_REASON_SENTINEL_TAMPERED, "the current load holds %d Sentinel configuration records; the agent writes one per load", kl.sentinelRecs)
	}
	var enforced []kernelev.Hook
	for h := range kl.hooks {
		if kernelev.Enforced(h.Kind) {
			enforced = append(enforced, h)
		}
	}
	sortHooks(enforced)
	chains := map[kernelev.Hook]*pulsev1.HookChain{}
	for _, c := range s.GetHooks() {
		h := kernelev.Hook{Kind: c.GetHook(), Target: c.GetTarget()}
		if _, dup := chains[h]; dup {
			return kernelFail(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, "hook %s reported twice", h)
		}
		chains[h] = c
	}
	if len(enforced) > 0 {
		if len(chains) == 0 {
			return kernelFail(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, "the runtime log measured Shield at %s but the pulse reports no hook chains", enforced[0])
		}
		if !kl.hasMaps || kl.mapsErr != nil {
			return kernelFail(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, "the runtime log measured Shield at %s but holds no readable maps record (%v)", enforced[0], kl.mapsErr)
		}
		if kl.ifErr != nil {
			return kernelFail(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, "the runtime log measured Shield at %s but its interfaces record does not decode: %v", enforced[0], kl.ifErr)
		}
	}
	// Every measured enforced hook, and XDP on every Shield interface
	// (XDP runs before tc whatever Shield's mode), must be reported.
	required := map[kernelev.Hook]bool{}
	for _, h := range enforced {
		required[h] = true
		required[kernelev.Hook{Kind: kernelev.HookXDP, Target: h.Target}] = true
	}
	req := make([]kernelev.Hook, 0, len(required))
	for h := range required {
		req = append(req, h)
	}
	sortHooks(req)
	for _, h := range req {
		if _, ok := chains[h]; !ok {
			return kernelFail(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, "hook %s is enforced but not reported", h)
		}
	}
	pinned := make(map[string][]byte, len(s.GetPinned()))
	for _, pin := range s.GetPinned() {
		pinned[pin.GetName()] = pin.GetTag()
	}
	for _, c := range s.GetHooks() {
		h := kernelev.Hook{Kind: c.GetHook(), Target: c.GetTarget()}
		m, measured := kl.hooks[h]
		if want, ok := kl.ifindex[h.Target]; ok && kernelev.Enforced(h.Kind) && c.GetIfindex() != 0 && c.GetIfindex() != want {
			// Another device under the name Shield was attached by (the
			// guarded one renamed, a new one given its name).
			return kernelFail(pulsev1.Reason_REASON_BPF_PROGRAM_MISSING, "hook %s is on ifindex %d; Shield was attached to ifindex %d under that name",
				h, c.GetIfindex(), want)
		}
		if e := c.GetError(); e != "" {
			// Also the agent's own finding that the name no longer names
			// the device it attached Shield to, whatever a (root-
			// extendable) interfaces record says.
			return kernelFail(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, "hook %s could not be queried: %q", h, e)
		}
		if !kernelev.Enforced(h.Kind) || (!measured && h.Kind != kernelev.HookXDP) {
			// Not a hook Pulse enforces (tcx while Shield runs as XDP):
			// only the maps of Pulse's programs there are judged.
			if f := judgeMaps(h, c, kl); f != nil {
				return f
			}
			continue
		}
		if measured {
			// The program measured there must be one the agent holds
			// pinned, with that tag: the runtime PCR is extendable by
			// root, and a record naming a foreign program at Shield's
			// attach point would otherwise make it "Pulse's".
			if tag, ok := pinned[m.program]; !ok || !bytes.Equal(tag, m.tag[:]) {
				return kernelFail(pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM, "hook %s: the runtime log's latest record there names %s (tag %x), which is not a program the agent holds pinned with that tag",
					h, m.program, m.tag)
			}
		}
		shield := false
		for i, prog := range c.GetPrograms() {
			if !measured || !bytes.Equal(prog.GetTag(), m.tag[:]) {
				want := "no program"
				if measured {
					want = fmt.Sprintf("only %s (tag %x)", m.program, m.tag)
				}
				return kernelFail(pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM, "hook %s position %d: program id %d tag %x (%q) is not Pulse's; the runtime log allows %s there",
					h, i, prog.GetId(), prog.GetTag(), prog.GetName(), want)
			}
			shield = true
		}
		if measured && !shield {
			return kernelFail(pulsev1.Reason_REASON_BPF_PROGRAM_MISSING, "hook %s: %s (tag %x) is measured but not attached", h, m.program, m.tag)
		}
		if f := judgeMaps(h, c, kl); f != nil {
			return f
		}
	}
	if kl.adopted != "" {
		return kernelFail(pulsev1.Reason_REASON_BPF_MAP_FOREIGN, "map %s (id %d) was measured by an earlier load of this boot: the latest load adopted it instead of creating it",
			kl.adopted, kl.adoptedID)
	}
	// The agent's own report of its maps must name every measured map with
	// its measured ID.
	if kl.hasMaps && kl.mapsErr == nil {
		reported := make(map[string]uint32, len(s.GetMaps()))
		for _, mi := range s.GetMaps() {
			reported[mi.GetName()] = mi.GetId()
		}
		byName := make(map[string]uint32, len(kl.maps))
		for id, name := range kl.maps {
			byName[name] = id
		}
		// And every map the agent holds must be one the latest load
		// measured: a maps record root appends after the load (a "new
		// load" without Shield's maps or programs) would otherwise clear
		// every enforced hook and leave the agent's maps unchecked.
		for _, mi := range s.GetMaps() {
			if _, ok := byName[mi.GetName()]; !ok {
				return kernelFail(pulsev1.Reason_REASON_BPF_MAP_FOREIGN, "the agent's map %s (id %d) is not in the latest maps record: that record is not the load the agent runs",
					mi.GetName(), mi.GetId())
			}
		}
		for _, name := range sortedNames(byName) {
			got, ok := reported[name]
			switch {
			case !ok:
				return kernelFail(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, "map %s (id %d) is measured but not reported", name, byName[name])
			case got != byName[name]:
				return kernelFail(pulsev1.Reason_REASON_BPF_MAP_FOREIGN, "map %s has id %d; this load measured id %d", name, got, byName[name])
			}
		}
	}
	return nil
}

// judgeMaps: every Pulse program on the hook (its tag is the one measured
// there) must use only maps the latest load measured.
func judgeMaps(h kernelev.Hook, c *pulsev1.HookChain, kl kernelLog) *kernelFinding {
	m, measured := kl.hooks[h]
	if !measured || !kl.hasMaps {
		return nil
	}
	for i, prog := range c.GetPrograms() {
		if !bytes.Equal(prog.GetTag(), m.tag[:]) {
			continue
		}
		for _, id := range prog.GetMapIds() {
			if _, ok := kl.maps[id]; !ok {
				return kernelFail(pulsev1.Reason_REASON_BPF_MAP_FOREIGN, "hook %s position %d: %s (program id %d) uses map id %d, which this load did not create",
					h, i, m.program, prog.GetId(), id)
			}
		}
	}
	return nil
}

func sortHooks(hs []kernelev.Hook) {
	slices.SortFunc(hs, func(a, b kernelev.Hook) int { return strings.Compare(a.String(), b.String()) })
}
