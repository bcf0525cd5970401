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
