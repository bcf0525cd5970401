package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pulse-attest/pulse/internal/pki"
)

// startAdmin serves a sample backend on 127.0.0.1:0 over real TLS.
func startAdmin(t *testing.T, p *testPKI, token string, operatorCA bool, be Backend, logs io.Writer) *Server {
	t.Helper()
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, Output: logs})
	h, err := New(Options{Backend: be, Registry: prometheus.NewRegistry(), Logger: log, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	o := TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey, AllowNoClientCert: token != "", Logger: log}
	if operatorCA {
		o.OperatorCAFile = p.caFile
	}
	cfg, _, err := TLSConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Listen("127.0.0.1:0", cfg, h, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

// httpClient dials the admin server trusting the test CA, presenting the
// given certificate pair (if any).
func httpClient(t *testing.T, p *testPKI, certFile, keyFile string, maxVersion uint16) *http.Client {
	t.Helper()
	pool, err := pki.ReadCertPool(p.caFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: pool, MaxVersion: maxVersion}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		// GetClientCertificate sends the certificate even when its issuer is
		// not among the CAs the server asks for (Certificates would not).
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

type result struct {
	status    int
	principal Principal
	err       error
}

func get(c *http.Client, url, token string) result {
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	r := result{status: resp.StatusCode}
	if resp.StatusCode == 200 {
		_ = json.NewDecoder(resp.Body).Decode(&r.principal)
	}
	return r
}

func TestAdminTLSListener(t *testing.T) {
	p := newTestPKI(t)
	logs := &syncBuffer{}
	s := startAdmin(t, p, testToken, true, sampleBackend(time.Now()), logs)
	url := "https://" + s.Addr() + "/api/v1/session"

	cases := []struct {
		name            string
		cert, key       string
		maxVersion      uint16
		token           string
		wantStatus      int // 0: the handshake must fail
		wantPrincipal   string
		wantHandshakeIs string
	}{
		{name: "operator certificate", cert: p.operatorCert, key: p.operatorKey, wantStatus: 200, wantPrincipal: "alice"},
		{name: "agent certificate refused by role", cert: p.agentCert, key: p.agentKey},
		{name: "agent certificate with token still refused", cert: p.agentCert, key: p.agentKey, token: testToken},
		{name: "operator from another CA", cert: p.strangerCert, key: p.strangerKey},
		{name: "no certificate no token", wantStatus: 401},
		{name: "token", token: testToken, wantStatus: 200, wantPrincipal: TokenPrincipal},
		{name: "wrong token", token: "not-the-admin-token-at-all", wantStatus: 401},
		{name: "operator named token", cert: p.tokenNamedCert, key: p.tokenNamedKey, wantStatus: 403},
		{name: "TLS 1.2 refused", token: testToken, maxVersion: tls.VersionTLS12},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := get(httpClient(t, p, c.cert, c.key, c.maxVersion), url, c.token)
			if c.wantStatus == 0 {
				if r.err == nil {
					t.Fatalf("handshake succeeded: HTTP %d as %+v", r.status, r.principal)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("request failed: %v", r.err)
			}
			if r.status != c.wantStatus || r.principal.Name != c.wantPrincipal {
				t.Fatalf("HTTP %d as %q, want %d as %q", r.status, r.principal.Name, c.wantStatus, c.wantPrincipal)
			}
		})
	}
	if !strings.Contains(logs.String(), "admin handshake refused: reason=wrong_role") {
		t.Errorf("role refusal not logged:\n%s", logs)
	}
	if strings.Contains(logs.String(), testToken) {
		t.Error("token in logs")
	}
}

func TestAdminTLSCertificateOnly(t *testing.T) {
	p := newTestPKI(t)
	s := startAdmin(t, p, "", true, sampleBackend(time.Now()), io.Discard)
	url := "https://" + s.Addr() + "/api/v1/session"
	if r := get(httpClient(t, p, "", "", 0), url, testToken); r.err == nil {
		t.Fatalf("certificate-only listener accepted a connection without certificate: HTTP %d", r.status)
	}
	if r := get(httpClient(t, p, p.operatorCert, p.operatorKey, 0), url, ""); r.err != nil || r.status != 200 || r.principal.Name != "alice" {
		t.Fatalf("operator: %+v", r)
	}
	if r := get(httpClient(t, p, p.agentCert, p.agentKey, 0), url, ""); r.err == nil {
		t.Fatalf("agent certificate accepted: HTTP %d", r.status)
	}
}

func TestAdminTLSTokenOnly(t *testing.T) {
	p := newTestPKI(t)
	s := startAdmin(t, p, testToken, false, sampleBackend(time.Now()), io.Discard)
	url := "https://" + s.Addr() + "/api/v1/session"
	if r := get(httpClient(t, p, "", "", 0), url, testToken); r.err != nil || r.status != 200 {
		t.Fatalf("token: %+v", r)
	}
	if r := get(httpClient(t, p, "", "", 0), url, ""); r.err != nil || r.status != 401 {
		t.Fatalf("no token: %+v", r)
	}
}

func TestAdminTLSConfigErrors(t *testing.T) {
	p := newTestPKI(t)
	if _, _, err := TLSConfig(TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey}); err == nil {
		t.Error("TLSConfig with neither operator CA nor token succeeded")
	}
	if _, _, err := TLSConfig(TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey, OperatorCAFile: p.dir + "/missing.pem"}); err == nil {
		t.Error("TLSConfig with a missing CA file succeeded")
	}
	if _, err := Listen("127.0.0.1:0", nil, http.NotFoundHandler(), nil); err == nil {
		t.Error("Listen without TLS succeeded")
	}
}

func TestAdminClient(t *testing.T) {
	p := newTestPKI(t)
	be := sampleBackend(time.Now())
	s := startAdmin(t, p, testToken, true, be, io.Discard)
	ctx := context.Background()
	base := "https://" + s.Addr()

	for name, o := range map[string]ClientOptions{
		"no url":         {Token: testToken},
		"plain http":     {URL: "http://" + s.Addr(), Token: testToken},
		"no credentials": {URL: base, CAFile: p.caFile},
		"cert no key":    {URL: base, CAFile: p.caFile, CertFile: p.operatorCert},
	} {
		if _, err := NewClient(o); err == nil {
			t.Errorf("%s: NewClient succeeded", name)
		}
	}

	byCert, err := NewClient(ClientOptions{URL: base, CAFile: p.caFile, CertFile: p.operatorCert, KeyFile: p.operatorKey})
	if err != nil {
		t.Fatal(err)
	}
	if sess, err := byCert.Session(ctx); err != nil || sess.Name != "alice" || sess.Method != MethodCertificate {
		t.Fatalf("session: %+v %v", sess, err)
	}
	agents, err := byCert.ListAgents(ctx)
	if err != nil || len(agents.Agents) != 3 || agents.Agents[0].Verdict != "TRUSTED" {
		t.Fatalf("agents: %+v %v", agents, err)
	}
	if _, err := byCert.GetAgent(ctx, "edge-404"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown agent error %v, want ErrNotFound", err)
	}
	if _, err := byCert.AckAlert(ctx, "a-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := byCert.AckAlert(ctx, "a-2"); !errors.Is(err, ErrConflict) {
		t.Errorf("second ack error %v, want ErrConflict", err)
	}
	if _, err := byCert.ApproveUpdate(ctx, UpdateRequest{Digest: "12"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad approval error %v, want ErrInvalid", err)
	}
	var apiErr *APIError
	if _, err := byCert.Release(ctx, "10.1.1.1"); !errors.As(err, &apiErr) || apiErr.Status != 404 || apiErr.Message == "" {
		t.Errorf("release error %v", err)
	}

	byToken, err := NewClient(ClientOptions{URL: base, CAFile: p.caFile, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	open, err := byToken.ListAlerts(ctx, AlertFilter{OpenOnly: true})
	if err != nil || len(open.Alerts) != 0 {
		t.Fatalf("open alerts after ack: %+v %v", open, err)
	}
	if len(be.acks) != 1 || be.acks[0] != [2]string{"a-2", "alice"} {
		t.Errorf("acks %v", be.acks)
	}

	wrong, err := NewClient(ClientOptions{URL: base, CAFile: p.caFile, Token: "wrong-wrong-wrong-wrong"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.ListAgents(ctx); !errors.As(err, &apiErr) || apiErr.Status != 401 {
		t.Errorf("wrong token: %v", err)
	}
	// Without the test CA the server is not trusted.
	untrusting, err := NewClient(ClientOptions{URL: base, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusting.ListAgents(ctx); err == nil || errors.As(err, &apiErr) {
		t.Errorf("server with an unknown CA trusted: %v", err)
	}
}
