package policy

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Sentinel is the sentinel block: how the verifier judges what Sentinel
// recorded about the agent (docs/policy.md, "sentinel").
//
//	sentinel {
//	  mode           = "enforce"
//	  signals        = ["SIGKILL", "SIGSTOP"]
//	  signal_senders = ["systemd"]
//	  bpf_loaders    = ["systemd", "bpftool"]
//	  allow_lost     = false
//	}
//
// Without the block the defaults apply (DefaultSentinel): enforced at
// severity 1, SIGKILL and SIGSTOP from anyone but the service manager, any
// eBPF program load by another process than the agent, and any lost or
// missing record are findings.
//
// An enforced violation makes the verdict UNTRUSTED with its own reason;
// the alert's kind and severity are the reason's (verifier/alert), and
// isolation follows on_failure. Severity is that of the findings a rule in
// warn mode adds.
type Sentinel struct {
	Rule
	// Signals are the signal names that are a finding when sent to the
	// agent by anyone but the service manager (PID 1, or the manager the
	// agent measured it configured) or a sender SignalSenders allows.
	Signals []string
	// SignalSenders are globs over the sender's command name (comm) whose
	// signals are allowed. The name is what the kernel reported about the
	// sending process: root on the device can choose it.
	SignalSenders []string
	// BPFLoaders are globs over the command name of processes allowed to
	// load eBPF programs (the agent's own loads are always allowed).
	BPFLoaders []string
	// AllowLost makes lost records and gaps in Sentinel's sequence a
	// warning rather than the rule's mode.
	AllowLost bool
	// Default is true for the built-in defaults (no block in the policy).
	Default bool
}

// DefaultSentinelSignals are the signals a sentinel rule watches unless it
// says otherwise: the two the agent can neither catch nor report.
var DefaultSentinelSignals = []string{"SIGKILL", "SIGSTOP"}

// DefaultSentinel is the rule a policy without a sentinel block applies.
func DefaultSentinel() Sentinel {
	return Sentinel{Rule: Rule{Name: "sentinel", Mode: Enforce, Severity: SeverityCritical}, Signals: DefaultSentinelSignals, Default: true}
}

// SentinelRule returns the policy's sentinel rule, or DefaultSentinel.
func (p *Policy) SentinelRule() Sentinel {
	if p == nil || p.Sentinel == nil {
		return DefaultSentinel()
	}
	return *p.Sentinel
}

// SentinelClass is what kind of violation a Sentinel finding is.
type SentinelClass int

const (
	// SentinelSignalled: the agent was signalled (or Fortress refused a
	// signal to it) by a sender the rule does not allow.
	SentinelSignalled SentinelClass = iota + 1
	// SentinelForeignLoad: a process other than the agent loaded an eBPF
	// program and the rule does not allow it.
	SentinelForeignLoad
)

// SentinelEvent is one Sentinel record as the policy judges it.
type SentinelEvent struct {
	Seq uint64
	// Kind is "signal", "bpf_load", "fortress_denied" or "exit".
	Kind       string
	SenderPID  uint32
	SenderUID  uint32
	SenderComm string
	Signal     int
	Detail     string
}

// SentinelContext is what the verifier knows independently of the events:
// the agent processes and the service manager the TPM-bound runtime log
// measured for this boot.
type SentinelContext struct {
	// AgentPIDs are the agent tgids measured this boot; CurrentAgent the
	// latest. Only the current agent's loads are its own: an earlier
	// agent's count as its own only before Sentinel recorded its exit in
	// the same batch (after it, root can be handed the dead agent's PID).
	AgentPIDs    []uint32
	CurrentAgent uint32
	ManagerPID   uint32
}

// agentLoad reports whether e, an eBPF load, is one of the agents' own.
func (c SentinelContext) agentLoad(e SentinelEvent, exits map[uint32]uint64) bool {
	if e.SenderPID == 0 || !slicesContains(c.AgentPIDs, e.SenderPID) {
		return false
	}
	if e.SenderPID == c.CurrentAgent {
		return true
	}
	exit, ok := exits[e.SenderPID]
	return ok && e.Seq < exit
}

// SentinelViolation is one event the rule does not allow.
type SentinelViolation struct {
	Class   SentinelClass
	Event   SentinelEvent
	Message string
}

// JudgeEvents returns the events s does not allow, in order.
func (s Sentinel) JudgeEvents(evs []SentinelEvent, c SentinelContext) []SentinelViolation {
	var out []SentinelViolation
	exits := map[uint32]uint64{}
	for _, e := range evs {
		if _, seen := exits[e.SenderPID]; e.Kind == "exit" && !seen {
			exits[e.SenderPID] = e.Seq
		}
	}
	for _, e := range evs {
		switch e.Kind {
		case "signal", "fortress_denied":
			name := SignalName(e.Signal)
			if !containsFold(s.Signals, name) || s.senderAllowed(e, c) {
				continue
			}
			verb := "sent"
			if e.Kind == "fortress_denied" {
				verb = "tried to send (Fortress refused)"
			}
			out = append(out, SentinelViolation{Class: SentinelSignalled, Event: e,
				Message: fmt.Sprintf("%s the agent %s: %s", Sender(e), verb, name)})
		case "bpf_load":
			if c.agentLoad(e, exits) || matchesAny(s.BPFLoaders, e.SenderComm) {
				continue
			}
			out = append(out, SentinelViolation{Class: SentinelForeignLoad, Event: e,
				Message: fmt.Sprintf("%s loaded an eBPF program (%s)", Sender(e), strings.TrimSpace(e.Detail))})
		}
	}
	return out
}

// Sender names an event's sender: pid, command name and uid.
func Sender(e SentinelEvent) string {
	return fmt.Sprintf("pid %d (%q, uid %d)", e.SenderPID, e.SenderComm, e.SenderUID)
}

func (s Sentinel) senderAllowed(e SentinelEvent, c SentinelContext) bool {
	if e.SenderPID == 1 || (c.ManagerPID != 0 && e.SenderPID == c.ManagerPID) {
		return true
	}
	return matchesAny(s.SignalSenders, e.SenderComm)
}

func matchesAny(pats []string, s string) bool {
	if s == "" {
		return false
	}
	for _, p := range pats {
		if Glob(p, s) {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func slicesContains(list []uint32, v uint32) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// linuxSignals are Linux's signal numbers (x86, arm64 and the other
// architectures with the generic numbering).
var linuxSignals = map[string]int{
	"SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6, "SIGBUS": 7, "SIGFPE": 8,
	"SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12, "SIGPIPE": 13, "SIGALRM": 14, "SIGTERM": 15,
	"SIGSTKFLT": 16, "SIGCHLD": 17, "SIGCONT": 18, "SIGSTOP": 19, "SIGTSTP": 20, "SIGTTIN": 21, "SIGTTOU": 22,
	"SIGURG": 23, "SIGXCPU": 24, "SIGXFSZ": 25, "SIGVTALRM": 26, "SIGPROF": 27, "SIGWINCH": 28, "SIGIO": 29,
	"SIGPWR": 30, "SIGSYS": 31,
}

// SignalName names a Linux signal number ("SIGKILL"), or "signal N".
func SignalName(n int) string {
	for name, v := range linuxSignals {
		if v == n {
			return name
		}
	}
	return fmt.Sprintf("signal %d", n)
}

func (d *decoder) sentinel(blk *hclsyntax.Block, base settings) *Sentinel {
	file := blk.TypeRange.Filename
	// No isolate: an enforced violation is an UNTRUSTED verdict with its
	// own reason, isolated as on_failure says (like every such reason).
	b := d.content(blk.Body, "sentinel", []string{"mode", "severity", "signals", "signal_senders", "bpf_loaders", "allow_lost"}, nil)
	s := &Sentinel{Rule: d.settings(b, settings{mode: Enforce, severity: SeverityCritical, isolate: base.isolate}).rule("sentinel", blk.TypeRange.Start, file),
		Signals: DefaultSentinelSignals}
	if a := b.attrs["signals"]; a != nil {
		if items, ok := d.strList(a); ok {
			s.Signals = nil
			for _, it := range items {
				name := strings.ToUpper(it.s)
				if _, known := linuxSignals[name]; !known {
					known := make([]string, 0, len(linuxSignals))
					for n := range linuxSignals {
						known = append(known, n)
					}
					sort.Strings(known)
					d.errorf(it.rng, fmt.Sprintf("unknown signal %q", it.s), "use a Linux signal name: %s", strings.Join(known, ", "))
					continue
				}
				s.Signals = append(s.Signals, name)
			}
		}
	}
	for key, dst := range map[string]*[]string{"signal_senders": &s.SignalSenders, "bpf_loaders": &s.BPFLoaders} {
		a := b.attrs[key]
		if a == nil {
			continue
		}
		items, ok := d.strList(a)
		if !ok {
			continue
		}
		for _, it := range items {
			if err := ValidateGlob(it.s); err != nil {
				d.errorf(it.rng, fmt.Sprintf("bad glob %q in %q", it.s, key), "%s; * matches any run, ? one character, [a-z] a range, \\ escapes",
					err.(*GlobError).Detail())
				continue
			}
			if it.s == "" || len(it.s) > MaxStopSenderLen && !hasMeta(it.s) {
				d.errorf(it.rng, fmt.Sprintf("%s entry %q can never match", key, it.s),
					"entries match the process's command name as the kernel records it (comm: 1 to 15 characters, e.g. \"systemd\")")
				continue
			}
			*dst = append(*dst, it.s)
		}
	}
	if a := b.attrs["allow_lost"]; a != nil {
		s.AllowLost, _ = d.boolean(a)
	}
	return s
}
