package e2e

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/verifier/store"
)

const upgradeFixture = "../verifier/store/testdata/upgrade-schema14"

// copyTree copies the regular files under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// runCode runs a binary and returns its combined output and exit code.
func runCode(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(bin(name), args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	return "", -1
}

// auditLines returns the audit log's lines.
func auditLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// oldDeployment lays the schema-14 fixture out as a deployment in a new
// directory: swtpm started from its NV state (the persisted AK) and booted
// again, fresh leaf certificates from its CA, configurations for a
// verifier and both agents. It returns the fleet (verifier not started).
func oldDeployment(t *testing.T) *fleet {
	t.Helper()
	if testutil.RequireTools(t, "swtpm", "swtpm_setup", "swtpm_ioctl") == nil {
		return nil
	}
	dir := t.TempDir()
	copyTree(t, upgradeFixture, dir)
	simOut := run(t, "pulsectl", "sim", "start", "--state", filepath.Join(dir, "tpm"), "--boot-log", "../testdata/eventlogs/rhel8-uefi.bin")
	t.Cleanup(func() { exec.Command(bin("pulsectl"), "sim", "stop", "--state", filepath.Join(dir, "tpm")).Run() }) //nolint:errcheck
	var spec, fwLog string
	for _, l := range strings.Split(simOut, "\n") {
		if v, ok := strings.CutPrefix(l, "tpm_spec="); ok {
			spec = v
		}
		if v, ok := strings.CutPrefix(l, "firmware_log="); ok {
			fwLog = v
		}
	}
	pkiDir := filepath.Join(dir, "pki")
	run(t, "pulsectl", "pki", "issue", "--dir", pkiDir, "--role", "verifier", "--id", "v1", "--dns", "localhost", "--ip", "127.0.0.1", "--out", filepath.Join(pkiDir, "verifier"))
	f := &fleet{t: t, dir: dir, port: freePort(t), agents: map[string]*proc{}, caFile: filepath.Join(pkiDir, "ca.pem")}
	f.vcfg = filepath.Join(dir, "verifier.hcl")
	cfg := fmt.Sprintf(`listen       = "127.0.0.1:%d"
policy_files = ["policy.hcl"]
allow_tpmless = true
tls {
  cert     = "pki/verifier.pem"
  key      = "pki/verifier-key.pem"
  agent_ca = "pki/ca.pem"
}
store {
  engine = "sqlite"
  dsn    = "verifier.db"
}
enrollment {
  ek_roots          = ["tpm/localca/issuercert.pem", "tpm/localca/swtpm-localca-rootca-cert.pem"]
  default_partition = "fleet"
  partition "lab" {
    agents = ["lab-*"]
  }
}
alerts {
  audit_log = "audit.log"
}
log_level = "debug"
`, f.port)
	if err := os.WriteFile(f.vcfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"edge-old-1", "lab-old-1"} {
		adir := filepath.Join(dir, "agent-"+id)
		if err := os.MkdirAll(filepath.Join(adir, "state"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(adir, "state.json"), filepath.Join(adir, "state", "state.json")); err != nil {
			t.Fatal(err)
		}
		run(t, "pulsectl", "pki", "issue", "--dir", pkiDir, "--role", "agent", "--id", id, "--out", filepath.Join(adir, "agent"))
		aspec, part := spec, "fleet"
		if id == "lab-old-1" {
			aspec, part = "none", "lab"
		}
		acfg := fmt.Sprintf(`verifier     = "%s"
tpm          = "%s"
firmware_log = "%s"
runtime_log  = "runtime.cel"
state_dir    = "state"
interval     = "2s"
partition    = "%s"
log_level    = "debug"
tls {
  cert        = "agent.pem"
  key         = "agent-key.pem"
  ca          = "../pki/ca.pem"
  server_name = "localhost"
}
bpf {
  enabled = false
}
`, f.addr(), aspec, fwLog, part)
		if err := os.WriteFile(filepath.Join(adir, "agent.hcl"), []byte(acfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		f.mu.Lock()
		for _, a := range f.agents {
			a.stop(syscall.SIGTERM)
		}
		f.mu.Unlock()
		f.verifier.stop(syscall.SIGTERM)
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			for _, path := range logs {
				if b, err := os.ReadFile(path); err == nil {
					t.Logf("---- %s (tail)\n%s", filepath.Base(path), tail(string(b), 40))
				}
			}
		}
	})
	return f
}

func (f *fleet) launchOld(id string) {
	cfg := filepath.Join(f.dir, "agent-"+id, "agent.hcl")
	f.launchAgent(id, cfg, bin("pulse-agent"))
}

// enrolledAt reads the agents' enrollment times straight from the store.
func enrolledAt(t *testing.T, dsn string) map[string]time.Time {
	t.Helper()
	s, err := store.Open(context.Background(), store.EngineSQLite, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	agents, err := s.ListAgents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, a := range agents {
		out[a.ID] = a.EnrolledAt
	}
	return out
}

// requireNoEnrollment fails when an agent's log shows it enrolled.
func (f *fleet) requireNoEnrollment(id string) {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "agent-"+id+".log"))
	if err != nil {
		f.t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "enrolling") || strings.Contains(l, "enrolled:") || strings.Contains(l, ".enroll: enrolled") {
			f.t.Fatalf("agent %s enrolled again: %s", id, l)
		}
	}
}

// TestUpgradeFromSchema14: the state a schema-14 release left (committed
// fixture) is reported behind by migrate --check without being changed,
// backed up, migrated by migrate --apply with this binary, and then serves
// the old agents — a TPM agent with its persisted AK and an mTLS-only one —
// without re-enrollment; the audit chain continues the old one.
func TestUpgradeFromSchema14(t *testing.T) {
	f := oldDeployment(t)
	if f == nil {
		return
	}
	dsn := filepath.Join(f.dir, "verifier.db")
	before := enrolledAtReadOnly(t, dsn)
	oldAudit := auditLines(t, filepath.Join(f.dir, "audit.log"))

	out, code := runCode(t, "pulse-verifier", "migrate", "--config", f.vcfg, "--check")
	wantCode := 10
	if store.KnownSchemaVersion() == 14 {
		wantCode = 0
	}
	if code != wantCode || !strings.Contains(out, "schema version 14") {
		t.Fatalf("migrate --check: exit %d, want %d:\n%s", code, wantCode, out)
	}
	// The operator's backup before the upgrade, of the old schema.
	backup := filepath.Join(t.TempDir(), "pre-upgrade.db")
	out = run(t, "pulsectl", "store", "backup", "--config", f.vcfg, "--out", backup)
	if !strings.Contains(out, "schema 14, 2 agents") {
		t.Fatalf("store backup: %s", out)
	}
	out = run(t, "pulse-verifier", "migrate", "--config", f.vcfg, "--apply")
	if want := fmt.Sprintf("-> %d", store.KnownSchemaVersion()); store.KnownSchemaVersion() > 14 && !strings.Contains(out, want) {
		t.Fatalf("migrate --apply: %s (want %q)", out, want)
	}
	if out, code := runCode(t, "pulse-verifier", "migrate", "--config", f.vcfg, "--check"); code != 0 || !strings.Contains(out, "up to date") {
		t.Fatalf("migrate --check after apply: exit %d\n%s", code, out)
	}

	f.startVerifier()
	f.launchOld("edge-old-1")
	f.launchOld("lab-old-1")
	f.waitVerdict("edge-old-1", trusted, "REASON_OK", 45*time.Second)
	f.waitVerdict("lab-old-1", "VERDICT_DEGRADED", "REASON_OK", 45*time.Second)
	f.requireNoEnrollment("edge-old-1")
	f.requireNoEnrollment("lab-old-1")
	f.verifier.stop(syscall.SIGTERM)
	after := enrolledAt(t, dsn)
	for id, at := range before {
		if !after[id].Equal(at) {
			t.Fatalf("%s enrolled_at moved from %v to %v: re-enrolled", id, at, after[id])
		}
	}
	run(t, "pulsectl", "audit", "verify", "--file", filepath.Join(f.dir, "audit.log"))
	newAudit := auditLines(t, filepath.Join(f.dir, "audit.log"))
	if len(newAudit) < len(oldAudit) || strings.Join(newAudit[:len(oldAudit)], "\n") != strings.Join(oldAudit, "\n") {
		t.Fatal("the upgraded verifier rewrote the old audit records")
	}

	// A downgrade: the store now carries a version this binary does not
	// know (as a newer release would leave it); check and apply refuse.
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, 1)`, store.KnownSchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, mode := range []string{"--check", "--apply"} {
		if out, code := runCode(t, "pulse-verifier", "migrate", "--config", f.vcfg, mode); code != 1 || !strings.Contains(out, "newer than this binary") && !strings.Contains(out, "this binary knows versions up to") {
			t.Fatalf("migrate %s on a newer store: exit %d\n%s", mode, code, out)
		}
	}
}

// enrolledAtReadOnly is enrolledAt without migrating: a copy is opened.
func enrolledAtReadOnly(t *testing.T, dsn string) map[string]time.Time {
	t.Helper()
	tmp := filepath.Join(t.TempDir(), "peek.db")
	b, err := os.ReadFile(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return enrolledAt(t, tmp)
}

// TestRestoreDrill: a backup taken while the verifier serves two agents,
// restored into a fresh verifier (new directory, the old one gone), keeps
// every agent's enrollment, last-known-good and the audit chain: the agents
// are judged again without re-enrolling and the restored log verifies and
// continues. A restore while a verifier holds the audit log is refused.
func TestRestoreDrill(t *testing.T) {
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleet(t, lifecyclePolicy, sw)
	f.launchAgent("edge-1", f.agentConfig("edge-1", sw, ""), bin("pulse-agent"))
	lab := f.agentConfig("lab-1", nil, "")
	replaceInFile(t, lab, `partition    = "fleet"`, `partition    = "lab"`)
	f.launchAgent("lab-1", lab, bin("pulse-agent"))
	f.waitVerdict("edge-1", trusted, "REASON_OK", 30*time.Second)
	f.waitVerdict("lab-1", "VERDICT_DEGRADED", "REASON_OK", 30*time.Second)

	// Online backup while both agents pulse.
	backup := filepath.Join(t.TempDir(), "pulse-backup.db")
	out := run(t, "pulsectl", "store", "backup", "--config", f.vcfg, "--out", backup)
	if !strings.Contains(out, "2 agents") || !strings.Contains(out, "chain verified") {
		t.Fatalf("store backup: %s", out)
	}
	bs, err := store.Open(context.Background(), store.EngineSQLite, backup)
	if err != nil {
		t.Fatal(err)
	}
	edge, err := bs.GetAgent(context.Background(), "edge-1")
	bs.Close()
	if err != nil || edge.LKG.BinarySHA256 == "" {
		t.Fatalf("backup's edge-1: %+v %v", edge, err)
	}
	backedUpAudit := auditLines(t, backup+".audit.log")

	// A fresh verifier directory: the same configuration, PKI, keys and
	// policy (what an operator keeps in configuration management), none of
	// the state (store, audit log, logs) and none of the agents' files.
	fresh := t.TempDir()
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "verifier.db") || strings.HasPrefix(n, "audit.log") || strings.HasSuffix(n, ".log") || strings.HasPrefix(n, "agent-") {
			continue
		}
		if e.IsDir() {
			copyTree(t, filepath.Join(f.dir, n), filepath.Join(fresh, n))
			continue
		}
		b, err := os.ReadFile(filepath.Join(f.dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fresh, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	newVcfg := filepath.Join(fresh, "verifier.hcl")
	// Refused while a verifier holds the audit log (the old one, here).
	if out, code := runCode(t, "pulsectl", "store", "restore", "--config", f.vcfg, "--from", backup, "--force"); code == 0 || !strings.Contains(out, "stop it before restoring") {
		t.Fatalf("restore under a running verifier: exit %d\n%s", code, out)
	}
	// The old verifier's machine dies.
	f.verifier.stop(syscall.SIGKILL)
	out = run(t, "pulsectl", "store", "restore", "--config", newVcfg, "--from", backup)
	if !strings.Contains(out, "2 agents") || !strings.Contains(out, "chain verified") {
		t.Fatalf("store restore: %s", out)
	}
	// Restoring twice needs --force.
	if out, code := runCode(t, "pulsectl", "store", "restore", "--config", newVcfg, "--from", backup); code == 0 || !strings.Contains(out, "target exists") {
		t.Fatalf("second restore without --force: exit %d\n%s", code, out)
	}
	f.vcfg = newVcfg
	f.dir = fresh
	f.startVerifier()
	f.waitVerdict("edge-1", trusted, "REASON_OK", 45*time.Second)
	f.waitVerdict("lab-1", "VERDICT_DEGRADED", "REASON_OK", 45*time.Second)
	f.verifier.stop(syscall.SIGTERM)

	rs, err := store.Open(context.Background(), store.EngineSQLite, filepath.Join(fresh, "verifier.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	got, err := rs.GetAgent(context.Background(), "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.EnrolledAt.Equal(edge.EnrolledAt) || string(got.AKPublic) != string(edge.AKPublic) || got.LKG.BinarySHA256 != edge.LKG.BinarySHA256 {
		t.Fatalf("restored edge-1 lost its enrollment or last-known-good:\nbacked up %+v\nrestored  %+v", edge, got)
	}
	for _, id := range []string{"edge-1", "lab-1"} {
		b, _ := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(lab)), "agent-"+id+".log"))
		if n := strings.Count(string(b), "enrolling"); n != 1 {
			t.Fatalf("agent %s enrolled %d times, want once (before the backup)", id, n)
		}
	}
	restored := filepath.Join(fresh, "audit.log")
	run(t, "pulsectl", "audit", "verify", "--file", restored)
	lines := auditLines(t, restored)
	if len(lines) < len(backedUpAudit) || strings.Join(lines[:len(backedUpAudit)], "\n") != strings.Join(backedUpAudit, "\n") {
		t.Fatal("restored audit log does not start with the backed-up chain")
	}
}
