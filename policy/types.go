package policy

import (
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Mode says what a failed rule does: Enforce denies the agent, Warn only
// reports.
type Mode int

// Rule modes.
const (
	Enforce Mode = iota + 1
	Warn
)

func (m Mode) String() string {
	switch m {
	case Enforce:
		return "enforce"
	case Warn:
		return "warn"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// MarshalText writes "enforce" or "warn".
func (m Mode) MarshalText() ([]byte, error) {
	if m != Enforce && m != Warn {
		return nil, fmt.Errorf("policy: invalid mode %d", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText reads "enforce" or "warn".
func (m *Mode) UnmarshalText(b []byte) error {
	switch string(b) {
	case "enforce":
		*m = Enforce
	case "warn":
		*m = Warn
	default:
		return fmt.Errorf("policy: invalid mode %q (want enforce or warn)", b)
	}
	return nil
}

// TPMMode says whether an agent must attest with a TPM quote.
type TPMMode int

// TPM modes.
const (
	// TPMRequired: every pulse must carry a verified quote; an mTLS-only
	// pulse is denied.
	TPMRequired TPMMode = iota + 1
	// TPMOptional: a quote is verified when sent; an mTLS-only pulse is
	// accepted as weaker trust (Result.Degraded).
	TPMOptional
	// TPMNone: the agents have no TPM; pulses are mTLS-only (Degraded).
	TPMNone
)

func (m TPMMode) String() string {
	switch m {
	case TPMRequired:
		return "required"
	case TPMOptional:
		return "optional"
	case TPMNone:
		return "none"
	}
	return fmt.Sprintf("tpm(%d)", int(m))
}

// Severities of findings and alerts: 1 is the most severe.
const (
	SeverityCritical = 1
	SeverityHigh     = 2
	SeverityMedium   = 3
	SeverityLow      = 4
)

// Defaults applied when a policy leaves a setting out (docs/policy.md).
const (
	DefaultSeverity          = SeverityHigh
	DefaultClockSkew         = 30 * time.Second
	DefaultHeartbeatInterval = 30 * time.Second
	DefaultMissedPulses      = 3
	DefaultGrace             = 5 * time.Minute
	DefaultBank              = "sha256"
)

// Pos is a place in a policy file.
type Pos struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
}

// String returns "file:line".
func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Rule is what every checkable rule has: a stable name (the HCL path of its
// block, e.g. `measured_boot.forbid["boothole"]`), where it is written, and
// what a failure does.
type Rule struct {
	Name     string
	Pos      Pos
	Mode     Mode
	Severity int
	Isolate  bool
}

// Match selects agents by glob patterns (see Glob). An agent is selected
// when its partition matches one of Partitions and its ID one of Agents.
type Match struct {
	Partitions []string
	Agents     []string
	Pos        Pos
}

// Heartbeat is the pulse schedule the verifier enforces.
type Heartbeat struct {
	// Interval between pulses the agent is told to keep.
	Interval time.Duration
	// Missed is how many consecutive pulses may be missing before the
	// agent is BLINDED.
	Missed int
	// Grace is extra time after a verifier (re)start before silence counts.
	Grace time.Duration
}

// Deadline is how long an agent may stay silent: Interval × Missed.
func (h Heartbeat) Deadline() time.Duration { return h.Interval * time.Duration(h.Missed) }

// Action is the policy-wide default for failures (the on_failure block).
type Action struct {
	Severity int
	Isolate  bool
}

// AgentBinary lists the agent binaries (SHA-256 of the file) a policy accepts.
type AgentBinary struct {
	Rule
	// Allow are always accepted.
	Allow []string
	// Windows are staged updates: each window's digests are accepted from
	// its Start on, and an agent may switch to them only between Start and End.
	Windows []UpdateWindow
	// RequireLauncher refuses a running agent binary that measured itself
	// instead of being measured by pulse-agent launch before it ran.
	RequireLauncher bool
}

// UpdateWindow is an approved time range for an agent update.
type UpdateWindow struct {
	Name       string
	Pos        Pos
	Start, End time.Time
	Allow      []string
	// EBPFObjects is the build manifest of the builds the window rolls
	// out: the SHA-256 digests of the eBPF objects they ship (pulse-agent
	// manifest prints them). A new build may bring a new eBPF program set
	// only when every measured program came from one of these objects; a
	// window without it approves builds that keep the programs they had.
	EBPFObjects []string
}

// Contains reports whether t is within [Start, End).
func (w UpdateWindow) Contains(t time.Time) bool {
	return !t.Before(w.Start) && t.Before(w.End)
}

// EBPF is the eBPF program rule set.
type EBPF struct {
	// Rule is the section's own rule: it reports programs no require or
	// allow block lists (unless AllowUnlisted).
	Rule
	AllowUnlisted bool
	Required      []Program
	Allowed       []Program
}

// Program is one require or allow block of the ebpf section.
type Program struct {
	Rule
	// Name is the pinned program name (a Glob pattern in allow blocks).
	Name string
	// Digests are the accepted instruction SHA-256 digests; empty = any.
	Digests []string
}

// MeasuredBoot holds the boot rules, checked against replayed firmware events.
type MeasuredBoot struct {
	Pos Pos
	// Bank is the PCR bank the digests are written in ("sha256" or "sha1").
	Bank       string
	SecureBoot *Rule
	// RuntimePCRHistory is nil when the section has no runtime_pcr_history.
	RuntimePCRHistory *RuntimePCRHistoryRule
	PCRs              []PCRRule
	Allow             []Components
	Forbid            []Components
}

// RuntimePCRHistoryRule is the runtime_pcr_history attribute: exactly which
// pre-OS measurements the runtime PCR may hold. The verifier replays the
// runtime log from the value those measurements left, and nothing but that
// replay binds their digests, so root could pass off runtime records as
// extra MOK measurements; naming the boot chain's real ones closes that.
type RuntimePCRHistoryRule struct {
	// Rule is named "measured_boot.runtime_pcr_history" and takes the
	// section's mode, severity and isolate.
	Rule
	// Names are MOKVariables in log order; empty means no pre-OS
	// measurement (a device booted without shim).
	Names []string
}

// Components is an allow or forbid block: boot events selected by type and
// PCR, and the digests allowed (allow) or forbidden (forbid) for them.
type Components struct {
	Rule
	Label string
	// Types are event type names (EV_...); empty = every type.
	Types []string
	// PCRs restricts the events to these PCRs; empty = every PCR.
	PCRs    []int
	Digests []string
	// Reason is the team's explanation, quoted in findings.
	Reason string
}

// PCRRule pins a PCR to one of several values.
type PCRRule struct {
	Rule
	Index  int
	Values []string
}

// Policy is one named policy block.
type Policy struct {
	Name  string
	Pos   Pos
	Match Match
	// TPM is the required attestation mode; TPMRule locates the tpm attribute.
	TPM       TPMMode
	TPMRule   Rule
	ClockSkew time.Duration
	Heartbeat Heartbeat
	OnFailure Action
	// Sections left out of the file are nil.
	AgentBinary  *AgentBinary
	EBPF         *EBPF
	Fortress     *Rule
	MeasuredBoot *MeasuredBoot
	// Clock judges the agent's clock discipline (clock.go).
	Clock *Clock
	// PlannedStop says what an orderly stop of the agent means (stop.go);
	// nil: the defaults (no sender allowed, DefaultMaxOffline).
	PlannedStop *PlannedStop
	// Sentinel judges Sentinel's records (sentinel.go); nil: DefaultSentinel.
	Sentinel *Sentinel

	setDigest string
	nameRange hcl.Range
}

// Digest is the digest of the Set the policy was loaded from.
func (p *Policy) Digest() string { return p.setDigest }

// Finding is one failed rule.
type Finding struct {
	Policy   string `json:"policy"`
	Rule     string `json:"rule"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	Mode     Mode   `json:"mode"`
	Severity int    `json:"severity"`
	Isolate  bool   `json:"isolate,omitempty"`
	Message  string `json:"message"`
}

// Where returns "file:line" of the rule, or "" when the finding has no rule
// location (an agent no policy selects).
func (f Finding) Where() string {
	if f.File == "" {
		return ""
	}
	return fmt.Sprintf("%s:%d", f.File, f.Line)
}

func (f Finding) String() string {
	where := f.Where()
	if where != "" {
		where = " (" + where + ")"
	}
	return fmt.Sprintf("%s %s%s severity %d: %s", f.Mode, f.Rule, where, f.Severity, f.Message)
}

// Skipped is a rule that was not evaluated because the policy explicitly
// accepts agents without the evidence it needs (tpm = "optional" or "none"
// and a pulse without TPM evidence).
type Skipped struct {
	Rule   string `json:"rule"`
	File   string `json:"file"`
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}

// Result is the outcome of evaluating evidence against a policy.
type Result struct {
	// Policy is the selected policy's name ("" when none matched).
	Policy       string    `json:"policy"`
	PolicyPos    Pos       `json:"policy_pos"`
	PolicyDigest string    `json:"policy_digest"`
	Findings     []Finding `json:"findings"`
	Skipped      []Skipped `json:"skipped,omitempty"`
	// Denied is true when any finding is in enforce mode.
	Denied bool `json:"denied"`
	// Isolate is true when a denied finding asks for the agent to be isolated.
	Isolate bool `json:"isolate"`
	// Degraded is true when the agent was accepted without TPM evidence
	// (tpm = "optional" or "none").
	Degraded bool `json:"degraded"`
}

// Verdict returns "deny" or "allow".
func (r Result) Verdict() string {
	if r.Denied {
		return "deny"
	}
	return "allow"
}

// MaxSeverity returns the most severe (lowest) severity among the findings
// in the given mode, or 0 when there is none.
func (r Result) MaxSeverity(m Mode) int {
	best := 0
	for _, f := range r.Findings {
		if f.Mode == m && (best == 0 || f.Severity < best) {
			best = f.Severity
		}
	}
	return best
}
