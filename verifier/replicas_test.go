package verifier_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

func init() { verifier.ReplicaInterval = 100 * time.Millisecond }

func replicaPolicy(name, agents, tpm string) string {
	return `policy "` + name + `" {
  match {
    agents = ["` + agents + `"]
  }
  tpm = "` + tpm + `"
  measured_boot {
    secure_boot {}
  }
}
`
}

// replica is one verifier daemon of a two-replica test, with its own
// policy directory and admin listener.
type replica struct {
	d         *verifier.Daemon
	policyDir string
	admin     *http.Client
	token     string
}

// startReplica starts a verifier named id on the shared store, enforcing
// the policy files given (name -> text) in its own directory.
func startReplica(t *testing.T, id, dsn string, ca *pki.CA, caFile string, files map[string]string) *replica {
	t.Helper()
	dir := t.TempDir()
	vc, err := pki.Issue(ca, pki.Request{Role: pki.RoleVerifier, ID: id, DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := vc.WriteFiles(filepath.Join(dir, "v.pem"), filepath.Join(dir, "v-key.pem"), false); err != nil {
		t.Fatal(err)
	}
	pdir := filepath.Join(dir, "policy.d")
	if err := os.Mkdir(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(pdir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	token := strings.Repeat("t0ken", 8) + id
	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Listen:         "127.0.0.1:0",
		AdminListen:    "127.0.0.1:0",
		AdminTokenFile: tokenFile,
		Replica:        id,
		TLS:            config.TLS{Cert: filepath.Join(dir, "v.pem"), Key: filepath.Join(dir, "v-key.pem"), AgentCA: caFile},
		Store:          config.Store{Engine: store.EnginePostgres, DSN: dsn},
		Policy:         []string{pdir},
		Enrollment:     config.Enrollment{Timeout: time.Minute, DefaultPartition: "fleet"},
		NonceTTL:       time.Minute,
		ClockSkew:      30 * time.Second,
		Alerts:         config.Alerts{AuditLog: filepath.Join(dir, "audit.log")},
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := verifier.Start(ctx, cfg, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(); cancel() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM())
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	return &replica{d: d, policyDir: pdir, admin: client, token: token}
}

func (r *replica) get(t *testing.T, path string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+r.d.AdminAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.admin.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	return string(b)
}

func (r *replica) replicas(t *testing.T) admin.ReplicaList {
	t.Helper()
	var l admin.ReplicaList
	if err := json.Unmarshal([]byte(r.get(t, "/api/v1/replicas")), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func policyAlerts(t *testing.T, s *store.Store, kind string) []*store.Alert {
	t.Helper()
	all, err := s.ListAlerts(context.Background(), store.AlertFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*store.Alert
	for _, a := range all {
		if a.Kind == kind {
			out = append(out, a)
		}
	}
	return out
}

// TestPolicyReplicasDiverge: two verifiers on one PostgreSQL with different
// policy files each report their digest (metric, admin API, store), and
// raise one policy_divergence alert once the difference outlasts a reload
// interval; once the files agree the divergence clears and no new alert
// comes. A file deleted from one replica's directory is a refused reload
// that raises policy_reload_failed, and that replica keeps its policy.
func TestPolicyReplicasDiverge(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	bin, err := pgtest.BinDir()
	if err != nil {
		testutil.Unavailable(t, "%v", err)
		return
	}
	c, err := pgtest.Start(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	dsn := c.DSN("postgres")
	ca, err := pki.NewCA("pulse test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	kiosk := replicaPolicy("kiosk", "kiosk-*", "required")
	def := replicaPolicy("default", "*", "optional")
	r1 := startReplica(t, "r1", dsn, ca, caFile, map[string]string{"10-kiosk.hcl": kiosk, "90-default.hcl": def})
	r2 := startReplica(t, "r2", dsn, ca, caFile, map[string]string{"90-default.hcl": def})
	d1, d2 := r1.d.Watcher.Current().Digest(), r2.d.Watcher.Current().Digest()
	if d1 == d2 {
		t.Fatal("different files, same digest")
	}

	st := r1.d.Store
	waitFor(t, "the divergence alert", func() bool { return len(policyAlerts(t, st, verifier.AlertPolicyDivergence)) > 0 })
	time.Sleep(500 * time.Millisecond) // both replicas past the grace
	alerts := policyAlerts(t, st, verifier.AlertPolicyDivergence)
	if len(alerts) != 1 || alerts[0].Severity != 2 || !strings.Contains(alerts[0].Message, d1) || !strings.Contains(alerts[0].Message, d2) {
		t.Fatalf("divergence alerts: %+v", alerts)
	}
	for _, r := range []*replica{r1, r2} {
		if m := r.get(t, "/metrics"); !strings.Contains(m, "pulse_policy_divergent 1") ||
			!strings.Contains(m, `pulse_policy_info{digest="`+r.d.Watcher.Current().Digest()+`"} 1`) {
			t.Errorf("metrics of a replica lack the divergence or its digest:\n%s", m)
		}
	}
	l := r1.replicas(t)
	if l.Self != "r1" || l.PolicyDigest != d1 || len(l.Replicas) != 2 || l.Replicas[0].ID != "r1" || l.Replicas[0].Divergent ||
		l.Replicas[1].ID != "r2" || l.Replicas[1].PolicyDigest != d2 || !l.Replicas[1].Divergent {
		t.Errorf("replicas from r1: %+v", l)
	}

	// r2 gets the same files: digests agree, the divergence clears.
	if err := os.WriteFile(filepath.Join(r2.policyDir, "10-kiosk.hcl"), []byte(kiosk), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replicas to agree", func() bool {
		l := r2.replicas(t)
		return l.PolicyDigest == d1 && len(l.Replicas) == 2 && !l.Replicas[0].Divergent && !l.Replicas[1].Divergent
	})
	waitFor(t, "the gauge to clear", func() bool {
		return strings.Contains(r1.get(t, "/metrics"), "pulse_policy_divergent 0") && strings.Contains(r2.get(t, "/metrics"), "pulse_policy_divergent 0")
	})
	time.Sleep(time.Second)
	if n := len(policyAlerts(t, st, verifier.AlertPolicyDivergence)); n != 1 {
		t.Errorf("%d divergence alerts after the replicas agree, want 1", n)
	}

	// A file deleted from r1's directory: refused, alerted, policy kept.
	if err := os.Remove(filepath.Join(r1.policyDir, "10-kiosk.hcl")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload-failed alert", func() bool { return len(policyAlerts(t, st, verifier.AlertPolicyReloadFailed)) > 0 })
	a := policyAlerts(t, st, verifier.AlertPolicyReloadFailed)[0]
	if a.Replica != "r1" || !strings.Contains(a.Message, "policy file disappeared") || a.Severity != 3 {
		t.Errorf("reload-failed alert %+v", a)
	}
	stats := r1.d.Watcher.Stats()
	if !stats.Failing || stats.Digest != d1 || !strings.Contains(stats.LastError, "10-kiosk.hcl.removed") {
		t.Errorf("r1 watcher %+v", stats)
	}
	if p := r1.d.Watcher.Current().Select("kiosk-1", "fleet"); p == nil || p.Name != "kiosk" {
		t.Errorf("kiosk-1 judged by %v after the deletion", p)
	}
}
