package verifier

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
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
			agent: a, epoch: a.NonceEpoch, sendFirmwareLog: true,
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
