package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/verifier/admin"
)

const adminTestToken = "pulsectl-test-token-0123456789"

// cliBackend is an in-memory admin.Backend.
type cliBackend struct {
	mu         sync.Mutex
	alerts     []admin.Alert
	quarantine []admin.Quarantine
	approvals  []admin.UpdateApproval
	released   [][2]string
	filters    []admin.AlertFilter
}

func (b *cliBackend) ListAgents(context.Context) ([]admin.AgentStatus, error) { return nil, nil }

func (b *cliBackend) GetAgent(_ context.Context, id string) (*admin.AgentDetail, error) {
	return nil, fmt.Errorf("agent %s: %w", id, admin.ErrNotFound)
}

func (b *cliBackend) ListAlerts(_ context.Context, f admin.AlertFilter) ([]admin.Alert, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.filters = append(b.filters, f)
	var out []admin.Alert
	for _, a := range b.alerts {
		if (f.OpenOnly && !a.AckedAt.IsZero()) || (f.AgentID != "" && f.AgentID != a.AgentID) {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

func (b *cliBackend) AckAlert(_ context.Context, id, by string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.alerts {
		if b.alerts[i].ID == id {
			if !b.alerts[i].AckedAt.IsZero() {
				return fmt.Errorf("alert %s: %w", id, admin.ErrConflict)
			}
			b.alerts[i].AckedAt, b.alerts[i].AckedBy = time.Now(), by
			return nil
		}
	}
	return fmt.Errorf("alert %s: %w", id, admin.ErrNotFound)
}

func (b *cliBackend) ApproveUpdate(_ context.Context, u admin.UpdateApproval) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.approvals = append(b.approvals, u)
	return nil
}

func (b *cliBackend) Release(_ context.Context, address, by string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, q := range b.quarantine {
		if q.Address == address {
			b.quarantine = append(b.quarantine[:i], b.quarantine[i+1:]...)
			b.released = append(b.released, [2]string{address, by})
			return nil
		}
	}
	return fmt.Errorf("%s is not quarantined: %w", address, admin.ErrNotFound)
}

func (b *cliBackend) Quarantined(context.Context) ([]admin.Quarantine, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]admin.Quarantine(nil), b.quarantine...), nil
}

type adminEnv struct {
	be                        *cliBackend
	url, ca                   string
	operatorCert, operatorKey string
	agentCert, agentKey       string
}

// startAdminServer runs the real admin handler and listener (operator CA
// and token) over a fake backend on 127.0.0.1:0.
func startAdminServer(t *testing.T) *adminEnv {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("CLI Test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	e := &adminEnv{ca: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(e.ca, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(req pki.Request) (string, string) {
		is, err := pki.Issue(ca, req)
		if err != nil {
			t.Fatal(err)
		}
		c, k := filepath.Join(dir, req.ID+".pem"), filepath.Join(dir, req.ID+"-key.pem")
		if err := is.WriteFiles(c, k, false); err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	srvCert, srvKey := write(pki.Request{Role: pki.RoleVerifier, ID: "v1", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	e.operatorCert, e.operatorKey = write(pki.Request{Role: pki.RoleOperator, ID: "alice"})
	e.agentCert, e.agentKey = write(pki.Request{Role: pki.RoleAgent, ID: "edge-1"})

	now := time.Now().UTC().Truncate(time.Second)
	e.be = &cliBackend{
		alerts: []admin.Alert{
			{ID: "a-2", AgentID: "edge-3", Kind: "silent", Severity: 2, Reason: "REASON_SILENT", Message: "no pulse\nfor 95s", CreatedAt: now},
			{ID: "a-1", AgentID: "edge-1", Kind: "binary_changed", Severity: 1, Reason: "REASON_BINARY_CHANGED", Message: "agent binary changed",
				CreatedAt: now.Add(-time.Hour), AckedAt: now.Add(-time.Minute), AckedBy: "bob"},
		},
		quarantine: []admin.Quarantine{{Address: "10.0.0.66", Offender: "edge-9", Reason: "binary changed", Since: now}},
	}
	h, err := admin.New(admin.Options{Backend: e.be, Token: adminTestToken})
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := admin.TLSConfig(admin.TLSOptions{CertFile: srvCert, KeyFile: srvKey, OperatorCAFile: e.ca, AllowNoClientCert: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err := admin.Listen("127.0.0.1:0", cfg, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	e.url = "https://" + s.Addr()
	// Keep the caller's environment out of the tests.
	t.Setenv("PULSE_ADMIN_TOKEN", "")
	t.Setenv("PULSE_ADMIN_URL", "")
	t.Setenv("PULSE_ADMIN_CA", "")
	return e
}

func (e *adminEnv) byToken(args ...string) []string {
	return append([]string{"--admin", e.url, "--ca", e.ca, "--token", adminTestToken}, args...)
}

func (e *adminEnv) byCert(args ...string) []string {
	return append([]string{"--admin", e.url, "--ca", e.ca, "--cert", e.operatorCert, "--key", e.operatorKey}, args...)
}

func TestAlertsCLIListAndAck(t *testing.T) {
	e := startAdminServer(t)

	code, out, errOut := runCmd(t, "alerts list", e.byToken()...)
	if code != 0 {
		t.Fatalf("alerts list = %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.HasPrefix(lines[1], "a-2") ||
		!strings.Contains(lines[1], "no pulse for 95s") || !strings.Contains(lines[2], "bob ") {
		t.Errorf("alerts list output:\n%s", out)
	}

	code, out, errOut = runCmd(t, "alerts list", e.byCert("--open", "--agent", "edge-3", "--limit", "7", "--json")...)
	if code != 0 {
		t.Fatalf("alerts list --json = %d: %s", code, errOut)
	}
	var alerts []admin.Alert
	if err := json.Unmarshal([]byte(out), &alerts); err != nil || len(alerts) != 1 || alerts[0].ID != "a-2" || alerts[0].Reason != "SILENT" {
		t.Fatalf("alerts --json: %v %s", err, out)
	}
	if f := e.be.filters[len(e.be.filters)-1]; f != (admin.AlertFilter{AgentID: "edge-3", OpenOnly: true, Limit: 7}) {
		t.Errorf("filter sent %+v", f)
	}

	code, out, errOut = runCmd(t, "alerts ack", e.byCert("a-2")...)
	if code != 0 || !strings.Contains(out, "acknowledged a-2 (by alice)") {
		t.Fatalf("alerts ack = %d: %s %s", code, out, errOut)
	}
	if e.be.alerts[0].AckedBy != "alice" {
		t.Errorf("ack recorded by %q", e.be.alerts[0].AckedBy)
	}
	code, _, errOut = runCmd(t, "alerts ack", e.byToken("a-2", "a-404")...)
	if code != 1 || !strings.Contains(errOut, "a-2: admin api: HTTP 409") || !strings.Contains(errOut, "a-404: admin api: HTTP 404") {
		t.Errorf("ack of acked and unknown alerts = %d: %s", code, errOut)
	}
	if code, _, _ := runCmd(t, "alerts ack", e.byToken()...); code != 2 {
		t.Errorf("ack without IDs = %d", code)
	}
}

func TestAdminCLIAgentsCommands(t *testing.T) {
	e := startAdminServer(t)
	digest := strings.Repeat("0f", 32)
	code, out, errOut := runCmd(t, "agents approve-update", e.byCert("--digest", digest, "--agents", "edge-*,core-1", "--agents", "lab-2", "--for", "48h")...)
	if code != 0 || !strings.Contains(out, "approved "+digest+" for edge-*,core-1,lab-2") || !strings.Contains(out, "(by alice)") {
		t.Fatalf("approve-update = %d: %s %s", code, out, errOut)
	}
	u := e.be.approvals[0]
	if u.By != "alice" || u.Digest != digest || len(u.Agents) != 3 || u.End.Sub(u.Start) < 47*time.Hour || u.End.Sub(u.Start) > 49*time.Hour {
		t.Errorf("approval %+v", u)
	}
	start := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	code, out, errOut = runCmd(t, "agents approve-update", e.byToken("--digest", digest, "--agents", "edge-1",
		"--start", start.Format(time.RFC3339), "--end", start.Add(2*time.Hour).Format(time.RFC3339), "--json")...)
	var got admin.UpdateApproval
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.By != "token" || !got.Start.Equal(start) {
		t.Fatalf("approve-update --json = %d: %s %s", code, out, errOut)
	}
	code, _, errOut = runCmd(t, "agents approve-update", e.byToken("--digest", "abc", "--agents", "edge-1", "--for", "1h")...)
	if code != 1 || !strings.Contains(errOut, "HTTP 400") || !strings.Contains(errOut, "64 hex") {
		t.Errorf("bad digest = %d: %s", code, errOut)
	}
	for _, args := range [][]string{
		{"--digest", digest, "--for", "1h"},                                                   // no agents
		{"--agents", "x", "--for", "1h"},                                                      // no digest
		{"--digest", digest, "--agents", "x"},                                                 // no window
		{"--digest", digest, "--agents", "x", "--for", "1h", "--end", "2030-01-01T00:00:00Z"}, // both
		{"--digest", digest, "--agents", "x", "--end", "tomorrow"},                            // bad time
	} {
		if code, _, _ := runCmd(t, "agents approve-update", e.byToken(args...)...); code != 2 {
			t.Errorf("approve-update %v = %d, want 2", args, code)
		}
	}
	if len(e.be.approvals) != 2 {
		t.Errorf("%d approvals reached the backend", len(e.be.approvals))
	}

	code, out, _ = runCmd(t, "agents quarantine", e.byToken()...)
	if code != 0 || !strings.Contains(out, "10.0.0.66") || !strings.Contains(out, "edge-9") {
		t.Fatalf("quarantine = %d: %s", code, out)
	}
	code, out, errOut = runCmd(t, "agents release", e.byCert("10.0.0.66")...)
	if code != 0 || !strings.Contains(out, "released 10.0.0.66 (by alice)") {
		t.Fatalf("release = %d: %s %s", code, out, errOut)
	}
	if len(e.be.released) != 1 || e.be.released[0] != [2]string{"10.0.0.66", "alice"} {
		t.Errorf("released %v", e.be.released)
	}
	code, _, errOut = runCmd(t, "agents release", e.byCert("10.0.0.66")...)
	if code != 1 || !strings.Contains(errOut, "HTTP 404") {
		t.Errorf("second release = %d: %s", code, errOut)
	}
	code, out, _ = runCmd(t, "agents quarantine", e.byToken()...)
	if code != 0 || !strings.Contains(out, "nothing quarantined") {
		t.Errorf("empty quarantine = %d: %s", code, out)
	}
}

func TestAdminCLIAuthentication(t *testing.T) {
	e := startAdminServer(t)
	base := []string{"--admin", e.url, "--ca", e.ca}

	code, _, errOut := runCmd(t, "agents quarantine", base...)
	if code != 2 || !strings.Contains(errOut, "no credentials") {
		t.Errorf("no credentials = %d: %s", code, errOut)
	}
	code, _, errOut = runCmd(t, "agents quarantine", append(base, "--token", "not-the-right-token-at-all")...)
	if code != 1 || !strings.Contains(errOut, "HTTP 401") {
		t.Errorf("wrong token = %d: %s", code, errOut)
	}
	if strings.Contains(errOut, "not-the-right-token-at-all") {
		t.Error("token echoed in an error")
	}
	code, _, errOut = runCmd(t, "agents quarantine", append(base, "--cert", e.agentCert, "--key", e.agentKey)...)
	if code != 1 || !strings.Contains(errOut, "agents quarantine") {
		t.Errorf("agent certificate = %d: %s", code, errOut)
	}
	code, _, errOut = runCmd(t, "agents quarantine", "--admin", "http://"+strings.TrimPrefix(e.url, "https://"), "--token", adminTestToken)
	if code != 2 || !strings.Contains(errOut, "https://") {
		t.Errorf("plain http URL = %d: %s", code, errOut)
	}
	code, _, errOut = runCmd(t, "agents quarantine", "--admin", e.url, "--token", adminTestToken)
	if code != 1 || !strings.Contains(errOut, "certificate") {
		t.Errorf("server not trusted without --ca = %d: %s", code, errOut)
	}

	t.Setenv("PULSE_ADMIN_TOKEN", adminTestToken)
	t.Setenv("PULSE_ADMIN_URL", e.url)
	t.Setenv("PULSE_ADMIN_CA", e.ca)
	if code, out, errOut := runCmd(t, "agents quarantine"); code != 0 || !strings.Contains(out, "10.0.0.66") {
		t.Errorf("environment credentials = %d: %s %s", code, out, errOut)
	}
	t.Setenv("PULSE_ADMIN_TOKEN", "")
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(adminTestToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCmd(t, "agents quarantine", "--token-file", tokFile); code != 0 {
		t.Errorf("--token-file = %d: %s", code, errOut)
	}
}
