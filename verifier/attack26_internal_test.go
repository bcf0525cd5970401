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

// TestAttack26SentinelLateRecord: pulse A commits on replica 1 and, before
// anything that follows its commit runs (afterPulse), the device asks
// Challenge for the next epoch and sends pulse B to replica 2 (or to the
// same replica), skipping Sentinel records A's report said were handed
// out. A's Sentinel record is written by A's commit, in its transaction:
// B is judged against it and the gap is found; the store's cursor never
// goes back, and what each replica remembers for the agent's row is what
// the store holds. (Before the record moved into the commit, B was judged
// against the state from before A and passed.)
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
	pf.tpmNonce = pf.nonce(t, fuzzTPMAgent, mustEpoch(t, pf))
	b := r2.verify(ctx, pf.tpm.peer, pf.pulse(t, pf.dev, sentinelReport(10)), fuzzNow)
	r2.settle(ctx, b)
	if !r2.commit(ctx, b) {
		t.Fatalf("pulse B not committed: %s/%s (%s)", b.Verdict, b.Reason, b.Message)
	}
	r2.afterPulse(ctx, pf.tpm.peer, b)
	restore()
	r1.afterPulse(ctx, pf.tpm.peer, a)
	if !hasSentinelFinding(b) {
		t.Errorf("pulse B skipping records 3 to 9 after A's report judged %s/%s with no Sentinel finding", b.Verdict, b.Reason)
	}

	stored, err := st.GetSentinelState(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	if !stored.Found || stored.Cursor.LastSeq < 3 {
		t.Fatalf("the store's cursor %+v went back under A's 3", stored)
	}
	current, err := st.GetAgent(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	// A replica whose cached row is the current one remembers what the
	// store holds (one whose row is stale loses its next commit anyway).
	for _, r := range []*Verifier{r1, r2} {
		if row := r.agents.get(fuzzTPMAgent); row != nil && row.RowVersion == current.RowVersion {
			if memo, ok := r.agents.sentinelAt(fuzzTPMAgent, row.RowVersion); ok && memo != stored {
				t.Errorf("a replica remembers %+v for the agent's row, the store holds %+v", memo, stored)
			}
		}
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
// TestAttack26SentinelLateRecord: a row changed after a pulse's commit by
// anything but another pulse (its directive stream opening) leaves the
// pulse's cursor the newest judgement, and the next pulse continues from
// it.
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
