package verifier

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/store"
)

// The host program list (docs/ebpf.md, "Host programs"): every eBPF program
// loaded on the device, as the measured agent listed it from the kernel,
// with its SHA-256 and count. Kernel program IDs only grow within a boot,
// so the verifier keeps, per agent and boot, the highest ID it has
// accounted for (the mark). A program above the mark must be explained:
// one of Pulse's own programs (its ID is one the pulse names for a measured
// program, and its kernel tag is the measured one), or a load Sentinel
// recorded (a KIND_BPF_LOAD record of this or an earlier pulse of the boot
// naming its ID, or its type and name). Anything else was loaded while
// Sentinel did not see it: SENTINEL_TAMPERED, for as long as the program
// stays loaded. The first judged list of a boot is accepted whole (its
// programs predate the agent, or at least its Sentinel) and sets the mark.

// Bounds on what the verifier remembers per agent between pulses.
const (
	// maxHostOpen: unexplained programs remembered by name (beyond it,
	// counted only).
	maxHostOpen = 64
	// maxHostLoads: Sentinel load records not yet matched to a program.
	maxHostLoads = 256
	// maxHostNamed: unexplained programs a finding names.
	maxHostNamed = 8
)

// hostState is what the verifier holds about an agent's host program list,
// stored with its Sentinel cursor (store.SentinelCursor.HostPrograms).
type hostState struct {
	Boot string `json:"boot"`
	// Mark is the highest program ID accounted for in this boot.
	Mark uint32 `json:"mark"`
	// SHA256 is the digest of the last list judged (hex).
	SHA256 string `json:"sha256"`
	// Open are the programs of that list no load record or measurement
	// explains; OpenMore counts the ones beyond maxHostOpen.
	Open     []hostProg `json:"open,omitempty"`
	OpenMore int        `json:"open_more,omitempty"`
	// Loads are Sentinel's load records not yet matched to a listed
	// program, and Through the highest record sequence taken into account.
	Loads   []hostLoad `json:"loads,omitempty"`
	Through uint64     `json:"through,omitempty"`
}

type hostProg struct {
	ID   uint32 `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
	Tag  string `json:"tag"`
}

// hostLoad is one KIND_BPF_LOAD record: the program's ID when Sentinel knew
// it, else the type and name the loader asked for.
type hostLoad struct {
	Seq  uint64 `json:"seq"`
	ID   uint32 `json:"id,omitempty"`
	Type string `json:"type,omitempty"`
	Name string `json:"name,omitempty"`
}

// hostInput is what judgeHostPrograms judges.
type hostInput struct {
	snap   *pulsev1.BPFSnapshot
	events []*pulsev1.SentinelEvent
	report *pulsev1.SentinelReport
	// held is the stored state (nil: none); a state of another boot is
	// not used.
	held *hostState
	boot string
	// own maps the IDs the pulse names for Pulse's measured programs to
	// their measured kernel tag.
	own map[uint32][]byte
	// required: the agent runs eBPF (its runtime log measured Sentinel),
	// so a pulse without a host program list is a finding.
	required bool
}

// hostResult is judgeHostPrograms' decision.
type hostResult struct {
	findings []judgedFinding
	// next is the state to store (nil: keep the stored one).
	next *hostState
}

// hostProgramsDigest is the SHA-256 the agent puts in host_programs_sha256:
// over each program in list order, "<id>\0<name>\0<type>\0<tag hex>\n".
func hostProgramsDigest(list []*pulsev1.HostProgram) [32]byte {
	buf := make([]byte, 0, 48*len(list))
	for _, p := range list {
		buf = strconv.AppendUint(buf, uint64(p.GetId()), 10)
		buf = append(buf, 0)
		buf = append(buf, p.GetName()...)
		buf = append(buf, 0)
		buf = append(buf, p.GetType()...)
		buf = append(buf, 0)
		buf = hex.AppendEncode(buf, p.GetTag())
		buf = append(buf, '\n')
	}
	return sha256.Sum256(buf)
}

// loadOf reads a KIND_BPF_LOAD record: ok is false when it names nothing a
// program can be matched by (the loader's attributes were unreadable).
func loadOf(e *pulsev1.SentinelEvent) (hostLoad, bool) {
	l := hostLoad{Seq: e.GetSeq(), ID: e.GetValue()}
	// The agent's detail is "<type> <name> uid <uid>[ <outcome>]"; a
	// program name holds no space (the kernel allows [A-Za-z0-9_.]).
	f := strings.Split(e.GetDetail(), " ")
	if len(f) >= 4 && f[2] == "uid" && f[0] != "" && !strings.Contains(e.GetDetail(), "attr_unreadable") {
		l.Type, l.Name = f[0], f[1]
	}
	return l, l.ID != 0 || l.Type != ""
}

// judgeHostPrograms is the pure judgement of checkHostPrograms.
func judgeHostPrograms(in hostInput) hostResult {
	var res hostResult
	add := func(r pulsev1.Reason, lost bool, format string, args ...any) {
		res.findings = append(res.findings, judgedFinding{reason: r, msg: fmt.Sprintf(format, args...), lost: lost})
	}
	snap := in.snap
	list := snap.GetHostPrograms()
	count := snap.GetHostProgramCount()
	digest := snap.GetHostProgramsSha256()
	if len(digest) == 0 && len(list) == 0 && count == 0 {
		if in.required {
			add(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, false, "the pulse carries no host program list")
		}
		return res
	}
	if in.boot == "" {
		return res
	}
	held := in.held
	if held != nil && held.Boot != in.boot {
		held = nil
	}
	omitted := len(list) == 0 && count > 0
	switch {
	case len(digest) != sha256.Size:
		add(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, false, "the host program list's digest is %d bytes, not %d", len(digest), sha256.Size)
		return res
	case omitted && (held == nil || held.SHA256 != hex.EncodeToString(digest)):
		add(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, false, "the pulse omits the host program list (%d programs, %x) the verifier does not hold", count, digest[:8])
		return res
	case !omitted && uint32(len(list)) != count:
		add(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, false, "the host program list has %d entries but counts %d (truncated)", len(list), count)
		return res
	}
	if !omitted {
		if sum := hostProgramsDigest(list); !bytes.Equal(sum[:], digest) {
			add(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, false, "the host program list hashes to %x, not to its digest %x", sum[:8], digest[:8])
			return res
		}
	}

	next := &hostState{Boot: in.boot, SHA256: hex.EncodeToString(digest)}
	if held != nil {
		next.Mark, next.Through = held.Mark, held.Through
		next.Loads = append(next.Loads, held.Loads...)
	}
	// This pulse's load records join the unmatched ones.
	for _, e := range in.events {
		if e.GetKind() != pulsev1.SentinelEvent_KIND_BPF_LOAD || (held != nil && e.GetSeq() <= held.Through) {
			continue
		}
		if l, ok := loadOf(e); ok {
			next.Loads = append(next.Loads, l)
		}
		next.Through = max(next.Through, e.GetSeq())
	}

	// The programs to explain: above the mark in a new list, or the ones
	// still open in the held one.
	var todo []hostProg
	if omitted {
		todo = held.Open
	} else {
		open := map[uint32]bool{}
		if held != nil {
			for _, p := range held.Open {
				open[p.ID] = true
			}
		}
		high := next.Mark
		for i, p := range list {
			id := p.GetId()
			// The agent lists programs as the kernel iterates them: in
			// ascending ID order, each once.
			if i > 0 && id <= list[i-1].GetId() {
				add(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, false, "the host program list names program %d after %d (not in ascending ID order, or twice)", id, list[i-1].GetId())
				return res
			}
			high = max(high, id)
			if held == nil || (id <= held.Mark && !open[id]) {
				continue
			}
			if tag, ok := in.own[id]; ok && bytes.Equal(tag, p.GetTag()) {
				continue
			}
			todo = append(todo, hostProg{ID: id, Name: p.GetName(), Type: p.GetType(), Tag: hex.EncodeToString(p.GetTag())})
		}
		// Every program the pulse names as Pulse's own is on the host.
		for id := range in.own {
			if _, ok := slices.BinarySearchFunc(list, id, func(p *pulsev1.HostProgram, id uint32) int { return cmp.Compare(p.GetId(), id) }); !ok {
				add(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, false, "the host program list lacks program %d, which the pulse names as Pulse's own", id)
				return res
			}
		}
		next.Mark = high
		if held == nil {
			// First list of the boot: everything predates the check.
			todo = nil
		}
	}
	// Match the programs to load records: by ID when the record knows it,
	// else by type and name, each record used once.
	used := make([]bool, len(next.Loads))
	var open []hostProg
	for _, p := range todo {
		hit := -1
		for i, l := range next.Loads {
			if !used[i] && (l.ID == p.ID || (l.ID == 0 && l.Type == p.Type && l.Name == p.Name)) {
				hit = i
				break
			}
		}
		if hit < 0 {
			open = append(open, p)
			continue
		}
		used[hit] = true
	}
	kept := next.Loads[:0]
	for i, l := range next.Loads {
		if !used[i] {
			kept = append(kept, l)
		}
	}
	if n := len(kept); n > maxHostLoads {
		kept = kept[n-maxHostLoads:]
	}
	next.Loads = slices.Clip(kept)
	if len(next.Loads) == 0 {
		next.Loads = nil
	}

	// While Sentinel's records are truncated (more follow) an unexplained
	// program is not flagged yet: its record may be among the rest. Beyond
	// maxHostOpen the unexplained programs are only counted, and the
	// count stays for the rest of the boot.
	truncated := in.report.GetTruncated()
	forgotten := 0
	if held != nil {
		forgotten = held.OpenMore
	}
	unexplained := forgotten
	if !truncated {
		unexplained += len(open)
	}
	var named []string
	for _, p := range open {
		if truncated || len(named) == maxHostNamed {
			break
		}
		named = append(named, fmt.Sprintf("%d (%s %q, tag %s)", p.ID, p.Type, p.Name, p.Tag))
	}
	next.OpenMore = forgotten
	if len(open) > maxHostOpen {
		next.OpenMore += len(open) - maxHostOpen
		open = open[:maxHostOpen]
	}
	next.Open = open
	if unexplained > 0 {
		msg := strings.Join(named, ", ")
		if more := unexplained - len(named); more > 0 {
			if msg != "" {
				msg += " and "
			}
			msg += fmt.Sprintf("%d more", more)
		}
		add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, in.report.GetLost() > 0,
			"%d eBPF programs loaded without a Sentinel record (Sentinel did not see their load): %s", unexplained, msg)
	}
	res.next = next
	return res
}

// ownPrograms maps the kernel IDs the pulse gives Pulse's measured programs
// (pinned, attached on a hook, Fortress) to their measured tag; an ID whose
// tag is not a measured one is not Pulse's.
func ownPrograms(p *pulsev1.PulsePayload, rt *runtimeEvidence) map[uint32][]byte {
	own := map[uint32][]byte{}
	if rt == nil {
		return own
	}
	measured := make(map[string][]byte, len(rt.bpf))
	for _, m := range rt.bpf {
		if len(m.tag) > 0 {
			measured[string(m.tag)] = m.tag
		}
	}
	note := func(id uint32, tag []byte) {
		if t, ok := measured[string(tag)]; ok && id != 0 {
			own[id] = t
		}
	}
	for _, pp := range p.GetBpf().GetPinned() {
		if m, ok := rt.bpf[pp.GetName()]; ok && bytes.Equal(m.tag, pp.GetTag()) {
			note(pp.GetId(), pp.GetTag())
		}
	}
	for _, h := range p.GetBpf().GetHooks() {
		for _, cp := range h.GetPrograms() {
			note(cp.GetId(), cp.GetTag())
		}
	}
	if f := p.GetFortress(); f != nil {
		if m, ok := rt.bpf[fortressProgram]; ok && bytes.Equal(m.tag, f.GetTag()) {
			note(f.GetProgramId(), f.GetTag())
		}
	}
	return own
}

// checkHostPrograms judges the host program list (after checkSentinel,
// whose outcome carries what is recorded after the commit). Enforced
// findings of the sentinel rule turn the verdict UNTRUSTED with their own
// reason; in warn mode they are findings.
func (v *Verifier) checkHostPrograms(ctx context.Context, o *Outcome, p *pulsev1.PulsePayload, rt *runtimeEvidence) *Outcome {
	if o.sentinel == nil || o.boot == "" {
		return nil
	}
	in := hostInput{snap: p.GetBpf(), events: p.GetSentinelEvents(), report: p.GetSentinel(), boot: o.boot,
		own: ownPrograms(p, rt), required: rt != nil && rt.sentinel.has && (len(p.GetBpf().GetPinned()) > 0 || len(p.GetBpf().GetHooks()) > 0)}
	raw, err := v.store.GetHostProgramState(ctx, o.agent.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "host program state: %v", err)
	case raw != "":
		var hs hostState
		if err := json.Unmarshal([]byte(raw), &hs); err != nil {
			v.log.Warn("stored host program state does not decode; judging the list as the boot's first", "agent_id", o.agent.ID, "error", err)
		} else {
			in.held = &hs
		}
	}
	res := judgeHostPrograms(in)
	if res.next != nil {
		b, err := json.Marshal(res.next)
		if err != nil {
			return o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "host program state: %v", err)
		}
		if s := string(b); s != raw {
			o.sentinel.cursor.HostPrograms = &s
			o.sentinel.write = o.sentinel.write || o.sentinel.cursor.Boot != ""
		}
		if d, err := hex.DecodeString(res.next.SHA256); err == nil {
			o.hostHeld = d
		}
	}
	if len(res.findings) == 0 {
		return nil
	}
	rule := o.pol.SentinelRule()
	for _, f := range res.findings {
		if rule.Mode == policy.Enforce && !(f.lost && rule.AllowLost) {
			return o.untrusted(f.reason, "host programs: %s", f.msg)
		}
	}
	for _, f := range res.findings {
		o.Findings = append(o.Findings, &pulsev1.Finding{Rule: rule.Name, File: rule.Pos.File, Line: uint32(rule.Pos.Line),
			Severity: uint32(rule.Severity), Message: fmt.Sprintf("host programs: %s (%s)", f.msg, f.reason)})
	}
	return nil
}
