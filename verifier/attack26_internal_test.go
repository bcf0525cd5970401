package verifier

import (
	"context"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/ektrust"
)

// White-box attacks on the per-row-version memos of issue 26 (agentcache.go
// versioned): a root attacker on one device controls its agent's payloads
// and when it sends them, not its TPM's quote.

// committedPulse verifies and commits one pulse of the fuzz harness's TPM
// agent at the agent's current epoch (the nonce Challenge hands out once
// the previous pulse's commit landed) without running what follows the
// commit (afterPulse): the caller runs it when the interleaving it plays
// wants it.
func committedPulse(t *testing.T, pf *pulseFuzz, mut func(*pulsev1.PulsePayload, *pulsev1.PulseRequest)) *Outcome {
	t.Helper()
	ctx := context.Background()
	a, err := pf.v.store.GetAgent(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	pf.tpmNonce = pf.nonce(t, fuzzTPMAgent, a.NonceEpoch)
	o := pf.v.verify(ctx, pf.tpm.peer, pf.pulse(t, pf.dev, mut), fuzzNow)
	pf.v.settle(ctx, o)
	if !pf.v.commit(ctx, o) || o.Verdict != pulsev1.Verdict_VERDICT_TRUSTED {
		t.Fatalf("pulse: %s/%s (%s)", o.Verdict, o.Reason, o.Message)
	}
	return o
}

// sentinelReport makes the pulse carry a Sentinel report whose kernel
// counter is next and no records.
func sentinelReport(next uint64) func(*pulsev1.PulsePayload, *pulsev1.PulseRequest) {
	return func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
		p.Sentinel = &pulsev1.SentinelReport{NextSeq: next}
	}
}

// hasSentinelFinding: the outcome refused, or noted, a Sentinel gap.
func hasSentinelFinding(o *Outcome) bool {
	if o.Reason == pulsev1.Reason_REASON_SENTINEL_TAMPERED {
		return true
	}
	for _, f := range o.Findings {
		if f.GetRule() != "" && containsReason(f.GetMessage(), pulsev1.Reason_REASON_SENTINEL_TAMPERED) {
			return true
		}
	}
	return false
}

func containsReason(msg string, r pulsev1.Reason) bool {
	s := r.String()
	for i := 0; i+len(s) <= len(msg); i++ {
		if msg[i:i+len(s)] == s {
			return true
		}
	}
	return false
}

// secondReplica is another verifier process on the fuzz harness's store
// (the same nonce key, policy and clock): a second replica.
func secondReplica(t *testing.T, pf *pulseFuzz) *Verifier {
	t.Helper()
	set, diags := policy.Parse("fuzz.hcl", []byte(fuzzPolicy))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	trust, err := ektrust.Load(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := New(Options{Config: pf.v.cfg, Store: pf.v.store, Policies: fuzzPolicies{set}, EKTrust: trust, Now: func() time.Time { return fuzzNow }})
	if err != nil {
		t.Fatal(err)
	}
	return v2
}

// onReplica runs pulse-building helpers of the harness against v.
func onReplica(pf *pulseFuzz, v *Verifier) func() {
	old := pf.v
	pf.v = v
	return func() { pf.v = old }
}

// TestAttack26SentinelLateRecord: pulse A commits on replica 1; before its
// Sentinel state is recorded (afterPulse), the device asks Challenge for
// the next epoch and sends pulse B to replica 2, which judges it against
// the store's state from before A and remembers its own state for the row
// version B's commit gave the agent. A's record then lands last, moving
// the store's cursor back. What replica 2 remembers for the agent's row
// must still be what the store holds, and the next pulse, which skips the
// records the store's cursor says were handed out, must be seen doing so
// on replica 2 as on any replica reading the store.
// The same interleaving on one replica (both pulses to it) must leave the
// same state.
func TestAttack26SentinelLateRecord(t *testing.T) {
	for _, two := range []bool{true, false} {
		name := "one replica"
		if two {
			name = "two replicas"
		}
		t.Run(name, func(t *testing.T) { sentinelLateRecord(t, two) })
	}
}

func sentinelLateRecord(t *testing.T, two bool) {
	pf := newPulseFuzz(t)
	ctx := context.Background()
	st := pf.v.store
	steadyPulse(t, pf, nil)
	r1, r2 := pf.v, pf.v
	if two {
		r2 = secondReplica(t, pf)
	}

	a := committedPulse(t, pf, sentinelReport(3))
	restore := onReplica(pf, r2)
	b := committedPulse(t, pf, sentinelReport(10))
	r2.afterPulse(ctx, pf.tpm.peer, b)
	restore()
	r1.afterPulse(ctx, pf.tpm.peer, a)

	stored, err := st.GetSentinelState(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	if row := r2.agents.get(fuzzTPMAgent); row != nil {
		if memo, ok := r2.agents.sentinelAt(fuzzTPMAgent, row.RowVersion); ok && memo != stored {
			t.Errorf("replica 2 remembers %+v for the agent's row, the store holds %+v", memo, stored)
		}
	}
	if !stored.Found {
		t.Fatalf("no cursor stored: %+v", stored)
	}

	// The next pulse brings no record while Sentinel's counter is at 10:
	// replica 2 (from its memory) and replica 1 (reading the store) must
	// judge it alike, and a cursor of the store behind the counter is a
	// gap either way.
	var found []bool
	for _, r := range []struct {
		name string
		v    *Verifier
	}{{"replica 2", r2}, {"replica 1", r1}} {
		restore := onReplica(pf, r.v)
		pf.tpmNonce = pf.nonce(t, fuzzTPMAgent, mustEpoch(t, pf))
		c := r.v.verify(ctx, pf.tpm.peer, pf.pulse(t, pf.dev, sentinelReport(10)), fuzzNow)
		restore()
		found = append(found, hasSentinelFinding(c))
		if stored.Cursor.LastSeq < 10 && !hasSentinelFinding(c) {
			t.Errorf("%s: a pulse skipping records %d to 9 (the store's cursor is %d) judged %s/%s with no Sentinel finding",
				r.name, stored.Cursor.LastSeq+1, stored.Cursor.LastSeq, c.Verdict, c.Reason)
		}
	}
	if two && found[0] != found[1] {
		t.Errorf("the replicas judged the same pulse differently: replica 2 Sentinel finding %v, replica 1 %v", found[0], found[1])
	}
	// B's cursor is the newest judgement: A's late record left it.
	if stored.Cursor.LastSeq != 10 {
		t.Errorf("the store's cursor went back to %d under B's 10", stored.Cursor.LastSeq)
	}
}

func mustEpoch(t *testing.T, pf *pulseFuzz) uint64 {
	t.Helper()
	a, err := pf.v.store.GetAgent(context.Background(), fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	return a.NonceEpoch
}

// TestAttack26SentinelRecordAfterOtherWriter is the honest side of
// TestAttack26SentinelLateRecord: a row changed between a pulse's commit
// and its Sentinel record by anything but another pulse (its directive
// stream opening) leaves the pulse's cursor the newest judgement, and it
// is recorded.
func TestAttack26SentinelRecordAfterOtherWriter(t *testing.T) {
	pf := newPulseFuzz(t)
	ctx := context.Background()
	st := pf.v.store
	steadyPulse(t, pf, nil)
	a := committedPulse(t, pf, sentinelReport(3))
	if err := st.SetStream(ctx, fuzzTPMAgent, "replica-b", fuzzNow); err != nil {
		t.Fatal(err)
	}
	if row, err := st.GetAgent(ctx, fuzzTPMAgent); err != nil || row.RowVersion == a.update.NextRowVersion {
		t.Fatalf("the stream's write did not change the row's version (%v)", err)
	}
	pf.v.afterPulse(ctx, pf.tpm.peer, a)
	stored, err := st.GetSentinelState(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	if !stored.Found || stored.Cursor.LastSeq != 3 {
		t.Fatalf("stored Sentinel state %+v, want the pulse's cursor at 3", stored)
	}
	// The next pulse continues from it without a finding.
	c := steadyPulse(t, pf, sentinelReport(3))
	if hasSentinelFinding(c) {
		t.Fatalf("the next pulse found a Sentinel gap: %v", c.Findings)
	}
}
