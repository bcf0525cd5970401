package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// KindMaintenance is the audit record of an operator opening a
// maintenance window (audit.OperatorRecord; data: until, for, reason).
const KindMaintenance = "operator_maintenance"

// MaxMaintenance bounds a maintenance window: a longer absence is not
// maintenance (stop the agent's enrollment instead).
const MaxMaintenance = 7 * 24 * time.Hour

// MaxMaintenanceReason bounds the free-text reason of a window.
const MaxMaintenanceReason = 512

// Maintenance is an agent's maintenance window: a planned stop (SIGTERM)
// of the agent before Until is expected (severity 4) and keeps it OFFLINE,
// not BLINDED, until Until (docs/operations.md, "Maintenance").
type Maintenance struct {
	AgentID string    `json:"agent_id"`
	Until   time.Time `json:"until"`
	Reason  string    `json:"reason,omitempty"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// MaintenanceRequest is the body of POST /api/v1/agents/{id}/maintenance:
// a window from now for For (a Go duration, e.g. "30m").
type MaintenanceRequest struct {
	For    string `json:"for"`
	Reason string `json:"reason,omitempty"`
}

// MaintenanceList is the body of GET /api/v1/maintenance.
type MaintenanceList struct {
	Now         time.Time     `json:"now"`
	Maintenance []Maintenance `json:"maintenance"`
}

// MaintenanceBackend is the part of a Backend that keeps maintenance
// windows. A backend without it answers 501 on the maintenance endpoints.
type MaintenanceBackend interface {
	// SetMaintenance opens (or replaces) the agent's window; ErrNotFound
	// when the agent is not enrolled.
	SetMaintenance(ctx context.Context, m Maintenance) error
	// ListMaintenance returns the windows open now.
	ListMaintenance(ctx context.Context) ([]Maintenance, error)
}

// maintenanceRoutes mounts the maintenance endpoints.
func (h *handler) maintenanceRoutes() {
	h.mux.HandleFunc("POST /api/v1/agents/{id}/maintenance", h.setMaintenance)
	h.mux.HandleFunc("GET /api/v1/maintenance", h.listMaintenance)
}

func (h *handler) maintenance(w http.ResponseWriter) (MaintenanceBackend, bool) {
	mb, ok := h.backend.(MaintenanceBackend)
	if !ok {
		writeError(w, http.StatusNotImplemented, "this verifier does not keep maintenance windows")
	}
	return mb, ok
}

// validate turns a request into a window from now.
func (r MaintenanceRequest) validate(now time.Time) (time.Time, time.Duration, error) {
	d, err := time.ParseDuration(r.For)
	switch {
	case r.For == "":
		return time.Time{}, 0, fmt.Errorf("for: required (a duration, e.g. 30m)")
	case err != nil:
		return time.Time{}, 0, fmt.Errorf("for: %w", err)
	case d <= 0:
		return time.Time{}, 0, fmt.Errorf("for: %s is not a positive duration", d)
	case d > MaxMaintenance:
		return time.Time{}, 0, fmt.Errorf("for: %s exceeds %s", d, MaxMaintenance)
	case len(r.Reason) > MaxMaintenanceReason:
		return time.Time{}, 0, fmt.Errorf("reason: longer than %d bytes", MaxMaintenanceReason)
	}
	return now.Add(d).UTC(), d, nil
}

func (h *handler) setMaintenance(w http.ResponseWriter, r *http.Request) {
	mb, ok := h.maintenance(w)
	if !ok {
		return
	}
	var req MaintenanceRequest
	if err := decode(w, r, &req, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	now := h.now()
	until, d, err := req.validate(now)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := principalFrom(r.Context())
	m := Maintenance{AgentID: r.PathValue("id"), Until: until, Reason: req.Reason, By: p.Name, At: now.UTC()}
	if err := mb.SetMaintenance(r.Context(), m); err != nil {
		h.backendError(w, r, err)
		return
	}
	h.log.Info("maintenance window opened", "agent_id", m.AgentID, "until", m.Until.Format(time.RFC3339), "by", p.Name, "auth_method", p.Method)
	if !h.record(w, r, KindMaintenance, m.AgentID, map[string]string{
		"until": m.Until.Format(time.RFC3339Nano), "for": d.String(), "reason": m.Reason,
	}) {
		return
	}
	writeJSON(w, http.StatusCreated, m)
}

func (h *handler) listMaintenance(w http.ResponseWriter, r *http.Request) {
	mb, ok := h.maintenance(w)
	if !ok {
		return
	}
	ms, err := mb.ListMaintenance(r.Context())
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	if ms == nil {
		ms = []Maintenance{}
	}
	writeJSON(w, http.StatusOK, MaintenanceList{Now: h.now().UTC(), Maintenance: ms})
}

// SetMaintenance opens a maintenance window for an agent.
func (c *Client) SetMaintenance(ctx context.Context, agentID string, req MaintenanceRequest) (*Maintenance, error) {
	var out Maintenance
	if err := c.do(ctx, http.MethodPost, "/api/v1/agents/"+url.PathEscape(agentID)+"/maintenance", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListMaintenance lists the maintenance windows open now.
func (c *Client) ListMaintenance(ctx context.Context) (*MaintenanceList, error) {
	var out MaintenanceList
	if err := c.do(ctx, http.MethodGet, "/api/v1/maintenance", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
