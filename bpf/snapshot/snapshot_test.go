package snapshot

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func digest(b byte) Digest {
	var d Digest
	for i := range d {
		d[i] = b
	}
	return d
}

func TestCompare(t *testing.T) {
	exp := map[string]Expectation{
		"shield_ingress": {ID: 10, Type: "sched_cls", Tag: "aaaaaaaaaaaaaaaa", InsnSHA256: digest(0xaa), Links: []string{"shield_ingress@eth0"}},
		"sentinel_bpf":   {ID: 11, Type: "tracepoint", Tag: "bbbbbbbbbbbbbbbb", InsnSHA256: digest(0xbb), Links: []string{"sentinel_bpf"}},
	}
	goodPins := map[string]LivePin{
		"shield_ingress": {ID: 10, Type: "sched_cls", Tag: "aaaaaaaaaaaaaaaa"},
		"sentinel_bpf":   {ID: 11, Type: "tracepoint", Tag: "bbbbbbbbbbbbbbbb"},
	}
	goodLinks := map[string]LiveLink{
		"shield_ingress@eth0": {ProgramID: 10},
		"sentinel_bpf":        {ProgramID: 11},
	}
	with := func(pins map[string]LivePin, name string, p *LivePin) map[string]LivePin {
		out := map[string]LivePin{}
		for k, v := range pins {
			out[k] = v
		}
		if p == nil {
			delete(out, name)
		} else {
			out[name] = *p
		}
		return out
	}
	withLink := func(name string, l *LiveLink) map[string]LiveLink {
		out := map[string]LiveLink{}
		for k, v := range goodLinks {
			out[k] = v
		}
		if l == nil {
			delete(out, name)
		} else {
			out[name] = *l
		}
		return out
	}

	tests := []struct {
		name    string
		pins    map[string]LivePin
		links   map[string]LiveLink
		subject string
		want    Problem
		wantErr error
		detail  string
	}{
		{name: "all good", pins: goodPins, links: goodLinks},
		{name: "unpinned", pins: with(goodPins, "sentinel_bpf", nil), links: goodLinks,
			subject: "sentinel_bpf", want: ProblemPinMissing, wantErr: ErrPinMissing},
		{name: "other program", pins: with(goodPins, "sentinel_bpf", &LivePin{ID: 99, Type: "tracepoint", Tag: "cccccccccccccccc"}), links: goodLinks,
			subject: "sentinel_bpf", want: ProblemReplaced, wantErr: ErrPinReplaced, detail: "live id 99"},
		{name: "same code re-pinned", pins: with(goodPins, "sentinel_bpf", &LivePin{ID: 12, Type: "tracepoint", Tag: "bbbbbbbbbbbbbbbb"}), links: goodLinks,
			subject: "sentinel_bpf", want: ProblemReplaced, wantErr: ErrPinReplaced, detail: "same instructions"},
		{name: "pin is not a program", pins: with(goodPins, "sentinel_bpf", &LivePin{Err: errors.New("not a program")}), links: goodLinks,
			subject: "sentinel_bpf", want: ProblemReplaced, wantErr: ErrPinReplaced},
		{name: "link unpinned", pins: goodPins, links: withLink("shield_ingress@eth0", nil),
			subject: "shield_ingress", want: ProblemDetached, wantErr: ErrDetached, detail: "missing"},
		{name: "link runs other program", pins: goodPins, links: withLink("shield_ingress@eth0", &LiveLink{ProgramID: 77}),
			subject: "shield_ingress", want: ProblemDetached, wantErr: ErrDetached, detail: "runs program 77"},
		{name: "link detached", pins: goodPins, links: withLink("shield_ingress@eth0", &LiveLink{ProgramID: 10, Detached: true}),
			subject: "shield_ingress", want: ProblemDetached, wantErr: ErrDetached, detail: "detached"},
		{name: "unexpected pin", pins: with(goodPins, "intruder", &LivePin{ID: 5, Type: "xdp", Tag: "dddddddddddddddd"}), links: goodLinks,
			subject: "intruder", want: ProblemUnexpected, wantErr: ErrUnexpectedPin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Compare(exp, tc.pins, tc.links)
			s := Snapshot{Checked: true, Pinned: got}
			for name, p := range got {
				if name == tc.subject {
					if p.Problem != tc.want || p.OK {
						t.Errorf("%s: problem %q ok %v, want %q", name, p.Problem, p.OK, tc.want)
					}
					if !strings.Contains(p.Detail, tc.detail) {
						t.Errorf("%s: detail %q lacks %q", name, p.Detail, tc.detail)
					}
					continue
				}
				if !p.OK || p.Problem != ProblemNone {
					t.Errorf("%s: unexpected problem %q (%s)", name, p.Problem, p.Detail)
				}
			}
			err := s.Err()
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Err() = %v, want nil", err)
				}
				if d := s.Digests(); d["shield_ingress"] != digest(0xaa).String() || d["sentinel_bpf"] != digest(0xbb).String() {
					t.Errorf("Digests() = %v", d)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Err() = %v, want %v", err, tc.wantErr)
			}
			var pe *PinError
			if !errors.As(err, &pe) || pe.Name != tc.subject {
				t.Fatalf("Err() = %v, want a PinError naming %s", err, tc.subject)
			}
			for _, other := range []error{ErrPinMissing, ErrPinReplaced, ErrDetached, ErrUnexpectedPin} {
				if other != tc.wantErr && errors.Is(err, other) {
					t.Errorf("Err() also matches %v", other)
				}
			}
			if _, ok := s.Digests()[tc.subject]; ok {
				t.Errorf("Digests() claims %s despite its problem", tc.subject)
			}
		})
	}
}

func TestUnchecked(t *testing.T) {
	got := Unchecked(map[string]LivePin{"a": {ID: 1, Tag: "t"}, "b": {Err: errors.New("boom")}})
	if !got["a"].OK || got["a"].Problem != ProblemNone {
		t.Errorf("a = %+v", got["a"])
	}
	if got["b"].OK || got["b"].Detail != "boom" {
		t.Errorf("b = %+v", got["b"])
	}
}

func TestSnapshotJSON(t *testing.T) {
	s := Snapshot{
		PinDir:   "/sys/fs/bpf/pulse",
		Checked:  true,
		Pinned:   Compare(map[string]Expectation{"p": {ID: 3, Tag: "0123456789abcdef", InsnSHA256: digest(1)}}, map[string]LivePin{"p": {ID: 3, Type: "xdp", Tag: "0123456789abcdef"}}, nil),
		Programs: []Program{{ID: 3, Name: "p", Type: "xdp", Tag: "0123456789abcdef"}},
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	progs := generic["programs"].([]any)
	p0 := progs[0].(map[string]any)
	for _, k := range []string{"id", "name", "type", "tag"} {
		if _, ok := p0[k]; !ok {
			t.Errorf("program lacks %q: %s", k, b)
		}
	}
	pinned := generic["pinned"].(map[string]any)["p"].(map[string]any)
	if pinned["insn_sha256"] != digest(1).String() || pinned["ok"] != true || pinned["tag"] != "0123456789abcdef" {
		t.Errorf("pinned entry = %v", pinned)
	}
	var back Snapshot
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if bp, sp := back.Pinned["p"], s.Pinned["p"]; bp.ID != sp.ID || bp.Tag != sp.Tag || bp.InsnSHA256 != sp.InsnSHA256 || bp.OK != sp.OK {
		t.Errorf("round trip changed pinned entry")
	}
}

func TestDigestText(t *testing.T) {
	d := digest(0xab)
	b, _ := d.MarshalText()
	var back Digest
	if err := back.UnmarshalText(b); err != nil || back != d {
		t.Fatalf("round trip: %v %x", err, back)
	}
	if err := back.UnmarshalText([]byte("abc")); err == nil {
		t.Error("short digest accepted")
	}
	if err := back.UnmarshalText([]byte(strings.Repeat("zz", 32))); err == nil {
		t.Error("non-hex digest accepted")
	}
}

func TestProgramByID(t *testing.T) {
	ps := []Program{{ID: 9}, {ID: 2}, {ID: 5}}
	SortPrograms(ps)
	s := Snapshot{Programs: ps}
	if p, ok := s.ProgramByID(5); !ok || p.ID != 5 {
		t.Errorf("ProgramByID(5) = %v %v", p, ok)
	}
	if _, ok := s.ProgramByID(3); ok {
		t.Error("ProgramByID(3) found a program")
	}
}
