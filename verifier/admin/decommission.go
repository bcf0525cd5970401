package admin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	"github.com/pulse-attest/pulse/verifier/audit"
)

// KindRemoveAgent is the operator record kind of a decommissioning (audit
// log; see audit.OperatorRecord for the by/auth data keys). Data: partition,
// tpm, ek_sha256, enrolled_at, revoked, reason.
const KindRemoveAgent = "operator_remove_agent"

// RemovedAgent is what a decommissioning removed.
type RemovedAgent struct {
	ID         string    `json:"id"`
	Partition  string    `json:"partition"`
	TPM        bool      `json:"tpm"`
	EKSHA256   string    `json:"ek_sha256,omitempty"`
	EnrolledAt time.Time `json:"enrolled_at"`
}

// DecommissionBackend is the part of a Backend that removes agents. A
// backend without it answers 501 on the endpoint.
type DecommissionBackend interface {
	// RemoveAgent removes an enrolled agent; ErrNotFound when none. With
	// afterRevocation it first waits until a revocation just added is in
	// force on every replica (they re-read the list periodically), so the
	// device cannot enroll again between the removal and the refresh.
	RemoveAgent(ctx context.Context, id string, afterRevocation bool) (*RemovedAgent, error)
}

// RemoveRequest is the body of POST /api/v1/agents/{id}/remove.
type RemoveRequest struct {
	// Revoke also revokes the agent ID (every replica refuses its
	// certificate), so the device cannot enroll again by itself.
	Revoke bool   `json:"revoke"`
	Reason string `json:"reason,omitempty"`
}

// RemoveResult is the answer of POST /api/v1/agents/{id}/remove.
type RemoveResult struct {
	Agent   RemovedAgent `json:"agent"`
	Revoked bool         `json:"revoked"`
	By      string       `json:"by"`
	At      time.Time    `json:"at"`
}

func (h *handler) decommissionRoutes() {
	h.mux.HandleFunc("POST /api/v1/agents/{id}/remove", h.removeAgent)
}

func (h *handler) removeAgent(w http.ResponseWriter, r *http.Request) {
	db, ok := h.backend.(DecommissionBackend)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this verifier does not remove agents")
		return
	}
	id := r.PathValue("id")
	if err := pki.ValidateID(id); err != nil {
		writeError(w, http.StatusBadRequest, "agent id: "+err.Error())
		return
	}
	var req RemoveRequest
	if err := decode(w, r, &req, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Reason) > MaxRevocationReason {
		writeError(w, http.StatusBadRequest, "reason: too long")
		return
	}
	// An unknown ID is answered before anything is revoked.
	if d, err := h.backend.GetAgent(r.Context(), id); err != nil || d == nil {
		if err == nil {
			err = ErrNotFound
		}
		h.backendError(w, r, err)
		return
	}
	var rb RevocationBackend
	if req.Revoke {
		if rb, ok = h.revocations(w); !ok {
			return
		}
	}
	p := principalFrom(r.Context())
	now := h.now().UTC()
	// Revoke first: a device whose row is gone but whose certificate is
	// still accepted would enroll again at its next pulse.
	revoked := false
	if req.Revoke {
		rev := Revocation{Kind: tlsconfig.RevokeAgent, Value: id, Reason: "decommissioned: " + req.Reason, By: p.Name, At: now}
		err := rb.AddRevocation(r.Context(), rev)
		switch {
		case err == nil:
			revoked = true
			if !h.recordRevocation(w, r, KindRevoke, rev) {
				return
			}
		case errors.Is(err, ErrConflict):
			revoked = true // already revoked
		default:
			h.backendError(w, r, err)
			return
		}
	}
	ra, err := db.RemoveAgent(r.Context(), id, revoked)
	if err == nil && ra == nil {
		err = ErrNotFound
	}
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	h.log.Info("agent removed", "agent_id", id, "revoked", revoked, "by", p.Name, "auth_method", p.Method)
	if ar, ok := h.backend.(actionRecorder); ok {
		rec := audit.Record{Time: now, Kind: KindRemoveAgent, AgentID: id, Severity: 4, Data: map[string]string{
			"by": p.Name, "auth": p.Method, "partition": ra.Partition, "tpm": boolText(ra.TPM), "ek_sha256": ra.EKSHA256,
			"enrolled_at": ra.EnrolledAt.Format(time.RFC3339Nano), "revoked": boolText(revoked), "reason": req.Reason,
		}}
		if err := ar.RecordAction(r.Context(), rec); err != nil {
			h.log.Error("operator action not recorded in the audit log", "kind", KindRemoveAgent, "by", p.Name, "path", r.URL.Path, "error", err)
			writeError(w, http.StatusInternalServerError, "the action took effect but could not be recorded in the audit log (see the verifier log)")
			return
		}
	}
	writeJSON(w, http.StatusOK, RemoveResult{Agent: *ra, Revoked: revoked, By: p.Name, At: now})
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// RemoveAgent decommissions an agent (and with req.Revoke revokes its ID).
func (c *Client) RemoveAgent(ctx context.Context, id string, req RemoveRequest) (*RemoveResult, error) {
	var out RemoveResult
	if err := c.do(ctx, http.MethodPost, "/api/v1/agents/"+url.PathEscape(id)+"/remove", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
