package admin

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/pulse-attest/pulse/verifier/audit"
)

// Errors a Backend returns (wrapped or not) to choose the HTTP status.
// Anything else is a 500 whose detail is logged, not sent.
var (
	// ErrNotFound: no such agent or alert (404).
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request is well-formed JSON but the backend refuses
	// its content (400); the error text is sent to the operator.
	ErrInvalid = errors.New("invalid request")
	// ErrConflict: the action conflicts with the current state, e.g.
	// acknowledging an alert already acknowledged (409).
	ErrConflict = errors.New("conflict")
)

// Backend is what the admin API reads and changes. The verifier implements
// it over its store; tests use a fake. Methods must be safe for concurrent
// use. The "by" arguments are the authenticated operator: the operator
// certificate's ID, or "token".
type Backend interface {
	// ListAgents returns every enrolled agent.
	ListAgents(ctx context.Context) ([]AgentStatus, error)
	// GetAgent returns one agent with its recent history; ErrNotFound when
	// it is not enrolled.
	GetAgent(ctx context.Context, id string) (*AgentDetail, error)
	// ListAlerts returns alerts, newest first, filtered.
	ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error)
	// AckAlert acknowledges an alert; ErrNotFound if unknown, ErrConflict
	// if already acknowledged.
	AckAlert(ctx context.Context, id, by string) error
	// ApproveUpdate allows an agent binary digest on the agents matching the
	// globs during [Start, End).
	ApproveUpdate(ctx context.Context, u UpdateApproval) error
	// Release lifts the quarantine of an address (IP or CIDR) fleet-wide;
	// ErrNotFound if it is not quarantined.
	Release(ctx context.Context, address, by string) error
	// Quarantined lists the quarantined addresses.
	Quarantined(ctx context.Context) ([]Quarantine, error)
	// ListUpdates returns the update approval windows not yet ended
	// (open or scheduled), by start.
	ListUpdates(ctx context.Context) ([]UpdateApproval, error)
	// RecordAction appends an operator action to the audit chain (a no-op
	// when no audit log is configured). An error means the action is not
	// on the record.
	RecordAction(ctx context.Context, rec audit.Record) error
}

// Trust levels of AgentStatus.Trust.
const (
	TrustTPM      = "tpm"
	TrustMTLSOnly = "mtls-only"
)

// AgentStatus is one agent as the dashboard lists it. Verdict and Reason are
// the proto enum names; the API sends them without their VERDICT_ / REASON_
// prefix (TRUSTED, POLICY_DENIED) whichever form the backend used.
type AgentStatus struct {
	ID           string    `json:"id"`
	Partition    string    `json:"partition"`
	Trust        string    `json:"trust"`
	Verdict      string    `json:"verdict"`
	Reason       string    `json:"reason"`
	Message      string    `json:"message"`
	LastPulse    time.Time `json:"last_pulse,omitzero"`
	Connected    bool      `json:"connected"`
	OpenAlerts   int       `json:"open_alerts"`
	PolicyDigest string    `json:"policy_digest"`
	Address      string    `json:"address"`
	// AgentVersion is the version the agent's last verified pulse
	// reported (a claim of the agent; empty before its first one).
	AgentVersion string `json:"agent_version"`
}

// HistoryEntry is one past verdict of an agent.
type HistoryEntry struct {
	At      time.Time `json:"at"`
	Verdict string    `json:"verdict"`
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
}

// Finding is one policy finding of an agent's last evaluated pulse.
type Finding struct {
	Rule     string `json:"rule"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	Enforce  bool   `json:"enforce"`
	Severity int    `json:"severity"`
	Message  string `json:"message"`
	// Expected is what the rule accepts (from the policy in force when the
	// verdict was decided); Seen what the verified evidence showed. Empty
	// for rules that judge sets: the message names what was seen.
	Expected string `json:"expected,omitempty"`
	Seen     string `json:"seen,omitempty"`
}

// AgentDetail is one agent with its history and last findings.
type AgentDetail struct {
	AgentStatus
	History []HistoryEntry `json:"history"`
	// Findings are the stored findings of the agent's last verdict
	// (FindingsAt is when it was first decided, Policy the policy that
	// judged it).
	Findings   []Finding `json:"findings"`
	FindingsAt time.Time `json:"findings_at,omitzero"`
	Policy     string    `json:"policy,omitempty"`
	// Evidence is the verified evidence of the agent's last verified pulse
	// (policy evidence JSON, docs/policy.md), at EvidenceAt; null when the
	// store holds none. EvidenceComplete is false when boot events were
	// left out to keep it within its bound (EvidenceDropped says what).
	Evidence         json.RawMessage `json:"evidence"`
	EvidenceAt       time.Time       `json:"evidence_at,omitzero"`
	EvidenceComplete bool            `json:"evidence_complete"`
	EvidenceDropped  string          `json:"evidence_dropped,omitempty"`
	// Identity from the verifier's records: the EK's SHA-256 and the AK's
	// TPM name (hex; empty for mTLS-only agents), when it enrolled, and
	// the version its last verified pulse reported (a claim).
	EKSHA256     string    `json:"ek_sha256,omitempty"`
	AKName       string    `json:"ak_name,omitempty"`
	EnrolledAt   time.Time `json:"enrolled_at,omitzero"`
	AgentVersion string    `json:"agent_version,omitempty"`
	// SentinelEvents are the last records Sentinel reported for the agent
	// (signals to it, eBPF loads, exits), newest first.
	SentinelEvents []SentinelEvent `json:"sentinel_events"`
	// Certificate is the agent's TLS client certificate as the handshake
	// of its last committed pulse verified it; nil before one.
	Certificate *Certificate `json:"certificate,omitempty"`
	// Kernel is what the agent's last verified pulse reported from the
	// kernel (eBPF snapshot, hook chains, Fortress, Sentinel), at
	// EvidenceAt; nil when the store holds none. A claim signed by the
	// agent's key and bound to the quote by the payload digest.
	Kernel *KernelSummary `json:"kernel,omitempty"`
	// UpdateWindows are the update windows that apply to the agent: the
	// operators' approvals whose globs match it (not ended) and the
	// agent_binary windows of the policy that selects it.
	UpdateWindows []AgentWindow `json:"update_windows"`
}

// CertExpiryWarning is how close to its NotAfter an agent certificate is
// marked as expiring soon.
const CertExpiryWarning = 14 * 24 * time.Hour

// Certificate is an agent's TLS certificate as the verifier saw it.
type Certificate struct {
	// Subject is the certificate's subject (RFC 2253, non-printable
	// characters escaped, clipped to 256 bytes).
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"not_after"`
	// ExpiresSoon is true when NotAfter is within CertExpiryWarning of
	// the verifier's clock; Expired when it has passed.
	ExpiresSoon bool `json:"expires_soon"`
	Expired     bool `json:"expired"`
}

// KernelSummary is the stored kernel summary of an agent's last verified
// pulse (the verifier's encoding, verifier/explain_identity.go): names,
// tags and problems, never kernel object IDs (they differ per host, the
// rest is shared by a fleet).
type KernelSummary struct {
	// Pinned are the programs pinned under the agent's bpffs directory,
	// with what is wrong with each live pin (empty: matches what the agent
	// loaded).
	Pinned []KernelPin `json:"pinned"`
	// Hooks are the attach points Pulse enforces and what the kernel runs
	// there, in order.
	Hooks []KernelHook `json:"hooks"`
	// HostPrograms is how many eBPF programs the host had loaded;
	// QuarantineCount how many addresses Shield's map held.
	HostPrograms    uint32          `json:"host_programs"`
	QuarantineCount uint32          `json:"quarantine_count"`
	Fortress        *KernelFortress `json:"fortress,omitempty"`
	Sentinel        *KernelSentinel `json:"sentinel,omitempty"`
	// Clipped says what was left out to keep the summary within its
	// bound ("" when nothing was).
	Clipped string `json:"clipped,omitempty"`
}

// KernelPin is one pinned program: pinned (what the agent loaded) vs.
// live (what the pin holds now).
type KernelPin struct {
	Name string `json:"name"`
	// Tag is the kernel's 8-byte program tag (hex).
	Tag string `json:"tag"`
	// InsnSHA256 is the SHA-256 of the instructions the agent loaded
	// (hex, 16 characters shown).
	InsnSHA256 string `json:"insn_sha256,omitempty"`
	// Problem is empty when the live pin is the program loaded; else
	// ProblemKind (MISSING, REPLACED, DETACHED, UNEXPECTED) and the
	// agent's description.
	ProblemKind string `json:"problem_kind,omitempty"`
	Problem     string `json:"problem,omitempty"`
}

// KernelHook is one attach point and its chain.
type KernelHook struct {
	Hook     string        `json:"hook"`
	Target   string        `json:"target"`
	Programs []KernelChain `json:"programs"`
	Error    string        `json:"error,omitempty"`
}

// KernelChain is one program of a hook chain, in the order the kernel
// runs them.
type KernelChain struct {
	Name string `json:"name"`
	Tag  string `json:"tag"`
	Type string `json:"type"`
	// Link is false for a legacy attachment (no link).
	Link bool `json:"link"`
}

// KernelFortress is Fortress's status as the agent read it.
type KernelFortress struct {
	Active    bool   `json:"active"`
	LSMListed bool   `json:"lsm_listed"`
	Loaded    bool   `json:"loaded"`
	Attached  bool   `json:"attached"`
	Reason    string `json:"reason,omitempty"`
	Tag       string `json:"tag,omitempty"`
}

// KernelSentinel summarises Sentinel as the agent read it from the kernel.
type KernelSentinel struct {
	// Lost is how many records the ring buffer dropped (the kernel's
	// count). Sequence numbers are not kept here (Sentinel events are).
	Lost uint64 `json:"lost"`
	// ConfigMatches is true when Sentinel's configured agent is the
	// agent's own process.
	ConfigMatches bool   `json:"config_matches"`
	Truncated     bool   `json:"truncated,omitempty"`
	Error         string `json:"error,omitempty"`
	// Events is how many Sentinel records the pulse carried.
	Events int `json:"events"`
}

// AgentWindow is one update window that applies to an agent.
type AgentWindow struct {
	// Source is "operator" (an approval through the API or pulsectl) or
	// "policy" (an agent_binary window of the policy selecting the agent).
	Source string `json:"source"`
	// Name is the approval's ID or the policy window's name; Where the
	// policy window's file:line.
	Name  string `json:"name"`
	Where string `json:"where,omitempty"`
	// Digests are the agent binaries the window allows.
	Digests []string  `json:"digests"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	// Open is true when the verifier's clock is within [Start, End).
	Open bool   `json:"open"`
	By   string `json:"by,omitempty"`
	// EBPFObjects is how many eBPF object digests a policy window's
	// manifest lists.
	EBPFObjects int `json:"ebpf_objects,omitempty"`
}

// SentinelEvent is one Sentinel record an agent reported in a committed
// pulse. Sender fields are what the kernel said about the sending process
// (its comm can be chosen by root on the device).
type SentinelEvent struct {
	Seq        uint64    `json:"seq"`
	Kind       string    `json:"kind"`
	At         time.Time `json:"at"`
	SenderPID  uint32    `json:"sender_pid"`
	SenderUID  uint32    `json:"sender_uid"`
	SenderComm string    `json:"sender_comm"`
	Signal     string    `json:"signal,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	// Finding is the reason the verifier judged it a finding, if any.
	Finding string `json:"finding,omitempty"`
}

// Alert is one raised alert.
type Alert struct {
	ID        string    `json:"id"`
	AgentID   string    `json:"agent_id"`
	Kind      string    `json:"kind"`
	Severity  int       `json:"severity"`
	Reason    string    `json:"reason"`
	Message   string    `json:"message"`
	CreatedAt time.Time `json:"created_at"`
	AckedAt   time.Time `json:"acked_at,omitzero"`
	AckedBy   string    `json:"acked_by,omitempty"`
}

// AlertFilter selects alerts. Zero values do not filter; Limit is always
// set by the API (default DefaultAlertLimit, at most MaxAlertLimit).
type AlertFilter struct {
	AgentID  string
	OpenOnly bool
	Limit    int
}

// Alert list limits.
const (
	DefaultAlertLimit = 100
	MaxAlertLimit     = 1000
)

// UpdateApproval allows an agent binary (by SHA-256) on the agents whose ID
// matches one of the globs (path.Match syntax) during [Start, End).
type UpdateApproval struct {
	// ID names the window (set by the API).
	ID     string    `json:"id,omitempty"`
	Digest string    `json:"digest"`
	Agents []string  `json:"agents"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	By     string    `json:"by"`
	// MatchedAgents is how many enrolled agents the globs match now (set
	// by the API in answers); Note says so when it is none.
	MatchedAgents int    `json:"matched_agents"`
	Note          string `json:"note,omitempty"`
}

// Quarantine is one quarantined address.
type Quarantine struct {
	Address  string    `json:"address"`
	Offender string    `json:"offender"`
	Reason   string    `json:"reason"`
	Since    time.Time `json:"since"`
}
