package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

func TestAlertsDedupAndAck(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			// Two replicas race to raise the same event: one wins.
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				wins int
			)
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ok, err := s.RaiseAlert(ctx, &store.Alert{DedupKey: "blinded:a1:1", AgentID: "a1", Kind: "compromised", Severity: 1, Replica: fmt.Sprint(i)})
					if err != nil {
						t.Error(err)
					}
					if ok {
						mu.Lock()
						wins++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if wins != 1 {
				t.Fatalf("alert raised %d times", wins)
			}
			if _, err := s.RaiseAlert(ctx, &store.Alert{DedupKey: "x:a2", AgentID: "a2", Kind: "clock_desync", Severity: 3}); err != nil {
				t.Fatal(err)
			}
			open, err := s.ListAlerts(ctx, store.AlertFilter{OpenOnly: true})
			if err != nil || len(open) != 2 {
				t.Fatalf("open alerts %d %v", len(open), err)
			}
			if err := s.AckAlert(ctx, open[0].ID, "operator:alice", time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := s.AckAlert(ctx, open[0].ID, "operator:alice", time.Now()); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("second ack: %v", err)
			}
			open, _ = s.ListAlerts(ctx, store.AlertFilter{OpenOnly: true})
			if len(open) != 1 {
				t.Fatalf("open after ack: %d", len(open))
			}
			counts, err := s.CountOpenAlerts(ctx)
			if err != nil || len(counts) != 1 {
				t.Fatalf("counts %v %v", counts, err)
			}
		})
	}
}

func TestBlindedExactlyOnce(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if err := s.EnrollAgent(ctx, &store.Agent{ID: "quiet", EnrolledAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			// Deadlines are on the database's clock: a second ago.
			if err := s.SetDeadline(ctx, "quiet", 30*time.Second, -time.Second); err != nil {
				t.Fatal(err)
			}
			over, err := s.Overdue(ctx)
			if err != nil || len(over) != 1 {
				t.Fatalf("overdue %d %v", len(over), err)
			}
			first, err := s.MarkBlinded(ctx, "quiet", 5, 94, "silent")
			if err != nil || !first {
				t.Fatalf("mark %v %v", first, err)
			}
			again, _ := s.MarkBlinded(ctx, "quiet", 5, 94, "silent")
			if again {
				t.Fatal("blinded twice")
			}
			if over, _ := s.Overdue(ctx); len(over) != 0 {
				t.Fatal("still overdue after blinded")
			}
			// The agent speaks: the mark clears; grace pushes deadlines out.
			if err := s.SetDeadline(ctx, "quiet", 30*time.Second, -time.Second); err != nil {
				t.Fatal(err)
			}
			if err := s.GraceAll(ctx, time.Minute); err != nil {
				t.Fatal(err)
			}
			if over, _ := s.Overdue(ctx); len(over) != 0 {
				t.Fatal("overdue during grace")
			}
			ops, err := s.GetAgentOps(ctx, "quiet")
			if err != nil || !ops.BlindedAt.IsZero() || ops.Interval != 30*time.Second {
				t.Fatalf("ops %+v %v", ops, err)
			}
		})
	}
}

func TestHistoryBounded(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			base := time.Now()
			for i := range store.HistoryLimit + 10 {
				if err := s.AppendHistory(ctx, "h", store.HistoryEntry{At: base.Add(time.Duration(i) * time.Second), Verdict: int32(i % 3)}); err != nil {
					t.Fatal(err)
				}
			}
			h, err := s.History(ctx, "h", 0)
			if err != nil || len(h) != store.HistoryLimit {
				t.Fatalf("history %d %v", len(h), err)
			}
			if !h[0].At.After(h[1].At) {
				t.Fatal("history not newest first")
			}
		})
	}
}

func TestWindowsQuarantineDirectives(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Now()
			if err := s.AddUpdateWindow(ctx, &store.UpdateWindow{Digest: "AB", Agents: []string{"edge-*"}, Start: now.Add(-time.Minute), End: now.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			if err := s.AddUpdateWindow(ctx, &store.UpdateWindow{Digest: "cd", Agents: []string{"*"}, Start: now.Add(time.Hour), End: now.Add(2 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
			ws, err := s.UpdateWindows(ctx, now)
			if err != nil || len(ws) != 1 || ws[0].Digest != "ab" || ws[0].Agents[0] != "edge-*" {
				t.Fatalf("windows %+v %v", ws, err)
			}
			isNew, err := s.AddQuarantine(ctx, store.Quarantine{Address: "192.0.2.7", Offender: "bad", Since: now})
			if err != nil || !isNew {
				t.Fatal(err)
			}
			if isNew, _ := s.AddQuarantine(ctx, store.Quarantine{Address: "192.0.2.7", Offender: "bad", Since: now}); isNew {
				t.Fatal("quarantined twice")
			}
			if q, err := s.ListQuarantine(ctx); err != nil || len(q) != 1 {
				t.Fatalf("list %v %v", q, err)
			}
			if _, err := s.RemoveQuarantine(ctx, "192.0.2.7"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.RemoveQuarantine(ctx, "192.0.2.7"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("second release: %v", err)
			}
			for i := range 3 {
				if err := s.PublishDirective(ctx, &store.Directive{Target: "*", Kind: "quarantine", Body: []byte{byte(i)}}); err != nil {
					t.Fatal(err)
				}
			}
			last, err := s.LastDirectiveSeq(ctx)
			if err != nil || last == 0 {
				t.Fatalf("last seq %d %v", last, err)
			}
			ds, err := s.DirectivesAfter(ctx, last-2, 10)
			if err != nil || len(ds) != 2 || ds[0].Body[0] != 1 {
				t.Fatalf("directives after: %+v %v", ds, err)
			}
		})
	}
}
