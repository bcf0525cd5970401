package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// decomBackend adds decommissioning and revocations to the fake backend.
type decomBackend struct {
	*fakeBackend
	mu        sync.Mutex
	removed   []string
	waited    []bool
	revs      []Revocation
	revokeErr error
	removeErr error
}

func (d *decomBackend) RemoveAgent(_ context.Context, id string, after bool) (*RemovedAgent, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removeErr != nil {
		return nil, d.removeErr
	}
	d.removed = append(d.removed, id)
	d.waited = append(d.waited, after)
	return &RemovedAgent{ID: id, Partition: "lab", TPM: true, EKSHA256: strings.Repeat("ab", 32), EnrolledAt: time.Unix(100, 0).UTC()}, nil
}

func (d *decomBackend) ListRevocations(context.Context) ([]Revocation, error) { return d.revs, nil }

func (d *decomBackend) AddRevocation(_ context.Context, r Revocation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.revokeErr != nil {
		return d.revokeErr
	}
	d.revs = append(d.revs, r)
	return nil
}

func (d *decomBackend) RemoveRevocation(context.Context, string, string) (*Revocation, error) {
	return nil, ErrNotFound
}

// TestRemoveAgentEndpoint: only an authenticated operator removes an
// agent; an unknown ID is answered 404 with nothing revoked or removed; a
// revocation that fails removes nothing; a removal revokes first, waits
// for the revocation to be in force, and lands on the audit chain with
// who did it.
func TestRemoveAgentEndpoint(t *testing.T) {
	const tok = "decommission-token-0123456789"
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	newHandler := func(be *decomBackend) http.Handler {
		h, err := New(Options{Backend: be, Registry: prometheus.NewRegistry(), Logger: hclog.NewNullLogger(), Token: tok, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	for _, tc := range []struct {
		name       string
		path, body string
		auth       bool
		revokeErr  error
		status     int
		removed    int
		revoked    int
		records    int
		waited     bool
	}{
		{"no credentials", "/api/v1/agents/edge-1/remove", `{"revoke":true}`, false, nil, http.StatusUnauthorized, 0, 0, 0, false},
		{"unknown agent", "/api/v1/agents/edge-404/remove", `{"revoke":true}`, true, nil, http.StatusNotFound, 0, 0, 0, false},
		{"bad id", "/api/v1/agents/..%2f/remove", `{}`, true, nil, http.StatusBadRequest, 0, 0, 0, false},
		{"unknown field", "/api/v1/agents/edge-1/remove", `{"revoke":true,"force":1}`, true, nil, http.StatusBadRequest, 0, 0, 0, false},
		{"revocation fails", "/api/v1/agents/edge-1/remove", `{"revoke":true}`, true, errors.New("store down"), http.StatusInternalServerError, 0, 0, 0, false},
		{"remove and revoke", "/api/v1/agents/edge-1/remove", `{"revoke":true,"reason":"RMA 4711"}`, true, nil, http.StatusOK, 1, 1, 2, true},
		{"remove, keep certificate", "/api/v1/agents/edge-1/remove", `{"revoke":false}`, true, nil, http.StatusOK, 1, 0, 1, false},
		{"already revoked", "/api/v1/agents/edge-1/remove", `{"revoke":true}`, true, fmt.Errorf("dup: %w", ErrConflict), http.StatusOK, 1, 0, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := &decomBackend{fakeBackend: sampleBackend(now), revokeErr: tc.revokeErr}
			f := &fixture{t: t, h: newHandler(be)}
			var opts []reqOpt
			if tc.auth {
				opts = append(opts, bearer(tok))
			}
			w := f.do(http.MethodPost, tc.path, tc.body, opts...)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body.String())
			}
			if len(be.removed) != tc.removed || len(be.revs) != tc.revoked || len(be.records) != tc.records {
				t.Fatalf("removed %v, revoked %v, %d audit records; want %d, %d, %d", be.removed, be.revs, len(be.records), tc.removed, tc.revoked, tc.records)
			}
			if tc.removed == 0 {
				return
			}
			if be.waited[0] != tc.waited {
				t.Fatalf("waited for the revocation: %v, want %v", be.waited[0], tc.waited)
			}
			last := be.records[len(be.records)-1]
			if last.Kind != KindRemoveAgent || last.AgentID != "edge-1" || last.Data["by"] != TokenPrincipal || last.Data["ek_sha256"] == "" {
				t.Fatalf("audit record %+v", last)
			}
			res := decodeBody[RemoveResult](t, w)
			if res.Agent.ID != "edge-1" || res.Revoked != (tc.revoked > 0 || tc.revokeErr != nil) {
				t.Fatalf("result %+v", res)
			}
		})
	}
}
