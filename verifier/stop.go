package verifier

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/store"
)

// AlertAgentStopped: an agent announced an orderly stop (severity 4 when
// expected, 2 otherwise).
const AlertAgentStopped = string(alert.KindAgentStopped)

// Severities of a planned stop's agent_stopped alert.
const (
	StopExpectedSeverity   = 4
	StopUnexpectedSeverity = 2
)

// maxSenderLen bounds the sender name quoted in messages (the kernel's
// comm is 15 bytes; a modified agent may send anything).
const maxSenderLen = 32

// StopBasis says why a planned stop was expected, or that it was not.
type StopBasis int

const (
	// StopUnexpected: neither a maintenance window nor stopped_by.
	StopUnexpected StopBasis = iota
	// StopMaintenance: an operator's maintenance window was open.
	StopMaintenance
	// StopAllowedSender: the recorded sender matched stopped_by.
	StopAllowedSender
)

// StopJudgement is what a planned stop means for the verifier.
type StopJudgement struct {
	Basis    StopBasis
	Severity int
	// Shelter is how long the agent stays OFFLINE before silence rules
	// apply again (its deadline from the commit).
	Shelter time.Duration
	// Why is the operator's explanation (the window or the pattern).
	Why string
}

// judgeStop decides a planned stop's severity and shelter: an open
// maintenance window (m, nil when none) makes it expected and shelters
// until the window closes; else a sender stopped_by allows makes it
// expected; else it is unexpected. Without a window the shelter is the
// policy's max_offline. The shelter is never shorter than the heartbeat
// deadline the agent had anyway.
func judgeStop(pol *policy.Policy, m *store.Maintenance, sender string, now time.Time) StopJudgement {
	hb := policy.Heartbeat{Interval: policy.DefaultHeartbeatInterval, Missed: policy.DefaultMissedPulses}
	if pol != nil {
		hb = pol.Heartbeat
	}
	j := StopJudgement{Basis: StopUnexpected, Severity: StopUnexpectedSeverity, Shelter: pol.MaxOffline(),
		Why: "no maintenance window is open and policy does not allow the sender (planned_stop.stopped_by)"}
	switch pat, ok := pol.StopSender(sender); {
	case m != nil && m.Until.After(now):
		j = StopJudgement{Basis: StopMaintenance, Severity: StopExpectedSeverity, Shelter: m.Until.Sub(now),
			Why: fmt.Sprintf("inside the maintenance window %s set until %s", quoteName(m.By), m.Until.UTC().Format(time.RFC3339))}
	case ok:
		j.Basis, j.Severity = StopAllowedSender, StopExpectedSeverity
		j.Why = fmt.Sprintf("the sender matches planned_stop.stopped_by %q (as the agent reported Sentinel's record)", pat)
	}
	if d := hb.Deadline(); j.Shelter < d {
		j.Shelter = d
	}
	return j
}

// plannedStop decides the verdict of a pulse marked planned_stop that
// every check accepted (identity, signature, nonce, quote, logs, policy,
// last-known-good, clock): OFFLINE (AGENT_STOPPED), since what it proves
// still stands and the agent is expected to be silent for the shelter,
// not BLINDED. It returns nil for a pulse without the mark. settle sets
// the deadline to the shelter; afterPulse raises the agent_stopped alert.
func (v *Verifier) plannedStop(ctx context.Context, o *Outcome, now time.Time) *Outcome {
	ps := o.payload.GetPlannedStop()
	if ps == nil || o.agent == nil {
		return nil
	}
	id := o.agent.ID
	m, err := v.store.OpenMaintenance(ctx, id, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		m = nil
	case err != nil:
		// Judged without the window: the stop alerts at severity 2.
		v.log.Error("reading the maintenance window failed", "agent_id", id, "error", err)
		m = nil
	}
	sender := ps.GetSignal().GetSenderComm()
	j := judgeStop(o.pol, m, sender, now)
	until := now.Add(j.Shelter)
	o.stopShelter = j.Shelter
	out := o.fail(pulsev1.Verdict_VERDICT_OFFLINE, pulsev1.Reason_REASON_AGENT_STOPPED, "planned stop: %s; %s; OFFLINE until %s, then silence is BLINDED",
		describeStop(ps), j.Why, until.UTC().Format(time.RFC3339))
	// One alert per agent, severity and dedup window: an agent restarted
	// in a loop (or a modified one marking every pulse) does not flood.
	o.stopAlert = &store.Alert{DedupKey: fmt.Sprintf("agent_stopped:%s:%d:%d", id, j.Severity, dedupBucket(now)), AgentID: id,
		Kind: AlertAgentStopped, Severity: j.Severity, Reason: o.Reason.String(), Message: o.Message}
	v.log.Info("planned stop", "agent_id", id, "signo", ps.GetSigno(), "sender_comm", quoteName(sender),
		"sender_pid", ps.GetSignal().GetSenderPid(), "severity", j.Severity, "offline_until", until.UTC().Format(time.RFC3339))
	return out
}

// describeStop says which signal stopped the agent and who sent it, as
// the agent reported Sentinel's record of it.
func describeStop(ps *pulsev1.PlannedStop) string {
	sig := fmt.Sprintf("signal %d", ps.GetSigno())
	if n := unix.SignalName(syscall.Signal(ps.GetSigno())); n != "" {
		sig = fmt.Sprintf("%s (signal %d)", n, ps.GetSigno())
	}
	e := ps.GetSignal()
	if e == nil {
		return sig + "; sender not recorded (no Sentinel record)"
	}
	return fmt.Sprintf("%s from pid %d %s (uid %d), as Sentinel recorded it", sig, e.GetSenderPid(), quoteName(e.GetSenderComm()), senderUID(e))
}

// quoteName quotes a name from an agent or operator, bounded.
func quoteName(s string) string {
	if len(s) > maxSenderLen {
		s = s[:maxSenderLen] + "..."
	}
	return fmt.Sprintf("%q", s)
}
