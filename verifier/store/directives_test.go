package store_test

import (
	"context"
	"testing"

	"github.com/pulse-attest/pulse/verifier/store"
)

func publish(t *testing.T, s *store.Store, body string) {
	t.Helper()
	if err := s.PublishDirective(context.Background(), &store.Directive{Target: "*", Kind: "quarantine", Body: []byte(body)}); err != nil {
		t.Fatalf("publish %s: %v", body, err)
	}
}

func next(t *testing.T, s *store.Store, c *store.DirectiveCursor, limit int) []string {
	t.Helper()
	ds, err := s.NextDirectives(context.Background(), c, limit)
	if err != nil {
		t.Fatalf("next directives: %v", err)
	}
	out := []string{}
	for i, d := range ds {
		if i > 0 && d.Seq <= ds[i-1].Seq {
			t.Fatalf("directives out of seq order: %d after %d", d.Seq, ds[i-1].Seq)
		}
		out = append(out, string(d.Body))
	}
	return out
}

func sameBodies(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDirectiveCursor: a cursor starts at the present, returns each later
// directive once, in seq order, in batches of at most limit.
func TestDirectiveCursor(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			publish(t, s, "old-1")
			publish(t, s, "old-2")
			c, err := s.NewDirectiveCursor(ctx)
			if err != nil {
				t.Fatalf("new cursor: %v", err)
			}
			steps := []struct {
				name    string
				publish []string
				limit   int
				want    []string
			}{
				{"nothing new", nil, 10, []string{}},
				{"three new", []string{"a", "b", "c"}, 10, []string{"a", "b", "c"}},
				{"none twice", nil, 10, []string{}},
				{"batch 1 of 3", []string{"d", "e", "f", "g", "h"}, 2, []string{"d", "e"}},
				{"batch 2 of 3", nil, 2, []string{"f", "g"}},
				{"batch 3 of 3, plus a newcomer", []string{"i"}, 2, []string{"h", "i"}},
				{"drained", nil, 2, []string{}},
				{"no limit", []string{"j", "k"}, 0, []string{"j", "k"}},
			}
			for _, st := range steps {
				for _, b := range st.publish {
					publish(t, s, b)
				}
				if got := next(t, s, c, st.limit); !sameBodies(got, st.want) {
					t.Fatalf("%s: got %q, want %q", st.name, got, st.want)
				}
			}
			// Nothing is left open: whatever the cursor remembers is gone
			// once the horizon passes it.
			next(t, s, c, 0)
			if p := c.Pending(); p != 0 {
				t.Fatalf("cursor still remembers %d directives with no writer open", p)
			}
		})
	}
}

// TestDirectiveCursorLateCommit: a directive whose sequence number was taken
// before, but committed after, a later one's is still returned, once. Only
// PostgreSQL lets writers commit out of order (SQLite has one writer).
func TestDirectiveCursorLateCommit(t *testing.T) {
	for name, s := range postgresStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			c, err := s.NewDirectiveCursor(ctx)
			if err != nil {
				t.Fatalf("new cursor: %v", err)
			}
			// A writer takes its sequence number and stays open.
			late, err := s.DB().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer late.Rollback() //nolint:errcheck // committed below
			var lateSeq int64
			if err := late.QueryRowContext(ctx, `INSERT INTO directives (target, kind, body, created_at) VALUES ('*', 'release', 'late', 1) RETURNING seq`).Scan(&lateSeq); err != nil {
				t.Fatalf("late insert: %v", err)
			}
			// Another connection writes and commits a higher one.
			publish(t, s, "early")
			if got := next(t, s, c, 10); !sameBodies(got, []string{"early"}) {
				t.Fatalf("before the late commit: got %q, want [early]", got)
			}
			last, err := s.LastDirectiveSeq(ctx)
			if err != nil || last <= lateSeq {
				t.Fatalf("want the committed directive's seq %d above the open one's %d (%v)", last, lateSeq, err)
			}
			// Polls while the writer stays open return nothing, repeatedly.
			for range 3 {
				if got := next(t, s, c, 10); len(got) != 0 {
					t.Fatalf("while the writer is open: got %q", got)
				}
			}
			if err := late.Commit(); err != nil {
				t.Fatalf("late commit: %v", err)
			}
			// A reader remembering "everything up to the last seq" misses it...
			if ds, err := s.DirectivesAfter(ctx, last, 10); err != nil || len(ds) != 0 {
				t.Fatalf("directives after %d: %v %v", last, ds, err)
			}
			// ...the cursor does not, and returns it once.
			if got := next(t, s, c, 10); !sameBodies(got, []string{"late"}) {
				t.Fatalf("after the late commit: got %q, want [late]", got)
			}
			for range 2 {
				if got := next(t, s, c, 10); len(got) != 0 {
					t.Fatalf("returned twice: %q", got)
				}
			}
			if p := c.Pending(); p != 0 {
				t.Fatalf("cursor still remembers %d directives with no writer open", p)
			}
		})
	}
}

// TestDirectiveCursorRolledBack: a writer that rolls back leaves a gap the
// cursor passes without waiting, and rows open when the cursor is made are
// returned when they commit.
func TestDirectiveCursorRolledBack(t *testing.T) {
	for name, s := range postgresStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			open, err := s.DB().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := open.ExecContext(ctx, `INSERT INTO directives (target, kind, body, created_at) VALUES ('*', 'release', 'open-at-start', 1)`); err != nil {
				t.Fatal(err)
			}
			c, err := s.NewDirectiveCursor(ctx)
			if err != nil {
				t.Fatalf("new cursor: %v", err)
			}
			gone, err := s.DB().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := gone.ExecContext(ctx, `INSERT INTO directives (target, kind, body, created_at) VALUES ('*', 'release', 'rolled-back', 1)`); err != nil {
				t.Fatal(err)
			}
			publish(t, s, "a")
			if err := gone.Rollback(); err != nil {
				t.Fatal(err)
			}
			if err := open.Commit(); err != nil {
				t.Fatal(err)
			}
			publish(t, s, "b")
			if got := next(t, s, c, 10); !sameBodies(got, []string{"open-at-start", "a", "b"}) {
				t.Fatalf("got %q, want [open-at-start a b]", got)
			}
			if got := next(t, s, c, 10); len(got) != 0 || c.Pending() != 0 {
				t.Fatalf("after drain: %q, %d pending", got, c.Pending())
			}
		})
	}
}
