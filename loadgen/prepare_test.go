package loadgen

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/config"
)

// TestReplicaConfigs: replicas of one setup share CA, certificate, policy
// and store, and differ by address, replica name, audit log and admin
// listener; each admin token file is the verifier's alone (0600).
func TestReplicaConfigs(t *testing.T) {
	dir := t.TempDir()
	s, err := Prepare(dir, "postgres", "host=/tmp/none dbname=postgres", "127.0.0.1:7443", Heartbeat{Interval: 30 * time.Second, Missed: 3, Grace: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var cfgs []*config.Config
	for i, l := range []string{"127.0.0.1:7443", "127.0.0.1:7444"} {
		path := filepath.Join(dir, []string{"verifier-0.hcl", "verifier-1.hcl"}[i])
		admin := []string{"127.0.0.1:7543", "127.0.0.1:7544"}[i]
		if err := s.WriteConfig(path, l, []string{"loadgen-0", "loadgen-1"}[i], admin); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path + ".token")
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("token file: %v %v", st, err)
		}
		c, err := config.Load(path)
		if err != nil {
			t.Fatalf("replica %d configuration does not load: %v", i, err)
		}
		cfgs = append(cfgs, c)
	}
	a, b := cfgs[0], cfgs[1]
	if a.Listen == b.Listen || a.Replica == b.Replica || a.Alerts.AuditLog == b.Alerts.AuditLog || a.AdminListen == b.AdminListen {
		t.Fatalf("replicas not told apart: %+v / %+v", a, b)
	}
	if a.Store != b.Store || a.TLS.AgentCA != b.TLS.AgentCA || a.TLS.Cert != b.TLS.Cert || a.Policy[0] != b.Policy[0] {
		t.Fatalf("replicas do not share the setup: %+v / %+v", a, b)
	}
}
