package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// The fleet explorer: pages (overview, agent list, agent detail, alerts,
// policy) served from the embedded explorer.html and explorer.js, and the
// API they read beyond the agent list: verdict counts over time, the
// policy in force and a candidate policy's dry-run.

// ExplorerBackend is implemented by backends that serve the explorer's
// history and policy views. It is optional: without it those endpoints
// answer 404.
type ExplorerBackend interface {
	// VerdictSeries returns the fleet's verdict counts at points evenly
	// spaced over the last window.
	VerdictSeries(ctx context.Context, window time.Duration, points int) (*VerdictSeries, error)
	// PolicyStatus returns the policy in force, its reload status and how
	// many agents each policy selects.
	PolicyStatus(ctx context.Context) (*PolicyStatus, error)
	// DryRun evaluates a candidate policy set (its files) against every
	// agent's stored evidence; ErrInvalid (with file:line diagnostics)
	// when it does not load.
	DryRun(ctx context.Context, files []PolicyFile) (*DryRunResult, error)
}

// Series windows of GET /api/v1/fleet/series?window=.
var seriesWindows = map[string]time.Duration{"hour": time.Hour, "day": 24 * time.Hour, "week": 7 * 24 * time.Hour}

// seriesPoints is the number of points of a series.
const seriesPoints = 60

// VerdictSeries is the body of GET /api/v1/fleet/series.
type VerdictSeries struct {
	Now    time.Time `json:"now"`
	Window string    `json:"window"`
	// At are the points' times (Unix seconds); Counts[verdict][i] the
	// number of agents holding verdict at At[i].
	At     []int64          `json:"at"`
	Counts map[string][]int `json:"counts"`
}

// PolicyFile is one file of a policy set.
type PolicyFile struct {
	Name    string `json:"name"`
	Content string `json:"content,omitempty"`
}

// PolicyInForce is one policy of the set in force.
type PolicyInForce struct {
	Name string `json:"name"`
	// Where is its file:line.
	Where string `json:"where"`
	TPM   string `json:"tpm"`
	// Agents is how many enrolled agents it selects.
	Agents int `json:"agents"`
}

// PolicyStatus is the body of GET /api/v1/policy.
type PolicyStatus struct {
	Now      time.Time       `json:"now"`
	Digest   string          `json:"digest"`
	Files    []string        `json:"files"`
	LoadedAt time.Time       `json:"loaded_at,omitzero"`
	Loads    uint64          `json:"loads"`
	Policies []PolicyInForce `json:"policies"`
	// Unselected is how many enrolled agents no policy selects.
	Unselected int `json:"unselected"`
	// Failing is true while the files on disk do not load (the policy in
	// force is an older one); LastError is the refused edit's diagnostics
	// (file:line:col), LastRejectedAt when it was refused.
	Failing        bool      `json:"failing"`
	Rejected       uint64    `json:"rejected"`
	LastError      string    `json:"last_error,omitempty"`
	LastRejectedAt time.Time `json:"last_rejected_at,omitzero"`
}

// DryRunRequest is the body of POST /api/v1/policy/dryrun.
type DryRunRequest struct {
	Files []PolicyFile `json:"files"`
}

// DryRunChange is one agent whose verdict the candidate would change.
type DryRunChange struct {
	AgentID   string `json:"agent_id"`
	Partition string `json:"partition"`
	Current   string `json:"current"`
	InForce   string `json:"in_force"`
	Candidate string `json:"candidate"`
	// Why is the candidate's first enforced finding (or its reason).
	Why        string    `json:"why"`
	EvidenceAt time.Time `json:"evidence_at"`
	Incomplete bool      `json:"incomplete,omitempty"`
}

// DryRunResult is the answer of POST /api/v1/policy/dryrun.
type DryRunResult struct {
	Now             time.Time      `json:"now"`
	InForceDigest   string         `json:"in_force_digest"`
	CandidateDigest string         `json:"candidate_digest"`
	Evaluated       int            `json:"evaluated"`
	Unchanged       int            `json:"unchanged"`
	Changed         []DryRunChange `json:"changed"`
	Incomplete      int            `json:"incomplete"`
	Unreadable      int            `json:"unreadable"`
	WithoutEvidence int            `json:"without_evidence"`
}

// Dry-run upload limits.
const (
	MaxDryRunFiles = 32
)

// explorerPages are the explorer's page paths (all served the same
// document; the script renders the page its path names).
var explorerPages = []string{"/fleet", "/fleet/agents", "/fleet/agent", "/fleet/alerts", "/fleet/policy"}

func isExplorerPage(p string) bool {
	for _, e := range explorerPages {
		if p == e {
			return true
		}
	}
	return false
}

func (h *handler) explorerRoutes() {
	for _, p := range explorerPages {
		h.mux.HandleFunc("GET "+p, h.explorer)
	}
	h.mux.HandleFunc("GET /static/vendor/uplot/{name}", serveVendor)
	h.mux.HandleFunc("GET /api/v1/fleet/series", h.fleetSeries)
	h.mux.HandleFunc("GET /api/v1/policy", h.policyStatus)
	h.mux.HandleFunc("POST /api/v1/policy/dryrun", h.dryRun)
	h.mux.HandleFunc("GET /api/v1/audit/status", h.auditStatus)
}

func (h *handler) explorer(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(explorerHTML)
}

func (h *handler) explorerBackend(w http.ResponseWriter) (ExplorerBackend, bool) {
	eb, ok := h.backend.(ExplorerBackend)
	if !ok {
		writeError(w, http.StatusNotFound, "this verifier does not serve the fleet explorer")
	}
	return eb, ok
}

func (h *handler) fleetSeries(w http.ResponseWriter, r *http.Request) {
	eb, ok := h.explorerBackend(w)
	if !ok {
		return
	}
	name := r.URL.Query().Get("window")
	if name == "" {
		name = "hour"
	}
	win, ok := seriesWindows[name]
	if !ok {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("window=%q: want hour, day or week", name))
		return
	}
	s, err := eb.VerdictSeries(r.Context(), win, seriesPoints)
	if err == nil && s == nil {
		err = ErrNotFound
	}
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	out := *s
	out.Now, out.Window = h.now().UTC(), name
	counts := map[string][]int{}
	for k, v := range s.Counts {
		counts[VerdictName(k)] = v
	}
	out.Counts = counts
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) policyStatus(w http.ResponseWriter, r *http.Request) {
	eb, ok := h.explorerBackend(w)
	if !ok {
		return
	}
	s, err := eb.PolicyStatus(r.Context())
	if err == nil && s == nil {
		err = ErrNotFound
	}
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	out := *s
	out.Now = h.now().UTC()
	if out.Policies == nil {
		out.Policies = []PolicyInForce{}
	}
	writeJSON(w, http.StatusOK, out)
}

// validPolicyFileName: a plain *.hcl name (no directories).
func validPolicyFileName(n string) error {
	if n == "" || len(n) > 128 || n != path.Base(n) || strings.ContainsAny(n, "/\\\x00") || !strings.HasSuffix(n, ".hcl") || strings.HasPrefix(n, ".") {
		return fmt.Errorf("file name %q: want a plain NAME.hcl", n)
	}
	return nil
}

func (h *handler) dryRun(w http.ResponseWriter, r *http.Request) {
	eb, ok := h.explorerBackend(w)
	if !ok {
		return
	}
	var req DryRunRequest
	if err := decode(w, r, &req, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Files) == 0 || len(req.Files) > MaxDryRunFiles {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("files: %d given, want 1 to %d", len(req.Files), MaxDryRunFiles))
		return
	}
	seen := map[string]bool{}
	for _, f := range req.Files {
		if err := validPolicyFileName(f.Name); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if seen[f.Name] {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("file %q given twice", f.Name))
			return
		}
		seen[f.Name] = true
	}
	p := principalFrom(r.Context())
	res, err := eb.DryRun(r.Context(), req.Files)
	if err == nil && res == nil {
		err = ErrNotFound
	}
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	h.log.Info("policy dry-run", "by", p.Name, "candidate_digest", res.CandidateDigest, "evaluated", res.Evaluated, "changed", len(res.Changed))
	out := *res
	out.Now = h.now().UTC()
	if out.Changed == nil {
		out.Changed = []DryRunChange{}
	}
	writeJSON(w, http.StatusOK, out)
}

// VerdictSeries returns the fleet's verdict counts over window ("hour",
// "day" or "week").
func (c *Client) VerdictSeries(ctx context.Context, window string) (*VerdictSeries, error) {
	var s VerdictSeries
	if err := c.do(ctx, http.MethodGet, "/api/v1/fleet/series", url.Values{"window": {window}}, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// PolicyStatus returns the policy in force (GET /api/v1/policy).
func (c *Client) PolicyStatus(ctx context.Context) (*PolicyStatus, error) {
	var s PolicyStatus
	if err := c.do(ctx, http.MethodGet, "/api/v1/policy", nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// DryRun evaluates candidate policy files against the fleet's stored
// evidence (POST /api/v1/policy/dryrun).
func (c *Client) DryRun(ctx context.Context, files []PolicyFile) (*DryRunResult, error) {
	var r DryRunResult
	if err := c.do(ctx, http.MethodPost, "/api/v1/policy/dryrun", nil, DryRunRequest{Files: files}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// AckAlertNote acknowledges an alert with a note for the audit record.
func (c *Client) AckAlertNote(ctx context.Context, id, note string) (*ActionResult, error) {
	var r ActionResult
	if err := c.do(ctx, http.MethodPost, "/api/v1/alerts/"+url.PathEscape(id)+"/ack", nil, map[string]string{"note": note}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// AuditStatuser is implemented by backends that verify the audit log's
// hash chain for the alerts page. Optional: without it GET
// /api/v1/audit/status answers 404.
type AuditStatuser interface {
	AuditStatus(ctx context.Context) (*AuditStatus, error)
}

// AuditStatus is the body of GET /api/v1/audit/status: the audit log's
// chain as verified now (every segment, every link).
type AuditStatus struct {
	Now        time.Time `json:"now"`
	Configured bool      `json:"configured"`
	Segments   int       `json:"segments"`
	// Whole is true when every record and every segment's anchor verified.
	Whole bool `json:"whole"`
	// VerifiedUpTo is the seq of the last record verified; LastHash its
	// hash (the anchor to note elsewhere).
	VerifiedUpTo uint64 `json:"verified_up_to"`
	LastHash     string `json:"last_hash,omitempty"`
	// Problem names the first broken record or anchor.
	Problem string `json:"problem,omitempty"`
}

func (h *handler) auditStatus(w http.ResponseWriter, r *http.Request) {
	as, ok := h.backend.(AuditStatuser)
	if !ok {
		writeError(w, http.StatusNotFound, "this verifier does not report its audit log")
		return
	}
	s, err := as.AuditStatus(r.Context())
	if err == nil && s == nil {
		err = ErrNotFound
	}
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	out := *s
	out.Now = h.now().UTC()
	writeJSON(w, http.StatusOK, out)
}

// AuditStatus verifies the audit log's chain (GET /api/v1/audit/status).
func (c *Client) AuditStatus(ctx context.Context) (*AuditStatus, error) {
	var s AuditStatus
	if err := c.do(ctx, http.MethodGet, "/api/v1/audit/status", nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
