package alert

import (
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// ReasonAlert is the alert a verdict reason raises: the one vocabulary for
// turning a failed pulse, enrollment or silence into an alert. The kind
// names what the evidence shows, whichever step found it; a policy may set
// the severity (POLICY_DENIED), never the kind.
type ReasonAlert struct {
	// Raises is false for reasons that deliberately raise no verdict alert
	// (Why says why); Kind and Severity are then empty.
	Raises bool
	// Kind is the alert's kind.
	Kind Kind
	// Severity is the alert's severity (1 most severe); with
	// PolicySeverity, the severity when no enforced finding sets one.
	Severity int
	// PolicySeverity: the alert takes the most severe enforced policy
	// finding's severity (REASON_POLICY_DENIED).
	PolicySeverity bool
	// RuleKinds: an enforced policy finding of one of these rules sets
	// the kind, so the kind names what the evidence shows whichever step
	// found it (an agent binary the allow-list refuses is binary_changed,
	// as when the last-known-good check refuses it). The first rule, in
	// the findings' order, that has a kind here wins; otherwise Kind.
	RuleKinds map[string]Kind
	// Why explains a row that raises nothing, or a kind or severity that
	// is not the obvious one. Rendered into docs/alerts.md.
	Why string
}

// Shorthands for the table below.
func raises(k Kind, sev int, why string) ReasonAlert {
	return ReasonAlert{Raises: true, Kind: k, Severity: sev, Why: why}
}

func untrusted(sev int, why string) ReasonAlert { return raises(KindUntrusted, sev, why) }

func silent(why string) ReasonAlert { return ReasonAlert{Why: why} }

const transientWhy = "transient: an honest agent retries at once; `transient_streak` after `pulses { transient_alert_after }` in a row"

// ReasonAlerts maps every pulsev1.Reason to the alert it raises. A reason
// missing here fails TestReasonAlertsCoverEveryReason; Lookup treats it as
// untrusted at severity 1 (fail closed). docs/alerts.md's reason table is
// generated from it (go test ./verifier/alert -update).
var ReasonAlerts = map[pulsev1.Reason]ReasonAlert{
	pulsev1.Reason_REASON_UNSPECIFIED: silent("not a verdict reason"),
	pulsev1.Reason_REASON_OK:          silent("the pulse was accepted"),

	pulsev1.Reason_REASON_IDENTITY_MISMATCH: untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_MALFORMED_PAYLOAD: untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_LEAF_KEY_MISMATCH: untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_BAD_SIGNATURE:     untrusted(SeverityCritical, ""),

	pulsev1.Reason_REASON_NONCE_UNKNOWN:       untrusted(SeverityHigh, "a nonce replay or forgery, not by itself evidence about the device"),
	pulsev1.Reason_REASON_NONCE_EXPIRED:       silent(transientWhy),
	pulsev1.Reason_REASON_NONCE_REPLAYED:      untrusted(SeverityHigh, "a nonce replay, not by itself evidence about the device"),
	pulsev1.Reason_REASON_NONCE_WRONG_AGENT:   untrusted(SeverityHigh, "a nonce replay across agents, not by itself evidence about the device"),
	pulsev1.Reason_REASON_SEQUENCE_REGRESSION: untrusted(SeverityCritical, ""),

	pulsev1.Reason_REASON_CLOCK_DESYNC:            raises(KindClockDesync, SeverityMedium, "a bad clock is not a compromise: never `compromised` or `untrusted`"),
	pulsev1.Reason_REASON_CLOCK_DESYNC_PERSISTENT: raises(KindClockDesync, SeverityHigh, "past `pulses { clock_desync_escalate_after }`; still never `compromised` or `untrusted`"),

	pulsev1.Reason_REASON_NOT_ENROLLED:            untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_AK_UNKNOWN:              untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_QUOTE_MALFORMED:         untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_QUOTE_SIGNATURE:         untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_QUOTE_NOT_TPM_GENERATED: untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_QUALIFYING_DATA:         untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_PCR_DIGEST:              untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_PCR_SELECTION:           untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_TPM_DOWNGRADE:           raises(KindTPMDowngrade, SeverityCritical, ""),
	pulsev1.Reason_REASON_TPM_REQUIRED:            untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_REBOOTED:                silent("a reboot is an expected PCR change (a note on an accepted pulse)"),
	pulsev1.Reason_REASON_TPM_CLOCK_ROLLBACK:      untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_RUNTIME_PCR_MISMATCH:    untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_PCR_BANK_NOT_ALLOWED:    untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_AK_NOT_OWNER_PRIMARY:    untrusted(SeverityCritical, ""),

	pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING:   silent(transientWhy),
	pulsev1.Reason_REASON_FIRMWARE_LOG_MALFORMED: untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_FIRMWARE_LOG_REPLAY:    untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_RUNTIME_LOG_MALFORMED:  untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_RUNTIME_LOG_REPLAY:     untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_RUNTIME_LOG_GAP:        untrusted(SeverityHigh, "records beyond what the verifier acknowledged: never honest"),
	pulsev1.Reason_REASON_CLAIM_MISMATCH:         untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_AGENT_BINARY_MISMATCH:  untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_FIRMWARE_LOG_QUOTA:     untrusted(SeverityHigh, "abuse or a broken device, not evidence of compromise (never isolates)"),

	pulsev1.Reason_REASON_POLICY_DENIED: {Raises: true, Kind: KindUntrusted, Severity: SeverityHigh, PolicySeverity: true,
		RuleKinds: map[string]Kind{RuleAgentBinary: KindBinaryChanged},
		Why:       "the most severe enforced finding's severity (the policy default, 2, when none sets one)"},
	pulsev1.Reason_REASON_NO_POLICY: untrusted(SeverityCritical, "Pulse fails closed"),

	pulsev1.Reason_REASON_BINARY_CHANGED:          raises(KindBinaryChanged, SeverityCritical, ""),
	pulsev1.Reason_REASON_BPF_PROGRAM_MISSING:     raises(KindBPFProgramMissing, SeverityCritical, ""),
	pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED:     raises(KindBPFProgramChanged, SeverityCritical, ""),
	pulsev1.Reason_REASON_FORTRESS_INACTIVE:       raises(KindFortressInactive, SeverityCritical, ""),
	pulsev1.Reason_REASON_SILENT:                  raises(KindCompromised, SeverityCritical, "silent past its deadline (verdict `BLINDED`)"),
	pulsev1.Reason_REASON_BPF_FOREIGN_PROGRAM:     raises(KindBPFForeignProgram, SeverityCritical, "kernel evidence: a program ahead of or beside Shield can pass what Shield drops"),
	pulsev1.Reason_REASON_BPF_MAP_FOREIGN:         raises(KindBPFForeignProgram, SeverityCritical, "kernel evidence: a Pulse program bound to a map someone else created enforces that map's contents"),
	pulsev1.Reason_REASON_QUARANTINE_DIVERGED:     raises(KindQuarantineDiverged, SeverityHigh, "the agent's Shield does not drop what the fleet's quarantine table says"),
	pulsev1.Reason_REASON_SENTINEL_TAMPERED:       raises(KindSentinelTampered, SeverityCritical, "Sentinel's configuration changed or its record stream has a gap"),
	pulsev1.Reason_REASON_AGENT_SIGNALLED:         raises(KindAgentSignalled, SeverityCritical, "someone other than the service manager stopped or killed the agent"),
	pulsev1.Reason_REASON_FOREIGN_BPF_LOAD:        raises(KindForeignBPFLoad, SeverityHigh, "a process policy does not allow loaded an eBPF program"),
	pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING: untrusted(SeverityHigh, "the agent did not report what the kernel runs on the hooks Pulse enforces"),
	pulsev1.Reason_REASON_TPM_LOCKOUT:             raises(KindTPMLockout, SeverityHigh, "the TPM cannot quote until its lockout ends or is cleared: not silence, not a compromise by itself"),
	pulsev1.Reason_REASON_AGENT_STOPPED:           raises(KindAgentStopped, SeverityHigh, "an orderly stop (`OFFLINE`); severity 4 inside a maintenance window or when policy allows the sender"),

	pulsev1.Reason_REASON_EK_UNTRUSTED:                 untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_EK_MISMATCH:                  raises(KindIdentityTakeover, SeverityCritical, "an agent ID came back from a different TPM"),
	pulsev1.Reason_REASON_CREDENTIAL_ACTIVATION_FAILED: untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_ENROLLMENT_EXPIRED:           untrusted(SeverityCritical, ""),
	pulsev1.Reason_REASON_PARTITION_MISMATCH:           raises(KindPartitionMismatch, SeverityHigh, "policy shopping or a misconfigured agent"),
	pulsev1.Reason_REASON_EK_IN_USE:                    raises(KindIdentityTakeover, SeverityCritical, "a new agent ID on an EK that backs `ek_max_agents` already"),
	pulsev1.Reason_REASON_AK_CHANGED:                   raises(KindAKChanged, SeverityHigh, "re-enrolled with another AK: the reboot baseline starts again"),
	pulsev1.Reason_REASON_ENROLL_RATE_LIMITED:          untrusted(SeverityCritical, ""),

	pulsev1.Reason_REASON_INTERNAL: silent("a verifier fault says nothing about the agent: logged, not alerted"),
}

// RuleAgentBinary is the policy rule that judges the agent binary
// (agent_binary { allow, update_window, require_launcher }).
const RuleAgentBinary = "agent_binary"

// failClosed is what a reason missing from ReasonAlerts raises.
var failClosed = ReasonAlert{Raises: true, Kind: KindUntrusted, Severity: SeverityCritical, Why: "unknown reason: fail closed"}

// Lookup returns r's row. A reason missing from the table (a new enum value
// nobody mapped) is untrusted at severity 1, and known is false.
func Lookup(r pulsev1.Reason) (ra ReasonAlert, known bool) {
	ra, known = ReasonAlerts[r]
	if !known {
		return failClosed, false
	}
	return ra, true
}

// ForVerdict returns the alert a failed verdict with reason r and the
// policy's findings raises; ok is false when the reason raises none. With
// PolicySeverity the severity is the most severe enforced finding's
// (findings with a severity outside 1..4 are ignored), else the row's. An
// enforced finding of a rule in RuleKinds sets the kind.
func ForVerdict(r pulsev1.Reason, findings []*pulsev1.Finding) (k Kind, severity int, ok bool) {
	ra, _ := Lookup(r)
	if !ra.Raises {
		return "", 0, false
	}
	k, severity = ra.Kind, ra.Severity
	for _, f := range findings {
		if rk, ok := ra.RuleKinds[f.GetRule()]; ok && f.GetEnforce() {
			k = rk
			break
		}
	}
	if ra.PolicySeverity {
		worst := 0
		for _, f := range findings {
			s := int(f.GetSeverity())
			if !f.GetEnforce() || s < SeverityCritical || s > SeverityLow {
				continue
			}
			if worst == 0 || s < worst {
				worst = s
			}
		}
		if worst != 0 {
			severity = worst
		}
	}
	return k, severity, true
}

// KindForReason maps a verdict reason to the kind of alert it raises (see
// ReasonAlerts). ok is false for reasons that raise none and for numbers
// that are not a pulsev1.Reason.
func KindForReason(r pulsev1.Reason) (k Kind, ok bool) {
	ra, known := ReasonAlerts[r]
	if !known || !ra.Raises {
		return "", false
	}
	return ra.Kind, true
}
