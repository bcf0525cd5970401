package policy

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// DeriveOptions tune Derive.
type DeriveOptions struct {
	// Name is the policy's name; default "derived-<agent ID>" or "derived".
	Name string
	// Source is a note for the header comment (e.g. the evidence path).
	Source string
}

// Derive writes a starting policy from a known-good device's evidence: its
// Secure Boot state, its runtime PCR's pre-OS history, the UEFI images and (when PCR 9 was verified) the
// files GRUB loaded, its agent binary, its eBPF programs and Fortress. The
// result passes that evidence and pins exactly what the device ran; it is
// meant for a human to review, widen and commit. The output always loads
// (Derive parses it before returning).
func Derive(ev Evidence, opts DeriveOptions) ([]byte, error) {
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	if ev.Boot == nil && ev.Runtime == nil {
		return nil, fmt.Errorf("policy: derive: the evidence holds neither a verified firmware log nor runtime evidence, so there is nothing to derive rules from")
	}
	name := opts.Name
	if name == "" {
		name = "derived"
		if ev.AgentID != "" {
			name = "derived-" + ev.AgentID
		}
	}
	if !policyName(name) {
		return nil, fmt.Errorf("policy: derive: bad policy name %q (use 1 to 64 letters, digits, '-', '_' or '.'; set one with --name)", name)
	}
	w := &hclWriter{}
	w.line("# Starting policy derived by `pulsectl policy derive` from one known-good")
	w.line("# device's verified evidence.")
	if opts.Source != "" {
		w.line("# Evidence: %s", comment(opts.Source))
	}
	if ev.AgentID != "" || ev.Partition != "" {
		w.line("# Agent %q in partition %q.", comment(ev.AgentID), comment(ev.Partition))
	}
	if !ev.RecordedAt.IsZero() {
		w.line("# Recorded at %s.", ev.RecordedAt.UTC().Format(time.RFC3339))
	}
	w.line("#")
	w.line("# Review every rule before deploying it: this pins exactly what that one")
	w.line("# device ran. Widen the match, add the digests of the other builds you")
	w.line("# approve, and delete what you do not want enforced. Text after a digest")
	w.line("# is a hint copied from the event data, which is not itself evidence.")
	w.line("")
	w.open("policy %q", name)

	w.line("# Which agents this policy covers; the first matching policy wins.")
	w.open("match")
	w.line("partitions = [%q]", globLiteral(ev.Partition))
	w.line("agents     = [%q]", globLiteral(ev.AgentID))
	w.close()
	w.line("")
	if ev.TPM {
		w.line("# The device attested with a TPM quote; refuse mTLS-only pulses.")
		w.line("tpm = %q", "required")
	} else {
		w.line("# The device attested without a TPM (mTLS only). \"optional\" accepts that as")
		w.line("# weaker trust; use \"required\" once the fleet has TPMs.")
		w.line("tpm = %q", "optional")
	}
	w.line("")
	w.open("heartbeat")
	w.line("interval = %q", fmtDuration(DefaultHeartbeatInterval))
	w.line("missed   = %d", DefaultMissedPulses)
	w.close()

	if ev.Boot != nil {
		w.line("")
		deriveBoot(w, ev.Boot)
	} else {
		w.line("")
		w.line("# No verified firmware log was in the evidence, so no measured_boot rules.")
	}
	if r := ev.Runtime; r != nil {
		deriveRuntime(w, r)
	} else {
		w.line("")
		w.line("# No runtime evidence, so no agent_binary, ebpf or fortress rules.")
	}
	w.line("")
	w.line("# Findings are severity 2 (high) unless a rule says otherwise; isolation")
	w.line("# is off until you have watched the policy in warn mode.")
	w.open("on_failure")
	w.line("severity = %d", DefaultSeverity)
	w.line("isolate  = false")
	w.close()
	w.close()

	out := []byte(w.b.String())
	if _, diags := Parse("derived.hcl", out); diags.HasErrors() {
		return nil, fmt.Errorf("policy: derive produced a policy that does not load (a bug):\n%s", DiagnosticsText(diags, []Source{{Name: "derived.hcl", Bytes: out}}))
	}
	return out, nil
}

func deriveBoot(w *hclWriter, b *BootEvidence) {
	w.line("# Measured boot: checked against the firmware event log replayed against")
	w.line("# the quoted PCRs.")
	w.open("measured_boot")
	w.line("bank = %q", b.Bank)
	w.line("")
	switch {
	case b.SecureBoot != nil && *b.SecureBoot:
		w.line("# Secure Boot was on.")
		w.line("secure_boot {}")
	case b.SecureBoot != nil:
		w.line("# Secure Boot was OFF on this device, so no secure_boot rule was derived.")
		w.line("# Turn it on in the firmware and add: secure_boot {}")
	default:
		w.line("# The Secure Boot state was not in the verified evidence (PCR 7).")
	}

	w.line("")
	if h := b.RuntimePCRHistory; h != nil {
		w.line("# What the boot measured into the runtime PCR before the OS: shim's MOK")
		w.line("# variables, nothing without shim. Any other history fails: it could be")
		w.line("# runtime records passed off as pre-OS measurements.")
		quoted := make([]string, len(h))
		for i, n := range h {
			quoted[i] = fmt.Sprintf("%q", n)
		}
		w.line("runtime_pcr_history = [%s]", strings.Join(quoted, ", "))
	} else {
		w.line("# The evidence does not say what the boot measured into the runtime PCR, so")
		w.line("# no runtime_pcr_history rule was derived.")
	}

	var firmware []int
	for _, p := range firmwarePCRs {
		if _, ok := b.PCRs[p]; ok {
			firmware = append(firmware, p)
		}
	}
	images := Components{Types: DefaultComponentTypes, PCRs: firmware}
	imgEvents := pick(b.Events, images)
	w.line("")
	if len(firmware) == 0 {
		w.line("# PCRs 0-7 were not verified, so no boot components were derived.")
	} else if len(imgEvents) == 0 {
		w.line("# The firmware loaded no UEFI application or driver that it measured.")
	} else {
		w.line("# UEFI applications and drivers the firmware loaded: boot manager, shim,")
		w.line("# boot loader, option ROMs. Any other image fails this rule.")
		w.open("allow %q", "boot-components")
		if len(firmware) != len(firmwarePCRs) {
			w.line("pcrs    = %s", intList(firmware))
		}
		writeDigests(w, imgEvents)
		w.close()
	}

	if _, ok := b.PCRs[9]; ok {
		files := pick(b.Events, Components{Types: []string{"EV_IPL"}, PCRs: []int{9}})
		if len(files) > 0 {
			w.line("")
			w.line("# Files the boot loader measured into PCR 9 (kernel, initrd).")
			w.open("allow %q", "kernel-and-initrd")
			w.line("types   = [%q]", "EV_IPL")
			w.line("pcrs    = [9]")
			writeDigests(w, files)
			w.close()
		}
	}

	idx := make([]int, 0, len(b.PCRs))
	for i := range b.PCRs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	if len(idx) > 0 {
		w.line("")
		w.line("# This device's PCR values. Pinning a PCR rejects every firmware, Secure")
		w.line("# Boot database or boot configuration update until the new value is added,")
		w.line("# so they are left commented out. PCR 7 (Secure Boot policy) is the usual")
		w.line("# candidate.")
		for _, i := range idx {
			w.line("# pcr %q { values = [%q] }", fmt.Sprint(i), strings.ToLower(b.PCRs[i]))
		}
	}
	w.close()
}

func deriveRuntime(w *hclWriter, r *RuntimeEvidence) {
	if r.AgentBinarySHA256 != "" {
		w.line("")
		w.line("# The agent binary this device ran. Add the next release here (or in an")
		w.line("# update_window) before rolling it out.")
		w.open("agent_binary")
		w.line("allow = [%q]", strings.ToLower(r.AgentBinarySHA256))
		w.close()
	}
	w.line("")
	w.line("# eBPF programs pinned by the agent. Any other pinned program fails the rule.")
	w.open("ebpf")
	names := make([]string, 0, len(r.BPFPrograms))
	for n := range r.BPFPrograms {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		if i > 0 {
			w.line("")
		}
		if isLiteral(n) {
			w.open("require %q", n)
		} else {
			// A name with glob characters cannot be a require label;
			// an escaped allow pattern still pins it to its digest.
			w.line("# %q has glob characters, so it is allowed (not required) here.", comment(n))
			w.open("allow %q", globLiteral(n))
		}
		w.line("digests = [%q]", strings.ToLower(r.BPFPrograms[n]))
		w.close()
	}
	if len(names) == 0 {
		w.line("# No program was pinned; any pinned program will fail this rule.")
	}
	w.close()
	w.line("")
	if r.FortressActive {
		w.line("# Fortress (the BPF-LSM guard) was active.")
		w.line("fortress {}")
	} else {
		w.line("# Fortress was not active on this device (the kernel may refuse BPF-LSM),")
		w.line("# so it is only warned about. Make it enforce once your kernels allow it.")
		w.open("fortress")
		w.line("mode = %q", "warn")
		w.close()
	}
}

// pick returns the events a component rule selects, first of each digest.
func pick(evs []BootEvent, c Components) []BootEvent {
	var out []BootEvent
	seen := map[string]bool{}
	for _, e := range evs {
		d := strings.ToLower(e.Digest)
		if c.selects(e) && !seen[d] {
			seen[d] = true
			out = append(out, e)
		}
	}
	return out
}

func writeDigests(w *hclWriter, evs []BootEvent) {
	w.open("digests = [")
	for _, e := range evs {
		note := fmt.Sprintf("PCR %d %s, event %d", e.PCR, e.Type, e.Seq)
		if e.Note != "" {
			note += ": " + e.Note
		}
		w.line("%q, # %s", strings.ToLower(e.Digest), comment(note))
	}
	w.closeWith("]")
}

func intList(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// comment makes text safe for the rest of a # comment line: printable ASCII
// only, so data from a device's log can never end the comment and inject a
// rule into the reviewed policy.
func comment(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= 100 {
			b.WriteString("...")
			break
		}
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}

// globLiteral escapes a name so it matches only itself; "" becomes "*".
func globLiteral(s string) string {
	if s == "" {
		return "*"
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

type hclWriter struct {
	b      strings.Builder
	indent int
}

func (w *hclWriter) line(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if s != "" {
		w.b.WriteString(strings.Repeat("  ", w.indent))
		w.b.WriteString(s)
	}
	w.b.WriteByte('\n')
}

func (w *hclWriter) open(format string, args ...any) {
	head := fmt.Sprintf(format, args...)
	if !strings.HasSuffix(head, "[") {
		head += " {"
	}
	w.line("%s", head)
	w.indent++
}

func (w *hclWriter) close() { w.closeWith("}") }

func (w *hclWriter) closeWith(s string) {
	w.indent--
	w.line("%s", s)
}
