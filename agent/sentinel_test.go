package agent

import (
	"context"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
)

// sentinelRing is a SentinelSource over an in-memory ring (unit tests of
// the agent's acknowledgement logic only; bpf's tests use the kernel).
type sentinelRing struct {
	DisabledBPF
	next, acked uint64
	acks        []uint64
}

func (r *sentinelRing) SentinelRead(_ context.Context, max int) (SentinelBatch, error) {
	b := SentinelBatch{Report: &pulsev1.SentinelReport{NextSeq: r.next}, Through: r.acked}
	for s := r.acked + 1; s <= r.next; s++ {
		if max > 0 && len(b.Events) == max {
			b.Report.Truncated = true
			break
		}
		b.Events = append(b.Events, &pulsev1.SentinelEvent{Seq: s, Kind: pulsev1.SentinelEvent_KIND_SIGNAL, Signal: 9})
		b.Through = s
	}
	return b, nil
}

func (r *sentinelRing) SentinelAck(through uint64) error {
	r.acks = append(r.acks, through)
	if through > r.acked {
		r.acked = through
	}
	return nil
}

// TestSentinelAckedOnlyWhenCommitted: the ring's records are acknowledged
// only after a response saying the verifier committed the pulse that
// carried them; a refused-before-commit answer (or none) keeps them for the
// next pulse, which carries them again.
func TestSentinelAckedOnlyWhenCommitted(t *testing.T) {
	ring := &sentinelRing{next: 3}
	a := &Agent{bpf: ring, log: simtest.Logger(t)}
	for _, tc := range []struct {
		resp      *pulsev1.PulseResponse
		wantAcked uint64
	}{
		{&pulsev1.PulseResponse{Verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, Reason: pulsev1.Reason_REASON_NONCE_EXPIRED}, 0},
		{&pulsev1.PulseResponse{Verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, Reason: pulsev1.Reason_REASON_BAD_SIGNATURE}, 0},
		{nil, 0}, // no answer (the RPC failed)
		{&pulsev1.PulseResponse{Verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, Reason: pulsev1.Reason_REASON_AGENT_SIGNALLED}, 3},
	} {
		evs := a.takeEvents(context.Background())
		if len(evs) != int(3-ring.acked) && ring.acked == 0 {
			t.Fatalf("pulse carries %d events, want the 3 unacknowledged", len(evs))
		}
		if a.sentinelReport().GetNextSeq() != 3 {
			t.Fatalf("report %v", a.sentinelReport())
		}
		a.ackSentinel(tc.resp)
		if ring.acked != tc.wantAcked {
			t.Fatalf("after %v: acknowledged %d, want %d", tc.resp, ring.acked, tc.wantAcked)
		}
	}
	if evs := a.takeEvents(context.Background()); len(evs) != 0 {
		t.Fatalf("acknowledged records carried again: %v", evs)
	}
	// A bounded read acknowledges only what it carried.
	ring.next = 3 + MaxPulseSentinelEvents + 10
	evs := a.takeEvents(context.Background())
	if len(evs) != MaxPulseSentinelEvents || !a.sentinelReport().GetTruncated() {
		t.Fatalf("%d events, truncated %v", len(evs), a.sentinelReport().GetTruncated())
	}
	a.ackSentinel(&pulsev1.PulseResponse{Verdict: pulsev1.Verdict_VERDICT_TRUSTED, Reason: pulsev1.Reason_REASON_OK})
	if ring.acked != 3+MaxPulseSentinelEvents {
		t.Fatalf("acknowledged %d after a truncated pulse", ring.acked)
	}
}

func TestPulseCommitted(t *testing.T) {
	for _, tc := range []struct {
		v    pulsev1.Verdict
		r    pulsev1.Reason
		want bool
	}{
		{pulsev1.Verdict_VERDICT_TRUSTED, pulsev1.Reason_REASON_OK, true},
		{pulsev1.Verdict_VERDICT_DEGRADED, pulsev1.Reason_REASON_OK, true},
		{pulsev1.Verdict_VERDICT_CLOCK_DESYNC, pulsev1.Reason_REASON_CLOCK_DESYNC, true},
		{pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_POLICY_DENIED, true},
		{pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_SENTINEL_TAMPERED, true},
		{pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_NONCE_REPLAYED, false},
		{pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_NONCE_UNKNOWN, false},
		{pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_NOT_ENROLLED, false},
		{pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_MALFORMED_PAYLOAD, false},
		{pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_IDENTITY_MISMATCH, false},
		{pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, false},
	} {
		resp := &pulsev1.PulseResponse{Verdict: tc.v, Reason: tc.r}
		if got := pulseCommitted(resp); got != tc.want {
			t.Errorf("%s/%s: committed %v, want %v", tc.v, tc.r, got, tc.want)
		}
	}
}
