// Package alert is the verifier's alert model and its fan-out: a Dispatcher
// writes every alert to the structured log and the hash-chained audit log
// (verifier/audit) and queues it for each configured webhook, whose worker
// POSTs it with an HMAC signature and retries with backoff. See
// docs/alerts.md for the kinds, severities, body and signature format.
package alert

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// Kind is what an alert is about.
type Kind string

// Alert kinds.
const (
	// KindCompromised: the device must be treated as compromised, e.g. it
	// went silent past its deadline (verdict BLINDED).
	KindCompromised Kind = "compromised"
	// KindUntrusted: a pulse failed verification (verdict UNTRUSTED).
	KindUntrusted Kind = "untrusted"
	// KindBinaryChanged: the agent binary changed without approval.
	KindBinaryChanged Kind = "binary_changed"
	// KindBPFProgramMissing: a required eBPF program is not loaded.
	KindBPFProgramMissing Kind = "bpf_program_missing"
	// KindBPFProgramChanged: a pinned eBPF program's digest changed.
	KindBPFProgramChanged Kind = "bpf_program_changed"
	// KindFortressInactive: the policy requires Fortress and it is not active.
	KindFortressInactive Kind = "fortress_inactive"
	// KindBPFForeignProgram: a program Pulse did not measure runs on a hook
	// Pulse enforces, or a Pulse program uses a map the agent did not create.
	KindBPFForeignProgram Kind = "bpf_foreign_program"
	// KindQuarantineDiverged: an agent's Shield drops another set than the
	// verifier's quarantine table.
	KindQuarantineDiverged Kind = "quarantine_diverged"
	// KindSentinelTampered: Sentinel was blinded or lost records.
	KindSentinelTampered Kind = "sentinel_tampered"
	// KindAgentSignalled: the agent was signalled by a process policy does
	// not allow (a SIGKILL by a shell, say).
	KindAgentSignalled Kind = "agent_signalled"
	// KindForeignBPFLoad: an eBPF program was loaded by a process policy does
	// not allow.
	KindForeignBPFLoad Kind = "foreign_bpf_load"
	// KindTPMLockout: the agent's TPM is in dictionary-attack lockout and
	// cannot quote.
	KindTPMLockout Kind = "tpm_lockout"
	// KindAgentStopped: an agent stopped in an orderly way (SIGTERM)
	// outside a maintenance window and not by an allowed sender.
	KindAgentStopped Kind = "agent_stopped"
	// KindClockDesync: the agent's clock is outside the skew tolerance. A
	// bad clock is not a compromise: this kind is never KindCompromised.
	KindClockDesync Kind = "clock_desync"
	// KindIdentityTakeover: an agent ID came back from a different TPM.
	KindIdentityTakeover Kind = "identity_takeover"
	// KindTPMDowngrade: an agent enrolled with a TPM sent a pulse without one.
	KindTPMDowngrade Kind = "tpm_downgrade"
	// KindPolicyReloadFailed: a policy edit was refused; the old policy
	// stays loaded. Not tied to an agent.
	KindPolicyReloadFailed Kind = "policy_reload_failed"
	// KindIsolated: healthy agents were ordered to isolate an agent.
	KindIsolated Kind = "isolated"
	// KindReleased: an isolation was lifted.
	KindReleased Kind = "released"
	// KindIsolationRefused: an isolation that would hit a protected address
	// or one other agents share was refused; the operator acts instead.
	KindIsolationRefused Kind = "isolation_refused"
	// KindIsolationSuppressed: an operator's release hold kept an agent
	// from being isolated (once per hold and reason).
	KindIsolationSuppressed Kind = "isolation_suppressed"
	// KindTransientStreak: an agent failed with transient reasons (expired
	// nonce, firmware log requested) too many times in a row.
	KindTransientStreak Kind = "transient_streak"
	// KindPartitionMismatch: an agent asked to enroll in another partition
	// than the operator assigned it (policy shopping).
	KindPartitionMismatch Kind = "partition_mismatch"
	// KindAKChanged: an agent re-enrolled on its TPM with another
	// attestation key; its reboot baseline starts again.
	KindAKChanged Kind = "ak_changed"
	// KindUpdateApproved: an operator approved an agent binary update
	// window (informational; the operator's audit record holds who and
	// what). Not tied to one agent: it may cover the whole fleet.
	KindUpdateApproved Kind = "update_approved"
	// KindPolicyDivergence: this replica enforces another policy set
	// (digest) than other live replicas, for longer than a reload interval.
	KindPolicyDivergence Kind = "policy_divergence"
	// KindAuditChainBroken: the verifier found its audit log's tail
	// damaged at start; it kept the file and resumed the chain in a new
	// segment (docs/operations.md, "Audit log damage"). Not tied to an agent.
	KindAuditChainBroken Kind = "audit_chain_broken"
	// KindProbe: one address had many TLS handshakes refused on the agent
	// port within a minute (docs/operations.md, "Probes"). Not tied to an
	// agent: the address is in the message.
	KindProbe Kind = "probe"
)

// Severities: 1 is the most severe; the same scale as a policy rule's
// severity (policy.SeverityCritical ... policy.SeverityLow).
const (
	SeverityCritical = 1
	SeverityHigh     = 2
	SeverityMedium   = 3
	SeverityLow      = 4
)

var defaultSeverity = map[Kind]int{
	KindCompromised:         SeverityCritical,
	KindIdentityTakeover:    SeverityCritical,
	KindTPMDowngrade:        SeverityCritical,
	KindBinaryChanged:       SeverityCritical,
	KindUntrusted:           SeverityHigh,
	KindBPFProgramMissing:   SeverityCritical,
	KindBPFProgramChanged:   SeverityCritical,
	KindFortressInactive:    SeverityCritical,
	KindClockDesync:         SeverityMedium,
	KindPolicyReloadFailed:  SeverityMedium,
	KindIsolated:            SeverityLow,
	KindReleased:            SeverityLow,
	KindIsolationRefused:    SeverityHigh,
	KindIsolationSuppressed: SeverityHigh,
	KindTransientStreak:     SeverityHigh,
	KindPartitionMismatch:   SeverityHigh,
	KindAKChanged:           SeverityHigh,
	KindUpdateApproved:      SeverityLow,
	KindPolicyDivergence:    SeverityHigh,
	KindAuditChainBroken:    SeverityCritical,
	KindProbe:               SeverityMedium,
	KindBPFForeignProgram:   SeverityCritical,
	KindQuarantineDiverged:  SeverityHigh,
	KindSentinelTampered:    SeverityCritical,
	KindAgentSignalled:      SeverityCritical,
	KindForeignBPFLoad:      SeverityHigh,
	KindTPMLockout:          SeverityHigh,
	KindAgentStopped:        SeverityHigh,
}

// Kinds returns every kind, most severe default first.
func Kinds() []Kind {
	return []Kind{
		KindCompromised, KindIdentityTakeover, KindTPMDowngrade, KindBinaryChanged, KindAuditChainBroken,
		KindBPFForeignProgram, KindSentinelTampered, KindAgentSignalled,
		KindUntrusted, KindQuarantineDiverged, KindForeignBPFLoad, KindTPMLockout, KindAgentStopped, KindBPFProgramMissing, KindBPFProgramChanged, KindPartitionMismatch, KindAKChanged, KindPolicyDivergence,
		KindFortressInactive, KindClockDesync, KindPolicyReloadFailed, KindProbe,
		KindIsolated, KindReleased, KindIsolationRefused, KindIsolationSuppressed, KindTransientStreak, KindUpdateApproved,
	}
}

// Valid reports whether k is one of the kinds above.
func (k Kind) Valid() bool { _, ok := defaultSeverity[k]; return ok }

// DefaultSeverity is the severity an alert of kind k gets when the policy
// does not set one (0 for an unknown kind).
func (k Kind) DefaultSeverity() int { return defaultSeverity[k] }

// Alert is one alert.
type Alert struct {
	// ID identifies the alert; receivers deduplicate on it (webhook
	// delivery is at least once). Dispatch generates one when empty.
	ID   string `json:"id"`
	Kind Kind   `json:"kind"`
	// Severity runs from 1 (most severe) to 4. Zero means
	// Kind.DefaultSeverity().
	Severity int `json:"severity"`
	// AgentID is required except for KindPolicyReloadFailed and
	// KindPolicyDivergence (about a replica, not an agent).
	AgentID string `json:"agent_id,omitempty"`
	// Reason is the proto reason name (e.g. "REASON_BINARY_CHANGED"), or
	// empty when the alert does not come from a verdict.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
	// Time is when the condition was seen; zero means now. Always UTC.
	Time time.Time `json:"time"`
	// Data holds extra facts with snake_case keys (rule, file_line, digest,
	// ...). Never secrets: it reaches logs, the audit log and webhooks.
	Data map[string]string `json:"data,omitempty"`
	// AuditSeq and AuditHash are the audit record this alert was written
	// as, filled by Dispatch when an audit log is configured, so copies of
	// the alert outside the host anchor the audit chain.
	AuditSeq  uint64 `json:"audit_seq,omitempty"`
	AuditHash string `json:"audit_hash,omitempty"`
}

// Validation errors, matched with errors.Is.
var (
	ErrUnknownKind   = errors.New("unknown alert kind")
	ErrUnknownReason = errors.New("unknown reason name")
	ErrInvalidAlert  = errors.New("invalid alert")
)

// reservedDataKeys are the audit record data keys Dispatch fills itself.
var reservedDataKeys = []string{"alert_id", "reason", "message"}

// Validate checks an alert after defaults are applied.
func (a *Alert) Validate() error {
	if !a.Kind.Valid() {
		return fmt.Errorf("%w %q", ErrUnknownKind, a.Kind)
	}
	if a.Severity < SeverityCritical || a.Severity > SeverityLow {
		return fmt.Errorf("%w: severity %d (want %d, the most severe, to %d)", ErrInvalidAlert, a.Severity, SeverityCritical, SeverityLow)
	}
	if a.AgentID == "" && a.Kind != KindPolicyReloadFailed && a.Kind != KindUpdateApproved && a.Kind != KindPolicyDivergence && a.Kind != KindAuditChainBroken && a.Kind != KindProbe {
		return fmt.Errorf("%w: %s alert without agent_id", ErrInvalidAlert, a.Kind)
	}
	if a.Reason != "" {
		v, ok := pulsev1.Reason_value[a.Reason]
		if !ok {
			return fmt.Errorf("%w %q", ErrUnknownReason, a.Reason)
		}
		if pulsev1.Reason(v) == pulsev1.Reason_REASON_CLOCK_DESYNC && a.Kind != KindClockDesync {
			return fmt.Errorf("%w: clock desync raised as %s (it is only ever %s)", ErrInvalidAlert, a.Kind, KindClockDesync)
		}
	}
	for _, k := range reservedDataKeys {
		if _, clash := a.Data[k]; clash {
			return fmt.Errorf("%w: data key %q is reserved", ErrInvalidAlert, k)
		}
	}
	return nil
}

// normalize fills defaults: ID, Time (UTC), Severity.
func (a *Alert) normalize(now time.Time) {
	if a.ID == "" {
		a.ID = newID()
	}
	if a.Time.IsZero() {
		a.Time = now
	}
	a.Time = a.Time.UTC()
	if a.Severity == 0 {
		a.Severity = a.Kind.DefaultSeverity()
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
