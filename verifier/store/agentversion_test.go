package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestAgentVersionWrittenWithEvidence: the agent's reported version is
// stored by a pulse commit with verified evidence, kept by one without
// (a rejected pulse must not rename the agent's build), and returned by
// GetAgent, ListAgents and AfterCommit alike.
func TestAgentVersionWrittenWithEvidence(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrollPlain(t, s, "a")
			if a, err := s.GetAgent(ctx, "a"); err != nil || a.AgentVersion != "" {
				t.Fatalf("before any pulse: %q, %v", a.AgentVersion, err)
			}
			at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
			steps := []struct {
				evidence bool
				version  string
				want     string
			}{
				{true, "v0.4.0+b6d9127a0c1e", "v0.4.0+b6d9127a0c1e"},
				{false, "v9.9.9-forged", "v0.4.0+b6d9127a0c1e"},
				{true, "v0.5.0", "v0.5.0"},
			}
			for i, st := range steps {
				before, err := s.GetAgent(ctx, "a")
				if err != nil {
					t.Fatal(err)
				}
				u := store.PulseUpdate{At: at.Add(time.Duration(i) * time.Minute), Verdict: 1, Evidence: st.evidence,
					Seq: uint64(i + 1), AgentVersion: st.version, NextRowVersion: store.NewRowVersion()}
				if ns, err := s.CommitPulse(ctx, "a", before.NonceEpoch, u); err != nil || ns != store.NonceOK {
					t.Fatalf("step %d: %v %v", i, ns, err)
				}
				got, err := s.GetAgent(ctx, "a")
				if err != nil {
					t.Fatal(err)
				}
				if got.AgentVersion != st.want {
					t.Fatalf("step %d (evidence %v): stored %q, want %q", i, st.evidence, got.AgentVersion, st.want)
				}
				if after := before.AfterCommit(u); after.AgentVersion != st.want {
					t.Fatalf("step %d: AfterCommit says %q, want %q", i, after.AgentVersion, st.want)
				}
				all, err := s.ListAgents(ctx)
				if err != nil || len(all) != 1 || all[0].AgentVersion != st.want {
					t.Fatalf("step %d: ListAgents %v %v", i, all, err)
				}
			}
		})
	}
}
