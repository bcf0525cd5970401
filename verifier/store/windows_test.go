package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestUpdateWindowsNotEnded: open and scheduled windows are listed by start
// with who approved them; ended ones are not.
func TestUpdateWindowsNotEnded(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Now()
			for _, w := range []*store.UpdateWindow{
				{ID: "later", Digest: "cc", Agents: []string{"*"}, Start: now.Add(time.Hour), End: now.Add(2 * time.Hour), CreatedBy: "token:alice"},
				{ID: "ended", Digest: "aa", Agents: []string{"edge-*"}, Start: now.Add(-2 * time.Hour), End: now.Add(-time.Hour), CreatedBy: "bob"},
				{ID: "open", Digest: "bb", Agents: []string{"edge-1", "edge-2"}, Start: now.Add(-time.Minute), End: now.Add(time.Minute), CreatedBy: "carol"},
			} {
				if err := s.AddUpdateWindow(ctx, w); err != nil {
					t.Fatal(err)
				}
			}
			ws, err := s.UpdateWindowsNotEnded(ctx, now)
			if err != nil || len(ws) != 2 {
				t.Fatalf("windows %+v %v", ws, err)
			}
			if ws[0].ID != "open" || ws[0].CreatedBy != "carol" || len(ws[0].Agents) != 2 || ws[1].ID != "later" || ws[1].CreatedBy != "token:alice" {
				t.Fatalf("windows %+v %+v", ws[0], ws[1])
			}
			if ws, err := s.UpdateWindowsNotEnded(ctx, now.Add(3*time.Hour)); err != nil || len(ws) != 0 {
				t.Fatalf("after every end: %+v %v", ws, err)
			}
		})
	}
}
