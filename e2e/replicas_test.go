package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/simulator"
)

const replicaPolicy = `
policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
    missed   = 5
    grace    = "2s"
  }
  on_failure {
    isolate = true
  }
  measured_boot {
    secure_boot {}
  }
}
`

// TestReplicas: two verifier replicas on one PostgreSQL serve any agent;
// a silence is alerted exactly once although both replicas sweep; an
// isolation raised on one replica reaches agents on the other; killing a
// replica moves its agents to the other with no alert lost or doubled.
func TestReplicas(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	if dsn == "" {
		return
	}
	tpms := []string{"edge-1", "edge-2", "edge-3"}
	// simtest TPMs share one EK CA, so the first one's roots serve all.
	sws := map[string]*simulator.Swtpm{}
	for _, id := range tpms {
		if sws[id] = startTPM(t, "rhel8-uefi", false); sws[id] == nil {
			return
		}
	}
	f := newFleetWith(t, dsn, replicaPolicy, sws["edge-1"])
	p1 := f.addr()
	r2 := f.addReplica("r2")
	p2 := fmt.Sprintf("127.0.0.1:%d", r2.port)
	for _, id := range tpms {
		cfg := f.agentConfig(id, sws[id], "")
		switch id {
		case "edge-1": // may use either replica
			replaceInFile(t, cfg, `verifier     = "`+p1+`"`, `verifier     = "`+p1+","+p2+`"`)
		case "edge-2": // only the second replica
			replaceInFile(t, cfg, `verifier     = "`+p1+`"`, `verifier     = "`+p2+`"`)
		}
		f.launchAgent(id, cfg, bin("pulse-agent"))
	}
	for _, id := range tpms {
		f.waitVerdict(id, trusted, "REASON_OK", 45*time.Second)
	}

	// edge-3 (on replica 1) goes silent: exactly one BLINDED alert. Its
	// address (127.0.0.1) is every agent's here, so isolating it is
	// refused — one isolation_refused alert across both replicas — and
	// nothing is quarantined. (An isolation raised on one replica reaching
	// agents on the other: TestIsolationAcrossReplicas.)
	f.stopAgent("edge-3", syscall.SIGKILL)
	f.waitVerdict("edge-3", "VERDICT_BLINDED", "REASON_SILENT", 30*time.Second)
	time.Sleep(3 * time.Second)
	if n := f.alerts("edge-3", "compromised"); n != 1 {
		t.Fatalf("%d compromised alerts for one silence across two replicas, want 1", n)
	}
	waitFor(t, "edge-3's isolation refused", func() bool { return f.alerts("edge-3", "isolation_refused") > 0 })
	time.Sleep(2 * time.Second)
	if n := f.alerts("edge-3", "isolation_refused"); n != 1 {
		t.Fatalf("%d isolation_refused alerts across two replicas, want 1", n)
	}
	if qs, err := f.store().ListQuarantine(context.Background()); err != nil || len(qs) != 0 {
		t.Fatalf("quarantine %+v %v: an address other agents share was isolated", qs, err)
	}

	// Replica 1 dies: edge-1 carries on with replica 2, nobody is BLINDED
	// (the deadline, 2s x 5, covers the failover).
	f.verifier.stop(syscall.SIGKILL)
	time.Sleep(12 * time.Second)
	for _, id := range []string{"edge-1", "edge-2"} {
		v, _ := f.show(id)
		if v.Verdict != trusted {
			t.Fatalf("%s after replica 1 died: %+v", id, v)
		}
		if n := f.alerts(id, "compromised"); n != 0 {
			t.Fatalf("%s: %d false compromised alerts", id, n)
		}
	}
	if n := f.alerts("edge-3", "compromised"); n != 1 {
		t.Fatalf("edge-3 alerts after failover: %d", n)
	}
}

// addReplica starts another verifier on the same store and PKI.
func (f *fleet) addReplica(name string) *replica {
	f.t.Helper()
	r := &replica{port: freePort(f.t)}
	b, err := os.ReadFile(f.vcfg)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := strings.Replace(string(b), fmt.Sprintf("listen = \"127.0.0.1:%d\"", f.port), fmt.Sprintf("listen = \"127.0.0.1:%d\"", r.port), 1)
	cfg = strings.Replace(cfg, `replica_id = "r1"`, fmt.Sprintf("replica_id = %q", name), 1)
	cfg = strings.Replace(cfg, `audit_log = "audit.log"`, fmt.Sprintf("audit_log = \"audit-%s.log\"", name), 1)
	path := filepath.Join(f.dir, "verifier-"+name+".hcl")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		f.t.Fatal(err)
	}
	r.proc = f.start("pulse-verifier", "verifier-"+name+".log", "run", "--config", path)
	f.t.Cleanup(func() { r.proc.stop(syscall.SIGTERM) })
	return r
}

type replica struct {
	port int
	proc *proc
}

func waitLog(t *testing.T, path, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("%s never logged %q; tail:\n%s", filepath.Base(path), want, tail(string(b), 20))
}
