package verifier

import (
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/pulse-attest/pulse/internal/sentinelrec"
	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/verifier/store"
)

func seqEvents(kind pulsev1.SentinelEvent_Kind, from, to uint64) []*pulsev1.SentinelEvent {
	var out []*pulsev1.SentinelEvent
	for s := from; s <= to; s++ {
		out = append(out, &pulsev1.SentinelEvent{Seq: s, Kind: kind, SenderPid: 100, SenderComm: "pulse-agent"})
	}
	return out
}

// TestJudgeSentinelStream: the record stream against the verifier's cursor
// and the measured configuration, each case its own finding (or none).
func TestJudgeSentinelStream(t *testing.T) {
	sl := sentinelLog{has: true, latest: sentinelrec.Config{AgentTGID: 100, ManagerTGID: 1, MapID: 5}, agents: []uint32{100}}
	rep := func(next uint64) *pulsev1.SentinelReport {
		return &pulsev1.SentinelReport{NextSeq: next, CfgAgentTgid: 100, AgentTgid: 100}
	}
	cur := func(boot string, last uint64) *store.SentinelCursor {
		return &store.SentinelCursor{Boot: boot, LastSeq: last}
	}
	load := pulsev1.SentinelEvent_KIND_BPF_LOAD
	for _, tc := range []struct {
		name       string
		rep        *pulsev1.SentinelReport
		evs        []*pulsev1.SentinelEvent
		maps       []*pulsev1.MapIdentity
		cursor     *store.SentinelCursor
		want       pulsev1.Reason // REASON_UNSPECIFIED: no finding
		msg        string
		wantCursor uint64
		wantStored int
	}{
		{name: "first sight, nothing new", rep: rep(40), want: 0, wantCursor: 40},
		{name: "continues the cursor", rep: rep(43), evs: seqEvents(load, 41, 43), cursor: cur("1.0", 40), wantCursor: 43, wantStored: 3},
		{name: "resent pulse: held records ignored", rep: rep(43), evs: seqEvents(load, 41, 43), cursor: cur("1.0", 43), wantCursor: 43},
		{name: "resent plus new", rep: rep(45), evs: seqEvents(load, 42, 45), cursor: cur("1.0", 43), wantCursor: 45, wantStored: 2},
		{name: "cursor of another boot is not used", rep: rep(3), evs: seqEvents(load, 2, 3), cursor: cur("0.0", 900), wantCursor: 3, wantStored: 2},
		{name: "records skipped after a restart (cursor moved)", rep: rep(50), evs: seqEvents(load, 45, 50), cursor: cur("1.0", 40),
			want: pulsev1.Reason_REASON_SENTINEL_TAMPERED, msg: "41 to 44 are missing", wantCursor: 50, wantStored: 6},
		{name: "nothing delivered, counter ahead", rep: rep(44), cursor: cur("1.0", 40), want: pulsev1.Reason_REASON_SENTINEL_TAMPERED, msg: "up to 44", wantCursor: 44},
		{name: "truncated read is no gap", rep: &pulsev1.SentinelReport{NextSeq: 400, CfgAgentTgid: 100, AgentTgid: 100, Truncated: true},
			evs: seqEvents(load, 41, 43), cursor: cur("1.0", 40), wantCursor: 43, wantStored: 3},
		{name: "records not consecutive", rep: rep(44), evs: append(seqEvents(load, 41, 42), seqEvents(load, 44, 44)...), cursor: cur("1.0", 40),
			want: pulsev1.Reason_REASON_SENTINEL_TAMPERED, msg: "jump from 42 to 44", wantCursor: 44, wantStored: 3},
		{name: "counter went back in one boot", rep: rep(10), cursor: cur("1.0", 40), want: pulsev1.Reason_REASON_SENTINEL_TAMPERED, msg: "went back", wantCursor: 10},
		{name: "after the counter started over", rep: rep(10), cursor: cur("1.0", 10), wantCursor: 10},
		{name: "lost records", rep: &pulsev1.SentinelReport{NextSeq: 40, Lost: 3, CfgAgentTgid: 100, AgentTgid: 100}, cursor: cur("1.0", 40),
			want: pulsev1.Reason_REASON_SENTINEL_TAMPERED, msg: "lost 3", wantCursor: 40},
		{name: "sentinel_cfg is another map", rep: rep(40), cursor: cur("1.0", 40), maps: []*pulsev1.MapIdentity{{Name: "sentinel_cfg", Id: 6}},
			want: pulsev1.Reason_REASON_SENTINEL_TAMPERED, msg: "map 6", wantCursor: 40},
		{name: "sentinel_cfg is the measured map", rep: rep(40), cursor: cur("1.0", 40), maps: []*pulsev1.MapIdentity{{Name: "sentinel_cfg", Id: 5}}, wantCursor: 40},
		{name: "pulse from another process", rep: &pulsev1.SentinelReport{NextSeq: 40, CfgAgentTgid: 100, AgentTgid: 101}, cursor: cur("1.0", 40),
			want: pulsev1.Reason_REASON_SENTINEL_TAMPERED, msg: "agent tgid 101", wantCursor: 40},
		{name: "no report", evs: nil, cursor: cur("1.0", 40), want: pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, wantCursor: 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &pulsev1.PulsePayload{Sentinel: tc.rep, SentinelEvents: tc.evs, Bpf: &pulsev1.BPFSnapshot{Maps: tc.maps}}
			res := judgeSentinel(policy.DefaultSentinel(), p, sl, tc.cursor, "1.0")
			switch {
			case tc.want == 0 && len(res.findings) != 0:
				t.Fatalf("findings %+v", res.findings)
			case tc.want != 0 && (len(res.findings) == 0 || res.findings[0].reason != tc.want || !strings.Contains(res.findings[0].msg, tc.msg)):
				t.Fatalf("findings %+v, want %s naming %q", res.findings, tc.want, tc.msg)
			}
			if res.record.cursor.LastSeq != tc.wantCursor || res.record.cursor.Boot != "1.0" {
				t.Errorf("cursor %+v, want 1.0/%d", res.record.cursor, tc.wantCursor)
			}
			if len(res.record.events) != tc.wantStored {
				t.Errorf("%d records to store, want %d", len(res.record.events), tc.wantStored)
			}
			wantWrite := tc.wantStored > 0 || tc.cursor == nil && tc.rep != nil || tc.cursor != nil && *tc.cursor != res.record.cursor
			if res.record.write != wantWrite {
				t.Errorf("write %v, want %v", res.record.write, wantWrite)
			}
		})
	}
}

// TestJudgeSentinelFindingsOrdered: tampering comes before signals, signals
// before loads, and the stored records carry their own finding.
func TestJudgeSentinelFindingsOrdered(t *testing.T) {
	sl := sentinelLog{has: true, latest: sentinelrec.Config{AgentTGID: 100, ManagerTGID: 1}, agents: []uint32{100}}
	evs := []*pulsev1.SentinelEvent{
		{Seq: 1, Kind: pulsev1.SentinelEvent_KIND_BPF_LOAD, SenderPid: 7, SenderComm: "bpftool"},
		{Seq: 2, Kind: pulsev1.SentinelEvent_KIND_SIGNAL, SenderPid: 8, SenderComm: "sh", Signal: 9},
		{Seq: 3, Kind: pulsev1.SentinelEvent_KIND_EXIT, SenderPid: 100, Signal: 9, Value: 9},
	}
	p := &pulsev1.PulsePayload{Sentinel: &pulsev1.SentinelReport{NextSeq: 3, CfgAgentTgid: 0, AgentTgid: 100}, SentinelEvents: evs}
	res := judgeSentinel(policy.DefaultSentinel(), p, sl, nil, "1.0")
	var got []pulsev1.Reason
	for _, f := range res.findings {
		got = append(got, f.reason)
	}
	want := []pulsev1.Reason{pulsev1.Reason_REASON_SENTINEL_TAMPERED, pulsev1.Reason_REASON_AGENT_SIGNALLED, pulsev1.Reason_REASON_FOREIGN_BPF_LOAD}
	if len(got) != len(want) {
		t.Fatalf("findings %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("findings %v, want %v", got, want)
		}
	}
	findings := map[string]string{}
	for _, e := range res.record.events {
		findings[e.Kind] = e.Finding
	}
	if findings["bpf_load"] != "REASON_FOREIGN_BPF_LOAD" || findings["signal"] != "REASON_AGENT_SIGNALLED" || findings["exit"] != "" {
		t.Errorf("stored findings %v", findings)
	}
}

// TestJudgeSentinelSteadyStateWritesNothing: a pulse with no new record
// and the cursor unchanged, or an agent without Sentinel, writes nothing.
func TestJudgeSentinelSteadyStateWritesNothing(t *testing.T) {
	sl := sentinelLog{has: true, latest: sentinelrec.Config{AgentTGID: 100, ManagerTGID: 1}, agents: []uint32{100}}
	p := &pulsev1.PulsePayload{Sentinel: &pulsev1.SentinelReport{NextSeq: 40, CfgAgentTgid: 100, AgentTgid: 100}}
	if res := judgeSentinel(policy.DefaultSentinel(), p, sl, &store.SentinelCursor{Boot: "1.0", LastSeq: 40}, "1.0"); res.record.write || len(res.findings) != 0 {
		t.Fatalf("steady state: %+v", res)
	}
	if res := judgeSentinel(policy.DefaultSentinel(), &pulsev1.PulsePayload{}, sentinelLog{}, nil, "1.0"); res.record.write || len(res.findings) != 0 {
		t.Fatalf("agent without Sentinel: %+v", res)
	}
}

// TestJudgeFortress: active only when the kernel lists a link running the
// measured program; never from the runtime log's Fortress record.
func TestJudgeFortress(t *testing.T) {
	tag := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	rt := &runtimeEvidence{bpf: map[string]bpfMeasurement{fortressProgram: {tag: tag}}, fortressActive: true}
	on := func() *pulsev1.FortressStatus {
		return &pulsev1.FortressStatus{Active: true, ProgramId: 3, LinkId: 4, Tag: tag}
	}
	for _, tc := range []struct {
		name   string
		fs     *pulsev1.FortressStatus
		rt     *runtimeEvidence
		active bool
		why    string
	}{
		{"kernel IDs and measured tag", on(), rt, true, ""},
		{"no status", nil, rt, false, "no Fortress status"},
		{"refused by the kernel", &pulsev1.FortressStatus{Reason: "EPERM"}, rt, false, "EPERM"},
		{"active without a link", &pulsev1.FortressStatus{Active: true, ProgramId: 3, Tag: tag}, rt, false, "no link"},
		{"another program", &pulsev1.FortressStatus{Active: true, ProgramId: 3, LinkId: 4, Tag: []byte{9, 9, 9, 9, 9, 9, 9, 9}}, rt, false, "not the measured"},
		{"never measured (the log's Fortress record says active)", on(), &runtimeEvidence{bpf: map[string]bpfMeasurement{}, fortressActive: true}, false, "never measured"},
		{"no runtime log", on(), nil, false, "no verified runtime log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := judgeFortress(tc.fs, tc.rt)
			if j.active != tc.active || !strings.Contains(j.why, tc.why) {
				t.Fatalf("judged %+v, want active %v naming %q", j, tc.active, tc.why)
			}
		})
	}
}

// TestReadSentinelLog: every measured agent, the latest configuration, and
// a record that does not decode.
func TestReadSentinelLog(t *testing.T) {
	rec := func(c cel.Content) cel.Record { return cel.Record{Content: c} }
	recs := []cel.Record{
		rec(&cel.Generic{Name: sentinelrec.RecordName, Data: sentinelrec.Encode(sentinelrec.Config{AgentTGID: 10, ManagerTGID: 1, MapID: 3})}),
		rec(&cel.Generic{Name: "other", Data: []byte("x")}),
		rec(&cel.Generic{Name: sentinelrec.RecordName, Data: sentinelrec.Encode(sentinelrec.Config{AgentTGID: 20, ManagerTGID: 1, MapID: 4})}),
	}
	sl := readSentinelLog(recs)
	if !sl.has || sl.err != nil || sl.latest.AgentTGID != 20 || sl.latest.MapID != 4 || len(sl.agents) != 2 {
		t.Fatalf("%+v", sl)
	}
	sl = readSentinelLog(append(recs, rec(&cel.Generic{Name: sentinelrec.RecordName, Data: []byte("garbage")})))
	if sl.err == nil {
		t.Fatal("a malformed record decoded")
	}
	res := judgeSentinel(policy.DefaultSentinel(), &pulsev1.PulsePayload{Sentinel: &pulsev1.SentinelReport{}}, sl, nil, "1.0")
	if len(res.findings) == 0 || res.findings[0].reason != pulsev1.Reason_REASON_SENTINEL_TAMPERED {
		t.Fatalf("malformed record judged %+v", res.findings)
	}
	if sl := readSentinelLog(nil); sl.has {
		t.Fatal("empty log has a configuration")
	}
}

func BenchmarkJudgeSentinel(b *testing.B) {
	sl := sentinelLog{has: true, latest: sentinelrec.Config{AgentTGID: 100, ManagerTGID: 1, MapID: 5}, agents: []uint32{100}}
	for _, n := range []int{0, 256} {
		evs := seqEvents(pulsev1.SentinelEvent_KIND_BPF_LOAD, 41, 40+uint64(n))
		p := &pulsev1.PulsePayload{Sentinel: &pulsev1.SentinelReport{NextSeq: 40 + uint64(n), CfgAgentTgid: 100, AgentTgid: 100}, SentinelEvents: evs}
		cursor := &store.SentinelCursor{Boot: "1.0", LastSeq: 40}
		rule := policy.DefaultSentinel()
		b.Run(strings.Repeat("e", 0)+map[int]string{0: "no_events", 256: "256_events"}[n], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				judgeSentinel(rule, p, sl, cursor, "1.0")
			}
		})
	}
}

// FuzzJudgeSentinel: whatever Sentinel report and records a payload
// carries, the judgement does not panic, keeps what it stores bounded and
// valid UTF-8, and never moves the cursor to another boot.
func FuzzJudgeSentinel(f *testing.F) {
	seed := &pulsev1.PulsePayload{Sentinel: &pulsev1.SentinelReport{NextSeq: 3, CfgAgentTgid: 100, AgentTgid: 100},
		SentinelEvents: append(seqEvents(pulsev1.SentinelEvent_KIND_SIGNAL, 1, 2), &pulsev1.SentinelEvent{Seq: 3, Kind: 9, SenderComm: "\xff\xfe", Detail: strings.Repeat("x", 500)})}
	b, _ := proto.Marshal(seed)
	f.Add(b, uint64(0))
	f.Add([]byte{}, uint64(7))
	sl := sentinelLog{has: true, latest: sentinelrec.Config{AgentTGID: 100, ManagerTGID: 1, MapID: 5}, agents: []uint32{100}}
	f.Fuzz(func(t *testing.T, raw []byte, last uint64) {
		p := &pulsev1.PulsePayload{}
		if proto.Unmarshal(raw, p) != nil {
			return
		}
		res := judgeSentinel(policy.DefaultSentinel(), p, sl, &store.SentinelCursor{Boot: "1.0", LastSeq: last}, "1.0")
		if res.record.cursor.Boot != "1.0" {
			t.Fatalf("cursor %+v", res.record.cursor)
		}
		for _, e := range res.record.events {
			if len(e.SenderComm) > 16 || len(e.Detail) > maxStoredText || !utf8.ValidString(e.SenderComm+e.Detail) {
				t.Fatalf("stored %+v", e)
			}
		}
	})
}
