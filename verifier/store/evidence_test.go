package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestExplanationWrittenByCommit: the findings and evidence of a pulse are
// written by its commit, in its transaction, only when the commit wins the
// epoch; a pulse without evidence keeps the last verified evidence; an
// explanation over the bound rolls the whole commit back.
func TestExplanationWrittenByCommit(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrollPlain(t, s, "a")
			if _, err := s.GetExplanation(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("explanation before any pulse: %v, want ErrNotFound", err)
			}
			at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
			x1 := &store.Explanation{At: at, Verdict: 1, Reason: 1, Policy: "edge", Findings: []byte(`[]`), Evidence: []byte("ev1")}
			if st, err := s.CommitPulse(ctx, "a", 0, store.PulseUpdate{At: at, Verdict: 1, Explanation: x1}); err != nil || st != store.NonceOK {
				t.Fatalf("commit 1: %v %v", st, err)
			}
			got, err := s.GetExplanation(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			if got.Policy != "edge" || !bytes.Equal(got.Evidence, []byte("ev1")) || !got.EvidenceAt.Equal(at) || got.Verdict != 1 {
				t.Fatalf("explanation %+v", got)
			}

			// A replayed epoch writes nothing, explanation included.
			bad := &store.Explanation{At: at.Add(time.Minute), Verdict: 2, Reason: 9, Findings: []byte(`[{"rule":"x"}]`), Evidence: []byte("forged")}
			if st, err := s.CommitPulse(ctx, "a", 0, store.PulseUpdate{At: at.Add(time.Minute), Verdict: 2, Explanation: bad}); err != nil || st != store.NonceReplayed {
				t.Fatalf("replayed commit: %v %v", st, err)
			}
			if got, _ := s.GetExplanation(ctx, "a"); !bytes.Equal(got.Evidence, []byte("ev1")) || got.Verdict != 1 {
				t.Fatalf("replayed pulse changed the explanation: %+v", got)
			}

			// A pulse with findings but no verified evidence keeps the
			// evidence of the last verified pulse.
			at2 := at.Add(2 * time.Minute)
			x2 := &store.Explanation{At: at2, Verdict: 2, Reason: 7, Findings: []byte(`[{"rule":"agent_binary"}]`)}
			if st, err := s.CommitPulse(ctx, "a", 1, store.PulseUpdate{At: at2, Verdict: 2, Explanation: x2}); err != nil || st != store.NonceOK {
				t.Fatalf("commit 2: %v %v", st, err)
			}
			got, _ = s.GetExplanation(ctx, "a")
			if got.Reason != 7 || string(got.Findings) != `[{"rule":"agent_binary"}]` || !bytes.Equal(got.Evidence, []byte("ev1")) || !got.EvidenceAt.Equal(at) {
				t.Fatalf("explanation after evidence-less pulse %+v", got)
			}

			// Over the bound: nothing is written, not even the nonce spend.
			huge := &store.Explanation{At: at2, Verdict: 1, Evidence: bytes.Repeat([]byte{1}, store.MaxExplanationBytes+1)}
			_, err = s.CommitPulse(ctx, "a", 2, store.PulseUpdate{At: at2, Verdict: 1, Explanation: huge})
			if !errors.Is(err, store.ErrExplanationTooLarge) {
				t.Fatalf("huge explanation: %v, want ErrExplanationTooLarge", err)
			}
			if a, _ := s.GetAgent(ctx, "a"); a.NonceEpoch != 2 {
				t.Fatalf("epoch %d after a refused commit, want 2", a.NonceEpoch)
			}

			// Same with a firmware-log reference (its own transaction).
			q := store.FirmwareLogQuota{PerAgent: 2, Window: 24 * time.Hour}
			fl := &store.FirmwareLogWrite{SHA256: sum("L"), Log: []byte("L"), Quota: q}
			x3 := &store.Explanation{At: at2, Verdict: 1, Findings: []byte(`[]`), Evidence: []byte("ev3")}
			if st, err := s.CommitPulse(ctx, "a", 2, store.PulseUpdate{At: at2, Verdict: 1, FirmwareLog: fl, Explanation: x3}); err != nil || st != store.NonceOK {
				t.Fatalf("commit 3: %v %v", st, err)
			}
			if got, _ := s.GetExplanation(ctx, "a"); !bytes.Equal(got.Evidence, []byte("ev3")) {
				t.Fatalf("explanation with firmware log %+v", got)
			}
		})
	}
}

// TestExplanationConcurrentCommits: batched commits (group commit) each
// write their own agent's explanation; copies of one epoch leave exactly
// the winner's.
func TestExplanationConcurrentCommits(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			const n = 24
			for i := 0; i < n; i++ {
				enrollPlain(t, s, fmt.Sprintf("c%02d", i))
			}
			var wg sync.WaitGroup
			won := make([]int, n)
			var mu sync.Mutex
			for i := 0; i < n; i++ {
				for copyN := 0; copyN < 3; copyN++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						id := fmt.Sprintf("c%02d", i)
						ev := []byte(fmt.Sprintf("%s/%d", id, copyN))
						x := &store.Explanation{At: time.Now(), Verdict: 1, Evidence: ev}
						st, err := s.CommitPulse(ctx, id, 0, store.PulseUpdate{At: time.Now(), Verdict: 1, Message: string(ev), Explanation: x})
						if err != nil {
							t.Errorf("%s: %v", id, err)
							return
						}
						if st == store.NonceOK {
							mu.Lock()
							won[i]++
							mu.Unlock()
						}
					}()
				}
			}
			wg.Wait()
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("c%02d", i)
				if won[i] != 1 {
					t.Fatalf("%s: %d winners", id, won[i])
				}
				a, _ := s.GetAgent(ctx, id)
				x, err := s.GetExplanation(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if string(x.Evidence) != a.LastMessage {
					t.Fatalf("%s: explanation %q is not the winner's %q", id, x.Evidence, a.LastMessage)
				}
			}
			page, err := s.ListEvidence(ctx, "c10", 5)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) != 5 || page[0].AgentID != "c11" || page[4].AgentID != "c15" {
				t.Fatalf("evidence page after c10: %d rows starting %v", len(page), page)
			}
			avg, mx, err := s.ExplanationBytes(ctx)
			if err != nil || avg < 5 || mx < 5 || mx > store.MaxExplanationBytes {
				t.Fatalf("explanation bytes avg %v max %d: %v", avg, mx, err)
			}
		})
	}
}
