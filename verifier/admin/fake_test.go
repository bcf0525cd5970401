package admin

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/verifier/audit"
)

// fakeBackend is an in-memory Backend recording the calls it gets.
type fakeBackend struct {
	mu         sync.Mutex
	agents     []AgentStatus
	details    map[string]*AgentDetail
	alerts     []Alert
	quarantine []Quarantine
	approvals  []UpdateApproval
	acks       [][2]string
	releases   [][2]string
	filters    []AlertFilter
	listCalls  int
	// onList runs (under the lock) before ListAgents answers, with the
	// 1-based call number: tests change the fleet's state from it.
	onList func(call int, f *fakeBackend)
	fail   error
	// auditLog, when set, receives RecordAction's records; recordFail
	// makes RecordAction fail.
	auditLog   *audit.Writer
	records    []audit.Record
	recordFail error
}

func (f *fakeBackend) ListAgents(context.Context) ([]AgentStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listCalls++
	if f.onList != nil {
		f.onList(f.listCalls, f)
	}
	if f.fail != nil {
		return nil, f.fail
	}
	return append([]AgentStatus(nil), f.agents...), nil
}

func (f *fakeBackend) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listCalls
}

func (f *fakeBackend) GetAgent(_ context.Context, id string) (*AgentDetail, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	d, ok := f.details[id]
	if !ok {
		return nil, fmt.Errorf("agent %s: %w", id, ErrNotFound)
	}
	c := *d
	return &c, nil
}

func (f *fakeBackend) ListAlerts(_ context.Context, flt AlertFilter) ([]Alert, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, flt)
	if f.fail != nil {
		return nil, f.fail
	}
	var out []Alert
	for _, a := range f.alerts {
		if flt.OpenOnly && !a.AckedAt.IsZero() {
			continue
		}
		if flt.AgentID != "" && a.AgentID != flt.AgentID {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

func (f *fakeBackend) AckAlert(_ context.Context, id, by string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	for i := range f.alerts {
		if f.alerts[i].ID != id {
			continue
		}
		if !f.alerts[i].AckedAt.IsZero() {
			return fmt.Errorf("alert %s acknowledged by %s: %w", id, f.alerts[i].AckedBy, ErrConflict)
		}
		f.alerts[i].AckedAt, f.alerts[i].AckedBy = time.Now(), by
		f.acks = append(f.acks, [2]string{id, by})
		return nil
	}
	return fmt.Errorf("alert %s: %w", id, ErrNotFound)
}

func (f *fakeBackend) ApproveUpdate(_ context.Context, u UpdateApproval) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.approvals = append(f.approvals, u)
	return nil
}

func (f *fakeBackend) Release(_ context.Context, address, by string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	for i, q := range f.quarantine {
		if q.Address == address {
			f.quarantine = append(f.quarantine[:i], f.quarantine[i+1:]...)
			f.releases = append(f.releases, [2]string{address, by})
			return nil
		}
	}
	return fmt.Errorf("address %s is not quarantined: %w", address, ErrNotFound)
}

func (f *fakeBackend) Quarantined(context.Context) ([]Quarantine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	return append([]Quarantine(nil), f.quarantine...), nil
}

func (f *fakeBackend) ListUpdates(context.Context) ([]UpdateApproval, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	return append([]UpdateApproval(nil), f.approvals...), nil
}

func (f *fakeBackend) RecordAction(ctx context.Context, rec audit.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.recordFail != nil {
		return f.recordFail
	}
	if f.auditLog != nil {
		var err error
		if rec, err = f.auditLog.Append(ctx, rec); err != nil {
			return err
		}
	}
	f.records = append(f.records, rec)
	return nil
}

// sampleBackend is a small fleet: a TPM agent, an mTLS-only agent and a
// silent one, two alerts (one acknowledged) and a quarantined address.
func sampleBackend(now time.Time) *fakeBackend {
	f := &fakeBackend{
		agents: []AgentStatus{
			{ID: "edge-2", Partition: "lab", Trust: TrustMTLSOnly, Verdict: "VERDICT_DEGRADED", Reason: "REASON_OK",
				Message: "mTLS-only pulse accepted by policy", LastPulse: now.Add(-3 * time.Second), Connected: true, Address: "10.0.0.2"},
			{ID: "edge-1", Partition: "lab", Trust: TrustTPM, Verdict: "VERDICT_TRUSTED", Reason: "REASON_OK",
				LastPulse: now.Add(-1 * time.Second), Connected: true, PolicyDigest: "ab12", Address: "10.0.0.1", AgentVersion: "v0.4.0+b6d9127a0c1e"},
			{ID: "edge-3", Partition: "field", Trust: TrustTPM, Verdict: "BLINDED", Reason: "SILENT",
				Message: "no pulse for 95s", LastPulse: now.Add(-95 * time.Second), OpenAlerts: 1},
		},
		alerts: []Alert{
			{ID: "a-2", AgentID: "edge-3", Kind: "silent", Severity: 2, Reason: "REASON_SILENT", Message: "no pulse for 95s", CreatedAt: now.Add(-5 * time.Second)},
			{ID: "a-1", AgentID: "edge-1", Kind: "binary_changed", Severity: 1, Reason: "REASON_BINARY_CHANGED", Message: "agent binary changed",
				CreatedAt: now.Add(-time.Hour), AckedAt: now.Add(-30 * time.Minute), AckedBy: "bob"},
		},
		quarantine: []Quarantine{{Address: "10.0.0.66", Offender: "edge-9", Reason: "agent binary changed", Since: now.Add(-time.Minute)}},
	}
	f.details = map[string]*AgentDetail{
		"edge-1": {AgentStatus: f.agents[1],
			History: []HistoryEntry{
				{At: now.Add(-time.Second), Verdict: "VERDICT_TRUSTED", Reason: "REASON_OK"},
				{At: now.Add(-time.Minute), Verdict: "VERDICT_UNTRUSTED", Reason: "REASON_POLICY_DENIED", Message: "rule boot.secure_boot (policy.hcl:12)"},
			},
			Findings: []Finding{{Rule: "boot.secure_boot", File: "policy.hcl", Line: 12, Enforce: true, Severity: 1, Message: "secure boot is off"}}},
	}
	return f
}

// testPKI is a CA with a server certificate and operator/agent client
// certificates written to files, plus an operator from another CA.
type testPKI struct {
	dir                           string
	caFile                        string
	serverCert, serverKey         string
	operatorCert, operatorKey     string
	agentCert, agentKey           string
	strangerCert, strangerKey     string
	tokenNamedCert, tokenNamedKey string
	server                        *pki.Issued
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("Pulse Test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir, caFile: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(p.caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.CA, role pki.Role, id string) (string, string, *pki.Issued) {
		req := pki.Request{Role: role, ID: id}
		if role == pki.RoleVerifier {
			req.DNSNames = []string{"localhost"}
			req.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		is, err := pki.Issue(ca, req)
		if err != nil {
			t.Fatal(err)
		}
		cert, key := filepath.Join(dir, string(role)+"-"+id+".pem"), filepath.Join(dir, string(role)+"-"+id+"-key.pem")
		if err := is.WriteFiles(cert, key, false); err != nil {
			t.Fatal(err)
		}
		return cert, key, is
	}
	p.serverCert, p.serverKey, p.server = issue(ca, pki.RoleVerifier, "v1")
	p.operatorCert, p.operatorKey, _ = issue(ca, pki.RoleOperator, "alice")
	p.agentCert, p.agentKey, _ = issue(ca, pki.RoleAgent, "edge-1")
	p.tokenNamedCert, p.tokenNamedKey, _ = issue(ca, pki.RoleOperator, "token")
	other, err := pki.NewCA("Someone Else CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	p.strangerCert, p.strangerKey, _ = issue(other, pki.RoleOperator, "mallory")
	return p
}
