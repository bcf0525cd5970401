package policy

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// FormatDiagnostics writes diagnostics the way a compiler does:
//
//	policy.hcl:4:3: error: unknown key "clock_skw" in policy "edge"; did you mean "clock_skew"?
//	    4 |   clock_skw = "30s"
//	      |   ^^^^^^^^^
//
// srcs supply the quoted source lines; a diagnostic whose file is not among
// them is printed without a quote.
func FormatDiagnostics(w io.Writer, diags hcl.Diagnostics, srcs []Source) {
	files := map[string][]byte{}
	for _, s := range srcs {
		files[s.Name] = s.Bytes
	}
	for _, d := range diags {
		writeDiag(w, d, files)
	}
}

// DiagnosticsText is FormatDiagnostics into a string.
func DiagnosticsText(diags hcl.Diagnostics, srcs []Source) string {
	var b strings.Builder
	FormatDiagnostics(&b, diags, srcs)
	return b.String()
}

func writeDiag(w io.Writer, d *hcl.Diagnostic, files map[string][]byte) {
	sev := "error"
	if d.Severity == hcl.DiagWarning {
		sev = "warning"
	}
	msg := d.Summary
	if d.Detail != "" {
		msg += "; " + oneLine(d.Detail)
	}
	r := d.Subject
	switch {
	case r == nil:
		fmt.Fprintf(w, "%s: %s\n", sev, msg)
		return
	case r.Start.Line == 0:
		fmt.Fprintf(w, "%s: %s: %s\n", r.Filename, sev, msg)
		return
	}
	fmt.Fprintf(w, "%s:%d:%d: %s: %s\n", r.Filename, r.Start.Line, r.Start.Column, sev, msg)
	src, ok := files[r.Filename]
	if !ok {
		return
	}
	lineStart, line, ok := sourceLine(src, r.Start.Line)
	if !ok {
		return
	}
	num := fmt.Sprint(r.Start.Line)
	gutter := strings.Repeat(" ", len(num))
	fmt.Fprintf(w, "  %s | %s\n", num, printable(line))

	from := r.Start.Byte - lineStart
	to := r.End.Byte - lineStart
	if r.End.Line != r.Start.Line || to > len(line) {
		to = len(line)
	}
	if from < 0 || from > len(line) {
		return
	}
	if to < from {
		to = from
	}
	var pad strings.Builder
	for _, c := range line[:from] {
		if c == '\t' {
			pad.WriteByte('\t')
		} else {
			pad.WriteByte(' ')
		}
	}
	carets := utf8.RuneCount(line[from:to])
	if carets < 1 {
		carets = 1
	}
	fmt.Fprintf(w, "  %s | %s%s\n", gutter, pad.String(), strings.Repeat("^", carets))
}

// sourceLine returns the byte offset and text (without line break) of a
// 1-based line.
func sourceLine(src []byte, n int) (int, []byte, bool) {
	off := 0
	for i := 1; i < n; i++ {
		j := bytes.IndexByte(src[off:], '\n')
		if j < 0 {
			return 0, nil, false
		}
		off += j + 1
	}
	end := bytes.IndexByte(src[off:], '\n')
	if end < 0 {
		end = len(src) - off
	}
	line := src[off : off+end]
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 && off >= len(src) {
		return off, line, false
	}
	return off, line, true
}

// printable replaces control characters (other than tab) so a quoted line
// cannot move the terminal's cursor.
func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return '?'
		}
		return r
	}, string(b))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// LoadError is a policy that did not load: its diagnostics and their text.
type LoadError struct {
	Diags hcl.Diagnostics
	// Text is the formatted diagnostics (FormatDiagnostics).
	Text string
}

func (e *LoadError) Error() string {
	errs := e.Diags.Errs()
	if len(errs) == 0 {
		return "policy: load failed"
	}
	first := strings.SplitN(DiagnosticsText(hcl.Diagnostics{errs[0].(*hcl.Diagnostic)}, nil), "\n", 2)[0]
	if len(errs) == 1 {
		return "policy: " + first
	}
	return fmt.Sprintf("policy: %s (and %d more errors)", first, len(errs)-1)
}
