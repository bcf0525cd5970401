package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// RuleNoPolicy and RuleSelect name the findings Set.Evaluate returns when it
// cannot evaluate any policy rule: no set is loaded, or no policy selects the
// agent. Both deny.
const (
	RuleNoPolicy = "policy"
	RuleSelect   = "select"
)

// Evaluate selects the agent's policy (the first whose match covers the
// evidence's agent ID and partition) and evaluates it. An agent that no
// policy selects, or a nil set, is denied with a finding saying why.
func (s *Set) Evaluate(ev Evidence, now time.Time) Result {
	if s == nil {
		f := Finding{Rule: RuleNoPolicy, Mode: Enforce, Severity: SeverityHigh,
			Message: "no policy is loaded, so no agent can be trusted"}
		return Result{Findings: []Finding{f}, Denied: true}
	}
	p := s.Select(ev.AgentID, ev.Partition)
	if p == nil {
		f := Finding{Rule: RuleSelect, Mode: Enforce, Severity: SeverityHigh,
			Message: fmt.Sprintf("no policy selects agent %q in partition %q; add a policy whose match covers it", ev.AgentID, ev.Partition)}
		return Result{PolicyDigest: s.digest, Findings: []Finding{f}, Denied: true}
	}
	return p.Evaluate(ev, now)
}

// Evaluate checks verified evidence against the policy's rules at time now
// (update windows depend on it). It is pure: the same evidence and time
// always give the same result. Rules that need evidence that is absent fail,
// except measured-boot rules for an agent the policy explicitly accepts
// without a TPM (tpm = "optional"/"none"), which are listed as Skipped.
func (p *Policy) Evaluate(ev Evidence, now time.Time) Result {
	e := &evaluator{p: p, res: Result{Policy: p.Name, PolicyPos: p.Pos, PolicyDigest: p.setDigest, Findings: []Finding{}}}
	e.tpm(ev)
	e.boot(ev)
	e.agentBinary(ev, now)
	e.ebpf(ev)
	e.fortress(ev)
	e.clock(ev)
	sort.SliceStable(e.res.Findings, func(i, j int) bool {
		a, b := e.res.Findings[i], e.res.Findings[j]
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line
	})
	for _, f := range e.res.Findings {
		if f.Mode == Enforce {
			e.res.Denied = true
			if f.Isolate {
				e.res.Isolate = true
			}
		}
	}
	return e.res
}

type evaluator struct {
	p   *Policy
	res Result
}

func (e *evaluator) fail(r Rule, format string, args ...any) {
	e.res.Findings = append(e.res.Findings, Finding{
		Policy:   e.p.Name,
		Rule:     r.Name,
		File:     r.Pos.File,
		Line:     r.Pos.Line,
		Mode:     r.Mode,
		Severity: r.Severity,
		Isolate:  r.Isolate,
		Message:  fmt.Sprintf(format, args...),
	})
}

func (e *evaluator) skip(r Rule, reason string) {
	e.res.Skipped = append(e.res.Skipped, Skipped{Rule: r.Name, File: r.Pos.File, Line: r.Pos.Line, Reason: reason})
}

func (e *evaluator) tpm(ev Evidence) {
	if ev.TPM {
		return
	}
	if e.p.TPM == TPMRequired {
		e.fail(e.p.TPMRule, "the pulse carried no verified TPM quote (mTLS only), and this policy requires a TPM")
		return
	}
	e.res.Degraded = true
}

// bootRules lists the measured-boot rules in source order.
func (mb *MeasuredBoot) rules() []Rule {
	var rs []Rule
	if mb.SecureBoot != nil {
		rs = append(rs, *mb.SecureBoot)
	}
	if mb.RuntimePCRHistory != nil {
		rs = append(rs, mb.RuntimePCRHistory.Rule)
	}
	for _, r := range mb.PCRs {
		rs = append(rs, r.Rule)
	}
	for _, r := range mb.Allow {
		rs = append(rs, r.Rule)
	}
	for _, r := range mb.Forbid {
		rs = append(rs, r.Rule)
	}
	return rs
}

// firmwarePCRs are the PCRs an allow or forbid block checks when it sets no
// pcrs: the ones firmware measures into (TCG PC Client PFP §3.3.4).
var firmwarePCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

func (c Components) pcrs() []int {
	if len(c.PCRs) == 0 {
		return firmwarePCRs
	}
	return c.PCRs
}

func (c Components) selects(ev BootEvent) bool {
	inPCR := false
	for _, p := range c.pcrs() {
		if p == ev.PCR {
			inPCR = true
			break
		}
	}
	if !inPCR {
		return false
	}
	if len(c.Types) == 0 {
		return true
	}
	for _, t := range c.Types {
		if t == ev.Type {
			return true
		}
	}
	return false
}

func (e *evaluator) boot(ev Evidence) {
	mb := e.p.MeasuredBoot
	if mb == nil {
		return
	}
	b := ev.Boot
	if b == nil {
		for _, r := range mb.rules() {
			if !ev.TPM && e.p.TPM != TPMRequired {
				e.skip(r, fmt.Sprintf("no TPM evidence, which this policy accepts (tpm = %q)", e.p.TPM))
				continue
			}
			e.fail(r, "no verified firmware event log, so %s cannot be checked", r.Name)
		}
		return
	}
	bankOK := strings.EqualFold(b.Bank, mb.Bank)
	bankMsg := func() string {
		return fmt.Sprintf("the firmware log was verified in the %s bank, but this policy's measured_boot digests are %s (bank = %q)", b.Bank, mb.Bank, mb.Bank)
	}
	if r := mb.SecureBoot; r != nil {
		// The policy's bank applies to every rule: Secure Boot state read
		// from a log verified in another bank is not this policy's evidence.
		switch {
		case !bankOK:
			e.fail(*r, "%s", bankMsg())
		case b.SecureBoot == nil:
			e.fail(*r, "Secure Boot state is unknown: no verified PCR 7 event measured the SecureBoot variable")
		case !*b.SecureBoot:
			e.fail(*r, "Secure Boot is disabled (the SecureBoot variable measured into PCR 7 is 0)")
		}
	}
	if h := mb.RuntimePCRHistory; h != nil {
		// Names are not digests, but the section's evidence is the log
		// verified in its bank, as for secure_boot.
		switch {
		case !bankOK:
			e.fail(h.Rule, "%s", bankMsg())
		case b.RuntimePCRHistory == nil:
			e.fail(h.Rule, "the runtime PCR's pre-OS history is unknown: the evidence does not say which firmware log events are in the runtime PCR, so runtime records passed off as MOK measurements cannot be ruled out")
		case !slices.Equal(b.RuntimePCRHistory, h.Names):
			e.fail(h.Rule, "the firmware log measured %s into the runtime PCR before the OS, but this policy allows exactly %s (%s)",
				historyText(b.RuntimePCRHistory), historyText(h.Names), historyDiff(b.RuntimePCRHistory, h.Names))
		}
	}
	for _, r := range mb.PCRs {
		if !bankOK {
			e.fail(r.Rule, "%s", bankMsg())
			continue
		}
		v, ok := b.PCRs[r.Index]
		if !ok {
			e.fail(r.Rule, "PCR %d was not verified (not quoted, or the log does not extend it)", r.Index)
			continue
		}
		if !contains(r.Values, strings.ToLower(v)) {
			e.fail(r.Rule, "PCR %d is %s, which is not one of the %d accepted values", r.Index, strings.ToLower(v), len(r.Values))
		}
	}
	for _, group := range []struct {
		rules  []Components
		forbid bool
	}{{mb.Allow, false}, {mb.Forbid, true}} {
		for _, c := range group.rules {
			if !bankOK {
				e.fail(c.Rule, "%s", bankMsg())
				continue
			}
			var missing []string
			for _, p := range c.pcrs() {
				if _, ok := b.PCRs[p]; !ok {
					missing = append(missing, fmt.Sprint(p))
				}
			}
			if len(missing) > 0 {
				e.fail(c.Rule, "cannot check: PCR %s not verified, so its events are not evidence", strings.Join(missing, ", "))
				continue
			}
			var hits []BootEvent
			for _, be := range b.Events {
				if !c.selects(be) {
					continue
				}
				if contains(c.Digests, strings.ToLower(be.Digest)) == group.forbid {
					hits = append(hits, be)
				}
			}
			if len(hits) == 0 {
				continue
			}
			if group.forbid {
				msg := fmt.Sprintf("forbidden boot component measured: %s", describeEvents(hits))
				if c.Reason != "" {
					msg += " (" + c.Reason + ")"
				}
				e.fail(c.Rule, "%s", msg)
			} else {
				e.fail(c.Rule, "%s not on the allow list: %s", plural(len(hits), "boot component"), describeEvents(hits))
			}
		}
	}
}

// historyText writes a runtime PCR history for a finding: "nothing" or
// "[MokList, MokListX]".
func historyText(names []string) string {
	if len(names) == 0 {
		return "nothing"
	}
	return "[" + strings.Join(names, ", ") + "]"
}

// historyDiff says how a measured history differs from the allowed one.
func historyDiff(got, want []string) string {
	var extra, missing []string
	for _, n := range got {
		if !contains(want, n) {
			extra = append(extra, n)
		}
	}
	for _, n := range want {
		if !contains(got, n) {
			missing = append(missing, n)
		}
	}
	var parts []string
	if len(extra) > 0 {
		parts = append(parts, "not allowed: "+strings.Join(extra, ", "))
	}
	if len(missing) > 0 {
		parts = append(parts, "missing: "+strings.Join(missing, ", "))
	}
	if len(parts) == 0 {
		return "same names in another order"
	}
	return strings.Join(parts, "; ")
}

func describeEvents(evs []BootEvent) string {
	const max = 5
	parts := make([]string, 0, max+1)
	for i, be := range evs {
		if i == max {
			parts = append(parts, fmt.Sprintf("and %d more", len(evs)-max))
			break
		}
		parts = append(parts, fmt.Sprintf("PCR %d %s %s (event %d)", be.PCR, be.Type, strings.ToLower(be.Digest), be.Seq))
	}
	return strings.Join(parts, "; ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what + " is"
	}
	return fmt.Sprintf("%d %ss are", n, what)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// BinaryAllowed reports whether an agent binary digest is accepted at now:
// it is in allow, or in an update window that has opened. A policy without
// an agent_binary section accepts any binary.
func (p *Policy) BinaryAllowed(digest string, now time.Time) bool {
	ab := p.AgentBinary
	if ab == nil {
		return true
	}
	d := strings.ToLower(digest)
	if contains(ab.Allow, d) {
		return true
	}
	for _, w := range ab.Windows {
		if contains(w.Allow, d) && !now.Before(w.Start) {
			return true
		}
	}
	return false
}

// BinaryChangeApproved reports whether an agent switching from one binary
// to another at now is an approved update: the new binary is in allow, or
// now is inside an update window that lists it. The verifier raises a
// severity 1 alert for an unapproved change (docs/threat-model.md, "What a verdict proves", step 8).
func (p *Policy) BinaryChangeApproved(from, to string, now time.Time) bool {
	if strings.EqualFold(from, to) {
		return true
	}
	ab := p.AgentBinary
	if ab == nil {
		return true
	}
	d := strings.ToLower(to)
	if contains(ab.Allow, d) {
		return true
	}
	for _, w := range ab.Windows {
		if contains(w.Allow, d) && w.Contains(now) {
			return true
		}
	}
	return false
}

// BPFSetApproved reports whether a window open now rolls out build to and
// lists, in its build manifest (ebpf_objects), the object of every program
// in objects (program name to object digest). A program without an object
// digest, or a window without a manifest, approves nothing.
func (p *Policy) BPFSetApproved(to string, objects map[string]string, now time.Time) bool {
	ab := p.AgentBinary
	if ab == nil || len(objects) == 0 {
		// An empty set is a build that dropped every program: never a
		// rollout (programs the fleet needs are the ebpf section's
		// require blocks).
		return false
	}
	d := strings.ToLower(to)
	for _, w := range ab.Windows {
		if !w.Contains(now) || !contains(w.Allow, d) || len(w.EBPFObjects) == 0 {
			continue
		}
		ok := true
		for _, obj := range objects {
			if obj == "" || !contains(w.EBPFObjects, strings.ToLower(obj)) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (e *evaluator) agentBinary(ev Evidence, now time.Time) {
	ab := e.p.AgentBinary
	if ab == nil {
		return
	}
	if ev.Runtime == nil || ev.Runtime.AgentBinarySHA256 == "" {
		e.fail(ab.Rule, "the agent binary was not measured (no verified runtime evidence)")
		return
	}
	if ab.RequireLauncher {
		bs := ev.Runtime.AgentBinaries
		switch {
		case len(bs) == 0:
			e.fail(ab.Rule, "the evidence does not say how the agent binary was measured, and this policy requires the launcher (require_launcher)")
			return
		case bs[len(bs)-1].SelfMeasured:
			e.fail(ab.Rule, "agent binary %s measured itself: it was not started through pulse-agent launch, which this policy requires (require_launcher)",
				strings.ToLower(bs[len(bs)-1].SHA256))
			return
		}
	}
	// Every build measured in this boot must be approved, not only the
	// latest: a record cannot be taken back out of the runtime PCR, so a
	// backdoored binary that later measures an approved digest is still
	// caught.
	for _, b := range ev.Runtime.AgentBinaries {
		if bd := strings.ToLower(b.SHA256); bd != strings.ToLower(ev.Runtime.AgentBinarySHA256) && !e.p.BinaryAllowed(bd, now) {
			e.fail(ab.Rule, "agent binary %s was measured earlier in this boot and is not an approved build (it stays in the runtime PCR until the next reboot)", bd)
			return
		}
	}
	d := strings.ToLower(ev.Runtime.AgentBinarySHA256)
	if !e.p.BinaryAllowed(d, now) {
		for _, w := range ab.Windows {
			if contains(w.Allow, d) {
				e.fail(ab.Rule, "agent binary %s is approved only from update window %q, which opens at %s",
					d, w.Name, w.Start.UTC().Format(time.RFC3339))
				return
			}
		}
		e.fail(ab.Rule, "agent binary %s is not an approved build", d)
		return
	}
	prev := strings.ToLower(ev.Runtime.PreviousAgentBinarySHA256)
	if prev != "" && prev != d && !e.p.BinaryChangeApproved(prev, d, now) {
		e.fail(ab.Rule, "agent binary changed from %s to %s outside its approved update window", prev, d)
	}
}

func (e *evaluator) ebpf(ev Evidence) {
	eb := e.p.EBPF
	if eb == nil {
		return
	}
	if ev.Runtime == nil {
		e.fail(eb.Rule, "no verified runtime evidence, so the loaded eBPF programs are unknown")
		return
	}
	progs := ev.Runtime.BPFPrograms
	required := map[string]bool{}
	for _, r := range eb.Required {
		required[r.Name] = true
		d, ok := progs[r.Name]
		if !ok {
			e.fail(r.Rule, "required eBPF program %q is not loaded", r.Name)
			continue
		}
		if len(r.Digests) > 0 && !contains(r.Digests, strings.ToLower(d)) {
			e.fail(r.Rule, "eBPF program %q has digest %s, which is not an approved build", r.Name, strings.ToLower(d))
		}
	}
	names := make([]string, 0, len(progs))
	for n := range progs {
		names = append(names, n)
	}
	sort.Strings(names)
	var unlisted []string
	for _, n := range names {
		if required[n] {
			continue
		}
		d := strings.ToLower(progs[n])
		var match *Program
		for i := range eb.Allowed {
			if Glob(eb.Allowed[i].Name, n) {
				match = &eb.Allowed[i]
				break
			}
		}
		switch {
		case match == nil && !eb.AllowUnlisted:
			unlisted = append(unlisted, fmt.Sprintf("%q (%s)", n, d))
		case match != nil && len(match.Digests) > 0 && !contains(match.Digests, d):
			e.fail(match.Rule, "eBPF program %q has digest %s, which is not an approved build", n, d)
		}
	}
	if len(unlisted) > 0 {
		e.fail(eb.Rule, "%s not listed in require or allow: %s", plural(len(unlisted), "eBPF program"), strings.Join(unlisted, ", "))
	}
}

func (e *evaluator) fortress(ev Evidence) {
	r := e.p.Fortress
	if r == nil {
		return
	}
	switch {
	case ev.Runtime == nil:
		e.fail(*r, "no verified runtime evidence, so Fortress's state is unknown")
	case !ev.Runtime.FortressActive:
		e.fail(*r, "Fortress is not active (the BPF-LSM guard is not attached)")
	}
}
