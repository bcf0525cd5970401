package verifier

import (
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
	mk := func(pins, hooks, progs int) *pulsev1.PulsePayload {
		p := &pulsev1.PulsePayload{Bpf: &pulsev1.BPFSnapshot{}, Fortress: &pulsev1.FortressStatus{Active: true}}
		for i := range pins {
			pin := &pulsev1.PinnedProgram{Name: strings.Repeat("p", 40) + string(rune('a'+i%26)), Tag: make([]byte, 8)}
			if i == 0 {
				pin.ProblemKind, pin.Problem = pulsev1.PinProblem_PIN_PROBLEM_MISSING, "gone"
			}
			p.Bpf.Pinned = append(p.Bpf.Pinned, pin)
		}
		for range hooks {
			h := &pulsev1.HookChain{Hook: "tcx_ingress", Target: "eth0"}
			for range progs {
				h.Programs = append(h.Programs, &pulsev1.ChainProgram{Name: strings.Repeat("c", 60), Tag: make([]byte, 8), Type: "sched_cls"})
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
		{"chains go first", mk(3, 4, 10), 3, 4, 0, "hook chain programs"},
		{"then hooks", mk(3, 80, 0), 3, 0, 0, "80 hooks"},
		{"then healthy pins", mk(60, 0, 0), 1, 0, 0, "pins without a problem"},
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
	if _, err := DecodeKernel([]byte(`{"pinned":3}`)); !errors.Is(err, ErrKernelEncoding) {
		t.Fatalf("corrupt stored summary: %v", err)
	}
}
