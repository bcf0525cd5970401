package verifier

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

var (
	tagOwn   = []byte{1, 1, 1, 1, 1, 1, 1, 1}
	tagOther = []byte{2, 2, 2, 2, 2, 2, 2, 2}
)

func hp(id uint32, typ, name string, tag []byte) *pulsev1.HostProgram {
	return &pulsev1.HostProgram{Id: id, Name: name, Type: typ, Tag: tag}
}

// hostList is a consistent snapshot of the given programs.
func hostList(progs ...*pulsev1.HostProgram) *pulsev1.BPFSnapshot {
	d := hostProgramsDigest(progs)
	return &pulsev1.BPFSnapshot{HostPrograms: progs, HostProgramsSha256: d[:], HostProgramCount: uint32(len(progs))}
}

// omittedList is the snapshot of an agent told the verifier holds the list.
func omittedList(progs ...*pulsev1.HostProgram) *pulsev1.BPFSnapshot {
	s := hostList(progs...)
	s.HostPrograms = nil
	return s
}

// load is the KIND_BPF_LOAD record the agent makes of a load.
func load(seq uint64, typ, name string) *pulsev1.SentinelEvent {
	return &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_BPF_LOAD, Seq: seq, SenderPid: 77, SenderComm: "bpftool",
		Detail: fmt.Sprintf("%s %s uid 0", typ, name)}
}

func digestHex(s *pulsev1.BPFSnapshot) string { return hex.EncodeToString(s.GetHostProgramsSha256()) }

// base is the first list of boot "1.0": programs 1-3 predate the agent.
var base = []*pulsev1.HostProgram{hp(1, "cgroup_skb", "sd_fw_egress", tagOther), hp(2, "cgroup_skb", "sd_fw_ingress", tagOther), hp(3, "tracepoint", "sentinel_bpf", tagOwn)}

func with(extra ...*pulsev1.HostProgram) []*pulsev1.HostProgram {
	return append(append([]*pulsev1.HostProgram(nil), base...), extra...)
}

// heldAfterBase is the state the verifier stores after judging base.
func heldAfterBase() *hostState {
	return &hostState{Boot: "1.0", Mark: 3, SHA256: digestHex(hostList(base...))}
}

func TestJudgeHostPrograms(t *testing.T) {
	foreign := hp(9, "xdp", "xdp_pass", tagOther)
	second := hp(10, "xdp", "xdp_pass", tagOther)
	own := map[uint32][]byte{3: tagOwn}
	type want struct {
		reasons []pulsev1.Reason
		lost    bool
		// next: the state the verifier keeps (nil: unchanged).
		next func(*testing.T, *hostState)
		msg  string
		// keeps: the list could not be judged; the held state stands
		// (with the pulse's load records).
		keeps bool
	}
	noFinding := want{}
	kem := want{reasons: []pulsev1.Reason{pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING}, keeps: true}
	tampered := func(open ...uint32) want {
		return want{reasons: []pulsev1.Reason{pulsev1.Reason_REASON_SENTINEL_TAMPERED}, next: openIs(open...)}
	}
	for _, tc := range []struct {
		name string
		in   hostInput
		want want
	}{
		{"no list from an agent without eBPF", hostInput{snap: &pulsev1.BPFSnapshot{}, boot: "1.0"}, noFinding},
		{"no list from an agent running eBPF", hostInput{snap: &pulsev1.BPFSnapshot{}, boot: "1.0", required: true}, kem},
		{"no snapshot at all from an agent running eBPF", hostInput{boot: "1.0", required: true}, kem},
		{"first list of the boot accepted whole, the mark set", hostInput{snap: hostList(with(foreign)...), boot: "1.0", own: own},
			want{next: func(t *testing.T, s *hostState) {
				if s.Mark != 9 || len(s.Open) != 0 || s.Boot != "1.0" || s.SHA256 != digestHex(hostList(with(foreign)...)) {
					t.Errorf("state %+v", s)
				}
			}}},
		{"a state of another boot is not used", hostInput{snap: hostList(with(foreign)...), boot: "2.0", held: heldAfterBase()},
			want{next: func(t *testing.T, s *hostState) {
				if s.Mark != 9 || s.Boot != "2.0" || len(s.Open) != 0 {
					t.Errorf("state %+v", s)
				}
			}}},
		{"unchanged list, nothing new", hostInput{snap: hostList(base...), boot: "1.0", held: heldAfterBase(), own: own}, want{next: openIs()}},
		{"omitted list the verifier holds", hostInput{snap: omittedList(base...), boot: "1.0", held: heldAfterBase(), own: own}, want{next: openIs()}},
		{"omitted list the verifier does not hold", hostInput{snap: omittedList(with(foreign)...), boot: "1.0", held: heldAfterBase()}, kem},
		{"omitted list, nothing held", hostInput{snap: omittedList(base...), boot: "1.0"}, kem},
		{"omitted list held for another boot", hostInput{snap: omittedList(base...), boot: "2.0", held: heldAfterBase()}, kem},
		{"list truncated (count above entries)", hostInput{snap: func() *pulsev1.BPFSnapshot {
			s := hostList(with(foreign)...)
			s.HostPrograms = s.HostPrograms[:3]
			return s
		}(), boot: "1.0", held: heldAfterBase()}, kem},
		{"list does not hash to its digest (a program dropped, digest kept)", hostInput{snap: func() *pulsev1.BPFSnapshot {
			s := hostList(with(foreign)...)
			s.HostPrograms, s.HostProgramCount = base, 3
			return s
		}(), boot: "1.0", held: heldAfterBase()}, want{reasons: kem.reasons, keeps: true, msg: "not to its digest"}},
		{"digest of the wrong size", hostInput{snap: &pulsev1.BPFSnapshot{HostPrograms: base, HostProgramsSha256: []byte{1}, HostProgramCount: 3}, boot: "1.0"}, kem},
		{"a program listed twice", hostInput{snap: hostList(with(foreign, foreign)...), boot: "1.0", held: heldAfterBase()}, want{reasons: kem.reasons, keeps: true, msg: "or twice"}},
		{"a list out of ID order", hostInput{snap: hostList(hp(5, "xdp", "a", tagOther), hp(4, "xdp", "b", tagOther)), boot: "1.0", held: heldAfterBase()}, kem},
		{"a program the pulse names as Pulse's own is not listed", hostInput{snap: hostList(base[:2]...), boot: "1.0", held: heldAfterBase(), own: own},
			want{reasons: kem.reasons, keeps: true, msg: "lacks program 3"}},
		{"a new program of Pulse's own (measured tag, named ID)", hostInput{snap: hostList(with(hp(11, "sched_cls", "shield_ingress", tagOwn))...), boot: "1.0",
			held: heldAfterBase(), own: map[uint32][]byte{3: tagOwn, 11: tagOwn}}, want{next: openIs()}},
		{"a new program under an own ID with another tag", hostInput{snap: hostList(with(hp(11, "sched_cls", "shield_ingress", tagOther))...), boot: "1.0",
			held: heldAfterBase(), own: map[uint32][]byte{3: tagOwn, 11: tagOwn}}, tampered(11)},
		{"a new program with a load record in this pulse", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: heldAfterBase(),
			events: []*pulsev1.SentinelEvent{load(4, "xdp", "xdp_pass")}}, want{next: func(t *testing.T, s *hostState) {
			if s.Mark != 9 || len(s.Open) != 0 || len(s.Loads) != 0 || s.Through != 4 {
				t.Errorf("state %+v", s)
			}
		}}},
		{"a new program with a load record naming its ID", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: heldAfterBase(),
			events: []*pulsev1.SentinelEvent{{Kind: pulsev1.SentinelEvent_KIND_BPF_LOAD, Seq: 4, Value: 9, Detail: "xdp other uid 0"}}}, want{next: openIs()}},
		{"a new program with a load record of an earlier pulse", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: func() *hostState {
			h := heldAfterBase()
			h.Loads, h.Through = []hostLoad{{Seq: 4, Type: "xdp", Name: "xdp_pass"}}, 4
			return h
		}()}, want{next: openIs()}},
		{"a new program Sentinel has no record of", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: heldAfterBase(), own: own}, tampered(9)},
		{"a record names the program as the kernel cuts it (15 bytes)", hostInput{snap: hostList(with(hp(9, "tracepoint", "sentinel_newtask", tagOther))...), boot: "1.0",
			held: heldAfterBase(), events: []*pulsev1.SentinelEvent{load(4, "tracepoint", "sentinel_newtas")}}, want{next: openIs()}},
		{"a record of a 15-byte prefix of another name explains nothing", hostInput{snap: hostList(with(hp(9, "tracepoint", "sentinel_newtask", tagOther))...), boot: "1.0",
			held: heldAfterBase(), events: []*pulsev1.SentinelEvent{load(4, "tracepoint", "sentinel_newta")}}, tampered(9)},
		{"a record of another type or name explains nothing", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: heldAfterBase(),
			events: []*pulsev1.SentinelEvent{load(4, "sched_cls", "xdp_pass"), load(5, "xdp", "xdp_drop")}}, tampered(9)},
		{"a record whose attributes were unreadable explains nothing", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: heldAfterBase(),
			events: []*pulsev1.SentinelEvent{{Kind: pulsev1.SentinelEvent_KIND_BPF_LOAD, Seq: 4, Detail: "  uid 0 attr_unreadable"}}}, tampered(9)},
		{"a record of a signal explains nothing", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: heldAfterBase(),
			events: []*pulsev1.SentinelEvent{{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, Seq: 4, Detail: "xdp xdp_pass uid 0"}}}, tampered(9)},
		{"one record explains one of two programs of its name", hostInput{snap: hostList(with(foreign, second)...), boot: "1.0", held: heldAfterBase(),
			events: []*pulsev1.SentinelEvent{load(4, "xdp", "xdp_pass")}}, tampered(10)},
		{"a record resent (seq already taken) explains nothing again", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: func() *hostState {
			h := heldAfterBase()
			h.Through = 4
			return h
		}(), events: []*pulsev1.SentinelEvent{load(4, "xdp", "xdp_pass")}}, tampered(9)},
		{"an unexplained program stays a finding while it is loaded (list omitted)", hostInput{snap: omittedList(with(foreign)...), boot: "1.0", held: &hostState{
			Boot: "1.0", Mark: 9, SHA256: digestHex(hostList(with(foreign)...)), Open: []hostProg{{ID: 9, Type: "xdp", Name: "xdp_pass"}}}}, tampered(9)},
		{"an unexplained program stays a finding while it is loaded (list resent)", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: &hostState{
			Boot: "1.0", Mark: 9, SHA256: digestHex(hostList(with(foreign)...)), Open: []hostProg{{ID: 9, Type: "xdp", Name: "xdp_pass"}}}}, tampered(9)},
		{"an open program explained by a record that came later", hostInput{snap: omittedList(with(foreign)...), boot: "1.0", held: &hostState{
			Boot: "1.0", Mark: 9, SHA256: digestHex(hostList(with(foreign)...)), Open: []hostProg{{ID: 9, Type: "xdp", Name: "xdp_pass"}}},
			events: []*pulsev1.SentinelEvent{load(6, "xdp", "xdp_pass")}}, want{next: openIs()}},
		{"an open program unloaded", hostInput{snap: hostList(base...), boot: "1.0", held: &hostState{
			Boot: "1.0", Mark: 9, SHA256: digestHex(hostList(with(foreign)...)), Open: []hostProg{{ID: 9, Type: "xdp", Name: "xdp_pass"}}}}, want{next: func(t *testing.T, s *hostState) {
			if s.Mark != 9 || len(s.Open) != 0 {
				t.Errorf("state %+v", s)
			}
		}}},
		{"a program below the mark is not judged again", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: &hostState{
			Boot: "1.0", Mark: 9, SHA256: "00"}}, want{next: openIs()}},
		{"records truncated: an unexplained program waits", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: heldAfterBase(),
			report: &pulsev1.SentinelReport{Truncated: true}}, want{next: openIs(9)}},
		{"records lost: the finding is a lost one", hostInput{snap: hostList(with(foreign)...), boot: "1.0", held: heldAfterBase(),
			report: &pulsev1.SentinelReport{Lost: 3}}, want{reasons: []pulsev1.Reason{pulsev1.Reason_REASON_SENTINEL_TAMPERED}, lost: true, next: openIs(9)}},
		{"the load records of a pulse whose list is refused are kept", hostInput{snap: func() *pulsev1.BPFSnapshot {
			s := hostList(with(foreign)...)
			s.HostProgramsSha256 = make([]byte, 32)
			return s
		}(), boot: "1.0", held: heldAfterBase(), events: []*pulsev1.SentinelEvent{load(4, "xdp", "xdp_pass")}}, want{reasons: kem.reasons, keeps: true,
			next: func(t *testing.T, s *hostState) {
				if len(s.Loads) != 1 || s.Loads[0].Name != "xdp_pass" || s.Through != 4 {
					t.Errorf("state %+v", s)
				}
			}}},
		{"an agent whose runtime log never measured Sentinel: the list is informational", hostInput{snap: &pulsev1.BPFSnapshot{HostProgramCount: 9},
			boot: "1.0", held: heldAfterBase(), unwatched: true}, noFinding},
		{"no boot (no quote): nothing judged", hostInput{snap: hostList(with(foreign)...), held: heldAfterBase()}, noFinding},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := judgeHostPrograms(tc.in)
			var got []pulsev1.Reason
			for _, f := range res.findings {
				got = append(got, f.reason)
				if f.lost != tc.want.lost {
					t.Errorf("finding %q lost=%v, want %v", f.msg, f.lost, tc.want.lost)
				}
				if tc.want.msg != "" && !strings.Contains(f.msg, tc.want.msg) {
					t.Errorf("finding %q does not say %q", f.msg, tc.want.msg)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want.reasons) {
				t.Fatalf("findings %v (%+v), want %v", got, res.findings, tc.want.reasons)
			}
			if tc.want.keeps {
				if res.next == nil {
					t.Fatal("no state written: the pulse's load records are lost")
				}
				var mark uint32
				var sha string
				if h := tc.in.held; h != nil && h.Boot == tc.in.boot {
					mark, sha = h.Mark, h.SHA256
				}
				if res.next.Mark != mark || res.next.SHA256 != sha || res.next.Boot != tc.in.boot {
					t.Errorf("state %+v, want the held mark %d and digest %q", res.next, mark, sha)
				}
				if tc.want.next != nil {
					tc.want.next(t, res.next)
				}
				return
			}
			switch {
			case tc.want.next == nil && res.next != nil:
				t.Errorf("state %+v written, want none", res.next)
			case tc.want.next != nil && res.next == nil:
				t.Fatalf("no state written")
			case tc.want.next != nil:
				tc.want.next(t, res.next)
			}
		})
	}
}

// openIs checks the programs left unexplained.
func openIs(ids ...uint32) func(*testing.T, *hostState) {
	return func(t *testing.T, s *hostState) {
		t.Helper()
		var got []uint32
		for _, p := range s.Open {
			got = append(got, p.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Errorf("open %v, want %v (state %+v)", got, ids, s)
		}
	}
}

// TestHostProgramsSequence: the judgement over consecutive pulses of one
// boot, each fed the state the previous one left: a load recorded before
// its program is listed, a truncated batch, a blinded load that stays a
// finding until unloaded.
func TestHostProgramsSequence(t *testing.T) {
	foreign := hp(9, "xdp", "xdp_pass", tagOther)
	blind := hp(12, "tracepoint", "hidden", tagOther)
	var held *hostState
	step := func(name string, snap *pulsev1.BPFSnapshot, rep *pulsev1.SentinelReport, events []*pulsev1.SentinelEvent, want ...pulsev1.Reason) {
		t.Helper()
		res := judgeHostPrograms(hostInput{snap: snap, report: rep, events: events, held: held, boot: "1.0"})
		var got []pulsev1.Reason
		for _, f := range res.findings {
			got = append(got, f.reason)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: findings %v (%+v), want %v", name, got, res.findings, want)
		}
		if res.next != nil {
			// Through the store's encoding, as the verifier keeps it.
			b, err := json.Marshal(res.next)
			if err != nil {
				t.Fatal(err)
			}
			held = new(hostState)
			if err := json.Unmarshal(b, held); err != nil {
				t.Fatal(err)
			}
		}
	}
	step("first pulse", hostList(base...), nil, nil)
	// The load happened after this pulse's snapshot: its record comes
	// first, the program in the next list.
	step("record before its program", hostList(base...), nil, []*pulsev1.SentinelEvent{load(1, "xdp", "xdp_pass")})
	step("program after its record", hostList(with(foreign)...), nil, nil)
	step("list unchanged, omitted", omittedList(with(foreign)...), nil, nil)
	// A batch truncated: the program waits; its record follows.
	step("truncated", hostList(with(foreign, hp(11, "xdp", "late", tagOther))...), &pulsev1.SentinelReport{Truncated: true}, nil)
	step("record follows", omittedList(with(foreign, hp(11, "xdp", "late", tagOther))...), nil, []*pulsev1.SentinelEvent{load(2, "xdp", "late")})
	// Loaded while Sentinel was blinded: a finding every pulse until it
	// is unloaded.
	all := with(foreign, hp(11, "xdp", "late", tagOther), blind)
	step("blinded load", hostList(all...), nil, nil, pulsev1.Reason_REASON_SENTINEL_TAMPERED)
	step("blinded load, list omitted", omittedList(all...), nil, nil, pulsev1.Reason_REASON_SENTINEL_TAMPERED)
	step("blinded load, list resent", hostList(all...), nil, nil, pulsev1.Reason_REASON_SENTINEL_TAMPERED)
	step("unloaded", hostList(with(foreign, hp(11, "xdp", "late", tagOther))...), nil, nil)
	if held.Mark != 12 || len(held.Open) != 0 || len(held.Loads) != 0 {
		t.Fatalf("final state %+v", held)
	}
}

// TestHostProgramsOpenBounded: more unexplained programs than the verifier
// names are counted, and the count stays a finding for the boot.
func TestHostProgramsOpenBounded(t *testing.T) {
	progs := append([]*pulsev1.HostProgram(nil), base...)
	for i := range maxHostOpen + 10 {
		progs = append(progs, hp(uint32(100+i), "xdp", fmt.Sprint("p", i), tagOther))
	}
	res := judgeHostPrograms(hostInput{snap: hostList(progs...), held: heldAfterBase(), boot: "1.0"})
	if len(res.findings) != 1 || res.next == nil || len(res.next.Open) != maxHostOpen || res.next.OpenMore != 10 {
		t.Fatalf("findings %+v state open %d more %d", res.findings, len(res.next.Open), res.next.OpenMore)
	}
	if !strings.Contains(res.findings[0].msg, fmt.Sprintf("%d eBPF programs", maxHostOpen+10)) || !strings.Contains(res.findings[0].msg, fmt.Sprintf("and %d more", maxHostOpen+10-maxHostNamed)) {
		t.Errorf("message %q", res.findings[0].msg)
	}
	// All unloaded: the forgotten ten still count.
	res = judgeHostPrograms(hostInput{snap: hostList(base...), held: res.next, boot: "1.0"})
	if len(res.findings) != 1 || res.next.OpenMore != 10 || len(res.next.Open) != 0 {
		t.Fatalf("after unload: findings %+v state %+v", res.findings, res.next)
	}
}

// TestOwnPrograms: an ID is Pulse's own only under a measured tag.
func TestOwnPrograms(t *testing.T) {
	rt := &runtimeEvidence{bpf: map[string]bpfMeasurement{"shield_ingress": {tag: tagOwn}, fortressProgram: {tag: []byte{3, 3, 3, 3, 3, 3, 3, 3}}}}
	p := &pulsev1.PulsePayload{
		Bpf: &pulsev1.BPFSnapshot{
			Pinned: []*pulsev1.PinnedProgram{{Name: "shield_ingress", Id: 11, Tag: tagOwn}, {Name: "shield_egress", Id: 12, Tag: tagOwn}, {Name: "shield_ingress", Id: 13, Tag: tagOther}},
			Hooks:  []*pulsev1.HookChain{{Hook: "tcx_ingress", Programs: []*pulsev1.ChainProgram{{Id: 14, Tag: tagOwn}, {Id: 15, Tag: tagOther}}}},
		},
		Fortress: &pulsev1.FortressStatus{ProgramId: 16, Tag: []byte{3, 3, 3, 3, 3, 3, 3, 3}},
	}
	got := ownPrograms(p, rt)
	for id, want := range map[uint32]bool{11: true, 12: false, 13: false, 14: true, 15: false, 16: true} {
		if _, ok := got[id]; ok != want {
			t.Errorf("program %d own=%v, want %v", id, ok, want)
		}
	}
	if len(ownPrograms(p, nil)) != 0 {
		t.Error("own programs without a runtime log")
	}
}

// FuzzJudgeHostPrograms: any payload and stored state: no panic, the state
// stays bounded, in the pulse's boot, and survives its encoding.
func FuzzJudgeHostPrograms(f *testing.F) {
	seed, _ := proto.Marshal(&pulsev1.PulsePayload{Bpf: hostList(with(hp(9, "xdp", "x", tagOther))...),
		SentinelEvents: []*pulsev1.SentinelEvent{load(1, "xdp", "x")}, Sentinel: &pulsev1.SentinelReport{Truncated: true}})
	held, _ := json.Marshal(heldAfterBase())
	f.Add(seed, held)
	f.Add([]byte{}, []byte(`{"boot":"1.0","mark":4294967295,"open":[{"id":1}],"open_more":-3}`))
	f.Fuzz(func(t *testing.T, payload, state []byte) {
		var p pulsev1.PulsePayload
		if proto.Unmarshal(payload, &p) != nil {
			return
		}
		in := hostInput{snap: p.GetBpf(), events: p.GetSentinelEvents(), report: p.GetSentinel(), boot: "1.0", required: true}
		var hs hostState
		if json.Unmarshal(state, &hs) == nil {
			in.held = &hs
		}
		res := judgeHostPrograms(in)
		if res.next == nil {
			return
		}
		if res.next.Boot != "1.0" || len(res.next.Open) > maxHostOpen || len(res.next.Loads) > maxHostLoads+len(in.events) {
			t.Fatalf("state %+v", res.next)
		}
		if _, err := json.Marshal(res.next); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkJudgeHostPrograms: the judgement of a 1,000-program host, a
// fresh list with ten new programs explained by their records, and the
// steady state (list omitted).
func BenchmarkJudgeHostPrograms(b *testing.B) {
	var progs []*pulsev1.HostProgram
	for i := range 990 {
		progs = append(progs, hp(uint32(i+1), "cgroup_skb", fmt.Sprint("prog_", i), tagOther))
	}
	held := &hostState{Boot: "1.0", Mark: 990, SHA256: digestHex(hostList(progs...))}
	var events []*pulsev1.SentinelEvent
	for i := range 10 {
		progs = append(progs, hp(uint32(1000+i), "xdp", fmt.Sprint("new_", i), tagOther))
		events = append(events, load(uint64(i+1), "xdp", fmt.Sprint("new_", i)))
	}
	fresh := hostList(progs...)
	b.Run("fresh_list", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if res := judgeHostPrograms(hostInput{snap: fresh, events: events, held: held, boot: "1.0"}); len(res.findings) != 0 {
				b.Fatal(res.findings)
			}
		}
	})
	steady := &hostState{Boot: "1.0", Mark: 1009, SHA256: digestHex(fresh)}
	omitted := omittedList(progs...)
	b.Run("omitted_list", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if res := judgeHostPrograms(hostInput{snap: omitted, held: steady, boot: "1.0"}); len(res.findings) != 0 {
				b.Fatal(res.findings)
			}
		}
	})
}
