package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Source is one policy file: the name diagnostics use and its bytes.
type Source struct {
	Name  string
	Bytes []byte
}

// Set is a validated, loaded set of policies from one or more files, in
// selection order. It is immutable and safe for concurrent use.
type Set struct {
	policies []*Policy
	sources  []Source
	digest   string
}

// Policies returns the policies in selection order.
func (s *Set) Policies() []*Policy { return append([]*Policy(nil), s.policies...) }

// Policy returns the policy with the given name, or nil.
func (s *Set) Policy(name string) *Policy {
	for _, p := range s.policies {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Sources returns the files the set was loaded from, in load order.
func (s *Set) Sources() []Source { return append([]Source(nil), s.sources...) }

// Files returns the file names in load order.
func (s *Set) Files() []string {
	out := make([]string, len(s.sources))
	for i, src := range s.sources {
		out[i] = src.Name
	}
	return out
}

// Digest is the hex SHA-256 identifying the loaded policy: over each file's
// base name and contents, in load order. Log it with every verdict.
func (s *Set) Digest() string { return s.digest }

// Select returns the first policy whose match covers the agent, or nil when
// none does (the agent must then be denied; Set.Evaluate does so).
func (s *Set) Select(agentID, partition string) *Policy {
	if s == nil {
		return nil
	}
	for _, p := range s.policies {
		if p.Selects(agentID, partition) {
			return p
		}
	}
	return nil
}

// Selects reports whether the policy's match covers the agent.
func (p *Policy) Selects(agentID, partition string) bool {
	return anyGlob(p.Match.Partitions, partition) && anyGlob(p.Match.Agents, agentID)
}

func anyGlob(patterns []string, name string) bool {
	for _, pat := range patterns {
		if Glob(pat, name) {
			return true
		}
	}
	return false
}

func digestSources(srcs []Source) string {
	h := sha256.New()
	var n [8]byte
	for _, s := range srcs {
		base := filepath.Base(s.Name)
		binary.BigEndian.PutUint64(n[:], uint64(len(base)))
		h.Write(n[:])
		h.Write([]byte(base))
		binary.BigEndian.PutUint64(n[:], uint64(len(s.Bytes)))
		h.Write(n[:])
		h.Write(s.Bytes)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// fileDiag is an error about a whole file (no position inside it).
func fileDiag(name, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   detail,
		Subject:  &hcl.Range{Filename: name},
	}
}

// ReadSources reads policy files. A directory stands for the *.hcl files in
// it, in lexical order. No path, an unreadable file or a directory without
// policy files is an error: a policy that cannot be read must not load as
// "no policy".
func ReadSources(paths ...string) ([]Source, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	if len(paths) == 0 {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "no policy files given",
			Detail: "name at least one policy file or directory; Pulse never runs without a policy"}}
	}
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			diags = append(diags, fileDiag(p, "cannot read policy file", err.Error()))
			continue
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		matches, err := filepath.Glob(filepath.Join(p, "*.hcl"))
		if err == nil && len(matches) == 0 {
			err = fmt.Errorf("directory holds no .hcl policy files")
		}
		if err != nil {
			diags = append(diags, fileDiag(p, "cannot read policy directory", err.Error()))
			continue
		}
		sort.Strings(matches)
		files = append(files, matches...)
	}
	seen := map[string]bool{}
	var srcs []Source
	for _, f := range files {
		abs, _ := filepath.Abs(f)
		if seen[abs] {
			diags = append(diags, fileDiag(f, "policy file listed twice", "each file may be loaded once"))
			continue
		}
		seen[abs] = true
		b, err := os.ReadFile(f)
		if err != nil {
			diags = append(diags, fileDiag(f, "cannot read policy file", err.Error()))
			continue
		}
		srcs = append(srcs, Source{Name: f, Bytes: b})
	}
	return srcs, diags
}

// LoadFiles reads and loads policy files (see ReadSources and Load).
func LoadFiles(paths ...string) (*Set, hcl.Diagnostics) {
	srcs, diags := ReadSources(paths...)
	if diags.HasErrors() {
		return nil, diags
	}
	set, more := Load(srcs)
	return set, append(diags, more...)
}

// Parse loads a single policy file from memory.
func Parse(filename string, src []byte) (*Set, hcl.Diagnostics) {
	return Load([]Source{{Name: filename, Bytes: src}})
}

// Load parses and validates policy sources as one set: policies are
// selected in file order, then in order within each file. It returns a nil
// Set whenever the diagnostics hold an error; warnings come with a Set.
func Load(srcs []Source) (*Set, hcl.Diagnostics) {
	if len(srcs) == 0 {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "no policy files given",
			Detail: "name at least one policy file or directory; Pulse never runs without a policy"}}
	}
	var diags hcl.Diagnostics
	var all []*Policy
	for _, src := range srcs {
		ps, d := parseFile(src)
		diags = append(diags, d...)
		all = append(all, ps...)
	}
	// Cross-policy checks run over the policies that decoded cleanly, so one
	// run reports as many mistakes as it can.
	diags = append(diags, checkSet(all)...)
	sortDiags(diags, srcs)
	if diags.HasErrors() {
		return nil, diags
	}
	set := &Set{policies: all, sources: append([]Source(nil), srcs...), digest: digestSources(srcs)}
	for _, p := range all {
		p.setDigest = set.digest
	}
	return set, diags
}

// sortDiags orders diagnostics by file (in load order), line and column.
func sortDiags(diags hcl.Diagnostics, srcs []Source) {
	fileOrder := map[string]int{}
	for i, s := range srcs {
		fileOrder[s.Name] = i
	}
	key := func(d *hcl.Diagnostic) (int, int, int) {
		if d.Subject == nil {
			return -1, 0, 0
		}
		return fileOrder[d.Subject.Filename], d.Subject.Start.Line, d.Subject.Start.Column
	}
	sort.SliceStable(diags, func(i, j int) bool {
		fi, li, ci := key(diags[i])
		fj, lj, cj := key(diags[j])
		if fi != fj {
			return fi < fj
		}
		if li != lj {
			return li < lj
		}
		return ci < cj
	})
}

// checkSet finds duplicate names and policies an earlier one shadows.
func checkSet(ps []*Policy) hcl.Diagnostics {
	var d decoder
	byName := map[string]*Policy{}
	for _, p := range ps {
		if first, dup := byName[p.Name]; dup {
			d.errorf(p.nameRange, fmt.Sprintf("duplicate policy name %q", p.Name),
				"policy %q is already defined at %s; policy names must be unique", p.Name, first.Pos)
			continue
		}
		byName[p.Name] = p
	}
	for j, pj := range ps {
		for _, pi := range ps[:j] {
			if covers(pi.Match, pj.Match) {
				what := "selects every agent it selects"
				if isCatchAll(pi.Match.Partitions) && isCatchAll(pi.Match.Agents) {
					what = "selects every agent"
				}
				d.errorf(pj.nameRange, fmt.Sprintf("policy %q is unreachable", pj.Name),
					"policy %q at %s %s, and the first matching policy wins; move %q above it or narrow %q's match",
					pi.Name, pi.Pos, what, pj.Name, pi.Name)
				break
			}
		}
	}
	return d.diags
}

func covers(a, b Match) bool {
	return coversAll(a.Partitions, b.Partitions) && coversAll(a.Agents, b.Agents)
}

func coversAll(a, b []string) bool {
	for _, pb := range b {
		ok := false
		for _, pa := range a {
			if globCovers(pa, pb) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func parseFile(src Source) ([]*Policy, hcl.Diagnostics) {
	f, diags := hclsyntax.ParseConfig(src.Bytes, src.Name, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	raw, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return nil, append(diags, fileDiag(src.Name, "not an HCL native syntax file", ""))
	}
	d := &decoder{diags: diags}
	top := d.content(raw, "a policy file", nil, []blockKind{{name: "policy", label: "name", multi: true, example: "edge-gateways"}})
	var ps []*Policy
	for _, blk := range top.blocksOf("policy") {
		if p := d.policy(blk); p != nil {
			ps = append(ps, p)
		}
	}
	if len(raw.Blocks) == 0 && len(raw.Attributes) == 0 {
		start := hcl.Range{Filename: src.Name, Start: hcl.InitialPos, End: hcl.InitialPos}
		d.errorf(start, "policy file has no policy",
			"a file without a policy block would select no agent; Pulse refuses to load it rather than guess. Add policy \"NAME\" { ... }")
	}
	return ps, d.diags
}

func policyName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func (d *decoder) policy(blk *hclsyntax.Block) *Policy {
	errsBefore := len(d.diags.Errs())
	name := blk.Labels[0]
	file := blk.TypeRange.Filename
	p := &Policy{
		Name:      name,
		Pos:       posOf(blk.TypeRange),
		nameRange: blk.LabelRanges[0],
		ClockSkew: DefaultClockSkew,
		Heartbeat: Heartbeat{Interval: DefaultHeartbeatInterval, Missed: DefaultMissedPulses, Grace: DefaultGrace},
		OnFailure: Action{Severity: DefaultSeverity},
	}
	if !policyName(name) {
		d.errorf(blk.LabelRanges[0], fmt.Sprintf("bad policy name %q", name),
			"use 1 to 64 letters, digits, '-', '_' or '.'")
	}
	where := fmt.Sprintf("policy %q", name)
	b := d.content(blk.Body, where, []string{"tpm", "clock_skew"}, []blockKind{
		{name: "match"}, {name: "heartbeat"}, {name: "on_failure"},
		{name: "agent_binary"}, {name: "ebpf"}, {name: "fortress"}, {name: "measured_boot"},
		{name: "clock"},
		{name: "planned_stop"},
		{name: "sentinel"},
	})

	if of := b.block("on_failure"); of != nil {
		ob := d.content(of.Body, "on_failure", []string{"severity", "isolate"}, nil)
		s := d.settings(ob, settings{mode: Enforce, severity: DefaultSeverity})
		p.OnFailure = Action{Severity: s.severity, Isolate: s.isolate}
	}
	base := settings{mode: Enforce, severity: p.OnFailure.Severity, isolate: p.OnFailure.Isolate}

	if m := b.block("match"); m != nil {
		p.Match = d.match(m)
	} else if blk.Body.Attributes["match"] == nil { // else already reported
		d.errorf(blk.LabelRanges[0], fmt.Sprintf("policy %q has no match block", name),
			"say which agents it covers: match { partitions = [\"edge-*\"] } or match { agents = [\"*\"] } for every agent")
	}

	if a := b.attrs["tpm"]; a != nil {
		if m, ok := d.tpmMode(a); ok {
			p.TPM = m
		}
		p.TPMRule = base.rule("tpm", a.NameRange.Start, file)
	} else if !hasBlock(blk.Body, "tpm") { // else already reported
		d.errorf(blk.LabelRanges[0], fmt.Sprintf("policy %q does not set tpm", name),
			"every policy must say whether its agents need a TPM: tpm = \"required\", \"optional\" or \"none\"")
	}
	if a := b.attrs["clock_skew"]; a != nil {
		if v, ok := d.duration(a, time.Second, time.Hour); ok {
			p.ClockSkew = v
		}
	}
	if hb := b.block("heartbeat"); hb != nil {
		hbb := d.content(hb.Body, "heartbeat", []string{"interval", "missed", "grace"}, nil)
		if a := hbb.attrs["interval"]; a != nil {
			if v, ok := d.duration(a, time.Second, 24*time.Hour); ok {
				p.Heartbeat.Interval = v
			}
		}
		if a := hbb.attrs["missed"]; a != nil {
			if v, ok := d.integer(a, 1, 1000); ok {
				p.Heartbeat.Missed = v
			}
		}
		if a := hbb.attrs["grace"]; a != nil {
			if v, ok := d.duration(a, 0, 24*time.Hour); ok {
				p.Heartbeat.Grace = v
			}
		}
	}
	if ab := b.block("agent_binary"); ab != nil {
		p.AgentBinary = d.agentBinary(ab, base)
	}
	if eb := b.block("ebpf"); eb != nil {
		p.EBPF = d.ebpf(eb, base)
	}
	if fb := b.block("fortress"); fb != nil {
		fbb := d.content(fb.Body, "fortress", ruleAttrs, nil)
		r := d.settings(fbb, base).rule("fortress", fb.TypeRange.Start, file)
		p.Fortress = &r
	}
	if mb := b.block("measured_boot"); mb != nil {
		p.MeasuredBoot = d.measuredBoot(mb, base)
	}
	if cb := b.block("clock"); cb != nil {
		p.Clock = d.clock(cb, base, file)
	}
	if ps := b.block("planned_stop"); ps != nil {
		p.PlannedStop = d.plannedStop(ps)
	}
	if sb := b.block("sentinel"); sb != nil {
		p.Sentinel = d.sentinel(sb, base)
	}
	if len(d.diags.Errs()) > errsBefore {
		return nil
	}
	if p.AgentBinary == nil && p.EBPF == nil && p.Fortress == nil && p.MeasuredBoot == nil {
		d.warnf(blk.LabelRanges[0], fmt.Sprintf("policy %q has no rules", name),
			"it checks only the TPM mode; add measured_boot, agent_binary, ebpf or fortress rules")
	}
	return p
}

func (d *decoder) match(blk *hclsyntax.Block) Match {
	b := d.content(blk.Body, "match", []string{"partitions", "agents"}, nil)
	m := Match{Partitions: []string{"*"}, Agents: []string{"*"}, Pos: posOf(blk.TypeRange)}
	if len(b.attrs) == 0 && len(blk.Body.Attributes) == 0 && len(blk.Body.Blocks) == 0 {
		d.errorf(blk.TypeRange, "empty match block",
			"name the agents: partitions = [\"edge-*\"], agents = [\"gw-*\"], or agents = [\"*\"] for every agent")
	}
	for _, key := range []string{"partitions", "agents"} {
		a := b.attrs[key]
		if a == nil {
			continue
		}
		items, ok := d.strList(a)
		if !ok {
			continue
		}
		if len(items) == 0 {
			d.errorf(a.Expr.Range(), fmt.Sprintf("empty %s list", key),
				"an empty list matches nothing; use [\"*\"] to match everything or remove the line")
			continue
		}
		var pats []string
		for _, it := range items {
			if err := ValidateGlob(it.s); err != nil {
				d.errorf(it.rng, fmt.Sprintf("bad glob %q in %q", it.s, key), "%s; * matches any run, ? one character, [a-z] a range, \\ escapes",
					err.(*GlobError).Detail())
				continue
			}
			pats = append(pats, it.s)
		}
		if key == "partitions" {
			m.Partitions = pats
		} else {
			m.Agents = pats
		}
	}
	return m
}

func (d *decoder) agentBinary(blk *hclsyntax.Block, base settings) *AgentBinary {
	file := blk.TypeRange.Filename
	b := d.content(blk.Body, "agent_binary", with(ruleAttrs, "allow", "require_launcher"), []blockKind{{name: "update_window", label: "name", multi: true, example: "agent-1.5"}})
	ab := &AgentBinary{Rule: d.settings(b, base).rule("agent_binary", blk.TypeRange.Start, file)}
	if a := b.attrs["require_launcher"]; a != nil {
		ab.RequireLauncher, _ = d.boolean(a)
	}
	if a := b.attrs["allow"]; a != nil {
		ab.Allow, _ = d.digests(a, "sha256")
	}
	names := map[string]int{}
	for _, wb := range b.blocksOf("update_window") {
		label := wb.Labels[0]
		if line, dup := names[label]; dup {
			d.errorf(wb.LabelRanges[0], fmt.Sprintf("duplicate update_window %q", label), "the first is at line %d", line)
			continue
		}
		names[label] = wb.TypeRange.Start.Line
		w := UpdateWindow{Name: label, Pos: posOf(wb.TypeRange)}
		wbb := d.content(wb.Body, fmt.Sprintf("update_window %q", label), []string{"start", "end", "allow", "ebpf_objects"}, nil)
		okStart, okEnd := false, false
		for _, key := range []string{"start", "end", "allow"} {
			if wbb.attrs[key] == nil {
				d.errorf(wb.LabelRanges[0], fmt.Sprintf("update_window %q has no %s", label, key),
					"an update window needs start, end (RFC 3339 times) and allow (the new binaries' digests)")
			}
		}
		if a := wbb.attrs["start"]; a != nil {
			w.Start, okStart = d.timestamp(a)
		}
		if a := wbb.attrs["end"]; a != nil {
			w.End, okEnd = d.timestamp(a)
			if okStart && okEnd && !w.End.After(w.Start) {
				d.errorf(a.Expr.Range(), fmt.Sprintf("update_window %q ends before it starts", label),
					"end %s is not after start %s", w.End.Format(time.RFC3339), w.Start.Format(time.RFC3339))
			}
		}
		if a := wbb.attrs["allow"]; a != nil {
			w.Allow, _ = d.digests(a, "sha256")
			if tup, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok && len(tup.Exprs) == 0 {
				d.errorf(a.Expr.Range(), "empty allow list in update_window", "list the digests of the binaries this window rolls out")
			}
		}
		if a := wbb.attrs["ebpf_objects"]; a != nil {
			w.EBPFObjects, _ = d.digests(a, "sha256")
			if tup, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok && len(tup.Exprs) == 0 {
				d.errorf(a.Expr.Range(), "empty ebpf_objects in update_window",
					"list the eBPF object digests of the build's manifest (pulse-agent manifest), or leave ebpf_objects out when the programs do not change")
			}
		}
		ab.Windows = append(ab.Windows, w)
	}
	if b.attrs["allow"] == nil && len(ab.Windows) == 0 {
		d.errorf(blk.TypeRange, "agent_binary allows no binary",
			"list the SHA-256 digests of the approved agent binaries: allow = [\"...\"]")
	}
	return ab
}

func (d *decoder) ebpf(blk *hclsyntax.Block, base settings) *EBPF {
	file := blk.TypeRange.Filename
	b := d.content(blk.Body, "ebpf", with(ruleAttrs, "allow_unlisted"), []blockKind{
		{name: "require", label: "program name", multi: true, example: "shield_xdp"},
		{name: "allow", label: "program name", multi: true, example: "shield_*"},
	})
	s := d.settings(b, base)
	e := &EBPF{Rule: s.rule("ebpf", blk.TypeRange.Start, file)}
	if a := b.attrs["allow_unlisted"]; a != nil {
		e.AllowUnlisted, _ = d.boolean(a)
	}
	seen := map[string]int{}
	for _, pb := range b.blocks {
		label := pb.Labels[0]
		key := pb.Type + " " + label
		if line, dup := seen[key]; dup {
			d.errorf(pb.LabelRanges[0], fmt.Sprintf("duplicate %s %q", pb.Type, label), "the first is at line %d", line)
			continue
		}
		seen[key] = pb.TypeRange.Start.Line
		pbb := d.content(pb.Body, fmt.Sprintf("%s %q", pb.Type, label), with(ruleAttrs, "digests"), nil)
		prog := Program{Rule: d.settings(pbb, s).rule(fmt.Sprintf("ebpf.%s[%q]", pb.Type, label), pb.TypeRange.Start, file), Name: label}
		if a := pbb.attrs["digests"]; a != nil {
			prog.Digests, _ = d.digests(a, "sha256")
		}
		if pb.Type == "require" {
			if !isLiteral(label) || label == "" {
				d.errorf(pb.LabelRanges[0], fmt.Sprintf("require needs an exact program name, not %q", label),
					"a required program is named exactly; use allow %q { ... } for a pattern", label)
				continue
			}
			e.Required = append(e.Required, prog)
			continue
		}
		if err := ValidateGlob(label); err != nil {
			d.errorf(pb.LabelRanges[0], fmt.Sprintf("bad glob %q in allow", label), "%s", err.(*GlobError).Detail())
			continue
		}
		e.Allowed = append(e.Allowed, prog)
	}
	return e
}

func (d *decoder) measuredBoot(blk *hclsyntax.Block, base settings) *MeasuredBoot {
	file := blk.TypeRange.Filename
	b := d.content(blk.Body, "measured_boot", with(ruleAttrs, "bank", "runtime_pcr_history"), []blockKind{
		{name: "secure_boot"},
		{name: "pcr", label: "PCR index", multi: true, example: "7"},
		{name: "allow", label: "name", multi: true, example: "boot-chain"},
		{name: "forbid", label: "name", multi: true, example: "revoked-grub"},
	})
	s := d.settings(b, base)
	mb := &MeasuredBoot{Pos: posOf(blk.TypeRange), Bank: DefaultBank}
	if a := b.attrs["bank"]; a != nil {
		if v, ok := d.str(a); ok {
			if _, known := digestLen[v]; known {
				mb.Bank = v
			} else {
				d.errorf(a.Expr.Range(), fmt.Sprintf("bad bank %q", v), "bank is \"sha256\", \"sha1\", \"sha384\" or \"sha512\"%s",
					maybe(v, []string{"sha1", "sha256", "sha384", "sha512"}))
			}
		}
	}
	if a := b.attrs["runtime_pcr_history"]; a != nil {
		mb.RuntimePCRHistory = d.runtimePCRHistory(a, s)
	}
	seen := map[string]int{}
	for _, rb := range b.blocks {
		switch rb.Type {
		case "secure_boot":
			sb := d.content(rb.Body, "secure_boot", ruleAttrs, nil)
			r := d.settings(sb, s).rule("measured_boot.secure_boot", rb.TypeRange.Start, file)
			mb.SecureBoot = &r
		case "pcr":
			label := rb.Labels[0]
			idx, err := strconv.Atoi(label)
			if err != nil || idx < 0 || idx > 23 || strconv.Itoa(idx) != label {
				d.errorf(rb.LabelRanges[0], fmt.Sprintf("bad PCR index %q", label), "PCR indexes run from \"0\" to \"23\"")
				continue
			}
			if line, dup := seen["pcr "+label]; dup {
				d.errorf(rb.LabelRanges[0], fmt.Sprintf("duplicate pcr %q", label), "the first is at line %d; list several accepted values in one block", line)
				continue
			}
			seen["pcr "+label] = rb.TypeRange.Start.Line
			pb := d.content(rb.Body, fmt.Sprintf("pcr %q", label), with(ruleAttrs, "values"), nil)
			pr := PCRRule{Rule: d.settings(pb, s).rule(fmt.Sprintf("measured_boot.pcr[%q]", label), rb.TypeRange.Start, file), Index: idx}
			if a := pb.attrs["values"]; a != nil {
				pr.Values, _ = d.digests(a, mb.Bank)
				if tup, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok && len(tup.Exprs) == 0 {
					d.errorf(a.Expr.Range(), "empty values list", "list the accepted %s values of PCR %d", mb.Bank, idx)
				}
			} else {
				d.errorf(rb.LabelRanges[0], fmt.Sprintf("pcr %q has no values", label), "write values = [\"...\"] with the accepted %s values", mb.Bank)
			}
			mb.PCRs = append(mb.PCRs, pr)
		case "allow", "forbid":
			label := rb.Labels[0]
			key := rb.Type + " " + label
			if label == "" {
				d.errorf(rb.LabelRanges[0], fmt.Sprintf("%s needs a name", rb.Type), "name the rule, e.g. %s \"boot-loaders\" { ... }", rb.Type)
				continue
			}
			if line, dup := seen[key]; dup {
				d.errorf(rb.LabelRanges[0], fmt.Sprintf("duplicate %s %q", rb.Type, label), "the first is at line %d", line)
				continue
			}
			seen[key] = rb.TypeRange.Start.Line
			attrs := with(ruleAttrs, "types", "pcrs", "digests")
			if rb.Type == "forbid" {
				attrs = append(attrs, "reason")
			}
			cb := d.content(rb.Body, fmt.Sprintf("%s %q", rb.Type, label), attrs, nil)
			c := Components{Rule: d.settings(cb, s).rule(fmt.Sprintf("measured_boot.%s[%q]", rb.Type, label), rb.TypeRange.Start, file), Label: label}
			if a := cb.attrs["types"]; a != nil {
				items, _ := d.strList(a)
				for _, it := range items {
					if !isEventType(it.s) {
						d.errorf(it.rng, fmt.Sprintf("unknown event type %q", it.s), "%s", didYouMean(it.s, EventTypes))
						continue
					}
					c.Types = append(c.Types, it.s)
				}
			} else if rb.Type == "allow" {
				c.Types = append([]string(nil), DefaultComponentTypes...)
			}
			if a := cb.attrs["pcrs"]; a != nil {
				c.PCRs = d.pcrList(a)
			}
			if a := cb.attrs["digests"]; a != nil {
				c.Digests, _ = d.digests(a, mb.Bank)
				if tup, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok && len(tup.Exprs) == 0 && rb.Type == "forbid" {
					d.errorf(a.Expr.Range(), "empty digests list in forbid", "list the digests to forbid")
				}
			} else {
				d.errorf(rb.LabelRanges[0], fmt.Sprintf("%s %q has no digests", rb.Type, label),
					"write digests = [\"...\"] with the %s digests of the components", mb.Bank)
			}
			if a := cb.attrs["reason"]; a != nil {
				c.Reason, _ = d.str(a)
			}
			if rb.Type == "allow" {
				mb.Allow = append(mb.Allow, c)
			} else {
				mb.Forbid = append(mb.Forbid, c)
			}
		}
	}
	if len(blk.Body.Blocks) == 0 && blk.Body.Attributes["runtime_pcr_history"] == nil {
		d.errorf(blk.TypeRange, "measured_boot has no rules",
			"add secure_boot {}, pcr \"N\" { ... }, allow \"NAME\" { ... }, forbid \"NAME\" { ... } or runtime_pcr_history = [...], or remove the block")
	}
	return mb
}

// runtimePCRHistory reads runtime_pcr_history: a list of shim's MOK variable
// names, each at most once, in the order shim measures them; [] means none.
func (d *decoder) runtimePCRHistory(a *hclsyntax.Attribute, s settings) *RuntimePCRHistoryRule {
	r := &RuntimePCRHistoryRule{
		Rule:  s.rule("measured_boot.runtime_pcr_history", a.NameRange.Start, a.NameRange.Filename),
		Names: []string{},
	}
	items, _ := d.strList(a)
	first := map[string]hcl.Range{}
	for _, it := range items {
		if !IsMOKVariable(it.s) {
			hint := didYouMean(it.s, MOKVariables)
			if trimmed := strings.TrimRight(it.s, "\x00"); IsMOKVariable(trimmed) {
				hint = fmt.Sprintf("write the name without the event data's trailing NUL: %q", trimmed)
			}
			d.errorf(it.rng, fmt.Sprintf("unknown MOK variable %q in runtime_pcr_history", it.s),
				"the runtime PCR's pre-OS measurements are shim's MOK variables; %s", hint)
			continue
		}
		if rng, dup := first[it.s]; dup {
			d.errorf(it.rng, fmt.Sprintf("duplicate %q in runtime_pcr_history", it.s),
				"the first is at line %d, column %d; shim measures each MOK variable once, and the verifier refuses a log that measures one twice",
				rng.Start.Line, rng.Start.Column)
			continue
		}
		first[it.s] = it.rng
		r.Names = append(r.Names, it.s)
	}
	return r
}

func (d *decoder) pcrList(a *hclsyntax.Attribute) []int {
	tup, ok := a.Expr.(*hclsyntax.TupleConsExpr)
	if !ok {
		v, ok := d.value(a)
		if ok {
			hint := ""
			if v.Type() == cty.Number {
				hint = fmt.Sprintf("put it in brackets: pcrs = [%s]", ctyText(v))
			}
			d.wrongType(a.Name, a.Expr.Range(), "a list of PCR indexes", v, hint)
		}
		return nil
	}
	var out []int
	for _, e := range tup.Exprs {
		if v, diags := e.Value(nil); !diags.HasErrors() && v.Type() == cty.Number && v.IsKnown() && !v.IsNull() {
			if bf := v.AsBigFloat(); bf.IsInt() && (bf.Sign() < 0 || bf.Cmp(big.NewFloat(23)) > 0) {
				d.errorf(e.Range(), fmt.Sprintf("PCR %s is out of range", bf.Text('f', -1)), "PCR indexes run from 0 to 23")
				continue
			}
		}
		if n, ok := d.intExpr(a.Name, e, true, 0, 23); ok {
			out = append(out, n)
		}
	}
	return out
}

func hasBlock(b *hclsyntax.Body, typ string) bool {
	for _, blk := range b.Blocks {
		if blk.Type == typ {
			return true
		}
	}
	return false
}
