package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/internal/testutil"
)

// Test hosts: the offender lives in its own network namespace joined to the
// host by a veth pair with TEST-NET-1 addresses that exist only there.
const (
	hostAddr     = "192.0.2.1"
	offenderAddr = "192.0.2.2"
)

// TestIsolationAcrossReplicas: an offender attesting to replica r1 turns
// UNTRUSTED; the policy isolates it; the quarantine directive, raised on r1,
// reaches the trusted agent connected only to r2, whose Shield then drops
// the offender's traffic; pulsectl agents release lifts it.
func TestIsolationAcrossReplicas(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "ip", "ping")
	dsn := pgtest.NewDatabase(t)
	if dsn == "" {
		return
	}
	suffix := make([]byte, 3)
	rand.Read(suffix) //nolint:errcheck
	id := hex.EncodeToString(suffix)
	// Two test hosts: "site" (verifiers and the guard agent) and the
	// offender, joined by a veth pair.
	site, off, siteIf, offIf := "pulse-site-"+id, "pulse-off-"+id, "pvs"+id, "pvo"+id
	for _, ns := range []string{site, off} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	}
	sh(t, "ip", "link", "add", siteIf, "netns", site, "type", "veth", "peer", "name", offIf, "netns", off)
	sh(t, "ip", "netns", "exec", site, "ip", "addr", "add", hostAddr+"/24", "dev", siteIf)
	sh(t, "ip", "netns", "exec", site, "ip", "link", "set", siteIf, "up")
	sh(t, "ip", "netns", "exec", off, "ip", "addr", "add", offenderAddr+"/24", "dev", offIf)
	sh(t, "ip", "netns", "exec", off, "ip", "link", "set", offIf, "up")
	pingable := func() bool {
		return exec.Command("ip", "netns", "exec", off, "ping", "-c", "1", "-W", "1", hostAddr).Run() == nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for !pingable() {
		if time.Now().After(deadline) {
			t.Fatal("test hosts cannot reach each other before any quarantine")
		}
		time.Sleep(200 * time.Millisecond)
	}
	hostIf, ns := siteIf, off

	good := startTPM(t, "rhel8-uefi", false)
	bad := startTPM(t, "rhel8-uefi", false)
	if good == nil || bad == nil {
		return
	}
	f := newFleetWith(t, dsn, replicaPolicy, good)
	f.netns = site
	// Both replicas listen on the host's test address; r1 also has an
	// admin listener for operators.
	f.verifier.stop(syscall.SIGTERM)
	adminPort := freePort(t)
	replaceInFile(t, f.vcfg, fmt.Sprintf(`listen = "127.0.0.1:%d"`, f.port), fmt.Sprintf("listen = \"%s:%d\"\nadmin_listen = \"127.0.0.1:%d\"", hostAddr, f.port, adminPort))
	replaceInFile(t, f.vcfg, `agent_ca = "pki/ca.pem"`, "agent_ca = \"pki/ca.pem\"\n  operator_ca = \"pki/ca.pem\"")
	f.startVerifierAt(fmt.Sprintf("%s:%d", hostAddr, f.port))
	r2 := f.addReplica("r2")
	r2.proc.stop(syscall.SIGTERM)
	r2cfg := filepath.Join(f.dir, "verifier-r2.hcl")
	replaceInFile(t, r2cfg, fmt.Sprintf(`listen = "%s:%d"`, hostAddr, f.port), fmt.Sprintf(`listen = "%s:%d"`, hostAddr, r2.port))
	replaceInFile(t, r2cfg, fmt.Sprintf(`admin_listen = "127.0.0.1:%d"`, adminPort), "")
	r2.proc = f.start("pulse-verifier", "verifier-r2.log", "run", "--config", r2cfg)
	r1Addr, r2Addr := fmt.Sprintf("%s:%d", hostAddr, f.port), fmt.Sprintf("%s:%d", hostAddr, r2.port)

	// The trusted agent: connected only to r2, Shield on the host side of the veth.
	pinDir := "/sys/fs/bpf/pulse-e2e-iso-" + id
	t.Cleanup(func() { bpf.RemoveAll(pinDir) })
	gcfg := f.agentConfig("guard", good, "")
	replaceInFile(t, gcfg, `verifier     = "`+f.addr()+`"`, `verifier     = "`+r2Addr+`"`)
	replaceInFile(t, gcfg, "bpf {\n  enabled = false\n}", fmt.Sprintf("bpf {\n  enabled    = true\n  pin_dir    = %q\n  interfaces = [%q]\n}", pinDir, hostIf))
	f.launchAgent("guard", gcfg, bin("pulse-agent"))

	// The offender: inside the namespace, attesting to r1.
	offBin := filepath.Join(f.dir, "offender-agent")
	copyBinary(t, bin("pulse-agent"), offBin, nil)
	ocfg := f.agentConfig("offender", bad, "")
	replaceInFile(t, ocfg, `verifier     = "`+f.addr()+`"`, `verifier     = "`+r1Addr+`"`)
	p := f.start("ip", "agent-offender.log", "netns", "exec", ns, offBin, "launch", "--config", ocfg, "--", "run", "--config", ocfg)
	f.mu.Lock()
	f.agents["offender"] = p
	f.mu.Unlock()

	f.waitVerdict("guard", trusted, "REASON_OK", 45*time.Second)
	f.waitVerdict("offender", trusted, "REASON_OK", 45*time.Second)

	// The offender's binary is replaced: UNTRUSTED on r1, isolated.
	copyBinary(t, bin("pulse-agent"), offBin, []byte("\x00implant"))
	f.waitVerdict("offender", untrusted, "REASON_AGENT_BINARY_MISMATCH", 20*time.Second)
	waitLog(t, filepath.Join(f.dir, "verifier-r2.log"), "directive delivered: agent_id=guard directive=quarantine", 20*time.Second)
	deadline = time.Now().Add(15 * time.Second)
	for pingable() {
		if time.Now().After(deadline) {
			t.Fatal("the guard's Shield never dropped the isolated offender")
		}
		time.Sleep(300 * time.Millisecond)
	}
	waitFor(t, "guard to report the quarantine", func() bool {
		v, ok := f.showQuarantined("guard")
		return ok && strings.Contains(v, offenderAddr)
	})

	// An operator releases it with pulsectl (operator certificate, admin
	// API on r1); the release reaches the guard on r2 and traffic passes.
	pkiDir := filepath.Join(f.dir, "pki")
	run(t, "pulsectl", "pki", "issue", "--dir", pkiDir, "--role", "operator", "--id", "alice", "--out", filepath.Join(pkiDir, "alice"))
	sh(t, "ip", "netns", "exec", site, bin("pulsectl"), "agents", "release", "--admin", fmt.Sprintf("https://127.0.0.1:%d", adminPort), "--ca", f.caFile,
		"--cert", filepath.Join(pkiDir, "alice.pem"), "--key", filepath.Join(pkiDir, "alice-key.pem"), offenderAddr)
	deadline = time.Now().Add(15 * time.Second)
	for !pingable() {
		if time.Now().After(deadline) {
			t.Fatal("traffic from the released address still dropped")
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
