package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/audit"
)

// revFake is a backend with only the revocation list (and, when record is
// set, an audit chain); the other Backend methods are not called.
type revFake struct {
	Backend
	mu      sync.Mutex
	list    []Revocation
	records []audit.Record
	failRec bool
}

type revRecorder struct{ *revFake }

func (f *revRecorder) RecordAction(_ context.Context, rec audit.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRec {
		return errors.New("disk full")
	}
	f.records = append(f.records, rec)
	return nil
}

func (f *revFake) ListRevocations(context.Context) ([]Revocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Revocation(nil), f.list...), nil
}

func (f *revFake) AddRevocation(_ context.Context, r Revocation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range f.list {
		if x.Kind == r.Kind && x.Value == r.Value {
			return ErrConflict
		}
	}
	f.list = append(f.list, r)
	return nil
}

func (f *revFake) RemoveRevocation(_ context.Context, kind, value string) (*Revocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.list {
		if x.Kind == kind && x.Value == value {
			f.list = append(f.list[:i], f.list[i+1:]...)
			return &x, nil
		}
	}
	return nil, ErrNotFound
}

const revToken = "revocation-test-token-0123456789"

func revHandler(t *testing.T, be Backend) http.Handler {
	t.Helper()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	h, err := New(Options{Backend: be, Token: revToken, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func revDo(h http.Handler, method, target, body string, auth bool) *httptest.ResponseRecorder {
	var r *http.Request
	if body != "" {
		r = httptest.NewRequest(method, "https://admin.test"+target, strings.NewReader(body))
	} else {
		r = httptest.NewRequest(method, "https://admin.test"+target, nil)
	}
	r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true}
	if method != http.MethodGet {
		r.Header.Set("Content-Type", "application/json")
	}
	if auth {
		r.Header.Set("Authorization", "Bearer "+revToken)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestRevocationEndpoints: the revocation list is managed through the admin
// API by authenticated operators only; values are canonicalised, bad ones
// refused, duplicates conflict, unknown entries are not found, and each
// change is on the audit chain with who made it.
func TestRevocationEndpoints(t *testing.T) {
	fake := &revFake{}
	be := &revRecorder{fake}
	h := revHandler(t, be)
	digest := strings.Repeat("AB", 32)
	steps := []struct {
		name         string
		method, path string
		body         string
		noAuth       bool
		want         int
		wantInBody   string
	}{
		{name: "list without credentials", method: "GET", path: "/api/v1/revocations", noAuth: true, want: http.StatusUnauthorized},
		{name: "add without credentials", method: "POST", path: "/api/v1/revocations", body: `{"kind":"agent","value":"edge-1"}`, noAuth: true, want: http.StatusUnauthorized},
		{name: "add serial (decimal)", method: "POST", path: "/api/v1/revocations", body: `{"kind":"serial","value":"31","reason":"laptop stolen"}`, want: http.StatusCreated, wantInBody: `"value": "1f"`},
		{name: "same serial in hex conflicts", method: "POST", path: "/api/v1/revocations", body: `{"kind":"serial","value":"0x1F"}`, want: http.StatusConflict},
		{name: "add key", method: "POST", path: "/api/v1/revocations", body: `{"kind":"spki","value":"sha256:` + digest + `"}`, want: http.StatusCreated, wantInBody: strings.ToLower(digest)},
		{name: "add agent", method: "POST", path: "/api/v1/revocations", body: `{"kind":"agent","value":"edge-1"}`, want: http.StatusCreated},
		{name: "bad kind", method: "POST", path: "/api/v1/revocations", body: `{"kind":"operator","value":"alice"}`, want: http.StatusBadRequest},
		{name: "bad agent id", method: "POST", path: "/api/v1/revocations", body: `{"kind":"agent","value":"a/b"}`, want: http.StatusBadRequest},
		{name: "unknown field", method: "POST", path: "/api/v1/revocations", body: `{"kind":"agent","value":"x","by":"mallory"}`, want: http.StatusBadRequest},
		{name: "reason too long", method: "POST", path: "/api/v1/revocations", body: `{"kind":"agent","value":"x","reason":"` + strings.Repeat("r", MaxRevocationReason+1) + `"}`, want: http.StatusBadRequest},
		{name: "list", method: "GET", path: "/api/v1/revocations", want: http.StatusOK, wantInBody: `"by": "token"`},
		{name: "remove serial by another spelling", method: "DELETE", path: "/api/v1/revocations/serial/0x1f", want: http.StatusOK},
		{name: "remove it again", method: "DELETE", path: "/api/v1/revocations/serial/31", want: http.StatusNotFound},
		{name: "remove malformed", method: "DELETE", path: "/api/v1/revocations/spki/zz", want: http.StatusBadRequest},
		{name: "remove without credentials", method: "DELETE", path: "/api/v1/revocations/agent/edge-1", noAuth: true, want: http.StatusUnauthorized},
	}
	for _, st := range steps {
		w := revDo(h, st.method, st.path, st.body, !st.noAuth)
		if w.Code != st.want || !strings.Contains(w.Body.String(), st.wantInBody) {
			t.Fatalf("%s: %d %s; want %d with %q", st.name, w.Code, w.Body.String(), st.want, st.wantInBody)
		}
	}
	if len(fake.list) != 2 {
		t.Fatalf("list after the steps: %+v", fake.list)
	}
	// Three additions and one removal are on the record, nothing else.
	var kinds []string
	for _, r := range fake.records {
		kinds = append(kinds, r.Kind+":"+r.Data["kind"]+":"+r.Data["value"]+":"+r.Data["by"]+":"+r.Data["auth"])
	}
	want := []string{
		"operator_revoke:serial:1f:token:token",
		"operator_revoke:spki:" + strings.ToLower(digest) + ":token:token",
		"operator_revoke:agent:edge-1:token:token",
		"operator_unrevoke:serial:1f:token:token",
	}
	if strings.Join(kinds, " ") != strings.Join(want, " ") {
		t.Fatalf("audit records:\n%s\nwant\n%s", strings.Join(kinds, "\n"), strings.Join(want, "\n"))
	}
	if fake.records[2].AgentID != "edge-1" || fake.records[0].AgentID != "" {
		t.Errorf("agent_id of records: %q, %q", fake.records[2].AgentID, fake.records[0].AgentID)
	}
}

// TestRevocationAuditFailure: a change that could not be recorded says so.
func TestRevocationAuditFailure(t *testing.T) {
	fake := &revFake{failRec: true}
	h := revHandler(t, &revRecorder{fake})
	w := revDo(h, "POST", "/api/v1/revocations", `{"kind":"agent","value":"edge-1"}`, true)
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), "audit log") {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
}

// TestRevocationsNotImplemented: a backend without a revocation list
// answers 501, not a silent success.
func TestRevocationsNotImplemented(t *testing.T) {
	h := revHandler(t, struct{ Backend }{})
	for _, m := range []string{"GET", "POST"} {
		w := revDo(h, m, "/api/v1/revocations", `{"kind":"agent","value":"edge-1"}`, true)
		if w.Code != http.StatusNotImplemented {
			t.Fatalf("%s: %d %s", m, w.Code, w.Body.String())
		}
	}
}
