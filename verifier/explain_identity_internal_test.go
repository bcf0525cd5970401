package verifier

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

func TestCleanText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"CN=edge-1,O=Pulse", "CN=edge-1,O=Pulse"},
		{"a\x1b[31mb", `a\u{1b}[31mb`},
		{"rtl\u202eexe", `rtl\u{202e}exe`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"line\nbreak", `line\u{a}break`},
		{strings.Repeat("x", 300), strings.Repeat("x", 256) + "…"},
	} {
		if got := cleanText(tc.in, 256); got != tc.want {
			t.Errorf("cleanText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzCleanText(f *testing.F) {
	for _, s := range []string{"", "CN=a", "\x00\x1b\u202e", "\xff\xfe", strings.Repeat("é", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := cleanText(s, 64)
		if !utf8.ValidString(got) || len(got) > 64+len("…")+16 {
			t.Fatalf("cleanText(%q) = %q (%d bytes)", s, got, len(got))
		}
		for _, r := range got {
			if !unicode.IsPrint(r) {
				t.Fatalf("cleanText(%q) = %q keeps %U", s, got, r)
			}
		}
	})
}

// TestEncodeKernelBound: a snapshot too large for its bound loses its
// hook chains' programs, then its hooks, then its healthy pins (pins with a
// problem stay), and says so; what fits is stored whole and decodes.
func TestEncodeKernelBound(t *testing.T) {
	// Random names and tags: the bound is on the compressed form.
	rnd := func(n int) string {
		b := make([]byte, n/2)
		rand.Read(b)
		return hex.EncodeToString(b)
	}
	tag := func() []byte { b := make([]byte, 8); rand.Read(b); return b }
	mk := func(pins, hooks, progs int) *pulsev1.PulsePayload {
		p := &pulsev1.PulsePayload{Bpf: &pulsev1.BPFSnapshot{}, Fortress: &pulsev1.FortressStatus{Active: true}}
		for i := range pins {
			pin := &pulsev1.PinnedProgram{Name: rnd(40), Tag: tag()}
			if i == 0 {
				pin.ProblemKind, pin.Problem = pulsev1.PinProblem_PIN_PROBLEM_MISSING, "gone"
			}
			p.Bpf.Pinned = append(p.Bpf.Pinned, pin)
		}
		for range hooks {
			h := &pulsev1.HookChain{Hook: "tcx_ingress", Target: rnd(16)}
			for range progs {
				h.Programs = append(h.Programs, &pulsev1.ChainProgram{Name: rnd(60), Tag: tag(), Type: "sched_cls"})
			}
			p.Bpf.Hooks = append(p.Bpf.Hooks, h)
		}
		return p
	}
	for _, tc := range []struct {
		name               string
		p                  *pulsev1.PulsePayload
		pins, hooks, progs int
		clipped            string
	}{
		{"fits", mk(3, 2, 2), 3, 2, 4, ""},
		{"chains go first", mk(3, 8, 20), 3, 8, 0, "160 hook chain programs"},
		{"then hooks", mk(3, 300, 0), 3, 0, 0, "300 hooks"},
		{"then healthy pins", mk(300, 0, 0), 1, 0, 0, "299 pins without a problem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := encodeKernel(kernelSummaryOf(tc.p))
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > maxKernelBytes {
				t.Fatalf("%d bytes", len(b))
			}
			k, err := DecodeKernel(b)
			if err != nil {
				t.Fatal(err)
			}
			progs := 0
			for _, h := range k.Hooks {
				progs += len(h.Programs)
			}
			if len(k.Pinned) != tc.pins || len(k.Hooks) != tc.hooks || progs != tc.progs || !strings.Contains(k.Clipped, tc.clipped) || (tc.clipped == "") != (k.Clipped == "") {
				t.Fatalf("pins %d hooks %d programs %d clipped %q", len(k.Pinned), len(k.Hooks), progs, k.Clipped)
			}
			if k.Pinned[0].ProblemKind != "MISSING" || k.Fortress == nil || !k.Fortress.Active {
				t.Fatalf("summary %+v", k)
			}
		})
	}
	if _, err := DecodeKernel([]byte(strings.Repeat(" ", maxKernelBytes+1))); !errors.Is(err, ErrKernelEncoding) {
		t.Fatalf("oversized stored summary: %v", err)
	}
	corrupt, _ := gzipJSON(json.RawMessage(`{"pinned":3}`))
	if _, err := DecodeKernel(corrupt); !errors.Is(err, ErrKernelEncoding) {
		t.Fatalf("corrupt stored summary: %v", err)
	}
	if _, err := DecodeKernel([]byte(`{"pinned":[]}`)); !errors.Is(err, ErrKernelEncoding) {
		t.Fatalf("corrupt stored summary: %v", err)
	}
}

// BenchmarkEncodeKernel: the kernel summary of a pulse like the e2e
// agent's (6 pins, 8 hook chains, Fortress, Sentinel), encoded as the
// commit stores it (a fleet's agents share the encoding: kernelCache).
// BenchmarkEncodeKernelUncached is the cost of one not seen before.
func BenchmarkEncodeKernel(b *testing.B) {
	p := &pulsev1.PulsePayload{Bpf: &pulsev1.BPFSnapshot{HostProgramCount: 12},
		Fortress: &pulsev1.FortressStatus{Reason: "kernel refused to load the BPF-LSM program: operation not permitted (EPERM); kernel lockdown=integrity"},
		Sentinel: &pulsev1.SentinelReport{NextSeq: 40, CfgAgentTgid: 300, AgentTgid: 300}}
	for _, n := range []string{"sentinel_bpf", "sentinel_exit", "sentinel_newtask", "sentinel_signal", "shield_egress", "shield_ingress"} {
		p.Bpf.Pinned = append(p.Bpf.Pinned, &pulsev1.PinnedProgram{Name: n, Tag: []byte(n[:8]), InsnSha256: make([]byte, 32)})
	}
	for _, h := range [][2]string{{"tcx_ingress", "eth0"}, {"tcx_egress", "eth0"}, {"xdp", "eth0"}, {"tracepoint", "sched/sched_process_exit"},
		{"tracepoint", "signal/signal_generate"}, {"tracepoint", "syscalls/sys_enter_bpf"}, {"tracepoint", "task/task_newtask"}, {"lsm", "task_kill"}} {
		p.Bpf.Hooks = append(p.Bpf.Hooks, &pulsev1.HookChain{Hook: h[0], Target: h[1],
			Programs: []*pulsev1.ChainProgram{{Id: 9, Name: "prog_" + h[1], Tag: []byte("12345678"), Type: "sched_cls", LinkId: 3}}})
	}
	b.ReportAllocs()
	var n int
	for b.Loop() {
		out, err := encodeKernelCached(kernelSummaryOf(p))
		if err != nil {
			b.Fatal(err)
		}
		n = len(out)
	}
	b.ReportMetric(float64(n), "stored_bytes")
}

func BenchmarkEncodeKernelUncached(b *testing.B) {
	p := &pulsev1.PulsePayload{Bpf: &pulsev1.BPFSnapshot{}, Fortress: &pulsev1.FortressStatus{}}
	for _, n := range []string{"sentinel_bpf", "sentinel_exit", "sentinel_newtask", "sentinel_signal", "shield_egress", "shield_ingress"} {
		p.Bpf.Pinned = append(p.Bpf.Pinned, &pulsev1.PinnedProgram{Name: n, Tag: []byte(n[:8])})
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodeKernel(kernelSummaryOf(p)); err != nil {
			b.Fatal(err)
		}
	}
}
