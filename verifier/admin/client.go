package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
)

// ClientOptions configure NewClient.
type ClientOptions struct {
	// URL is the admin listener, https://host:port. Required.
	URL string
	// CAFile holds the CAs the admin listener's certificate chains to;
	// empty uses the system roots.
	CAFile string
	// ServerName overrides the name checked against the server
	// certificate (default: the URL's host).
	ServerName string
	// CertFile and KeyFile are an operator certificate and key.
	CertFile, KeyFile string
	// Token is the bearer token, used when no certificate is given.
	Token string
	// Timeout bounds each request (default 30s).
	Timeout time.Duration
}

// Client talks to the admin API.
type Client struct {
	base  *url.URL
	http  *http.Client
	token string
}

// APIError is a non-2xx answer. It matches ErrNotFound (404), ErrInvalid
// (400) and ErrConflict (409) with errors.Is.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("admin api: HTTP %d", e.Status)
	}
	return fmt.Sprintf("admin api: HTTP %d: %s", e.Status, e.Message)
}

// Unwrap maps the status to the package's sentinel errors.
func (e *APIError) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusBadRequest:
		return ErrInvalid
	case http.StatusConflict:
		return ErrConflict
	}
	return nil
}

// NewClient builds a client. It needs either an operator certificate or a
// token, and refuses non-https URLs (the token must not travel in clear).
func NewClient(o ClientOptions) (*Client, error) {
	if o.URL == "" {
		return nil, errors.New("admin client: no admin URL (--admin https://HOST:PORT)")
	}
	u, err := url.Parse(strings.TrimRight(o.URL, "/"))
	if err != nil {
		return nil, fmt.Errorf("admin client: url: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("admin client: url %q: want https://HOST:PORT", u.Redacted())
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("admin client: give both --cert and --key")
	}
	if o.CertFile == "" && o.Token == "" {
		return nil, errors.New("admin client: no credentials: give --cert/--key (operator certificate) or --token (or PULSE_ADMIN_TOKEN)")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: o.ServerName}
	if o.CAFile != "" {
		pool, err := pki.ReadCertPool(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("admin client: ca: %w", err)
		}
		cfg.RootCAs = pool
	} else {
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("admin client: system roots: %w", err)
		}
		cfg.RootCAs = pool
	}
	if o.CertFile != "" {
		r, err := tlsconfig.NewReloader(o.CertFile, o.KeyFile, tlsconfig.ReloaderOptions{})
		if err != nil {
			return nil, fmt.Errorf("admin client: %w", err)
		}
		cfg.GetClientCertificate = r.GetClientCertificate
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second}
	c := &Client{base: u, http: &http.Client{Transport: tr, Timeout: timeout,
		// Never follow redirects: a redirect could carry the token elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	if o.CertFile == "" {
		c.token = o.Token
	}
	return c, nil
}

// do sends one request and decodes a JSON answer into out (when non-nil).
func (c *Client) do(ctx context.Context, method, p string, q url.Values, body, out any) error {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + p
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin api %s %s: %w", method, p, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("admin api %s %s: read: %w", method, p, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var eb errorBody
		_ = json.Unmarshal(data, &eb)
		return &APIError{Status: resp.StatusCode, Message: eb.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin api %s %s: decode: %w", method, p, err)
	}
	return nil
}

// Session returns who the server authenticated this client as.
func (c *Client) Session(ctx context.Context) (Principal, error) {
	var p Principal
	err := c.do(ctx, http.MethodGet, "/api/v1/session", nil, nil, &p)
	return p, err
}

// ListAgents lists every agent.
func (c *Client) ListAgents(ctx context.Context) (*AgentList, error) {
	var l AgentList
	if err := c.do(ctx, http.MethodGet, "/api/v1/agents", nil, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// QueryAgents returns one page of agents (GET /api/v1/agents with q's
// parameters; a zero Limit asks for the API's default page).
func (c *Client) QueryAgents(ctx context.Context, q AgentQuery) (*AgentPage, error) {
	v := q.Values()
	if !isPageQuery(v) {
		v.Set("limit", strconv.Itoa(DefaultAgentPage))
	}
	var p AgentPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/agents", v, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// CountFleet returns the fleet's counts (GET /api/v1/fleet).
func (c *Client) CountFleet(ctx context.Context) (*FleetCounts, error) {
	var f FleetCounts
	if err := c.do(ctx, http.MethodGet, "/api/v1/fleet", nil, nil, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// GetAgent returns one agent's detail.
func (c *Client) GetAgent(ctx context.Context, id string) (*AgentResponse, error) {
	var a AgentResponse
	if err := c.do(ctx, http.MethodGet, "/api/v1/agents/"+url.PathEscape(id), nil, nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// ListAlerts lists alerts (Limit 0 uses the server's default).
func (c *Client) ListAlerts(ctx context.Context, f AlertFilter) (*AlertList, error) {
	q := url.Values{}
	if f.OpenOnly {
		q.Set("open", "1")
	}
	if f.AgentID != "" {
		q.Set("agent", f.AgentID)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var l AlertList
	if err := c.do(ctx, http.MethodGet, "/api/v1/alerts", q, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// AckAlert acknowledges an alert.
func (c *Client) AckAlert(ctx context.Context, id string) (*ActionResult, error) {
	var r ActionResult
	if err := c.do(ctx, http.MethodPost, "/api/v1/alerts/"+url.PathEscape(id)+"/ack", nil, struct{}{}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ApproveUpdate approves an agent binary digest for a window; the answer is
// the approval as recorded (with By).
func (c *Client) ApproveUpdate(ctx context.Context, u UpdateRequest) (*UpdateApproval, error) {
	var a UpdateApproval
	if err := c.do(ctx, http.MethodPost, "/api/v1/updates", nil, u, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// Release lifts the quarantine of an address.
func (c *Client) Release(ctx context.Context, address string) (*ActionResult, error) {
	var r ActionResult
	if err := c.do(ctx, http.MethodPost, "/api/v1/release", nil, ReleaseRequest{Address: address}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Quarantined lists quarantined addresses.
func (c *Client) Quarantined(ctx context.Context) (*QuarantineList, error) {
	var l QuarantineList
	if err := c.do(ctx, http.MethodGet, "/api/v1/quarantine", nil, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// ListUpdates lists the update approval windows not yet ended.
func (c *Client) ListUpdates(ctx context.Context) (*UpdateList, error) {
	var l UpdateList
	if err := c.do(ctx, http.MethodGet, "/api/v1/updates", nil, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}
