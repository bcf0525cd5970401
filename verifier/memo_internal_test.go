package verifier

import (
	"bytes"
	"context"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/store"
)

// steadyPulse verifies and commits one pulse of the fuzz harness's TPM
// agent (mut changes its payload), runs what follows its commit and
// returns its outcome.
func steadyPulse(t *testing.T, pf *pulseFuzz, mut func(*pulsev1.PulsePayload, *pulsev1.PulseRequest)) *Outcome {
	t.Helper()
	o := committedPulse(t, pf, mut)
	pf.v.afterPulse(context.Background(), pf.tpm.peer, o)
	return o
}

// storedExplanationDigest is the digest of the explanation the store holds.
func storedExplanationDigest(t *testing.T, st *store.Store) []byte {
	t.Helper()
	x, err := st.GetExplanation(context.Background(), fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	return x.Digest()
}

// TestExplanationWrittenWhenChanged: a steady-state pulse whose
// explanation is the one the store holds does not write it (the commit is
// one statement); a pulse whose evidence changed writes it; and after
// another writer changed the agent's row and explanation (another replica),
// the next pulse writes its own explanation again instead of trusting what
// this process last wrote.
func TestExplanationWrittenWhenChanged(t *testing.T) {
	pf := newPulseFuzz(t)
	ctx := context.Background()
	st := pf.v.store

	// The harness's first pulse sent its records; the next one sends none.
	steadyPulse(t, pf, nil)
	o := steadyPulse(t, pf, nil)
	if o.update.Explanation != nil {
		t.Fatal("a steady-state pulse wrote an explanation equal to the stored one")
	}
	memo, ok := pf.v.agents.explainedAt(fuzzTPMAgent, pf.v.agents.get(fuzzTPMAgent).RowVersion)
	if !ok || !bytes.Equal(memo.digest, storedExplanationDigest(t, st)) {
		t.Fatalf("remembered explanation %x (%v), the store holds %x", memo.digest, ok, storedExplanationDigest(t, st))
	}

	// The evidence changed (the clock the agent reports): written.
	clock := func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
		p.ClockSync = &pulsev1.ClockSync{Synchronized: true, MaxErrorUs: 4242, EstErrorUs: 17}
	}
	o = steadyPulse(t, pf, clock)
	if o.update.Explanation == nil {
		t.Fatal("a pulse whose evidence changed did not write its explanation")
	}
	x, err := st.GetExplanation(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := DecodeEvidence(x.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Evidence.Clock == nil || ev.Evidence.Clock.MaxErrorUs != 4242 {
		t.Fatalf("stored evidence's clock %+v, want the pulse's", ev.Evidence.Clock)
	}

	// Only the clock's error figures moved: not written within
	// ExplanationRefresh, written once it passed.
	drift := func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
		p.ClockSync = &pulsev1.ClockSync{Synchronized: true, MaxErrorUs: 5000, EstErrorUs: 20}
	}
	if o = steadyPulse(t, pf, drift); o.update.Explanation != nil {
		t.Fatal("an explanation differing only in the clock's error figures was written within the refresh")
	}
	old := ExplanationRefresh
	ExplanationRefresh = 0
	t.Cleanup(func() { ExplanationRefresh = old })
	if o = steadyPulse(t, pf, drift); o.update.Explanation == nil {
		t.Fatal("the clock's error figures were not written after the refresh")
	}
	if x, err = st.GetExplanation(ctx, fuzzTPMAgent); err != nil {
		t.Fatal(err)
	}
	if ev, err = DecodeEvidence(x.Evidence); err != nil || ev.Evidence.Clock.MaxErrorUs != 5000 {
		t.Fatalf("stored clock after the refresh: %+v, %v", ev.Evidence.Clock, err)
	}
	ExplanationRefresh = old
	// The synchronisation state is not an error figure: written at once.
	if o = steadyPulse(t, pf, func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
		p.ClockSync = &pulsev1.ClockSync{Synchronized: false, MaxErrorUs: 5000, EstErrorUs: 20}
	}); o.update.Explanation == nil {
		t.Fatal("a change of the clock's synchronisation was not written")
	}

	// Another writer: the row changes (its version with it) and the stored
	// explanation is not this process's any more.
	if _, err := st.DB().ExecContext(ctx, `UPDATE agents SET last_message = 'another replica' WHERE id = ?`, fuzzTPMAgent); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DB().ExecContext(ctx, `UPDATE agent_explanations SET digest = X'00', evidence = NULL, evidence_at = 0 WHERE agent_id = ?`, fuzzTPMAgent); err != nil {
		t.Fatal(err)
	}
	o = steadyPulse(t, pf, clock)
	if o.update.Explanation == nil {
		t.Fatal("after another writer, the pulse trusted this process's memory and wrote no explanation")
	}
	if x, err = st.GetExplanation(ctx, fuzzTPMAgent); err != nil || x.Evidence == nil {
		t.Fatalf("stored explanation after the pulse: %v, evidence %d bytes", err, len(x.Evidence))
	}
	if memo, _ := pf.v.agents.explainedAt(fuzzTPMAgent, pf.v.agents.get(fuzzTPMAgent).RowVersion); !bytes.Equal(memo.digest, x.Digest()) {
		t.Fatalf("remembered %x, stored %x", memo.digest, x.Digest())
	}
}

// TestSentinelStateMemo: after a commit the Sentinel state remembered for
// the agent's new row version is what the store holds; a row changed by
// another writer (its Sentinel cursor too) is read from the store, never
// taken from memory.
func TestSentinelStateMemo(t *testing.T) {
	pf := newPulseFuzz(t)
	ctx := context.Background()
	st := pf.v.store
	steadyPulse(t, pf, nil)
	row := pf.v.agents.get(fuzzTPMAgent)
	stored, err := st.GetSentinelState(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	memo, ok := pf.v.agents.sentinelAt(fuzzTPMAgent, row.RowVersion)
	if !ok || memo != stored {
		t.Fatalf("remembered %+v (%v), the store holds %+v", memo, ok, stored)
	}
	o := &Outcome{agent: row}
	if got, err := pf.v.sentinelState(ctx, o); err != nil || got != stored {
		t.Fatalf("state for the current row: %+v, %v", got, err)
	}

	// Another replica's pulse: a new row version and another cursor.
	other := store.SentinelCursor{Boot: "7.0", LastSeq: 99}
	if err := st.RecordSentinel(ctx, fuzzTPMAgent, other, nil, fuzzNow); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DB().ExecContext(ctx, `UPDATE agents SET last_message = 'another replica' WHERE id = ?`, fuzzTPMAgent); err != nil {
		t.Fatal(err)
	}
	fresh, err := st.GetAgent(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.RowVersion == row.RowVersion {
		t.Fatal("the row's version did not change")
	}
	got, err := pf.v.sentinelState(ctx, &Outcome{agent: fresh})
	if err != nil || !got.Found || got.Cursor.Boot != other.Boot || got.Cursor.LastSeq != other.LastSeq {
		t.Fatalf("state for the changed row: %+v, %v; want the store's cursor %+v", got, err, other)
	}
	// The stale row still finds the memo, and its commit is what refuses
	// it (TestAgentCacheStaleRow).
	if got, _ := pf.v.sentinelState(ctx, &Outcome{agent: row}); got != stored {
		t.Fatalf("state for the stale row: %+v", got)
	}
	pf.v.agents.drop(fuzzTPMAgent)
	if _, ok := pf.v.agents.sentinelAt(fuzzTPMAgent, row.RowVersion); ok {
		t.Fatal("drop kept the agent's Sentinel state")
	}
}

// TestVersionedMemo: a memo is found only for the version it was recorded
// at, never for version 0, and not at all with the cache off.
func TestVersionedMemo(t *testing.T) {
	var c agentCache
	c.putExplained("a", 7, explained{digest: []byte{1}})
	if d, ok := c.explainedAt("a", 7); !ok || !bytes.Equal(d.digest, []byte{1}) {
		t.Fatalf("at its version: %x %v", d.digest, ok)
	}
	for _, v := range []int64{0, 6, 8} {
		if _, ok := c.explainedAt("a", v); ok {
			t.Fatalf("found at version %d", v)
		}
	}
	if _, ok := c.explainedAt("b", 7); ok {
		t.Fatal("found for another agent")
	}
	c.putExplained("z", 0, explained{digest: []byte{2}})
	if _, ok := c.explainedAt("z", 0); ok {
		t.Fatal("recorded at version 0")
	}
	old := AgentCacheSize
	AgentCacheSize = 0
	t.Cleanup(func() { AgentCacheSize = old })
	c.putSentinel("a", 7, store.SentinelState{Found: true})
	if _, ok := c.sentinelAt("a", 7); ok {
		t.Fatal("recorded with the cache off")
	}
}
