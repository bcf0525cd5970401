package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestRevocations: the revocation list is shared through the store: what
// one store handle adds, another handle on the same database lists and
// removes; duplicates conflict and unknown entries are not found.
func TestRevocations(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			at := time.Unix(1700000000, 123).UTC()
			steps := []struct {
				name string
				add  *store.Revocation
				del  [2]string
				want error
			}{
				{name: "add serial", add: &store.Revocation{Kind: "serial", Value: "1f", Reason: "key stolen", By: "alice", At: at}},
				{name: "add spki", add: &store.Revocation{Kind: "spki", Value: "ab", By: "token", At: at}},
				{name: "add agent", add: &store.Revocation{Kind: "agent", Value: "edge-1", By: "bob", At: at}},
				{name: "same serial again conflicts", add: &store.Revocation{Kind: "serial", Value: "1f", By: "eve", At: at}, want: store.ErrConflict},
				{name: "same value, other kind is another entry", add: &store.Revocation{Kind: "agent", Value: "1f", By: "bob", At: at}},
				{name: "remove agent 1f", del: [2]string{"agent", "1f"}},
				{name: "remove it twice", del: [2]string{"agent", "1f"}, want: store.ErrNotFound},
				{name: "remove unknown", del: [2]string{"serial", "2f"}, want: store.ErrNotFound},
			}
			for _, st := range steps {
				var err error
				if st.add != nil {
					err = s.AddRevocation(ctx, *st.add)
				} else {
					var r *store.Revocation
					r, err = s.RemoveRevocation(ctx, st.del[0], st.del[1])
					if err == nil && (r.Kind != st.del[0] || r.Value != st.del[1]) {
						t.Fatalf("%s: removed %+v", st.name, r)
					}
				}
				if (st.want == nil && err != nil) || !errors.Is(err, st.want) {
					t.Fatalf("%s: %v, want %v", st.name, err, st.want)
				}
			}
			got, err := s.ListRevocations(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := []store.Revocation{
				{Kind: "agent", Value: "edge-1", By: "bob", At: at},
				{Kind: "serial", Value: "1f", Reason: "key stolen", By: "alice", At: at},
				{Kind: "spki", Value: "ab", By: "token", At: at},
			}
			if len(got) != len(want) {
				t.Fatalf("list = %+v, want %+v", got, want)
			}
			for i := range want {
				if got[i].Kind != want[i].Kind || got[i].Value != want[i].Value || got[i].Reason != want[i].Reason ||
					got[i].By != want[i].By || !got[i].At.Equal(want[i].At) {
					t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
				}
			}
			if err := s.AddRevocation(ctx, store.Revocation{Kind: "serial"}); err == nil {
				t.Error("an entry without a value was added")
			}
		})
	}
}

// TestRevocationsShared: a second replica's handle on the same SQLite file
// sees a revocation the first added.
func TestRevocationsShared(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pulse.db")
	a, err := store.Open(ctx, store.EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := store.Open(ctx, store.EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.AddRevocation(ctx, store.Revocation{Kind: "serial", Value: "7", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	got, err := b.ListRevocations(ctx)
	if err != nil || len(got) != 1 || got[0].Value != "7" {
		t.Fatalf("other handle lists %+v, %v", got, err)
	}
}
