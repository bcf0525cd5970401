package agent

import (
	"context"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// MaxPulseSentinelEvents bounds the Sentinel events one pulse carries; the
// rest follow in the next pulses (SentinelReport.truncated).
const MaxPulseSentinelEvents = 256

// SentinelBatch is one read of Sentinel: its report, the events after the
// agent's acknowledgement, and the cursor that acknowledges them.
type SentinelBatch struct {
	Report  *pulsev1.SentinelReport
	Events  []*pulsev1.SentinelEvent
	Through uint64
}

// SentinelSource is implemented by a BPF whose Sentinel ring is pinned in
// the kernel (agent/ebpf). The agent then reads the ring afresh for every
// pulse, from its acknowledgement on, and acknowledges a read only once the
// verifier committed a pulse carrying it: the records survive a lost
// response, a refused pulse and the agent being killed.
type SentinelSource interface {
	// SentinelRead re-checks the pinned sentinel_cfg map against what the
	// agent wrote (a difference goes into the report's error) and reads up
	// to max records after the acknowledgement.
	SentinelRead(ctx context.Context, max int) (SentinelBatch, error)
	// SentinelAck acknowledges the records up to through.
	SentinelAck(through uint64) error
}

// readSentinel reads the ring for one pulse attempt; the batch is kept
// until the verifier's answer says whether the pulse was committed.
func (a *Agent) readSentinel(ctx context.Context, src SentinelSource) []*pulsev1.SentinelEvent {
	b, err := src.SentinelRead(ctx, MaxPulseSentinelEvents)
	if err != nil {
		a.log.Warn("sentinel read failed", "error", err)
	}
	if b.Report == nil {
		b.Report = &pulsev1.SentinelReport{Error: "sentinel unreadable"}
	}
	a.sentinelMu.Lock()
	a.sentinelRead = b
	a.sentinelMu.Unlock()
	return b.Events
}

// sentinelReport is the report of the last read (nil without a source).
func (a *Agent) sentinelReport() *pulsev1.SentinelReport {
	a.sentinelMu.Lock()
	defer a.sentinelMu.Unlock()
	return a.sentinelRead.Report
}

// ackSentinel acknowledges the last read when resp says the verifier
// committed the pulse that carried it.
func (a *Agent) ackSentinel(resp *pulsev1.PulseResponse) {
	src, ok := a.bpf.(SentinelSource)
	if !ok || !pulseCommitted(resp) {
		return
	}
	a.sentinelMu.Lock()
	through := a.sentinelRead.Through
	a.sentinelMu.Unlock()
	if err := src.SentinelAck(through); err != nil {
		a.log.Warn("acknowledging sentinel records failed", "through", through, "error", err)
	}
}

// pulseCommitted reports whether the verifier recorded the pulse resp
// answers: every verdict does except the refusals made before the pulse's
// commit (its identity, signature or nonce), whose pulse wrote nothing.
func pulseCommitted(resp *pulsev1.PulseResponse) bool {
	if resp.GetVerdict() == pulsev1.Verdict_VERDICT_UNSPECIFIED {
		return false
	}
	switch resp.GetReason() {
	case pulsev1.Reason_REASON_UNSPECIFIED, pulsev1.Reason_REASON_MALFORMED_PAYLOAD, pulsev1.Reason_REASON_IDENTITY_MISMATCH,
		pulsev1.Reason_REASON_LEAF_KEY_MISMATCH, pulsev1.Reason_REASON_BAD_SIGNATURE,
		pulsev1.Reason_REASON_NONCE_UNKNOWN, pulsev1.Reason_REASON_NONCE_EXPIRED, pulsev1.Reason_REASON_NONCE_REPLAYED,
		pulsev1.Reason_REASON_NONCE_WRONG_AGENT, pulsev1.Reason_REASON_NOT_ENROLLED, pulsev1.Reason_REASON_INTERNAL:
		return false
	}
	return true
}
