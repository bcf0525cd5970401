// Package admin is the verifier's operator surface: an HTTPS listener,
// separate from the agent port, serving a JSON API, the dashboard page,
// Prometheus metrics and pprof. Every request is authenticated, by an
// operator client certificate (TLS 1.3, role operator) or by a bearer token;
// actions record who made them. See docs/operations.md.
package admin

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/verifier/audit"
)

// Limits on request content.
const (
	// MaxBodyBytes bounds every request body.
	MaxBodyBytes = 64 << 10
	// MaxUpdateWindow is the longest update approval window: approvals are
	// for rollouts; a binary allowed for good belongs in the policy file.
	MaxUpdateWindow = 31 * 24 * time.Hour
	// MaxApprovalGlobs bounds the agent globs of one approval.
	MaxApprovalGlobs = 256
	// MaxAckNote bounds an acknowledgement's note.
	MaxAckNote = 1024
)

// Options configure New.
type Options struct {
	// Backend serves the data. Required.
	Backend Backend
	// Registry is served on /metrics; nil leaves /metrics unmounted. The
	// handler also registers pulse_admin_auth_failures_total on it.
	Registry *prometheus.Registry
	// Logger; nil discards. The handler names it "admin".
	Logger hclog.Logger
	// Token enables bearer-token authentication (at least MinTokenLength
	// bytes, no whitespace) with the unnamed token, recorded as
	// TokenPrincipal. It is never logged; only its SHA-256 is kept.
	Token string
	// Tokens are named bearer tokens (name → token, names are operator
	// IDs), one per operator, recorded as "token:NAME"; the name "" is the
	// unnamed token. No Token and no Tokens: operator certificates only.
	Tokens map[string]string
	// SessionTTL is the lifetime of dashboard sessions opened with
	// ?token= (DefaultSessionTTL when zero).
	SessionTTL time.Duration
	// Now overrides the clock (tests).
	Now func() time.Time
}

type handler struct {
	backend  Backend
	log      hclog.Logger
	tokens   *tokenAuth
	now      func() time.Time
	mux      *http.ServeMux
	authFail *prometheus.CounterVec
	live     liveHub
}

type ctxKey struct{}

// New returns the admin HTTP handler. Serve it only over TLS (Listen, with a
// TLSConfig): tokens are refused on plaintext requests.
func New(o Options) (http.Handler, error) {
	if o.Backend == nil {
		return nil, errors.New("admin: backend is required")
	}
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	tokens, err := newTokenAuth(o.Token, o.Tokens, o.SessionTTL, now)
	if err != nil {
		return nil, err
	}
	h := &handler{backend: o.Backend, log: log.Named("admin"), tokens: tokens, now: now, mux: http.NewServeMux()}
	if o.Registry != nil {
		h.authFail, err = registerAuthFailures(o.Registry)
		if err != nil {
			return nil, err
		}
	}
	h.live.h = h
	h.routes(o.Registry)
	return h, nil
}

func registerAuthFailures(reg *prometheus.Registry) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "pulse", Name: "admin_auth_failures_total",
		Help: "Admin requests refused for missing or bad credentials, by reason.",
	}, []string{"reason"})
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("admin: register metrics: %w", err)
	}
	return c, nil
}

func (h *handler) routes(reg *prometheus.Registry) {
	m := h.mux
	m.HandleFunc("GET /{$}", h.dashboard)
	m.HandleFunc("GET /static/{name}", serveStatic)
	m.HandleFunc("GET /api/v1/session", h.session)
	m.HandleFunc("GET /api/v1/replicas", h.listReplicas)
	m.HandleFunc("GET /api/v1/agents", h.listAgents)
	m.HandleFunc("GET /api/v1/agents/{id}", h.getAgent)
	m.HandleFunc("GET /api/v1/alerts", h.listAlerts)
	m.HandleFunc("POST /api/v1/alerts/{id}/ack", h.ackAlert)
	m.HandleFunc("POST /api/v1/updates", h.approveUpdate)
	m.HandleFunc("GET /api/v1/updates", h.listUpdates)
	m.HandleFunc("POST /api/v1/release", h.release)
	m.HandleFunc("GET /api/v1/quarantine", h.quarantined)
	h.revocationRoutes()
	h.decommissionRoutes()
	h.maintenanceRoutes()
	h.fleetRoutes()
	h.explorerRoutes()
	h.healthRoutes(reg)
	if reg != nil {
		m.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
			Registry:          reg,
			ErrorLog:          h.log.Named("metrics").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
			EnableOpenMetrics: true,
		}))
	}
	// pprof handlers on this mux only; DefaultServeMux is never served.
	m.HandleFunc("GET /debug/pprof/", pprof.Index)
	m.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	m.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// statusWriter records the response status for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets pprof and promhttp stream.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap exposes the underlying writer to http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP authenticates, then routes. Only the path is ever logged: the
// query may hold a token.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.now()
	sw := &statusWriter{ResponseWriter: w}
	securityHeaders(sw.Header())
	p, ok := h.gate(sw, r)
	if ok {
		h.mux.ServeHTTP(sw, r.WithContext(withPrincipal(r.Context(), p)))
	}
	h.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
		"principal", p.Name, "remote_addr", r.RemoteAddr, "elapsed", h.now().Sub(start))
}

// gate authenticates r, handles the dashboard's ?token= bootstrap and the
// cross-site checks of unsafe methods. It reports whether to route r.
func (h *handler) gate(w http.ResponseWriter, r *http.Request) (Principal, bool) {
	if r.Method == http.MethodGet && r.URL.Path == "/" && r.URL.Query().Has("token") {
		h.bootstrap(w, r)
		return Principal{}, false
	}
	p, aerr := h.authenticate(r)
	if aerr != nil {
		h.refuse(w, r, aerr)
		return Principal{}, false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := sameOrigin(r); err != nil {
			h.refuse(w, r, forbidden("cross_origin", err.Error()))
			return p, false
		}
	}
	return p, true
}

// bootstrap turns ?token= into a session cookie and redirects to the same
// page without the token, so it leaves the address bar and history entry.
func (h *handler) bootstrap(w http.ResponseWriter, r *http.Request) {
	if h.tokens == nil {
		h.refuse(w, r, unauthorized("token_disabled", "token authentication is not enabled"))
		return
	}
	if r.TLS == nil {
		h.refuse(w, r, unauthorized("plaintext", "tokens are only accepted over TLS"))
		return
	}
	q := r.URL.Query()
	name, ok := h.tokens.check(q.Get("token"))
	if !ok {
		h.refuse(w, r, unauthorized("bad_token", "invalid token"))
		return
	}
	http.SetCookie(w, h.tokens.sessionCookie(name))
	q.Del("token")
	target := url.URL{Path: "/", RawQuery: q.Encode()}
	h.log.Info("dashboard session opened", "by", TokenPrincipalName(name), "remote_addr", r.RemoteAddr)
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target.String(), http.StatusSeeOther)
}

func (h *handler) refuse(w http.ResponseWriter, r *http.Request, e *authError) {
	if h.authFail != nil {
		h.authFail.WithLabelValues(e.reason).Inc()
	}
	h.log.Warn("admin request refused", "method", r.Method, "path", r.URL.Path, "reason", e.reason, "remote_addr", r.RemoteAddr)
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pulse-admin"`)
	}
	if (r.URL.Path == "/" || isExplorerPage(r.URL.Path)) && r.Method == http.MethodGet {
		// A browser opening the dashboard gets a page, not JSON. The text is
		// fixed: nothing from the request is echoed.
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(e.status)
		_, _ = w.Write(refusedPage)
		return
	}
	writeError(w, e.status, e.msg)
}

var refusedPage = []byte(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pulse verifier: sign in</title></head>
<body><h1 id="refused">Not authenticated</h1>
<p>The Pulse admin dashboard needs an operator client certificate, or open it once as
<code>https://HOST:PORT/?token=ADMIN_TOKEN</code> to start a session.</p></body></html>
`)

// sameOrigin refuses unsafe requests a browser could send cross-site: they
// must carry a JSON body type (which a cross-site form cannot without a
// CORS preflight, never granted here) and, when the browser names an Origin,
// it must be this host.
func sameOrigin(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Scheme != "https" || u.Host != r.Host {
			return fmt.Errorf("cross-origin request from %q refused", o)
		}
	}
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return errors.New("cross-site request refused")
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(strings.ToLower(mt)) != "application/json" {
		return errors.New("unsafe requests must have Content-Type: application/json")
	}
	return nil
}

func securityHeaders(hd http.Header) {
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Strict-Transport-Security", "max-age=31536000")
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
}

// ---------------------------------------------------------------- JSON

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

// backendError maps a Backend error to a response; details of unexpected
// errors are logged, not sent.
func (h *handler) backendError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	default:
		h.log.Error("admin backend failed", "method", r.Method, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusInternalServerError, "internal error (see the verifier log)")
	}
}

// decode reads a JSON body into v, refusing unknown fields, trailing data
// and oversized bodies. An empty body leaves v as is when allowEmpty.
func decode(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if allowEmpty && errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("request body: %w", err)
	}
	if dec.More() {
		return errors.New("request body: trailing data after the JSON object")
	}
	return nil
}

// ---------------------------------------------------------------- names

// VerdictName strips the proto enum prefix: "VERDICT_TRUSTED" → "TRUSTED";
// empty → "UNSPECIFIED".
func VerdictName(v string) string {
	v = strings.TrimPrefix(v, "VERDICT_")
	if v == "" {
		return "UNSPECIFIED"
	}
	return v
}

// ReasonName strips the proto enum prefix: "REASON_POLICY_DENIED" →
// "POLICY_DENIED"; empty → "UNSPECIFIED".
func ReasonName(r string) string {
	r = strings.TrimPrefix(r, "REASON_")
	if r == "" {
		return "UNSPECIFIED"
	}
	return r
}

func normStatus(a AgentStatus) AgentStatus {
	a.Verdict = VerdictName(a.Verdict)
	a.Reason = ReasonName(a.Reason)
	return a
}

// ---------------------------------------------------------------- handlers

func (h *handler) session(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, principalFrom(r.Context()))
}

// AgentList is the body of GET /api/v1/agents.
type AgentList struct {
	Now    time.Time     `json:"now"`
	Agents []AgentStatus `json:"agents"`
}

func (h *handler) listAgents(w http.ResponseWriter, r *http.Request) {
	if isPageQuery(r.URL.Query()) {
		h.queryAgents(w, r)
		return
	}
	agents, err := h.backend.ListAgents(r.Context())
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	out := make([]AgentStatus, 0, len(agents))
	for _, a := range agents {
		out = append(out, normStatus(a))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	writeJSON(w, http.StatusOK, AgentList{Now: h.now().UTC(), Agents: out})
}

// AgentResponse is the body of GET /api/v1/agents/{id}.
type AgentResponse struct {
	Now   time.Time   `json:"now"`
	Agent AgentDetail `json:"agent"`
}

func (h *handler) getAgent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := pki.ValidateID(id); err != nil {
		writeError(w, http.StatusBadRequest, "agent id: "+err.Error())
		return
	}
	d, err := h.backend.GetAgent(r.Context(), id)
	if err == nil && d == nil {
		err = ErrNotFound
	}
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	out := *d
	out.AgentStatus = normStatus(out.AgentStatus)
	out.History = make([]HistoryEntry, len(d.History))
	for i, e := range d.History {
		e.Verdict, e.Reason = VerdictName(e.Verdict), ReasonName(e.Reason)
		out.History[i] = e
	}
	if out.Findings == nil {
		out.Findings = []Finding{}
	}
	writeJSON(w, http.StatusOK, AgentResponse{Now: h.now().UTC(), Agent: out})
}

// AlertList is the body of GET /api/v1/alerts.
type AlertList struct {
	Now    time.Time `json:"now"`
	Alerts []Alert   `json:"alerts"`
}

// parseAlertFilter reads ?open=1&agent=ID&limit=N.
func parseAlertFilter(q url.Values) (AlertFilter, error) {
	f := AlertFilter{Limit: DefaultAlertLimit}
	switch q.Get("open") {
	case "", "0", "false":
	case "1", "true":
		f.OpenOnly = true
	default:
		return f, fmt.Errorf("open=%q: want 1 or 0", q.Get("open"))
	}
	if a := q.Get("agent"); a != "" {
		if err := pki.ValidateID(a); err != nil {
			return f, fmt.Errorf("agent: %w", err)
		}
		f.AgentID = a
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxAlertLimit {
			return f, fmt.Errorf("limit=%q: want 1..%d", l, MaxAlertLimit)
		}
		f.Limit = n
	}
	return f, nil
}

func (h *handler) listAlerts(w http.ResponseWriter, r *http.Request) {
	f, err := parseAlertFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	alerts, err := h.backend.ListAlerts(r.Context(), f)
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	if len(alerts) > f.Limit {
		alerts = alerts[:f.Limit]
	}
	out := make([]Alert, 0, len(alerts))
	for _, a := range alerts {
		a.Reason = ReasonName(a.Reason)
		out = append(out, a)
	}
	writeJSON(w, http.StatusOK, AlertList{Now: h.now().UTC(), Alerts: out})
}

// ActionResult is the body answering ack and release.
type ActionResult struct {
	ID      string    `json:"id,omitempty"`
	Address string    `json:"address,omitempty"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

func (h *handler) ackAlert(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := pki.ValidateID(id); err != nil {
		writeError(w, http.StatusBadRequest, "alert id: "+err.Error())
		return
	}
	// The note (why it was acknowledged) goes on the audit record.
	var body struct {
		Note string `json:"note"`
	}
	if err := decode(w, r, &body, true); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(body.Note) > MaxAckNote || strings.IndexFunc(body.Note, func(c rune) bool { return c < 0x20 && c != '\n' || c == 0x7f }) >= 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("note: at most %d bytes of printable text", MaxAckNote))
		return
	}
	p := principalFrom(r.Context())
	if err := h.backend.AckAlert(r.Context(), id, p.Name); err != nil {
		h.backendError(w, r, err)
		return
	}
	h.log.Info("alert acknowledged", "alert_id", id, "by", p.Name, "auth_method", p.Method, "note_bytes", len(body.Note))
	fields := map[string]string{"alert_id": id}
	if body.Note != "" {
		fields["note"] = body.Note
	}
	if !h.record(w, r, audit.KindAckAlert, "", fields) {
		return
	}
	writeJSON(w, http.StatusOK, ActionResult{ID: id, By: p.Name, At: h.now().UTC()})
}

// UpdateRequest is the body of POST /api/v1/updates. Start defaults to now.
type UpdateRequest struct {
	Digest string    `json:"digest"`
	Agents []string  `json:"agents"`
	Start  time.Time `json:"start,omitzero"`
	End    time.Time `json:"end"`
}

// validate checks and normalises an approval request at time now.
func (u UpdateRequest) validate(now time.Time) (UpdateApproval, error) {
	d := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(u.Digest), "sha256:"))
	if len(d) != 64 || strings.Trim(d, "0123456789abcdef") != "" {
		return UpdateApproval{}, fmt.Errorf("digest %q: want the agent binary's SHA-256 as 64 hex characters", u.Digest)
	}
	if len(u.Agents) == 0 {
		return UpdateApproval{}, errors.New("agents: name at least one agent ID or glob (\"edge-*\")")
	}
	if len(u.Agents) > MaxApprovalGlobs {
		return UpdateApproval{}, fmt.Errorf("agents: %d globs, at most %d", len(u.Agents), MaxApprovalGlobs)
	}
	for _, g := range u.Agents {
		if g == "" || len(g) > 256 {
			return UpdateApproval{}, fmt.Errorf("agents: glob %q is empty or too long", g)
		}
		if _, err := path.Match(g, ""); err != nil {
			return UpdateApproval{}, fmt.Errorf("agents: glob %q: %w", g, err)
		}
	}
	start := u.Start
	if start.IsZero() {
		start = now
	}
	switch {
	case u.End.IsZero():
		return UpdateApproval{}, errors.New("end: required (RFC 3339): an approval is a window, not forever")
	case !u.End.After(start):
		return UpdateApproval{}, fmt.Errorf("end %s is not after start %s", u.End.Format(time.RFC3339), start.Format(time.RFC3339))
	case !u.End.After(now):
		return UpdateApproval{}, fmt.Errorf("end %s is in the past", u.End.Format(time.RFC3339))
	case u.End.Sub(start) > MaxUpdateWindow:
		return UpdateApproval{}, fmt.Errorf("window of %s exceeds %s: allow a binary for good in the policy file", u.End.Sub(start), MaxUpdateWindow)
	}
	return UpdateApproval{Digest: d, Agents: append([]string(nil), u.Agents...), Start: start.UTC(), End: u.End.UTC()}, nil
}

func (h *handler) approveUpdate(w http.ResponseWriter, r *http.Request) {
	var req UpdateRequest
	if err := decode(w, r, &req, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u, err := req.validate(h.now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := principalFrom(r.Context())
	u.By = p.Name
	u.ID = newWindowID()
	agents, err := h.backend.ListAgents(r.Context())
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	if err := h.backend.ApproveUpdate(r.Context(), u); err != nil {
		h.backendError(w, r, err)
		return
	}
	matched(&u, agents)
	h.log.Info("agent update approved", "window_id", u.ID, "digest", u.Digest, "agents", strings.Join(u.Agents, ","),
		"start", u.Start.Format(time.RFC3339), "end", u.End.Format(time.RFC3339), "matched_agents", u.MatchedAgents,
		"by", p.Name, "auth_method", p.Method)
	if !h.record(w, r, audit.KindApproveUpdate, "", map[string]string{
		"window_id": u.ID, "digest": u.Digest, "agents": strings.Join(u.Agents, ","),
		"start": u.Start.Format(time.RFC3339Nano), "end": u.End.Format(time.RFC3339Nano),
		"matched_agents": strconv.Itoa(u.MatchedAgents),
	}) {
		return
	}
	writeJSON(w, http.StatusCreated, u)
}

// newWindowID names an approval window: 16 random bytes, hex.
func newWindowID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// matched sets how many of agents u's globs match, and a note when none.
func matched(u *UpdateApproval, agents []AgentStatus) {
	n := 0
	for _, a := range agents {
		for _, g := range u.Agents {
			if ok, _ := path.Match(g, a.ID); ok {
				n++
				break
			}
		}
	}
	u.MatchedAgents, u.Note = n, ""
	if n == 0 {
		u.Note = "no enrolled agent matches " + strings.Join(u.Agents, ",") + ": the window only applies to agents enrolled with a matching ID before it ends"
	}
}

// UpdateList is the body of GET /api/v1/updates.
type UpdateList struct {
	Now     time.Time        `json:"now"`
	Updates []UpdateApproval `json:"updates"`
}

func (h *handler) listUpdates(w http.ResponseWriter, r *http.Request) {
	ws, err := h.backend.ListUpdates(r.Context())
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	agents, err := h.backend.ListAgents(r.Context())
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	now := h.now()
	out := make([]UpdateApproval, 0, len(ws))
	for _, u := range ws {
		if !u.End.After(now) {
			continue
		}
		matched(&u, agents)
		out = append(out, u)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	writeJSON(w, http.StatusOK, UpdateList{Now: now.UTC(), Updates: out})
}

// record appends the action of the request's principal to the audit chain
// (kind one of audit's operator kinds; params never credentials). Call it
// once the action succeeded; when the record cannot be written it answers
// 500 itself and returns false: the action took effect but is not on the
// record, which the operator must know.
func (h *handler) record(w http.ResponseWriter, r *http.Request, kind, agentID string, params map[string]string) bool {
	p := principalFrom(r.Context())
	rec, err := audit.OperatorRecord(kind, agentID, p.Name, p.Method, params, h.now())
	if err == nil {
		err = h.backend.RecordAction(r.Context(), rec)
	}
	if err != nil {
		h.log.Error("operator action not recorded in the audit log", "kind", kind, "by", p.Name, "path", r.URL.Path, "error", err)
		writeError(w, http.StatusInternalServerError, "the action took effect but could not be recorded in the audit log (see the verifier log)")
		return false
	}
	return true
}

// ReleaseRequest is the body of POST /api/v1/release.
type ReleaseRequest struct {
	Address string `json:"address"`
}

// canonicalAddress accepts an IP address or CIDR prefix and returns its
// canonical text.
func canonicalAddress(s string) (string, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String(), nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String(), nil
	}
	return "", fmt.Errorf("address %q: want an IP address or CIDR prefix", s)
}

func (h *handler) release(w http.ResponseWriter, r *http.Request) {
	var req ReleaseRequest
	if err := decode(w, r, &req, false); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	addr, err := canonicalAddress(req.Address)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	p := principalFrom(r.Context())
	if err := h.backend.Release(r.Context(), addr, p.Name); err != nil {
		h.backendError(w, r, err)
		return
	}
	h.log.Info("quarantine released", "address", addr, "by", p.Name, "auth_method", p.Method)
	if !h.record(w, r, audit.KindRelease, "", map[string]string{"address": addr}) {
		return
	}
	writeJSON(w, http.StatusOK, ActionResult{Address: addr, By: p.Name, At: h.now().UTC()})
}

// QuarantineList is the body of GET /api/v1/quarantine.
type QuarantineList struct {
	Now        time.Time    `json:"now"`
	Quarantine []Quarantine `json:"quarantine"`
}

func (h *handler) quarantined(w http.ResponseWriter, r *http.Request) {
	q, err := h.backend.Quarantined(r.Context())
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	if q == nil {
		q = []Quarantine{}
	}
	writeJSON(w, http.StatusOK, QuarantineList{Now: h.now().UTC(), Quarantine: q})
}
