// Package hclconf decodes the daemons' HCL configuration files with
// diagnostics that name file:line:col, and checks values (durations,
// addresses, paths) with the position of the attribute that holds them.
package hclconf

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Error is a configuration error carrying HCL diagnostics. Its message lists
// every error as "file:line:col: summary; detail".
type Error struct {
	Diags hcl.Diagnostics
	files map[string]*hcl.File
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, d := range e.Diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(FormatDiag(d))
	}
	return b.String()
}

// Pretty renders the diagnostics with the offending source lines, for humans.
func (e *Error) Pretty() string {
	var buf bytes.Buffer
	w := hcl.NewDiagnosticTextWriter(&buf, e.files, 100, false)
	w.WriteDiagnostics(e.Diags) //nolint:errcheck // writes to a buffer
	return buf.String()
}

// FormatDiag renders one diagnostic as "file:line:col: summary; detail".
func FormatDiag(d *hcl.Diagnostic) string {
	pos := "<config>"
	if d.Subject != nil {
		pos = fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	}
	if d.Detail != "" {
		return fmt.Sprintf("%s: %s; %s", pos, d.Summary, d.Detail)
	}
	return fmt.Sprintf("%s: %s", pos, d.Summary)
}

// File is a parsed configuration file being decoded.
type File struct {
	Name   string
	Dir    string
	parser *hclparse.Parser
	file   *hcl.File
	Diags  hcl.Diagnostics
}

// Load reads and parses path. A missing or empty file is an error.
func Load(path string) (*File, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, src)
}

// Parse parses src as the file named filename.
func Parse(filename string, src []byte) (*File, error) {
	p := hclparse.NewParser()
	f, diags := p.ParseHCL(src, filename)
	cf := &File{Name: filename, Dir: filepath.Dir(filename), parser: p, file: f}
	if diags.HasErrors() {
		return nil, &Error{Diags: diags, files: p.Files()}
	}
	if len(bytes.TrimSpace(src)) == 0 {
		return nil, &Error{Diags: hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "empty configuration file",
			Subject: &hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos}}}, files: p.Files()}
	}
	return cf, nil
}

// Decode decodes the file's body into target (a gohcl-tagged struct).
// Unknown keys and wrong types become diagnostics.
func (f *File) Decode(target any) {
	f.Diags = append(f.Diags, gohcl.DecodeBody(f.file.Body, nil, target)...)
}

// Err returns the accumulated diagnostics as an *Error, or nil.
func (f *File) Err() error {
	if f.Diags.HasErrors() {
		return &Error{Diags: f.Diags, files: f.parser.Files()}
	}
	return nil
}

// Range finds the source range of an attribute by its path of block types
// and attribute name ("tls", "cert"); it falls back to the file start. A
// path element "type=label" selects the last block of that type with that
// label (the repeated one, when a label is repeated); a path ending in a
// block names the block's type and labels.
func (f *File) Range(path ...string) *hcl.Range {
	body, ok := f.file.Body.(*hclsyntax.Body)
	fallback := &hcl.Range{Filename: f.Name, Start: hcl.InitialPos, End: hcl.InitialPos}
	if !ok || len(path) == 0 {
		return fallback
	}
	var last *hclsyntax.Block
	for i, elem := range path {
		if i == len(path)-1 {
			if a, ok := body.Attributes[elem]; ok {
				r := a.Expr.Range()
				return &r
			}
		}
		blockType, label, labelled := strings.Cut(elem, "=")
		last = nil
		for _, b := range body.Blocks {
			if b.Type == blockType && (!labelled || len(b.Labels) > 0 && b.Labels[0] == label) {
				last = b
				if !labelled {
					break
				}
			}
		}
		if last == nil {
			return fallback
		}
		body = last.Body
	}
	r := last.DefRange()
	return &r
}

// Errorf records an error diagnostic at the attribute named by path.
func (f *File) Errorf(path []string, summary, detailFormat string, args ...any) {
	f.Diags = append(f.Diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary,
		Detail: fmt.Sprintf(detailFormat, args...), Subject: f.Range(path...)})
}

// Duration parses a duration attribute value; empty gives def. Out-of-range
// or malformed values are recorded as diagnostics.
func (f *File) Duration(value string, def, min, max time.Duration, path ...string) time.Duration {
	if value == "" {
		return def
	}
	d, err := time.ParseDuration(value)
	if err != nil {
		f.Errorf(path, "invalid duration", "%q is not a duration such as \"30s\" or \"5m\"", value)
		return def
	}
	if d < min || (max > 0 && d > max) {
		f.Errorf(path, "duration out of range", "%s must be between %s and %s", value, min, max)
		return def
	}
	return d
}

// Path resolves a path relative to the configuration file's directory.
func (f *File) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(f.Dir, p)
}

// RequireFile records an error when a configured file does not exist.
func (f *File) RequireFile(p string, path ...string) {
	if p == "" {
		f.Errorf(path, "missing required file", "set %s", strings.Join(path, "."))
		return
	}
	if _, err := os.Stat(p); err != nil {
		f.Errorf(path, "file not found", "%s: %v", p, err)
	}
}
