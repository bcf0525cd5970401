package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestSentinelEvents: events are kept per agent, newest first, duplicates
// ignored, bounded to MaxSentinelEvents; the cursor is the last one set.
func TestSentinelEvents(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
			if _, err := s.GetSentinelCursor(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("cursor of an agent without records: %v", err)
			}
			kill := store.SentinelEvent{Boot: "1.0", Seq: 7, Kind: "signal", At: t0, SenderPID: 4242, SenderUID: 0, SenderComm: "kill",
				TargetPID: 100, Signal: 9, Detail: "SIGKILL delivered uid 0", Finding: "REASON_AGENT_SIGNALLED"}
			if err := s.RecordSentinel(ctx, "a", store.SentinelCursor{Boot: "1.0", LastSeq: 7}, []store.SentinelEvent{kill}, t0); err != nil {
				t.Fatal(err)
			}
			// The same pulse again (a lost response) changes nothing.
			if err := s.RecordSentinel(ctx, "a", store.SentinelCursor{Boot: "1.0", LastSeq: 7}, []store.SentinelEvent{kill}, t0.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			got, err := s.SentinelEvents(ctx, "a")
			if err != nil || len(got) != 1 {
				t.Fatalf("events %+v %v", got, err)
			}
			g := got[0]
			if g.Seq != 7 || g.SenderPID != 4242 || g.SenderComm != "kill" || g.Signal != 9 || g.Finding != "REASON_AGENT_SIGNALLED" || !g.At.Equal(t0) || g.TargetPID != 100 {
				t.Errorf("stored %+v", g)
			}
			if other, _ := s.SentinelEvents(ctx, "b"); len(other) != 0 {
				t.Errorf("agent b sees a's events: %+v", other)
			}
			// The cursor is what the last committed pulse set.
			for _, tc := range []struct {
				set, want store.SentinelCursor
			}{
				{store.SentinelCursor{Boot: "1.0", LastSeq: 3}, store.SentinelCursor{Boot: "1.0", LastSeq: 3}},
				{store.SentinelCursor{Boot: "1.0", LastSeq: 9}, store.SentinelCursor{Boot: "1.0", LastSeq: 9}},
				{store.SentinelCursor{Boot: "2.0", LastSeq: 2}, store.SentinelCursor{Boot: "2.0", LastSeq: 2}},
			} {
				if err := s.RecordSentinel(ctx, "a", tc.set, nil, t0); err != nil {
					t.Fatal(err)
				}
				if c, err := s.GetSentinelCursor(ctx, "a"); err != nil || c != tc.want {
					t.Errorf("after %+v: cursor %+v %v, want %+v", tc.set, c, err, tc.want)
				}
			}
			var many []store.SentinelEvent
			for i := range store.MaxSentinelEvents + 5 {
				many = append(many, store.SentinelEvent{Boot: "2.0", Seq: uint64(10 + i), Kind: "bpf_load", At: t0, SenderComm: fmt.Sprint("p", i)})
			}
			if err := s.RecordSentinel(ctx, "a", store.SentinelCursor{Boot: "2.0", LastSeq: uint64(10 + len(many) - 1)}, many, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			got, err = s.SentinelEvents(ctx, "a")
			if err != nil || len(got) != store.MaxSentinelEvents {
				t.Fatalf("%d events kept (%v), want %d", len(got), err, store.MaxSentinelEvents)
			}
			if got[0].Seq != uint64(10+len(many)-1) || got[len(got)-1].Seq != uint64(10+len(many)-store.MaxSentinelEvents) {
				t.Errorf("kept seq %d..%d, want the newest", got[len(got)-1].Seq, got[0].Seq)
			}
		})
	}
}
