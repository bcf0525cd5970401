package verifier

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
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
	// unwatched: the runtime log never measured Sentinel, so no record
	// can explain a load: the list is not judged (it is informational).
	unwatched bool
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

// kernelName is a program name as the kernel keeps it (and Sentinel
// records it from the load's attributes): at most 15 bytes. The agent lists
// longer names in full, from the program's BTF.
func kernelName(name string) string {
	if len(name) > maxKernelName {
		return name[:maxKernelName]
	}
	return name
}

// maxKernelName is BPF_OBJ_NAME_LEN less its terminating NUL.
const maxKernelName = 15

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
	if in.boot == "" || in.unwatched {
		return res
	}
	held := in.held
	if held != nil && held.Boot != in.boot {
		held = nil
	}
	// first: no list of this boot judged yet.
	first := held == nil || held.SHA256 == ""

	// This pulse's load records join the unmatched ones, whatever becomes
	// of its list: once the pulse is committed the agent acknowledges
	// them and never sends them again.
	next := &hostState{Boot: in.boot}
	if held != nil {
		next.Mark, next.Through, next.SHA256, next.OpenMore = held.Mark, held.Through, held.SHA256, held.OpenMore
		next.Open = append(next.Open, held.Open...)
		next.Loads = append(next.Loads, held.Loads...)
	}
	for _, e := range in.events {
		if e.GetKind() != pulsev1.SentinelEvent_KIND_BPF_LOAD || e.GetSeq() <= next.Through {
			continue
		}
		if l, ok := loadOf(e); ok {
			next.Loads = append(next.Loads, l)
		}
		next.Through = max(next.Through, e.GetSeq())
	}
	if n := len(next.Loads); n > maxHostLoads {
		next.Loads = next.Loads[n-maxHostLoads:]
	}
	// refuse: the list cannot be judged; the held state stands, with this
	// pulse's records.
	refuse := func(format string, args ...any) hostResult {
		add(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, false, format, args...)
		res.next = next
		return res
	}
	if len(digest) == 0 && len(list) == 0 && count == 0 {
		if in.required {
			return refuse("the pulse carries no host program list")
		}
		return res
	}
	omitted := len(list) == 0 && count > 0
	switch {
	case len(digest) != sha256.Size:
		return refuse("the host program list's digest is %d bytes, not %d", len(digest), sha256.Size)
	case omitted && (first || held.SHA256 != hex.EncodeToString(digest)):
		return refuse("the pulse omits the host program list (%d programs, %x) the verifier does not hold", count, digest[:8])
	case !omitted && uint32(len(list)) != count:
		return refuse("the host program list has %d entries but counts %d (truncated)", len(list), count)
	}
	if !omitted {
		if sum := hostProgramsDigest(list); !bytes.Equal(sum[:], digest) {
			return refuse("the host program list hashes to %x, not to its digest %x", sum[:8], digest[:8])
		}
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
				return refuse("the host program list names program %d after %d (not in ascending ID order, or twice)", id, list[i-1].GetId())
			}
			high = max(high, id)
			if first || (id <= held.Mark && !open[id]) {
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
				return refuse("the host program list lacks program %d, which the pulse names as Pulse's own", id)
			}
		}
		next.Mark = high
		if first {
			// First list of the boot: everything predates the check.
			todo = nil
		}
	}
	next.SHA256 = hex.EncodeToString(digest)
	// Match the programs to load records: by ID when the record knows it,
	// else by type and name, each record used once.
	used := make([]bool, len(next.Loads))
	var open []hostProg
	for _, p := range todo {
		hit := -1
		for i, l := range next.Loads {
			if !used[i] && (l.ID == p.ID || (l.ID == 0 && l.Type == p.Type && l.Name == kernelName(p.Name))) {
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

// hostOutcome is what judging the host program list decided: its findings
// (applied by hostVerdict, after checkSentinel), the state to record with
// the Sentinel cursor with the commit (sentinelWrite) and the digest of
// the list the verifier then holds (told to the agent, VerifierState).
type hostOutcome struct {
	findings []judgedFinding
	// state: the new state to store (nil: the stored one stands).
	state *string
	held  []byte
}

// judgeHostList judges the host program list as soon as the runtime log is
// verified, so that the list and Sentinel's load records of a pulse a
// later step refuses (but commits) are still accounted for; hostVerdict
// applies its findings.
func (v *Verifier) judgeHostList(ctx context.Context, o *Outcome, p *pulsev1.PulsePayload, rt *runtimeEvidence) *Outcome {
	if o.boot == "" || o.agent == nil || rt == nil || !rt.sentinel.has {
		// Without Sentinel measured nothing can explain a load.
		return nil
	}
	in := hostInput{snap: p.GetBpf(), events: p.GetSentinelEvents(), report: p.GetSentinel(), boot: o.boot,
		own: ownPrograms(p, rt), unwatched: rt == nil || !rt.sentinel.has,
		required: rt != nil && rt.sentinel.has && (len(p.GetBpf().GetPinned()) > 0 || len(p.GetBpf().GetHooks()) > 0)}
	st, err := v.sentinelState(ctx, o)
	raw := st.HostPrograms
	switch {
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
	o.host = &hostOutcome{findings: res.findings}
	if res.next != nil {
		b, err := json.Marshal(res.next)
		if err != nil {
			return o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "host program state: %v", err)
		}
		if s := string(b); s != raw {
			o.host.state = &s
		}
		if d, err := hex.DecodeString(res.next.SHA256); err == nil {
			o.host.held = d
		}
	}
	return nil
}

// hostVerdict applies the host program findings under the sentinel rule:
// enforced ones turn the verdict UNTRUSTED with their own reason; in warn
// mode (or lost records under allow_lost) they are findings.
func (o *Outcome) hostVerdict() *Outcome {
	if o.host == nil || len(o.host.findings) == 0 {
		return nil
	}
	rule := o.pol.SentinelRule()
	for _, f := range o.host.findings {
		if rule.Mode == policy.Enforce && !(f.lost && rule.AllowLost) {
			return o.untrusted(f.reason, "host programs: %s", f.msg)
		}
	}
	for _, f := range o.host.findings {
		o.Findings = append(o.Findings, &pulsev1.Finding{Rule: rule.Name, File: rule.Pos.File, Line: uint32(rule.Pos.Line),
			Severity: uint32(rule.Severity), Message: fmt.Sprintf("host programs: %s (%s)", f.msg, f.reason)})
	}
	return nil
}

// withHostState adds the host program state a committed pulse decided to
// the Sentinel cursor the commit writes (sentinelWrite).
func (o *Outcome) withHostState(so *sentinelOutcome) {
	if o.host == nil || o.host.state == nil || so == nil || so.cursor.Boot == "" {
		return
	}
	so.cursor.HostPrograms = o.host.state
	so.write = true
}
