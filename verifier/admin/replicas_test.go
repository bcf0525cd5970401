package admin

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// replicaBackend is the fake backend that also lists replicas.
type replicaBackend struct {
	*fakeBackend
	list *ReplicaList
	err  error
}

func (b replicaBackend) Replicas(context.Context) (*ReplicaList, error) { return b.list, b.err }

// TestReplicasRoute: GET /api/v1/replicas sends the backend's list, 404
// from a backend that does not list replicas, 500 on a backend error, and
// needs authentication like every route.
func TestReplicasRoute(t *testing.T) {
	const tok = "0123456789abcdef0123456789abcdef"
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	list := &ReplicaList{Now: now, Self: "r1", PolicyDigest: "aaa", Replicas: []ReplicaStatus{
		{ID: "r1", PolicyDigest: "aaa", SeenAt: now}, {ID: "r2", PolicyDigest: "bbb", SeenAt: now, Divergent: true}}}
	tests := []struct {
		name    string
		backend func(*fakeBackend) Backend
		auth    bool
		status  int
	}{
		{"lists", func(f *fakeBackend) Backend { return replicaBackend{fakeBackend: f, list: list} }, true, http.StatusOK},
		{"empty", func(f *fakeBackend) Backend { return replicaBackend{fakeBackend: f, list: &ReplicaList{Self: "r1"}} }, true, http.StatusOK},
		{"no lister", func(f *fakeBackend) Backend { return f }, true, http.StatusNotFound},
		{"backend error", func(f *fakeBackend) Backend { return replicaBackend{fakeBackend: f, err: errors.New("db down")} }, true, http.StatusInternalServerError},
		{"unauthenticated", func(f *fakeBackend) Backend { return replicaBackend{fakeBackend: f, list: list} }, false, http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tok)
			h, err := New(Options{Backend: tc.backend(f.be), Token: tok, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			f.h = h
			var opts []reqOpt
			if tc.auth {
				opts = append(opts, bearer(tok))
			}
			w := f.do(http.MethodGet, "/api/v1/replicas", "", opts...)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status != http.StatusOK {
				return
			}
			got := decodeBody[ReplicaList](t, w)
			if got.Self != "r1" || got.Replicas == nil {
				t.Errorf("body %s", w.Body)
			}
			if tc.name == "lists" && (len(got.Replicas) != 2 || !got.Replicas[1].Divergent || got.Replicas[1].PolicyDigest != "bbb") {
				t.Errorf("body %s", w.Body)
			}
		})
	}
}
