// Package termsafe makes untrusted strings safe to print on an operator's
// terminal. Agent IDs, binary paths, quarantined addresses, alert and
// verdict messages reach pulsectl from agents (directly or quoted by the
// verifier); printed raw, an escape sequence in one of them could clear the
// screen, rewrite earlier lines, retitle the window or hide a row.
//
// Escaping keeps ordinary text as it is and writes everything else the way
// Go string literals do: C0 and C1 control characters (ESC, CR, BEL, the
// single-byte CSI U+009B, ...), DEL, Unicode format and separator characters
// (bidirectional overrides, zero-width characters, line and paragraph
// separators) and invalid UTF-8 bytes become \a \b \f \n \r \t \v, \xNN,
// \uNNNN or \UNNNNNNNN. A backslash is doubled so escaped and literal text
// cannot be confused. The result contains only printable characters and
// ASCII spaces.
//
// JSON output needs none of this: encoding/json escapes control characters
// and replaces invalid UTF-8.
package termsafe

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// String escapes s for printing as one field: every character that is not
// printable — newlines and tabs included — is escaped.
func String(s string) string {
	if isSafe(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString(`\x`)
			b.WriteByte(hexDigits[s[i]>>4])
			b.WriteByte(hexDigits[s[i]&0xf])
			i++
			continue
		}
		writeRune(&b, r)
		i += n
	}
	return b.String()
}

// Line escapes s for a one-line table cell or message: runs of spaces, tabs
// and newlines (the layout of a multi-line message) become one space and
// the ends are trimmed; everything else is escaped as String does — a
// carriage return is shown as \r, never folded away.
func Line(s string) string {
	var b strings.Builder
	space := false
	for _, f := range strings.FieldsFunc(s, isLayout) {
		if space {
			b.WriteByte(' ')
		}
		b.WriteString(String(f))
		space = true
	}
	return b.String()
}

// Strings escapes every element with String.
func Strings(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = String(s)
	}
	return out
}

// isLayout is the whitespace Line folds.
func isLayout(r rune) bool { return r == ' ' || r == '\t' || r == '\n' }

// isSafe reports whether s needs no escaping (fast path).
func isSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return safeSlow(s[i:])
		}
		if c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

func safeSlow(s string) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return false
		}
		if r == '\\' || !printable(r) {
			return false
		}
		i += n
	}
	return true
}

// printable is unicode.IsPrint: letters, marks, numbers, punctuation,
// symbols and the ASCII space — no controls, no format characters (Cf), no
// separators other than U+0020.
func printable(r rune) bool { return unicode.IsPrint(r) }

func writeRune(b *strings.Builder, r rune) {
	switch r {
	case '\\':
		b.WriteString(`\\`)
		return
	case '\a':
		b.WriteString(`\a`)
		return
	case '\b':
		b.WriteString(`\b`)
		return
	case '\f':
		b.WriteString(`\f`)
		return
	case '\n':
		b.WriteString(`\n`)
		return
	case '\r':
		b.WriteString(`\r`)
		return
	case '\t':
		b.WriteString(`\t`)
		return
	case '\v':
		b.WriteString(`\v`)
		return
	}
	if printable(r) {
		b.WriteRune(r)
		return
	}
	switch {
	case r < 0x80:
		b.WriteString(`\x`)
		b.WriteByte(hexDigits[r>>4])
		b.WriteByte(hexDigits[r&0xf])
	case r <= 0xffff:
		b.WriteString(`\u`)
		for s := 12; s >= 0; s -= 4 {
			b.WriteByte(hexDigits[r>>uint(s)&0xf])
		}
	default:
		b.WriteString(`\U`)
		for s := 28; s >= 0; s -= 4 {
			b.WriteByte(hexDigits[r>>uint(s)&0xf])
		}
	}
}
