package verifier_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/admin"
)

// TestAgentPagesOverAdminAPI: a real verifier's /api/v1/agents pages,
// filters and searches the store, /api/v1/fleet counts it; bad queries are
// 400 and a caller without credentials gets 401 and no data.
func TestAgentPagesOverAdminAPI(t *testing.T) {
	e, a, cl := explainEnv(t, "edge-list")
	if e == nil {
		return
	}
	c := ctx(t)
	a.Challenge()
	wantVerdict(t, a.Pulse(func(p *parts) { p.Payload.AgentVersion = "v1.2.0" }), trusted, pulsev1.Reason_REASON_OK)
	m := e.agent("lab-mtls", nil)
	m.Partition = "lab"
	if res := m.Enroll(); !res.GetEnrolled() {
		t.Fatal(res.GetMessage())
	}
	m.Challenge()
	wantVerdict(t, m.Pulse(nil), untrusted, pulsev1.Reason_REASON_TPM_REQUIRED)

	ids := func(p *admin.AgentPage) string {
		var out []string
		for _, r := range p.Agents {
			out = append(out, r.ID)
		}
		return fmt.Sprint(out)
	}
	cases := []struct {
		name  string
		q     admin.AgentQuery
		want  string
		total int
	}{
		{"untrusted", admin.AgentQuery{Verdicts: []string{"UNTRUSTED"}}, "[lab-mtls]", 1},
		{"reason", admin.AgentQuery{Reasons: []string{"TPM_REQUIRED", "POLICY_DENIED"}}, "[lab-mtls]", 1},
		{"trusted by its proto name", admin.AgentQuery{Verdicts: []string{"VERDICT_TRUSTED"}}, "[edge-list]", 1},
		{"partition", admin.AgentQuery{Partition: "lab"}, "[lab-mtls]", 1},
		{"version", admin.AgentQuery{Version: "v1.2.0"}, "[edge-list]", 1},
		{"tpm", admin.AgentQuery{Trust: "tpm"}, "[edge-list]", 1},
		{"mtls-only", admin.AgentQuery{Trust: "mtls-only"}, "[lab-mtls]", 1},
		{"search", admin.AgentQuery{Search: "LIST"}, "[edge-list]", 1},
		{"first page by verdict desc", admin.AgentQuery{Sort: "verdict", Desc: true, Limit: 1}, "[lab-mtls]", 2},
		{"quarantined", admin.AgentQuery{Quarantined: true}, "[]", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := cl.QueryAgents(c, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if ids(p) != tc.want || p.Total != tc.total {
				t.Fatalf("agents %s total %d, want %s total %d", ids(p), p.Total, tc.want, tc.total)
			}
		})
	}
	// Two pages of one.
	p, err := cl.QueryAgents(c, admin.AgentQuery{Limit: 1})
	if err != nil || ids(p) != "[edge-list]" || p.Next == "" {
		t.Fatalf("page 1: %v %v", p, err)
	}
	p, err = cl.QueryAgents(c, admin.AgentQuery{Limit: 1, After: p.Next})
	if err != nil || ids(p) != "[lab-mtls]" || p.Next != "" || p.Agents[0].Verdict != "UNTRUSTED" || p.Agents[0].Trust != admin.TrustMTLSOnly {
		t.Fatalf("page 2: %+v %v", p, err)
	}

	counts, err := cl.CountFleet(c)
	if err != nil {
		t.Fatal(err)
	}
	if counts.Total != 2 || counts.ByVerdict["TRUSTED"] != 1 || counts.ByVerdict["UNTRUSTED"] != 1 || counts.ByReason["TPM_REQUIRED"] != 1 ||
		counts.ByPartition["lab"] != 1 || counts.ByVersion["v1.2.0"] != 1 || counts.ByTrust["mtls-only"] != 1 {
		t.Fatalf("fleet counts %+v", counts)
	}

	bad := []admin.AgentQuery{
		{Verdicts: []string{"BOGUS"}},
		{Reasons: []string{"NOT_A_REASON"}},
		{Sort: "ek_public"},
		{Trust: "maybe"},
		{After: "not-a-cursor"},
		{Sort: "verdict", After: p.Next + "x"},
	}
	for _, q := range bad {
		var apiErr *admin.APIError
		if _, err := cl.QueryAgents(c, q); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
			t.Errorf("query %+v: %v, want 400", q, err)
		}
	}

	// No credentials: 401 and no data.
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(e.caFile)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("CA: %v", err)
	}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	for _, path := range []string{"/api/v1/agents?verdict=UNTRUSTED", "/api/v1/fleet", "/api/v1/agents/lab-mtls"} {
		resp, err := anon.Get("https://" + e.daemon.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(body), "lab-mtls") || strings.Contains(string(body), "TPM_REQUIRED") {
			t.Fatalf("anonymous %s: %d %s", path, resp.StatusCode, body)
		}
	}
}
