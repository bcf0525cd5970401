package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/testutil"
)

// TestDashboard: the real verifier's dashboard, in headless Chromium with
// an operator certificate, shows the agent TRUSTED, then UNTRUSTED after an
// attack; a browser without the certificate is refused. A screenshot is
// saved ($PULSE_ARTIFACTS when set).
func TestDashboard(t *testing.T) {
	testutil.RequireRoot(t) // installs a Chromium policy under /etc for the test
	tools := testutil.RequireTools(t, "chromium", "openssl", "certutil", "pk12util")
	chromiumBin := tools["chromium"]
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil || chromiumBin == "" {
		return
	}
	f := newFleet(t, fleetPolicy, sw)
	// Restart the verifier with an admin listener that requires an
	// operator certificate.
	f.verifier.stop(syscall.SIGTERM)
	adminPort := freePort(t)
	replaceInFile(t, f.vcfg, `agent_ca = "pki/ca.pem"`, "agent_ca = \"pki/ca.pem\"\n  operator_ca = \"pki/ca.pem\"")
	cfg, _ := os.ReadFile(f.vcfg)
	cfg = append(cfg, []byte(fmt.Sprintf("admin_listen = \"127.0.0.1:%d\"\n", adminPort))...)
	if err := os.WriteFile(f.vcfg, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	f.startVerifier()
	base := fmt.Sprintf("https://127.0.0.1:%d", adminPort)

	// An operator's browser profile: the certificate in an NSS database and
	// a policy selecting it for the admin URL.
	pkiDir := filepath.Join(f.dir, "pki")
	run(t, "pulsectl", "pki", "issue", "--dir", pkiDir, "--role", "operator", "--id", "alice", "--out", filepath.Join(pkiDir, "alice"))
	operatorHome := t.TempDir()
	nssdb := "sql:" + filepath.Join(operatorHome, ".pki", "nssdb")
	if err := os.MkdirAll(filepath.Join(operatorHome, ".pki", "nssdb"), 0o700); err != nil {
		t.Fatal(err)
	}
	p12 := filepath.Join(f.dir, "alice.p12")
	sh(t, "openssl", "pkcs12", "-export", "-in", filepath.Join(pkiDir, "alice.pem"), "-inkey", filepath.Join(pkiDir, "alice-key.pem"), "-out", p12, "-passout", "pass:")
	sh(t, "certutil", "-N", "-d", nssdb, "--empty-password")
	sh(t, "pk12util", "-i", p12, "-d", nssdb, "-W", "")
	policyDir := "/etc/chromium/policies/managed"
	if err := os.MkdirAll(policyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(policyDir, fmt.Sprintf("pulse-e2e-%d.json", adminPort))
	pol := fmt.Sprintf(`{"AutoSelectCertificateForUrls": ["{\"pattern\":\"%s\",\"filter\":{}}"]}`, base)
	if err := os.WriteFile(policyFile, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(policyFile) })

	agentBin := filepath.Join(f.dir, "pulse-agent")
	copyBinary(t, bin("pulse-agent"), agentBin, nil)
	acfg := f.agentConfig("edge-dash", sw, "")
	f.launchAgent("edge-dash", acfg, agentBin)
	f.waitVerdict("edge-dash", trusted, "REASON_OK", 30*time.Second)

	spki := serverSPKI(t, filepath.Join(f.dir, "pki", "verifier.pem"))
	browse := func(home, url string, extra ...string) string {
		t.Helper()
		args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
			"--user-data-dir=" + t.TempDir(), "--ignore-certificate-errors-spki-list=" + spki}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, chromiumBin, append(append(args, extra...), url)...)
		cmd.Env = append(os.Environ(), "HOME="+home)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium: %v\n%s", err, tail(errb.String(), 20))
		}
		return out.String()
	}
	verdictOf := func(dom string) string {
		m := regexp.MustCompile(`data-agent-id="edge-dash"[^>]*data-verdict="([A-Z_]+)"|data-verdict="([A-Z_]+)"[^>]*data-agent-id="edge-dash"`).FindStringSubmatch(dom)
		if m == nil {
			return ""
		}
		return m[1] + m[2]
	}

	if dom := browse(t.TempDir(), base+"/", "--virtual-time-budget=3000", "--dump-dom"); strings.Contains(dom, `data-agent-id="edge-dash"`) {
		t.Fatal("dashboard served agent data to a browser without an operator certificate")
	}
	if v := verdictOf(browse(operatorHome, base+"/", "--virtual-time-budget=6000", "--dump-dom")); v != "TRUSTED" {
		t.Fatalf("dashboard shows %q before the attack, want TRUSTED", v)
	}

	// Attack: the agent binary is replaced on disk.
	copyBinary(t, bin("pulse-agent"), agentBin, []byte("\x00implant"))
	f.waitVerdict("edge-dash", untrusted, "REASON_AGENT_BINARY_MISMATCH", 20*time.Second)
	dom := browse(operatorHome, base+"/", "--virtual-time-budget=6000", "--dump-dom")
	if v := verdictOf(dom); v != "UNTRUSTED" {
		t.Fatalf("dashboard shows %q after the attack, want UNTRUSTED", v)
	}
	if !strings.Contains(dom, "AGENT_BINARY_MISMATCH") {
		t.Fatal("dashboard does not show the reason")
	}
	dir := os.Getenv("PULSE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "dashboard-after-attack.png")
	browse(operatorHome, base+"/", "--virtual-time-budget=6000", "--window-size=1400,900", "--screenshot="+shot)
	if st, err := os.Stat(shot); err != nil || st.Size() == 0 {
		t.Fatalf("no screenshot: %v", err)
	}
	t.Logf("screenshot: %s", shot)
}

// serverSPKI is the base64 SHA-256 of the certificate's public key, the pin
// Chromium accepts instead of a CA.
func serverSPKI(t testing.TB, certFile string) string {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM in " + certFile)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
