package termsafe

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"plain", "edge-1 10.0.0.66 /usr/bin/pulse-agent", "edge-1 10.0.0.66 /usr/bin/pulse-agent"},
		{"unicode text", "nœud-été 東京 ✓", "nœud-été 東京 ✓"},
		{"empty", "", ""},
		{"clear screen", "a\x1b[2Jb", `a\x1b[2Jb`},
		{"carriage return", "ok\rEVIL", `ok\rEVIL`},
		{"bell", "ding\x07", `ding\a`},
		{"newline and tab", "a\nb\tc", `a\nb\tc`},
		{"other c0", "\x00\x01\x7f", `\x00\x01\x7f`},
		{"invalid utf-8", "bad\xff\xfe", `bad\xff\xfe`},
		{"truncated utf-8", "caf\xc3", `caf\xc3`},
		{"c1 csi", "x\u009b2Jy", `x\u009b2Jy`},
		{"osc title", "\x1b]0;owned\x07", `\x1b]0;owned\a`},
		{"bidi override", "abc\u202edcba", `abc\u202edcba`},
		{"zero width", "ad\u200bmin", `ad\u200bmin`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"nbsp", "a\u00a0b", `a\u00a0b`},
		{"backslash", `C:\x1b`, `C:\\x1b`},
		{"astral format", "a\U000E0001b", `a\U000e0001b`},
		{"emoji kept", "ok 🙂", "ok 🙂"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := String(c.in)
			if got != c.want {
				t.Fatalf("String(%q) = %q, want %q", c.in, got, c.want)
			}
			assertSafe(t, got)
		})
	}
}

func TestLine(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"multi-line message folds", "no pulse\nfor 95s", "no pulse for 95s"},
		{"runs and ends trimmed", "  a \t\n b  ", "a b"},
		{"carriage return escaped, not folded", "ok\r\nEVIL", `ok\r EVIL`},
		{"escape sequence", "x\x1b[2J\x07", `x\x1b[2J\a`},
		{"vertical tab and form feed escaped", "a\vb\fc", `a\vb\fc`},
		{"invalid utf-8", "a \xff b", `a \xff b`},
		{"unicode separator escaped", "a\u0085b", `a\u0085b`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Line(c.in)
			if got != c.want {
				t.Fatalf("Line(%q) = %q, want %q", c.in, got, c.want)
			}
			assertSafe(t, got)
		})
	}
}

func TestStrings(t *testing.T) {
	got := Strings([]string{"10.0.0.1", "\x1b[31mred"})
	if len(got) != 2 || got[0] != "10.0.0.1" || got[1] != `\x1b[31mred` {
		t.Fatalf("Strings = %q", got)
	}
}

// assertSafe fails when s holds anything a terminal could interpret.
func assertSafe(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			t.Fatalf("%q holds the non-printable %U", s, r)
		}
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[2J", "\r\x07", "\xff", "\u202e", `\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, out := range []string{String(s), Line(s)} {
			assertSafe(t, out)
		}
		// Safe text is kept as is.
		if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r == '\\' || !unicode.IsPrint(r) }) && String(s) != s {
			t.Fatalf("String changed printable %q to %q", s, String(s))
		}
	})
}
