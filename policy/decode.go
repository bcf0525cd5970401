package policy

import (
	"encoding/hex"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// decoder walks hclsyntax bodies itself (rather than through gohcl) so every
// mistake gets a precise range and a hint a security engineer can act on.
type decoder struct {
	diags hcl.Diagnostics
}

func (d *decoder) errorf(rng hcl.Range, summary, detailFmt string, args ...any) {
	r := rng
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(detailFmt, args...),
		Subject:  &r,
	})
}

func (d *decoder) warnf(rng hcl.Range, summary, detailFmt string, args ...any) {
	r := rng
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  summary,
		Detail:   fmt.Sprintf(detailFmt, args...),
		Subject:  &r,
	})
}

// blockKind describes a nested block a body accepts.
type blockKind struct {
	name string
	// label names the block's one label ("name", "program"), or is "" when
	// the block takes none.
	label string
	// multi: the block may appear several times.
	multi bool
	// example is a label to show in hints.
	example string
}

func (k blockKind) exampleLabel() string {
	if k.example != "" {
		return k.example
	}
	return k.label
}

// body is a checked body: only the accepted attributes and blocks.
type body struct {
	attrs  map[string]*hclsyntax.Attribute
	blocks []*hclsyntax.Block
	raw    *hclsyntax.Body
}

func (b body) blocksOf(kind string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, blk := range b.blocks {
		if blk.Type == kind {
			out = append(out, blk)
		}
	}
	return out
}

func (b body) block(kind string) *hclsyntax.Block {
	for _, blk := range b.blocks {
		if blk.Type == kind {
			return blk
		}
	}
	return nil
}

// content checks a body against the accepted attributes and blocks and
// reports unknown keys (with a "did you mean"), attributes written as blocks
// and the reverse, label mistakes and repeated single blocks.
func (d *decoder) content(raw *hclsyntax.Body, where string, attrs []string, kinds []blockKind) body {
	out := body{attrs: map[string]*hclsyntax.Attribute{}, raw: raw}
	kindOf := map[string]blockKind{}
	var all []string
	for _, k := range kinds {
		kindOf[k.name] = k
		all = append(all, k.name)
	}
	isAttr := map[string]bool{}
	for _, a := range attrs {
		isAttr[a] = true
		all = append(all, a)
	}

	names := make([]string, 0, len(raw.Attributes))
	for n := range raw.Attributes {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return raw.Attributes[names[i]].SrcRange.Start.Byte < raw.Attributes[names[j]].SrcRange.Start.Byte
	})
	for _, n := range names {
		a := raw.Attributes[n]
		switch {
		case isAttr[n]:
			out.attrs[n] = a
		case kindOf[n].name != "":
			k := kindOf[n]
			example := n + " {"
			if k.label != "" {
				example = fmt.Sprintf("%s %q {", n, k.exampleLabel())
			}
			d.errorf(a.NameRange, fmt.Sprintf("%s is a block, not a setting", n),
				"write %s ... } without \"=\"", example)
		default:
			d.errorf(a.NameRange, fmt.Sprintf("unknown key %q in %s", n, where), "%s", didYouMean(n, all))
		}
	}

	seen := map[string]*hclsyntax.Block{}
	for _, blk := range raw.Blocks {
		k, ok := kindOf[blk.Type]
		if !ok {
			if isAttr[blk.Type] {
				d.errorf(blk.TypeRange, fmt.Sprintf("%s is a setting, not a block", blk.Type),
					"write %s = value", blk.Type)
			} else {
				d.errorf(blk.TypeRange, fmt.Sprintf("unknown block %q in %s", blk.Type, where), "%s", didYouMean(blk.Type, all))
			}
			continue
		}
		switch {
		case k.label == "" && len(blk.Labels) > 0:
			d.errorf(blk.LabelRanges[0], fmt.Sprintf("%s takes no label", blk.Type),
				"write %s { ... }", blk.Type)
			continue
		case k.label != "" && len(blk.Labels) == 0:
			d.errorf(blk.TypeRange, fmt.Sprintf("%s needs a %s", blk.Type, k.label),
				"write %s %q { ... }", blk.Type, k.exampleLabel())
			continue
		case len(blk.Labels) > 1:
			d.errorf(blk.LabelRanges[1], fmt.Sprintf("%s takes one label", blk.Type),
				"write %s %q { ... }", blk.Type, k.exampleLabel())
			continue
		}
		if !k.multi {
			if first, dup := seen[blk.Type]; dup {
				d.errorf(blk.TypeRange, fmt.Sprintf("duplicate %s block in %s", blk.Type, where),
					"the first is at line %d; merge the two", first.TypeRange.Start.Line)
				continue
			}
			seen[blk.Type] = blk
		}
		out.blocks = append(out.blocks, blk)
	}
	return out
}

// value evaluates an attribute's expression with no variables or functions.
func (d *decoder) value(a *hclsyntax.Attribute) (cty.Value, bool) {
	return d.exprValue(a.Name, a.Expr, false)
}

// exprValue evaluates an attribute's expression, or one element of a list
// (elem), with no variables or functions.
func (d *decoder) exprValue(name string, e hclsyntax.Expression, elem bool) (cty.Value, bool) {
	if tr, ok := e.(*hclsyntax.ScopeTraversalExpr); ok {
		word := tr.Traversal.RootName()
		if len(tr.Traversal) > 1 {
			d.errorf(e.Range(), fmt.Sprintf("reference in %q", name),
				"policies hold literal values only: no variables or references")
			return cty.NilVal, false
		}
		example := fmt.Sprintf("%s = %q", name, word)
		if elem {
			example = fmt.Sprintf("%q", word)
		}
		d.errorf(e.Range(), fmt.Sprintf("unquoted word %s in %q", word, name),
			"strings are written in quotes: %s", example)
		return cty.NilVal, false
	}
	v, diags := e.Value(nil)
	if diags.HasErrors() {
		d.diags = append(d.diags, diags...)
		return cty.NilVal, false
	}
	if v.IsNull() {
		d.errorf(e.Range(), fmt.Sprintf("%q is null", name), "give %s a value", name)
		return cty.NilVal, false
	}
	if !v.IsWhollyKnown() {
		d.errorf(e.Range(), fmt.Sprintf("%q has no known value", name), "policies hold literal values only")
		return cty.NilVal, false
	}
	return v, true
}

func typeName(v cty.Value) string {
	t := v.Type()
	switch {
	case t == cty.String:
		return "a string"
	case t == cty.Number:
		return "a number"
	case t == cty.Bool:
		return "a bool"
	case t.IsTupleType() || t.IsListType() || t.IsSetType():
		return "a list"
	case t.IsObjectType() || t.IsMapType():
		return "an object"
	}
	return t.FriendlyName()
}

func (d *decoder) wrongType(name string, rng hcl.Range, want string, v cty.Value, hint string) {
	detail := fmt.Sprintf("want %s, got %s", want, typeName(v))
	if hint != "" {
		detail += "; " + hint
	}
	d.errorf(rng, fmt.Sprintf("wrong type for %q", name), "%s", detail)
}

func (d *decoder) str(a *hclsyntax.Attribute) (string, bool) {
	v, ok := d.value(a)
	if !ok {
		return "", false
	}
	if v.Type() != cty.String {
		hint := ""
		if v.Type() == cty.Number || v.Type() == cty.Bool {
			hint = fmt.Sprintf("put it in quotes: %s = \"%s\"", a.Name, ctyText(v))
		}
		d.wrongType(a.Name, a.Expr.Range(), "a string", v, hint)
		return "", false
	}
	return v.AsString(), true
}

func ctyText(v cty.Value) string {
	switch v.Type() {
	case cty.Number:
		return v.AsBigFloat().Text('f', -1)
	case cty.Bool:
		if v.True() {
			return "true"
		}
		return "false"
	}
	return "..."
}

type item struct {
	s   string
	rng hcl.Range
}

// strList reads a list of strings, keeping each element's range.
func (d *decoder) strList(a *hclsyntax.Attribute) ([]item, bool) {
	if tup, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok {
		items := make([]item, 0, len(tup.Exprs))
		good := true
		for _, e := range tup.Exprs {
			v, ok := d.exprValue(a.Name, e, true)
			if !ok {
				good = false
				continue
			}
			if v.Type() != cty.String {
				d.wrongType(a.Name, e.Range(), "a list of strings", v, fmt.Sprintf("this element is %s; put it in quotes", typeName(v)))
				good = false
				continue
			}
			items = append(items, item{v.AsString(), e.Range()})
		}
		return items, good
	}
	v, ok := d.value(a)
	if !ok {
		return nil, false
	}
	if v.Type() == cty.String {
		d.wrongType(a.Name, a.Expr.Range(), "a list of strings", v, fmt.Sprintf("put it in brackets: %s = [\"%s\"]", a.Name, v.AsString()))
		return nil, false
	}
	if !(v.Type().IsTupleType() || v.Type().IsListType()) {
		d.wrongType(a.Name, a.Expr.Range(), "a list of strings", v, "")
		return nil, false
	}
	var items []item
	for it := v.ElementIterator(); it.Next(); {
		_, ev := it.Element()
		if ev.IsNull() || ev.Type() != cty.String {
			d.wrongType(a.Name, a.Expr.Range(), "a list of strings", ev, "")
			return nil, false
		}
		items = append(items, item{ev.AsString(), a.Expr.Range()})
	}
	return items, true
}

func (d *decoder) boolean(a *hclsyntax.Attribute) (bool, bool) {
	v, ok := d.value(a)
	if !ok {
		return false, false
	}
	if v.Type() != cty.Bool {
		hint := "write true or false"
		if v.Type() == cty.String && (v.AsString() == "true" || v.AsString() == "false") {
			hint = fmt.Sprintf("bools are not quoted: %s = %s", a.Name, v.AsString())
		}
		d.wrongType(a.Name, a.Expr.Range(), "a bool", v, hint)
		return false, false
	}
	return v.True(), true
}

func (d *decoder) integer(a *hclsyntax.Attribute, lo, hi int64) (int, bool) {
	return d.intExpr(a.Name, a.Expr, false, lo, hi)
}

func (d *decoder) intExpr(name string, e hclsyntax.Expression, elem bool, lo, hi int64) (int, bool) {
	v, ok := d.exprValue(name, e, elem)
	if !ok {
		return 0, false
	}
	if v.Type() != cty.Number {
		hint := ""
		if v.Type() == cty.String {
			if _, ok := new(big.Int).SetString(v.AsString(), 10); ok {
				hint = fmt.Sprintf("numbers are not quoted: %s = %s", name, v.AsString())
			}
		}
		d.wrongType(name, e.Range(), "a whole number", v, hint)
		return 0, false
	}
	bf := v.AsBigFloat()
	n, acc := bf.Int64()
	if !bf.IsInt() || acc != big.Exact {
		d.errorf(e.Range(), fmt.Sprintf("%q must be a whole number", name), "got %s", bf.Text('f', -1))
		return 0, false
	}
	if n < lo || n > hi {
		d.errorf(e.Range(), fmt.Sprintf("%s %d is out of range", name, n), "%s runs from %d to %d", name, lo, hi)
		return 0, false
	}
	return int(n), true
}

func (d *decoder) duration(a *hclsyntax.Attribute, lo, hi time.Duration) (time.Duration, bool) {
	v, ok := d.value(a)
	if !ok {
		return 0, false
	}
	if v.Type() != cty.String {
		hint := `write a quoted number with a unit, like "30s", "5m" or "1h"`
		if v.Type() == cty.Number {
			hint = fmt.Sprintf("durations need a unit: %s = \"%ss\" for %s seconds", a.Name, ctyText(v), ctyText(v))
		}
		d.wrongType(a.Name, a.Expr.Range(), "a duration", v, hint)
		return 0, false
	}
	s := v.AsString()
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.errorf(a.Expr.Range(), fmt.Sprintf("bad duration %q for %q", s, a.Name),
			`write a number with a unit, like "30s", "5m" or "1h30m" (units: ms, s, m, h)`)
		return 0, false
	}
	if dur < lo || dur > hi {
		d.errorf(a.Expr.Range(), fmt.Sprintf("%s %s is out of range", a.Name, s), "%s must be between %s and %s",
			a.Name, fmtDuration(lo), fmtDuration(hi))
		return 0, false
	}
	return dur, true
}

// fmtDuration prints 30s, 5m, 1h, 24h rather than Go's 5m0s.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (d *decoder) timestamp(a *hclsyntax.Attribute) (time.Time, bool) {
	s, ok := d.str(a)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		d.errorf(a.Expr.Range(), fmt.Sprintf("bad time %q for %q", s, a.Name),
			`write an RFC 3339 time with a zone, like "2025-03-01T02:00:00Z" or "2025-03-01T04:00:00+02:00"`)
		return time.Time{}, false
	}
	return t, true
}

// digestLen is the hex length of a digest in each bank.
var digestLen = map[string]int{"sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}

// digests reads a list of hex digests of the given bank, normalised to
// lowercase.
func (d *decoder) digests(a *hclsyntax.Attribute, bank string) ([]string, bool) {
	items, ok := d.strList(a)
	var out []string
	for _, it := range items {
		if dg, good := d.checkDigest(a.Name, it, bank); good {
			out = append(out, dg)
		} else {
			ok = false
		}
	}
	return out, ok
}

func (d *decoder) checkDigest(name string, it item, bank string) (string, bool) {
	s := it.s
	want := digestLen[bank]
	if i := strings.IndexByte(s, ':'); i > 0 {
		if _, known := digestLen[strings.ToLower(s[:i])]; known {
			d.errorf(it.rng, fmt.Sprintf("bad digest in %q", name), "write the hex digits only, without the %q prefix", s[:i+1])
			return "", false
		}
	}
	if _, err := hex.DecodeString(s); err != nil || s == "" {
		d.errorf(it.rng, fmt.Sprintf("bad digest in %q", name), "%q is not a hexadecimal %s digest", short(s, 24), bank)
		return "", false
	}
	if len(s) != want {
		hint := ""
		for b, n := range digestLen {
			if n == len(s) {
				hint = fmt.Sprintf(" (that is the length of a %s digest)", b)
			}
		}
		d.errorf(it.rng, fmt.Sprintf("bad digest in %q", name), "a %s digest is %d hex characters; this one has %d%s",
			bank, want, len(s), hint)
		return "", false
	}
	return strings.ToLower(s), true
}

func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (d *decoder) mode(a *hclsyntax.Attribute) (Mode, bool) {
	s, ok := d.str(a)
	if !ok {
		return 0, false
	}
	switch s {
	case "enforce":
		return Enforce, true
	case "warn":
		return Warn, true
	}
	d.errorf(a.Expr.Range(), fmt.Sprintf("bad mode %q", s), "mode is \"enforce\" or \"warn\"%s", maybe(s, []string{"enforce", "warn"}))
	return 0, false
}

func (d *decoder) tpmMode(a *hclsyntax.Attribute) (TPMMode, bool) {
	s, ok := d.str(a)
	if !ok {
		return 0, false
	}
	switch s {
	case "required":
		return TPMRequired, true
	case "optional":
		return TPMOptional, true
	case "none":
		return TPMNone, true
	}
	d.errorf(a.Expr.Range(), fmt.Sprintf("bad tpm mode %q", s), "tpm is \"required\", \"optional\" or \"none\"%s",
		maybe(s, []string{"required", "optional", "none"}))
	return 0, false
}

func (d *decoder) severity(a *hclsyntax.Attribute) (int, bool) {
	v, ok := d.value(a)
	if !ok {
		return 0, false
	}
	if v.Type() == cty.Number {
		bf := v.AsBigFloat()
		if n, acc := bf.Int64(); bf.IsInt() && acc == big.Exact && (n < SeverityCritical || n > SeverityLow) {
			d.errorf(a.Expr.Range(), fmt.Sprintf("severity %d is out of range", n),
				"severity runs from 1 (critical) to 4 (low)")
			return 0, false
		}
	}
	return d.intExpr(a.Name, a.Expr, false, SeverityCritical, SeverityLow)
}

// settings are the inheritable mode/severity/isolate of a rule.
type settings struct {
	mode     Mode
	severity int
	isolate  bool
}

var ruleAttrs = []string{"mode", "severity", "isolate"}

// settings reads a block's own mode, severity and isolate over inherited ones.
func (d *decoder) settings(b body, inherit settings) settings {
	s := inherit
	if a := b.attrs["mode"]; a != nil {
		if m, ok := d.mode(a); ok {
			s.mode = m
		}
	}
	if a := b.attrs["severity"]; a != nil {
		if n, ok := d.severity(a); ok {
			s.severity = n
		}
	}
	if a := b.attrs["isolate"]; a != nil {
		if v, ok := d.boolean(a); ok {
			s.isolate = v
		}
	}
	return s
}

func (s settings) rule(name string, pos hcl.Pos, file string) Rule {
	return Rule{Name: name, Pos: Pos{File: file, Line: pos.Line, Column: pos.Column}, Mode: s.mode, Severity: s.severity, Isolate: s.isolate}
}

func posOf(r hcl.Range) Pos { return Pos{File: r.Filename, Line: r.Start.Line, Column: r.Start.Column} }

func with(a []string, b ...string) []string {
	return append(append([]string(nil), a...), b...)
}
