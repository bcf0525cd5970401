package store

import (
	"context"
	"testing"
	"time"
)

// TestCommitStatementsPrepared: a pulse commit that is a transaction (the
// row and its explanation) runs statements prepared once and cached, not
// prepared again on every transaction's connection.
func TestCommitStatementsPrepared(t *testing.T) {
	for name, s := range batchStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ids := enrollN(t, s, 1)
			cached := func() int {
				n := 0
				s.stmts.Range(func(_, _ any) bool { n++; return true })
				return n
			}
			var after []int
			for epoch := uint64(0); epoch < 3; epoch++ {
				u := PulseUpdate{At: time.Now(), Verdict: 1, Evidence: true, RuntimeUnchanged: epoch > 0, Seq: epoch,
					Explanation: &Explanation{At: time.Now(), Verdict: 1, Policy: "p", Findings: []byte("[]")}}
				if st, err := s.CommitPulse(ctx, ids[0], epoch, u); err != nil || st != NonceOK {
					t.Fatalf("commit %d: %v, %v", epoch, st, err)
				}
				after = append(after, cached())
			}
			for _, q := range []string{s.pulseQuery(pulseEvidenceRuntimeUnchanged), qNonceEpoch, qPutExplanation} {
				if _, ok := s.stmts.Load(q); !ok {
					t.Fatalf("statement not cached after the commits: %.60s", q)
				}
			}
			// The steady state (the same form every pulse) prepares nothing new.
			if after[2] != after[1] {
				t.Fatalf("cached statements %v: the steady state prepared more", after)
			}
		})
	}
}
