package admin

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pulse-attest/pulse/internal/pki"
)

const testToken = "s3cret-admin-token-0123456789"

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	t     *testing.T
	be    *fakeBackend
	h     http.Handler
	reg   *prometheus.Registry
	logs  *syncBuffer
	now   time.Time
	clock *time.Time
}

func newFixture(t *testing.T, token string) *fixture {
	t.Helper()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f := &fixture{t: t, be: sampleBackend(now), reg: prometheus.NewRegistry(), logs: &syncBuffer{}, now: now}
	clock := now
	f.clock = &clock
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Trace, Output: f.logs})
	h, err := New(Options{Backend: f.be, Registry: f.reg, Logger: log, Token: token, Now: func() time.Time { return *f.clock }})
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	return f
}

// tlsState is the connection state of a token client (TLS, no certificate).
var tlsState = &tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true}

// certState is the state of a connection whose verified peer is cert.
func certState(cert *x509.Certificate, verified bool) *tls.ConnectionState {
	cs := &tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true, PeerCertificates: []*x509.Certificate{cert}}
	if verified {
		cs.VerifiedChains = [][]*x509.Certificate{{cert}}
	}
	return cs
}

type reqOpt func(*http.Request)

func bearer(tok string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func withTLS(cs *tls.ConnectionState) reqOpt { return func(r *http.Request) { r.TLS = cs } }

func header(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

func cookie(c *http.Cookie) reqOpt { return func(r *http.Request) { r.AddCookie(c) } }

func (f *fixture) do(method, target, body string, opts ...reqOpt) *httptest.ResponseRecorder {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, "https://admin.test"+target, rd)
	r.TLS = tlsState
	if method == http.MethodPost {
		r.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(r)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func decodeBody[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", w.Body.String(), err)
	}
	return v
}

func issueCert(t *testing.T, role pki.Role, id string) *x509.Certificate {
	t.Helper()
	ca, err := pki.NewCA("unit", 0)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.Issue(ca, pki.Request{Role: role, ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return is.Cert
}

func TestAdminNewValidates(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without backend succeeded")
	}
	if _, err := New(Options{Backend: &fakeBackend{}, Token: "short"}); err == nil {
		t.Error("New accepted a 5-byte token")
	}
	if _, err := New(Options{Backend: &fakeBackend{}, Token: "has a space in the token!!"}); err == nil {
		t.Error("New accepted a token with whitespace")
	}
	reg := prometheus.NewRegistry()
	for i := 0; i < 2; i++ { // a second handler on the same registry reuses the counter
		if _, err := New(Options{Backend: &fakeBackend{}, Registry: reg}); err != nil {
			t.Fatalf("New #%d: %v", i+1, err)
		}
	}
}

func TestAdminAuthentication(t *testing.T) {
	f := newFixture(t, testToken)
	operator := issueCert(t, pki.RoleOperator, "alice")
	agent := issueCert(t, pki.RoleAgent, "edge-1")
	tokenNamed := issueCert(t, pki.RoleOperator, "token")

	goodSession := f.h.(*handler).tokens.sessionCookie("")
	tampered := *goodSession
	tampered.Value = strings.Replace(goodSession.Value, ".", "9.", 1)
	forged := *goodSession
	forged.Value = "99999999999." + strings.Repeat("A", 43)

	cases := []struct {
		name       string
		opts       []reqOpt
		wantStatus int
		wantName   string
		wantMethod string
	}{
		{"no credentials", nil, 401, "", ""},
		{"good bearer token", []reqOpt{bearer(testToken)}, 200, TokenPrincipal, MethodToken},
		{"bearer scheme is case-insensitive", []reqOpt{header("Authorization", "bearer "+testToken)}, 200, TokenPrincipal, MethodToken},
		{"wrong token", []reqOpt{bearer(testToken + "x")}, 401, "", ""},
		{"token prefix", []reqOpt{bearer(testToken[:20])}, 401, "", ""},
		{"empty bearer", []reqOpt{header("Authorization", "Bearer ")}, 401, "", ""},
		{"basic scheme", []reqOpt{header("Authorization", "Basic "+testToken)}, 401, "", ""},
		{"token over plaintext", []reqOpt{bearer(testToken), withTLS(nil)}, 401, "", ""},
		{"session cookie", []reqOpt{cookie(goodSession)}, 200, TokenPrincipal, MethodSession},
		{"tampered session", []reqOpt{cookie(&tampered)}, 401, "", ""},
		{"forged session", []reqOpt{cookie(&forged)}, 401, "", ""},
		{"operator certificate", []reqOpt{withTLS(certState(operator, true))}, 200, "alice", MethodCertificate},
		{"operator certificate beats a bad token", []reqOpt{withTLS(certState(operator, true)), bearer("nope-nope-nope-nope")}, 200, "alice", MethodCertificate},
		{"agent certificate", []reqOpt{withTLS(certState(agent, true))}, 403, "", ""},
		{"agent certificate with good token", []reqOpt{withTLS(certState(agent, true)), bearer(testToken)}, 403, "", ""},
		{"unverified operator certificate", []reqOpt{withTLS(certState(operator, false))}, 403, "", ""},
		{"operator named token", []reqOpt{withTLS(certState(tokenNamed, true))}, 403, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := f.do("GET", "/api/v1/session", "", c.opts...)
			if w.Code != c.wantStatus {
				t.Fatalf("status %d, want %d: %s", w.Code, c.wantStatus, w.Body)
			}
			if c.wantStatus == 401 && !strings.Contains(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: %v", w.Header())
			}
			if c.wantStatus != 200 {
				return
			}
			p := decodeBody[Principal](t, w)
			if p.Name != c.wantName || p.Method != c.wantMethod {
				t.Errorf("principal %+v, want %s/%s", p, c.wantName, c.wantMethod)
			}
		})
	}

	// Sessions expire.
	*f.clock = f.clock.Add(DefaultSessionTTL + time.Second)
	if w := f.do("GET", "/api/v1/session", "", cookie(goodSession)); w.Code != 401 {
		t.Errorf("expired session: %d", w.Code)
	}

	// No token configured: bearer tokens are refused.
	nf := newFixture(t, "")
	if w := nf.do("GET", "/api/v1/session", "", bearer(testToken)); w.Code != 401 {
		t.Errorf("token accepted with token auth disabled: %d", w.Code)
	}
	if w := nf.do("GET", "/api/v1/session", "", withTLS(certState(operator, true))); w.Code != 200 {
		t.Errorf("certificate refused with token auth disabled: %d", w.Code)
	}

	// The token (good or bad) never reaches the log.
	logs := f.logs.String()
	for _, s := range []string{testToken, testToken[:20], "nope-nope-nope-nope"} {
		if strings.Contains(logs, s) {
			t.Errorf("log contains a presented token %q:\n%s", s, logs)
		}
	}
	if !strings.Contains(logs, "reason=bad_token") || !strings.Contains(logs, "reason=wrong_role") {
		t.Errorf("refusals not logged with typed reasons:\n%s", logs)
	}
}

func TestAdminDashboardBootstrap(t *testing.T) {
	f := newFixture(t, testToken)

	w := f.do("GET", "/", "")
	if w.Code != 401 || !strings.Contains(w.Body.String(), `id="refused"`) || strings.Contains(w.Body.String(), "agent-rows") {
		t.Fatalf("unauthenticated dashboard: %d %s", w.Code, w.Body)
	}

	w = f.do("GET", "/?token=wrong-token-wrong-token&x=1", "")
	if w.Code != 401 || len(w.Result().Cookies()) != 0 {
		t.Fatalf("bad ?token: %d cookies=%v", w.Code, w.Result().Cookies())
	}

	w = f.do("GET", "/?token="+testToken+"&view=alerts", "")
	if w.Code != http.StatusSeeOther {
		t.Fatalf("?token bootstrap: %d %s", w.Code, w.Body)
	}
	if loc := w.Header().Get("Location"); loc != "/?view=alerts" {
		t.Errorf("redirect to %q, want the token dropped", loc)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies %v", cookies)
	}
	c := cookies[0]
	if c.Name != SessionCookie || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Errorf("session cookie attributes %+v", c)
	}
	if strings.Contains(c.Value, testToken) {
		t.Error("the cookie holds the token")
	}

	w = f.do("GET", "/", "", cookie(c))
	if w.Code != 200 || !strings.Contains(w.Body.String(), `src="/static/app.js"`) {
		t.Fatalf("dashboard with session: %d", w.Code)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for name, ct := range map[string]string{"app.js": "text/javascript", "app.css": "text/css"} {
		w = f.do("GET", "/static/"+name, "", cookie(c))
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), ct) || w.Body.Len() < 100 {
			t.Errorf("static %s: %d %q", name, w.Code, w.Header().Get("Content-Type"))
		}
	}
	if w = f.do("GET", "/static/nope.js", "", cookie(c)); w.Code != 404 {
		t.Errorf("unknown static file: %d", w.Code)
	}
	if w = f.do("GET", "/static/app.js", ""); w.Code != 401 {
		t.Errorf("static without credentials: %d", w.Code)
	}

	// ?token= only opens sessions on the dashboard page, not on the API.
	if w = f.do("GET", "/api/v1/agents?token="+testToken, ""); w.Code != 401 {
		t.Errorf("API accepted a query token: %d", w.Code)
	}
	if strings.Contains(f.logs.String(), testToken) {
		t.Error("token logged")
	}

	nf := newFixture(t, "")
	if w = nf.do("GET", "/?token="+testToken, ""); w.Code != 401 || len(w.Result().Cookies()) != 0 {
		t.Errorf("bootstrap with token auth disabled: %d", w.Code)
	}
}

// TestAdminDashboardNoHTMLInjection checks the page's script never turns
// data into markup.
func TestAdminDashboardNoHTMLInjection(t *testing.T) {
	js, err := os.ReadFile("web/app.js")
	if err != nil {
		t.Fatal(err)
	}
	bad := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function`)
	if m := bad.FindAll(js, -1); len(m) > 0 {
		t.Errorf("app.js uses HTML/code sinks: %q", m)
	}
	html, err := os.ReadFile("web/index.html")
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?i)https?://|<script>[^<]`).Match(html) {
		t.Error("index.html loads external resources or has inline script")
	}
}

func TestAdminAgentsAPI(t *testing.T) {
	f := newFixture(t, testToken)
	w := f.do("GET", "/api/v1/agents", "", bearer(testToken))
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("agents: %d %s", w.Code, w.Body)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Error("API response cacheable")
	}
	l := decodeBody[AgentList](t, w)
	if !l.Now.Equal(f.now) {
		t.Errorf("now %v", l.Now)
	}
	var got []string
	for _, a := range l.Agents {
		got = append(got, a.ID+"="+a.Verdict+"/"+a.Reason+"/"+a.Trust)
	}
	want := "edge-1=TRUSTED/OK/tpm edge-2=DEGRADED/OK/mtls-only edge-3=BLINDED/SILENT/tpm"
	if strings.Join(got, " ") != want {
		t.Errorf("agents %q, want %q", strings.Join(got, " "), want)
	}
	// snake_case keys, last_pulse omitted when zero.
	raw := w.Body.String()
	for _, k := range []string{`"last_pulse"`, `"open_alerts"`, `"policy_digest"`, `"connected"`} {
		if !strings.Contains(raw, k) {
			t.Errorf("agents JSON lacks %s", k)
		}
	}

	w = f.do("GET", "/api/v1/agents/edge-1", "", bearer(testToken))
	if w.Code != 200 {
		t.Fatalf("agent: %d %s", w.Code, w.Body)
	}
	d := decodeBody[AgentResponse](t, w).Agent
	if d.ID != "edge-1" || d.Verdict != "TRUSTED" || len(d.History) != 2 || d.History[1].Verdict != "UNTRUSTED" ||
		d.History[1].Reason != "POLICY_DENIED" || len(d.Findings) != 1 || d.Findings[0].Line != 12 {
		t.Errorf("agent detail %+v", d)
	}
	if w = f.do("GET", "/api/v1/agents/edge-404", "", bearer(testToken)); w.Code != 404 {
		t.Errorf("unknown agent: %d", w.Code)
	}
	if w = f.do("GET", "/api/v1/agents/bad%20id", "", bearer(testToken)); w.Code != 400 {
		t.Errorf("bad agent id: %d", w.Code)
	}
	if w = f.do("GET", "/api/v1/agents", ""); w.Code != 401 {
		t.Errorf("agents without credentials: %d", w.Code)
	}
}

func TestAdminAlertsAPI(t *testing.T) {
	f := newFixture(t, testToken)
	w := f.do("GET", "/api/v1/alerts", "", bearer(testToken))
	l := decodeBody[AlertList](t, w)
	if w.Code != 200 || len(l.Alerts) != 2 || l.Alerts[0].Reason != "SILENT" {
		t.Fatalf("alerts: %d %+v", w.Code, l)
	}
	if !strings.Contains(w.Body.String(), `"acked_by": "bob"`) || strings.Count(w.Body.String(), `"acked_at"`) != 1 {
		t.Errorf("acked fields: %s", w.Body)
	}
	w = f.do("GET", "/api/v1/alerts?open=1&agent=edge-3&limit=5", "", bearer(testToken))
	l = decodeBody[AlertList](t, w)
	if len(l.Alerts) != 1 || l.Alerts[0].ID != "a-2" {
		t.Errorf("open alerts of edge-3: %+v", l.Alerts)
	}
	if last := f.be.filters[len(f.be.filters)-1]; last != (AlertFilter{AgentID: "edge-3", OpenOnly: true, Limit: 5}) {
		t.Errorf("filter passed %+v", last)
	}
	if first := f.be.filters[0]; first.Limit != DefaultAlertLimit || first.OpenOnly {
		t.Errorf("default filter %+v", first)
	}
	for _, q := range []string{"open=yes", "limit=0", "limit=100000", "limit=x", "agent=a/b", "agent=.."} {
		if w := f.do("GET", "/api/v1/alerts?"+q, "", bearer(testToken)); w.Code != 400 {
			t.Errorf("alerts?%s: %d", q, w.Code)
		}
	}

	// Acknowledge records who did it.
	w = f.do("POST", "/api/v1/alerts/a-2/ack", "", bearer(testToken))
	if w.Code != 200 {
		t.Fatalf("ack: %d %s", w.Code, w.Body)
	}
	if r := decodeBody[ActionResult](t, w); r.ID != "a-2" || r.By != TokenPrincipal {
		t.Errorf("ack result %+v", r)
	}
	operator := issueCert(t, pki.RoleOperator, "carol")
	f.be.alerts = append(f.be.alerts, Alert{ID: "a-3", AgentID: "edge-1", Kind: "silent", Severity: 2})
	if w = f.do("POST", "/api/v1/alerts/a-3/ack", "{}", withTLS(certState(operator, true))); w.Code != 200 {
		t.Fatalf("ack by certificate: %d %s", w.Code, w.Body)
	}
	if len(f.be.acks) != 2 || f.be.acks[0] != [2]string{"a-2", "token"} || f.be.acks[1] != [2]string{"a-3", "carol"} {
		t.Errorf("acks recorded %v", f.be.acks)
	}
	if w = f.do("POST", "/api/v1/alerts/a-2/ack", "", bearer(testToken)); w.Code != 409 {
		t.Errorf("second ack: %d", w.Code)
	}
	if w = f.do("POST", "/api/v1/alerts/a-404/ack", "", bearer(testToken)); w.Code != 404 {
		t.Errorf("unknown alert ack: %d", w.Code)
	}
	if w = f.do("POST", "/api/v1/alerts/a-1/ack", `{"by":"mallory"}`, bearer(testToken)); w.Code != 400 {
		t.Errorf("ack with a body naming someone else: %d", w.Code)
	}
	if w = f.do("GET", "/api/v1/alerts/a-1/ack", "", bearer(testToken)); w.Code != 405 {
		t.Errorf("GET on ack: %d", w.Code)
	}
	if !strings.Contains(f.logs.String(), "alert acknowledged") || !strings.Contains(f.logs.String(), "by=carol") {
		t.Errorf("ack not in the audit log:\n%s", f.logs)
	}
}

func TestAdminUnsafeRequestsCrossSite(t *testing.T) {
	f := newFixture(t, testToken)
	c := f.h.(*handler).tokens.sessionCookie("")
	cases := []struct {
		name string
		opts []reqOpt
		want int
	}{
		{"form post", []reqOpt{cookie(c), header("Content-Type", "application/x-www-form-urlencoded")}, 403},
		{"text post", []reqOpt{cookie(c), header("Content-Type", "text/plain")}, 403},
		{"foreign origin", []reqOpt{cookie(c), header("Origin", "https://evil.example")}, 403},
		{"http origin", []reqOpt{cookie(c), header("Origin", "http://admin.test")}, 403},
		{"cross-site fetch", []reqOpt{cookie(c), header("Sec-Fetch-Site", "cross-site")}, 403},
		{"same origin", []reqOpt{cookie(c), header("Origin", "https://admin.test"), header("Sec-Fetch-Site", "same-origin")}, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.be.alerts = []Alert{{ID: "x-1", AgentID: "edge-1"}}
			if w := f.do("POST", "/api/v1/alerts/x-1/ack", "{}", tc.opts...); w.Code != tc.want {
				t.Errorf("status %d, want %d: %s", w.Code, tc.want, w.Body)
			}
		})
	}
}

func TestAdminApproveUpdate(t *testing.T) {
	f := newFixture(t, testToken)
	digest := strings.Repeat("ab", 32)
	end := f.now.Add(48 * time.Hour).Format(time.RFC3339)
	body := `{"digest":"sha256:` + strings.ToUpper(digest) + `","agents":["edge-*","core-1"],"end":"` + end + `"}`
	w := f.do("POST", "/api/v1/updates", body, bearer(testToken))
	if w.Code != http.StatusCreated {
		t.Fatalf("approve: %d %s", w.Code, w.Body)
	}
	got := f.be.approvals[0]
	if got.Digest != digest || got.By != TokenPrincipal || !got.Start.Equal(f.now) || got.End.Format(time.RFC3339) != end ||
		strings.Join(got.Agents, ",") != "edge-*,core-1" {
		t.Errorf("approval %+v", got)
	}
	if r := decodeBody[UpdateApproval](t, w); r.By != TokenPrincipal || r.Digest != digest {
		t.Errorf("approval echoed %+v", r)
	}

	past := f.now.Add(-time.Hour).Format(time.RFC3339)
	far := f.now.Add(40 * 24 * time.Hour).Format(time.RFC3339)
	bad := map[string]string{
		"short digest":      `{"digest":"abcd","agents":["edge-*"],"end":"` + end + `"}`,
		"non-hex digest":    `{"digest":"` + strings.Repeat("zz", 32) + `","agents":["edge-*"],"end":"` + end + `"}`,
		"no agents":         `{"digest":"` + digest + `","agents":[],"end":"` + end + `"}`,
		"bad glob":          `{"digest":"` + digest + `","agents":["edge-["],"end":"` + end + `"}`,
		"empty glob":        `{"digest":"` + digest + `","agents":[""],"end":"` + end + `"}`,
		"no end":            `{"digest":"` + digest + `","agents":["edge-*"]}`,
		"end in the past":   `{"digest":"` + digest + `","agents":["edge-*"],"start":"` + f.now.Add(-2*time.Hour).Format(time.RFC3339) + `","end":"` + past + `"}`,
		"end before start":  `{"digest":"` + digest + `","agents":["edge-*"],"start":"` + end + `","end":"` + f.now.Add(time.Hour).Format(time.RFC3339) + `"}`,
		"window too long":   `{"digest":"` + digest + `","agents":["edge-*"],"end":"` + far + `"}`,
		"spoofed by":        `{"digest":"` + digest + `","agents":["edge-*"],"end":"` + end + `","by":"alice"}`,
		"trailing data":     `{"digest":"` + digest + `","agents":["edge-*"],"end":"` + end + `"} {}`,
		"not json":          `digest=` + digest,
		"empty body":        ``,
		"bad time":          `{"digest":"` + digest + `","agents":["edge-*"],"end":"tomorrow"}`,
		"oversized request": `{"digest":"` + digest + `","agents":["` + strings.Repeat("a", MaxBodyBytes) + `"],"end":"` + end + `"}`,
	}
	for name, b := range bad {
		if w := f.do("POST", "/api/v1/updates", b, bearer(testToken)); w.Code != 400 {
			t.Errorf("%s: %d %s", name, w.Code, w.Body)
		}
	}
	if len(f.be.approvals) != 1 {
		t.Errorf("refused approvals reached the backend: %d", len(f.be.approvals))
	}
}

func TestAdminReleaseAndQuarantine(t *testing.T) {
	f := newFixture(t, testToken)
	w := f.do("GET", "/api/v1/quarantine", "", bearer(testToken))
	q := decodeBody[QuarantineList](t, w)
	if w.Code != 200 || len(q.Quarantine) != 1 || q.Quarantine[0].Offender != "edge-9" {
		t.Fatalf("quarantine: %d %+v", w.Code, q)
	}
	operator := issueCert(t, pki.RoleOperator, "alice")
	w = f.do("POST", "/api/v1/release", `{"address":" 10.0.0.66 "}`, withTLS(certState(operator, true)))
	if w.Code != 200 {
		t.Fatalf("release: %d %s", w.Code, w.Body)
	}
	if r := decodeBody[ActionResult](t, w); r.Address != "10.0.0.66" || r.By != "alice" {
		t.Errorf("release result %+v", r)
	}
	if len(f.be.releases) != 1 || f.be.releases[0] != [2]string{"10.0.0.66", "alice"} {
		t.Errorf("releases %v", f.be.releases)
	}
	if w = f.do("POST", "/api/v1/release", `{"address":"10.0.0.66"}`, bearer(testToken)); w.Code != 404 {
		t.Errorf("release of an address not quarantined: %d", w.Code)
	}
	for _, a := range []string{"", "edge-1", "10.0.0.300", "10.0.0.0/33"} {
		if w = f.do("POST", "/api/v1/release", `{"address":"`+a+`"}`, bearer(testToken)); w.Code != 400 {
			t.Errorf("release %q: %d", a, w.Code)
		}
	}
	for in, want := range map[string]string{"::ffff:10.1.2.3": "10.1.2.3", "10.9.9.9/8": "10.0.0.0/8", "2001:DB8::1": "2001:db8::1"} {
		got, err := canonicalAddress(in)
		if err != nil || got != want {
			t.Errorf("canonicalAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	w = f.do("GET", "/api/v1/quarantine", "", bearer(testToken))
	if !strings.Contains(w.Body.String(), `"quarantine": []`) {
		t.Errorf("empty quarantine is not an empty list: %s", w.Body)
	}
}

func TestAdminBackendFailureIsNotLeaked(t *testing.T) {
	f := newFixture(t, testToken)
	f.be.fail = errors.New("pq: connection to 10.9.9.9 refused (password=hunter2)")
	for _, p := range []string{"/api/v1/agents", "/api/v1/agents/edge-1", "/api/v1/alerts", "/api/v1/quarantine"} {
		w := f.do("GET", p, "", bearer(testToken))
		if w.Code != 500 || strings.Contains(w.Body.String(), "hunter2") {
			t.Errorf("%s: %d %s", p, w.Code, w.Body)
		}
	}
	if !strings.Contains(f.logs.String(), "admin backend failed") {
		t.Error("backend failure not logged")
	}
	f.be.fail = errors.Join(ErrInvalid, errors.New("digest already approved"))
	end := f.now.Add(time.Hour).Format(time.RFC3339)
	w := f.do("POST", "/api/v1/updates", `{"digest":"`+strings.Repeat("0", 64)+`","agents":["x"],"end":"`+end+`"}`, bearer(testToken))
	if w.Code != 400 || !strings.Contains(w.Body.String(), "already approved") {
		t.Errorf("backend ErrInvalid: %d %s", w.Code, w.Body)
	}
}

func TestAdminMetricsAndPprof(t *testing.T) {
	f := newFixture(t, testToken)
	f.do("GET", "/api/v1/agents", "", bearer("wrong-wrong-wrong-wrong"))
	f.do("GET", "/api/v1/agents", "")
	w := f.do("GET", "/metrics", "", bearer(testToken))
	if w.Code != 200 {
		t.Fatalf("metrics: %d", w.Code)
	}
	for _, s := range []string{`pulse_admin_auth_failures_total{reason="bad_token"} 1`, `pulse_admin_auth_failures_total{reason="no_credentials"} 1`} {
		if !strings.Contains(w.Body.String(), s) {
			t.Errorf("metrics lack %s:\n%s", s, w.Body)
		}
	}
	if w = f.do("GET", "/metrics", ""); w.Code != 401 {
		t.Errorf("metrics without credentials: %d", w.Code)
	}
	w = f.do("GET", "/debug/pprof/", "", bearer(testToken))
	if w.Code != 200 || !strings.Contains(w.Body.String(), "goroutine") {
		t.Errorf("pprof index: %d", w.Code)
	}
	w = f.do("GET", "/debug/pprof/goroutine?debug=1", "", bearer(testToken))
	if w.Code != 200 || !strings.Contains(w.Body.String(), "goroutine profile") {
		t.Errorf("pprof goroutine: %d %.200s", w.Code, w.Body)
	}
	if w = f.do("GET", "/debug/pprof/cmdline", "", bearer(testToken)); w.Code != 200 {
		t.Errorf("pprof cmdline: %d", w.Code)
	}
	if w = f.do("GET", "/debug/pprof/", ""); w.Code != 401 {
		t.Errorf("pprof without credentials: %d", w.Code)
	}

	h, err := New(Options{Backend: &fakeBackend{}, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "https://admin.test/metrics", nil)
	r.TLS = tlsState
	r.Header.Set("Authorization", "Bearer "+testToken)
	rw := httptest.NewRecorder()
	h.ServeHTTP(rw, r)
	if rw.Code != 404 {
		t.Errorf("/metrics without a registry: %d", rw.Code)
	}
}

func TestAdminReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if toks, err := ReadTokenFile(write("good", testToken+"\n", 0o600)); err != nil || len(toks) != 1 || toks[""] != testToken {
		t.Errorf("good file: %d tokens, %v", len(toks), err)
	}
	for name, c := range map[string]struct {
		content string
		mode    os.FileMode
	}{
		"world-readable": {testToken, 0o644},
		"group-readable": {testToken, 0o640},
		"short":          {"abc\n", 0o600},
		"two lines":      {testToken + "\nsecond-line-second-line\n", 0o600},
		"spaces":         {"token with spaces inside it", 0o600},
	} {
		_, err := ReadTokenFile(write(strings.ReplaceAll(name, " ", "-"), c.content, c.mode))
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), testToken) || strings.Contains(err.Error(), "second-line") {
			t.Errorf("%s: error leaks the token: %v", name, err)
		}
	}
	if _, err := ReadTokenFile(dir + "/missing"); err == nil {
		t.Error("missing file accepted")
	}
}
