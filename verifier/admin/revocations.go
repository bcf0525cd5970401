package admin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/pulse-attest/pulse/internal/tlsconfig"
	"github.com/pulse-attest/pulse/verifier/audit"
)

// Operator record kinds of revocations (audit log; see audit.OperatorRecord
// for the by/auth data keys). Data: kind, value, reason.
const (
	KindRevoke   = "operator_revoke"
	KindUnrevoke = "operator_unrevoke"
)

// MaxRevocationReason bounds the free-text reason of a revocation.
const MaxRevocationReason = 512

// Revocation is one entry of the agent certificate revocation list: Kind
// is serial, spki or agent (tlsconfig.RevokeSerial...), Value its
// canonical text (tlsconfig.ParseRevocation).
type Revocation struct {
	Kind   string    `json:"kind"`
	Value  string    `json:"value"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// RevocationBackend is the part of a Backend that manages the revocation
// list every verifier replica checks at the handshake and on every call.
// A backend without it answers 501 on the revocation endpoints.
type RevocationBackend interface {
	// ListRevocations returns every entry.
	ListRevocations(ctx context.Context) ([]Revocation, error)
	// AddRevocation adds an entry (canonical); ErrConflict if present.
	AddRevocation(ctx context.Context, r Revocation) error
	// RemoveRevocation removes an entry; ErrNotFound if absent.
	RemoveRevocation(ctx context.Context, kind, value string) (*Revocation, error)
}

// actionRecorder is a Backend that puts operator actions on the audit
// chain.
type actionRecorder interface {
	RecordAction(ctx context.Context, rec audit.Record) error
}

// RevocationRequest is the body of POST /api/v1/revocations.
type RevocationRequest struct {
	Kind   string `json:"kind"`
	Value  string `json:"value"`
	Reason string `json:"reason,omitempty"`
}

// RevocationList is the body of GET /api/v1/revocations.
type RevocationList struct {
	Now         time.Time    `json:"now"`
	Revocations []Revocation `json:"revocations"`
}

// revocationRoutes mounts the revocation endpoints.
func (h *handler) revocationRoutes() {
	h.mux.HandleFunc("GET /api/v1/revocations", h.listRevocations)
	h.mux.HandleFunc("POST /api/v1/revocations", h.addRevocation)
	h.mux.HandleFunc("DELETE /api/v1/revocations/{kind}/{value}", h.removeRevocation)
}

func (h *handler) revocations(w http.ResponseWriter) (RevocationBackend, bool) {
	rb, ok := h.backend.(RevocationBackend)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this verifier does not manage revocations")
	}
	return rb, ok
}

func (h *handler) listRevocations(w http.ResponseWriter, r *http.Request) {
	rb, ok := h.revocations(w)
	if !ok {
		return
	}
	rs, err := rb.ListRevocations(r.Context())
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	if rs == nil {
		rs = []Revocation{}
	}
	writeJSON(w, http.StatusOK, RevocationList{Now: h.now().UTC(), Revocations: rs})
}

func (h *handler) addRevocation(w http.ResponseWriter, r *http.Request) {
	rb, ok := h.revocations(w)
	if !ok {
		return
	}
	var req RevocationRequest
	if err := decode(w, r, &req, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	value, err := tlsconfig.ParseRevocation(req.Kind, req.Value)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Reason) > MaxRevocationReason {
		writeError(w, http.StatusBadRequest, "reason: too long")
		return
	}
	p := principalFrom(r.Context())
	rev := Revocation{Kind: req.Kind, Value: value, Reason: req.Reason, By: p.Name, At: h.now().UTC()}
	if err := rb.AddRevocation(r.Context(), rev); err != nil {
		h.backendError(w, r, err)
		return
	}
	h.log.Info("certificate revoked", "kind", rev.Kind, "value", rev.Value, "by", p.Name, "auth_method", p.Method)
	if !h.recordRevocation(w, r, KindRevoke, rev) {
		return
	}
	writeJSON(w, http.StatusCreated, rev)
}

func (h *handler) removeRevocation(w http.ResponseWriter, r *http.Request) {
	rb, ok := h.revocations(w)
	if !ok {
		return
	}
	kind := r.PathValue("kind")
	value, err := tlsconfig.ParseRevocation(kind, r.PathValue("value"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rev, err := rb.RemoveRevocation(r.Context(), kind, value)
	if err == nil && rev == nil {
		err = ErrNotFound
	}
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	p := principalFrom(r.Context())
	h.log.Info("revocation removed", "kind", kind, "value", value, "by", p.Name, "auth_method", p.Method)
	if !h.recordRevocation(w, r, KindUnrevoke, *rev) {
		return
	}
	writeJSON(w, http.StatusOK, ActionResult{ID: kind + "/" + value, By: p.Name, At: h.now().UTC()})
}

// recordRevocation puts a revocation change on the audit chain when the
// backend keeps one. It reports whether the handler may answer success.
func (h *handler) recordRevocation(w http.ResponseWriter, r *http.Request, kind string, rev Revocation) bool {
	ar, ok := h.backend.(actionRecorder)
	if !ok {
		return true
	}
	p := principalFrom(r.Context())
	agentID := ""
	if rev.Kind == tlsconfig.RevokeAgent {
		agentID = rev.Value
	}
	rec := audit.Record{Time: h.now(), Kind: kind, AgentID: agentID, Severity: 4, Data: map[string]string{
		"by": p.Name, "auth": p.Method, "kind": rev.Kind, "value": rev.Value, "reason": rev.Reason,
	}}
	if err := ar.RecordAction(r.Context(), rec); err != nil {
		h.log.Error("operator action not recorded in the audit log", "kind", kind, "by", p.Name, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusInternalServerError, "the action took effect but could not be recorded in the audit log (see the verifier log)")
		return false
	}
	return true
}

// ListRevocations returns the revocation list.
func (c *Client) ListRevocations(ctx context.Context) (*RevocationList, error) {
	var out RevocationList
	if err := c.do(ctx, http.MethodGet, "/api/v1/revocations", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Revoke adds an entry to the revocation list.
func (c *Client) Revoke(ctx context.Context, req RevocationRequest) (*Revocation, error) {
	var out Revocation
	if err := c.do(ctx, http.MethodPost, "/api/v1/revocations", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Unrevoke removes an entry from the revocation list.
func (c *Client) Unrevoke(ctx context.Context, kind, value string) (*ActionResult, error) {
	if kind == "" || value == "" {
		return nil, errors.New("admin client: kind and value are required")
	}
	var out ActionResult
	p := "/api/v1/revocations/" + url.PathEscape(kind) + "/" + url.PathEscape(value)
	if err := c.do(ctx, http.MethodDelete, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
