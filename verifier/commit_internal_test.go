package verifier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/quote"
	"github.com/pulse-attest/pulse/verifier/store"
)

// TestCommit covers each side of a pulse's commit on a real store: the
// winner records its verdict and moves to the next epoch; a pulse whose
// epoch another pulse spent after it was read becomes a replay carrying
// none of its evidence; a pulse of an agent removed meanwhile is not
// enrolled.
func TestCommit(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(ctx, store.EngineSQLite, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.EnrollAgent(ctx, &store.Agent{ID: "a", EnrolledAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	v := &Verifier{store: s}
	outcome := func(t *testing.T, id string) *Outcome {
		t.Helper()
		a, err := s.GetAgent(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		o := &Outcome{Verdict: pulsev1.Verdict_VERDICT_TRUSTED, Reason: pulsev1.Reason_REASON_OK, Message: "ok", Isolate: true,
			agent: a, epoch: a.NonceEpoch, sendFirmwareLog: true, decisions: 1,
			update: store.PulseUpdate{At: time.Now(), Evidence: true, Seq: a.LastSeq + 1}}
		o.Findings = []*pulsev1.Finding{{Rule: "r"}}
		return o
	}

	t.Run("winner", func(t *testing.T) {
		o := outcome(t, "a")
		if !v.commit(ctx, o) {
			t.Fatalf("commit lost: %s/%s %s", o.Verdict, o.Reason, o.Message)
		}
		got, err := s.GetAgent(ctx, "a")
		if err != nil || got.NonceEpoch != 1 || got.LastSeq != 1 || pulsev1.Verdict(got.LastVerdict) != pulsev1.Verdict_VERDICT_TRUSTED {
			t.Fatalf("stored %+v, %v", got, err)
		}
		if o.agent.NonceEpoch != 1 {
			t.Fatalf("outcome's agent at epoch %d, want the next one (1)", o.agent.NonceEpoch)
		}
	})
	t.Run("epoch spent meanwhile", func(t *testing.T) {
		o := outcome(t, "a")
		if st, err := s.CommitPulse(ctx, "a", o.epoch, store.PulseUpdate{At: time.Now(), Message: "other"}); err != nil || st != store.NonceOK {
			t.Fatalf("concurrent commit: %v, %v", st, err)
		}
		if v.commit(ctx, o) {
			t.Fatal("a second commit for one epoch won")
		}
		if o.Verdict != pulsev1.Verdict_VERDICT_UNTRUSTED || o.Reason != pulsev1.Reason_REASON_NONCE_REPLAYED {
			t.Fatalf("lost commit: %s/%s, want UNTRUSTED/NONCE_REPLAYED", o.Verdict, o.Reason)
		}
		if o.agent != nil || o.Isolate || o.Findings != nil || o.update.Evidence || o.sendFirmwareLog {
			t.Fatalf("lost commit keeps the loser's evidence: %+v", o)
		}
		if got, err := s.GetAgent(ctx, "a"); err != nil || got.LastMessage != "other" || got.LastSeq != 1 {
			t.Fatalf("the loser wrote: %+v, %v", got, err)
		}
	})
	t.Run("agent removed meanwhile", func(t *testing.T) {
		o := outcome(t, "a")
		o.agent = &store.Agent{ID: "gone"}
		if v.commit(ctx, o) {
			t.Fatal("a commit for an unknown agent won")
		}
		if o.Reason != pulsev1.Reason_REASON_NOT_ENROLLED || o.agent != nil {
			t.Fatalf("unknown agent: %s, agent %v", o.Reason, o.agent)
		}
	})
	for _, n := range []int{0, 2} {
		t.Run(fmt.Sprintf("verdict decided %d times", n), func(t *testing.T) {
			o := outcome(t, "a")
			o.decisions = n
			before, err := s.GetAgent(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			if v.commit(ctx, o) {
				t.Fatal("an outcome not decided exactly once was committed")
			}
			if o.Reason != pulsev1.Reason_REASON_INTERNAL {
				t.Fatalf("decided %d times: %s, want INTERNAL", n, o.Reason)
			}
			if got, err := s.GetAgent(ctx, "a"); err != nil || got.NonceEpoch != before.NonceEpoch {
				t.Fatalf("refused outcome wrote: epoch %d -> %d, %v", before.NonceEpoch, got.NonceEpoch, err)
			}
		})
	}
	t.Run("store closed", func(t *testing.T) {
		o := outcome(t, "a")
		s2, err := store.Open(ctx, store.EngineSQLite, filepath.Join(t.TempDir(), "closed.db"))
		if err != nil {
			t.Fatal(err)
		}
		s2.Close()
		if (&Verifier{store: s2}).commit(ctx, o) {
			t.Fatal("a commit on a closed store won")
		}
		if o.Reason != pulsev1.Reason_REASON_INTERNAL || o.Err() == nil {
			t.Fatalf("closed store: %s, want INTERNAL", o.Reason)
		}
	})
}

// TestVerdictDecidedOnce: verify decides every verdict exactly once,
// before the commit: the last-known-good and the clock are part of it
// (not overwrites after it), and settle, which computes what the commit
// writes, never changes it. Each case is verified on a fresh copy of the
// agent's state (nothing is committed).
func TestVerdictDecidedOnce(t *testing.T) {
	pf := newPulseFuzz(t)
	swapped := *pf.dev
	swapped.records = slices.Clone(pf.dev.records)
	swapped.pcrs = maps.Clone(pf.dev.pcrs)
	swapped.binary = sha256.Sum256([]byte("another agent build"))
	swapped.measure(t, &cel.AgentBinary{Path: "/usr/bin/pulse-agent", SHA256: swapped.binary, Size: 24 << 20})
	clockOff := func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
		p.Time = timestamppb.New(fuzzNow.Add(-time.Hour))
	}
	mtls := func(p *pulsev1.PulsePayload, r *pulsev1.PulseRequest) {
		p.AgentId, p.VerifierNonce, p.LeafKeySha256, p.Tpm = fuzzMTLSAgent, pf.mtlsNonce, pf.mtls.peer.KeySHA256[:], false
		p.RuntimeRecords, p.RuntimeFirstRecord = nil, 0
		r.Quote, r.FirmwareLog = nil, nil
	}
	cases := []struct {
		name    string
		dev     *fuzzDevice
		mut     func(*pulsev1.PulsePayload, *pulsev1.PulseRequest)
		peer    Peer
		streak  uint32 // the agent's CLOCK_DESYNC streak before the pulse
		verdict pulsev1.Verdict
		reason  pulsev1.Reason
		desync  bool
	}{
		{name: "steady state", verdict: pulsev1.Verdict_VERDICT_TRUSTED, reason: pulsev1.Reason_REASON_OK},
		{name: "binary changed (last-known-good)", dev: &swapped, verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_BINARY_CHANGED},
		{name: "binary changed, clock off: the compromise wins", dev: &swapped, mut: clockOff,
			verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_BINARY_CHANGED},
		{name: "clock off", mut: clockOff, verdict: pulsev1.Verdict_VERDICT_CLOCK_DESYNC, reason: pulsev1.Reason_REASON_CLOCK_DESYNC, desync: true},
		{name: "clock off, persistent", mut: clockOff, streak: 1000,
			verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_CLOCK_DESYNC_PERSISTENT, desync: true},
		{name: "claimed binary", mut: func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
			p.AgentBinarySha256 = bytes.Repeat([]byte{9}, 32)
		},
			verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_CLAIM_MISMATCH},
		{name: "no quote", mut: func(_ *pulsev1.PulsePayload, r *pulsev1.PulseRequest) { r.Quote = nil },
			verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_TPM_DOWNGRADE},
		{name: "mTLS only", mut: mtls, peer: pf.mtls.peer, verdict: pulsev1.Verdict_VERDICT_DEGRADED, reason: pulsev1.Reason_REASON_OK},
		{name: "mTLS only, clock off", mut: func(p *pulsev1.PulsePayload, r *pulsev1.PulseRequest) { mtls(p, r); clockOff(p, r) }, peer: pf.mtls.peer,
			verdict: pulsev1.Verdict_VERDICT_CLOCK_DESYNC, reason: pulsev1.Reason_REASON_CLOCK_DESYNC, desync: true},
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := pf.v.store.DB().Exec(`UPDATE agents SET desync_streak = ` + fmt.Sprint(c.streak)); err != nil {
				t.Fatal(err)
			}
			// Nothing commits here, so nothing would find the cached rows
			// stale: read them again.
			pf.v.agents.drop(fuzzTPMAgent)
			pf.v.agents.drop(fuzzMTLSAgent)
			dev := c.dev
			if dev == nil {
				dev = pf.dev
			}
			peer := c.peer
			if peer.AgentID == "" {
				peer = pf.tpm.peer
			}
			o := pf.v.verify(ctx, peer, pf.pulse(t, dev, c.mut), fuzzNow)
			if o.decisions != 1 || o.Verdict != c.verdict || o.Reason != c.reason {
				t.Fatalf("verify: %s/%s (%s) decided %d times; want %s/%s once", o.Verdict, o.Reason, o.Message, o.decisions, c.verdict, c.reason)
			}
			pf.v.settle(ctx, o)
			if o.decisions != 1 || o.Verdict != c.verdict || o.Reason != c.reason {
				t.Fatalf("settle changed the verdict: %s/%s, decided %d times", o.Verdict, o.Reason, o.decisions)
			}
			if o.desync != c.desync || (c.desync && o.update.DesyncStreak != c.streak+1) || (!c.desync && o.update.DesyncStreak != 0 && accepted(o.Verdict)) {
				t.Fatalf("desync %v, streak %d -> %d", o.desync, c.streak, o.update.DesyncStreak)
			}
			if (o.Reason == pulsev1.Reason_REASON_BINARY_CHANGED) != (o.lkgAlert != nil) {
				t.Fatalf("last-known-good alert %v for %s", o.lkgAlert, o.Reason)
			}
			if o.update.LKG != nil && o.Verdict != pulsev1.Verdict_VERDICT_TRUSTED {
				t.Fatalf("a %s pulse would move the last-known-good", o.Verdict)
			}
		})
	}
}

// TestAgentCacheStaleRow: a steady-state pulse is judged against this
// process's cached row of the agent, which is exactly the row its commit
// left; a row that changed under a pulse (here a re-enrolment with another
// attestation key, between the pulse's verification and its commit) makes
// the commit write nothing, and the pulse is judged again against the row
// as it is: the quote of the old key no longer verifies.
func TestAgentCacheStaleRow(t *testing.T) {
	pf := newPulseFuzz(t)
	ctx := context.Background()
	st := pf.v.store
	// The first pulse's commit cached the row it left.
	cached := pf.v.agents.get(fuzzTPMAgent)
	stored, err := st.GetAgent(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	if cached == nil || !reflect.DeepEqual(*cached, *stored) {
		t.Fatalf("cached row\n%+v\nthe store holds\n%+v", cached, stored)
	}

	// Honest: judged against the cache, committed, cache = store again.
	o := pf.v.verify(ctx, pf.tpm.peer, pf.pulse(t, pf.dev, nil), fuzzNow)
	pf.v.settle(ctx, o)
	if !pf.v.commit(ctx, o) || o.Verdict != pulsev1.Verdict_VERDICT_TRUSTED {
		t.Fatalf("steady pulse: %s/%s (%s)", o.Verdict, o.Reason, o.Message)
	}
	stored, err = st.GetAgent(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	if c := pf.v.agents.get(fuzzTPMAgent); c == nil || !reflect.DeepEqual(*c, *stored) {
		t.Fatalf("after a commit the cache holds\n%+v\nthe store\n%+v", c, stored)
	}
	if pf.v.agents.len() != 1 {
		t.Fatalf("%d cached rows, want the one agent that pulsed", pf.v.agents.len())
	}

	// Attack-side: the agent is enrolled again with another AK after the
	// pulse was verified against the cached row.
	pf.tpmNonce = pf.nonce(t, fuzzTPMAgent, stored.NonceEpoch)
	o = pf.v.verify(ctx, pf.tpm.peer, pf.pulse(t, pf.dev, nil), fuzzNow)
	if o.Verdict != pulsev1.Verdict_VERDICT_TRUSTED {
		t.Fatalf("pulse before the re-enrolment: %s/%s (%s)", o.Verdict, o.Reason, o.Message)
	}
	otherAK, err := quote.SoftwareAK(&fuzzKey(t, "another ak").PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	otherName, err := quote.AKName(otherAK)
	if err != nil {
		t.Fatal(err)
	}
	re := *stored
	re.AKPublic, re.AKName = otherAK, otherName
	if err := st.EnrollAgent(ctx, &re); err != nil {
		t.Fatal(err)
	}
	pf.v.settle(ctx, o)
	if pf.v.commit(ctx, o) && o.Verdict == pulsev1.Verdict_VERDICT_TRUSTED {
		t.Fatal("a pulse judged against the row before a re-enrolment was committed TRUSTED")
	}
	if o.Verdict != pulsev1.Verdict_VERDICT_UNTRUSTED || o.decisions != 1 {
		t.Fatalf("judged again: %s/%s (%s), decided %d times; want UNTRUSTED once", o.Verdict, o.Reason, o.Message, o.decisions)
	}
	got, err := st.GetAgent(ctx, fuzzTPMAgent)
	if err != nil {
		t.Fatal(err)
	}
	if pulsev1.Verdict(got.LastVerdict) != pulsev1.Verdict_VERDICT_UNTRUSTED || !bytes.Equal(got.AKPublic, otherAK) {
		t.Fatalf("stored %s/%s with AK %x; want the second judgement recorded", pulsev1.Verdict(got.LastVerdict), pulsev1.Reason(got.LastReason), got.AKPublic)
	}
}
