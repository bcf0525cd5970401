package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/testutil"
)

// guideBlock is one fenced shell block of docs/deploy.md.
type guideBlock struct {
	name   string // test:NAME; "" for no-test
	text   string
	line   int
	noTest bool
}

// parseGuide returns the guide's shell blocks. Every ```sh block must be
// marked test:NAME (run by TestDeployGuide) or no-test.
func parseGuide(t *testing.T, path string) []guideBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out []guideBlock
		cur *guideBlock
		sc  = bufio.NewScanner(f)
	)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```sh"):
			info := strings.Fields(strings.TrimPrefix(line, "```"))
			b := guideBlock{line: n}
			switch {
			case len(info) == 2 && strings.HasPrefix(info[1], "test:"):
				b.name = strings.TrimPrefix(info[1], "test:")
			case len(info) == 2 && info[1] == "no-test":
				b.noTest = true
			default:
				t.Fatalf("%s:%d: shell block %q is neither test:NAME nor no-test", path, n, line)
			}
			cur = &b
		case cur != nil && line == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: unterminated block", path, cur.line)
	}
	return out
}

// noTestCommands are what a no-test block may run: the service manager,
// the package manager and downloads (none of which the test machine has).
var noTestCommands = map[string]bool{"systemctl": true, "apt-get": true, "curl": true}

// guideRunner runs the guide's named blocks, each in a fresh bash with
// the site block first, and records which ran.
type guideRunner struct {
	t      *testing.T
	blocks map[string]guideBlock
	ran    map[string]bool
	work   string
	env    []string
}

func (g *guideRunner) script(name string) string {
	g.t.Helper()
	b, ok := g.blocks[name]
	if !ok {
		g.t.Fatalf("docs/deploy.md has no block test:%s", name)
	}
	g.ran[name] = true
	return "set -euo pipefail\n" + g.blocks["site"].text + "cd " + g.work + "\n" + b.text
}

// run runs block name with extra environment; it must succeed.
func (g *guideRunner) run(name string, env ...string) string {
	g.t.Helper()
	out, err := g.try(name, env...)
	if err != nil {
		g.t.Fatalf("docs/deploy.md block test:%s (line %d): %v\n%s", name, g.blocks[name].line, err, out)
	}
	return out
}

func (g *guideRunner) try(name string, env ...string) (string, error) {
	g.t.Helper()
	cmd := exec.Command("bash", "-c", g.script(name))
	cmd.Env = append(append(os.Environ(), g.env...), env...)
	out, err := cmd.CombinedOutput()
	g.t.Logf("test:%s\n%s", name, out)
	return string(out), err
}

// TestDeployGuide runs every command of docs/deploy.md against real parts:
// two swtpm "devices" (one whose EK certificate chains to the pinned root,
// one that must be approved by digest), the verifier and agents as
// processes, certificates from an OpenSSL CA. Both sides of each check:
// the second device's EK fails the root check and is refused until its
// digest is approved; the decommissioned device cannot come back while
// the other stays TRUSTED.
func TestDeployGuide(t *testing.T) {
	if testutil.RequireTools(t, "openssl", "bash", "sed") == nil {
		return
	}
	devA := startTPM(t, "rhel8-uefi", false)
	devB := startTPM(t, "rhel8-uefi", true) // its own EK and EK CA: not under the pinned roots
	if devA == nil || devB == nil {
		return
	}
	blocks := parseGuide(t, "../docs/deploy.md")
	g := &guideRunner{t: t, blocks: map[string]guideBlock{}, ran: map[string]bool{"site": true}}
	for _, b := range blocks {
		if b.noTest {
			for _, l := range strings.Split(b.text, "\n") {
				l = strings.TrimSpace(l)
				if l == "" || strings.HasPrefix(l, "#") {
					continue
				}
				for _, part := range strings.Split(l, "&&") {
					if w := strings.Fields(part); len(w) > 0 && !noTestCommands[w[0]] {
						t.Fatalf("docs/deploy.md:%d: no-test block runs %q, which the test could run: make it a test block", b.line, w[0])
					}
				}
			}
			continue
		}
		if _, dup := g.blocks[b.name]; dup {
			t.Fatalf("docs/deploy.md:%d: block test:%s twice", b.line, b.name)
		}
		g.blocks[b.name] = b
	}

	scratch := t.TempDir()
	g.work = filepath.Join(scratch, "work")
	etcV, etcA, etcB := filepath.Join(scratch, "etc"), filepath.Join(scratch, "etc-a"), filepath.Join(scratch, "etc-b")
	for _, d := range []string{g.work, etcV, etcA, etcB, filepath.Join(scratch, "state"), filepath.Join(scratch, "home")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	vport, aport := freePort(t), freePort(t)
	rootsA := devA.IssuerCert() + "," + devA.LocalCACert()
	g.env = []string{
		"PATH=" + binDir + ":" + os.Getenv("PATH"),
		"HOME=" + filepath.Join(scratch, "home"),
		"ETC=" + etcV, "STATE=" + filepath.Join(scratch, "state"), "CA_DIR=" + filepath.Join(scratch, "ca"),
		"VERIFIER_HOST=localhost", fmt.Sprintf("VERIFIER_PORT=%d", vport), fmt.Sprintf("ADMIN_PORT=%d", aport),
		"EK_ROOTS=" + rootsA, "BACKUP_DIR=" + filepath.Join(scratch, "backup"), "BPF_ENABLED=false",
	}
	deviceA := []string{"ETC=" + etcA, "TPM=" + devA.Spec(), "FW_LOG=" + devA.BootLogPath(), "AGENT_ID=edge-0001", "AGENT_STATE=" + filepath.Join(scratch, "agent-a")}
	deviceB := []string{"ETC=" + etcB, "TPM=" + devB.Spec(), "FW_LOG=" + devB.BootLogPath(), "AGENT_ID=edge-0002", "AGENT_STATE=" + filepath.Join(scratch, "agent-b")}
	if err := os.MkdirAll(filepath.Join(scratch, "backup"), 0o700); err != nil {
		t.Fatal(err)
	}

	// 1-3: requirements, certificates.
	g.run("requirements", deviceA...)
	g.run("ca")
	g.run("verifier-cert")
	g.run("agent-cert", deviceA...)
	g.run("agent-cert", deviceB...)
	g.run("operator-cert")
	// 2: the root check passes for device A and refuses device B.
	if out := g.run("ek-roots-check", deviceA...); !strings.Contains(out, "ek_roots=ok") {
		t.Fatalf("ek-roots-check on device A:\n%s", out)
	}
	if out, err := g.try("ek-roots-check", deviceB...); err == nil || !strings.Contains(out, "ek_roots=refused") {
		t.Fatalf("ek-roots-check on device B (EK CA not pinned) passed:\n%s", out)
	}
	// 4: the first policy, from device A's evidence. The test shortens the
	// derived heartbeat (30 s) so it runs in seconds.
	g.run("golden", deviceA[1:]...)
	policyFile := filepath.Join(etcV, "policy.d", "fleet.hcl")
	replaceInFile(t, policyFile, `interval = "30s"`, `interval = "2s"`)
	// 5: the verifier.
	g.run("verifier-config")
	f := &fleet{t: t, dir: scratch, port: vport, agents: map[string]*proc{}, vcfg: filepath.Join(etcV, "verifier.hcl")}
	f.startVerifier()
	t.Cleanup(func() {
		f.mu.Lock()
		for _, a := range f.agents {
			a.stop(syscall.SIGTERM)
		}
		f.mu.Unlock()
		f.verifier.stop(syscall.SIGTERM)
		if t.Failed() {
			for _, n := range []string{"verifier.log", "agent-edge-0001.log", "agent-edge-0002.log"} {
				if b, err := os.ReadFile(filepath.Join(scratch, n)); err == nil {
					t.Logf("---- %s (tail)\n%s", n, tail(string(b), 40))
				}
			}
		}
	})
	// 7: the agents. A enrolls by its EK certificate; B is refused.
	g.run("agent-config", deviceA...)
	f.launchAgent("edge-0001", filepath.Join(etcA, "agent.hcl"), bin("pulse-agent"))
	g.run("agent-config", deviceB...)
	f.launchAgent("edge-0002", filepath.Join(etcB, "agent.hcl"), bin("pulse-agent"))
	f.waitVerdict("edge-0001", trusted, "REASON_OK", 45*time.Second)
	waitLog(t, filepath.Join(scratch, "agent-edge-0002.log"), "REASON_EK_UNTRUSTED", 30*time.Second)
	if _, ok := f.show("edge-0002"); ok {
		t.Fatal("edge-0002 enrolled with an EK neither under ek_roots nor approved")
	}
	// 6: B's digest approved in bulk; the verifier restarted.
	g.run("ek-collect", deviceB...)
	if out := g.run("ek-approve"); !strings.Contains(out, "1 EK digest(s) added") {
		t.Fatalf("ek-approve:\n%s", out)
	}
	f.verifier.stop(syscall.SIGTERM)
	f.startVerifier()
	f.waitVerdict("edge-0002", trusted, "REASON_OK", 60*time.Second)
	f.waitVerdict("edge-0001", trusted, "REASON_OK", 30*time.Second)
	if out := g.run("fleet-status"); !regexp.MustCompile(`edge-0001\s+tpm\s+VERDICT_TRUSTED`).MatchString(out) || !regexp.MustCompile(`edge-0002\s+tpm\s+VERDICT_TRUSTED`).MatchString(out) {
		t.Fatalf("fleet-status:\n%s", out)
	}

	// 8: rotation: A swaps to the new certificate without re-enrolling and
	// stays TRUSTED on pulses made after it.
	g.run("rotate", deviceA...)
	rotated := time.Now()
	// The agent checks its files every reload interval (10 s by default).
	waitLog(t, filepath.Join(scratch, "agent-edge-0001.log"), "moved to the new certificate", 30*time.Second)
	moved := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command(bin("pulsectl"), "agents", "show", "--config", f.vcfg, "--json", "edge-0001").Output()
		var v struct {
			Verdict   string    `json:"verdict"`
			LastPulse time.Time `json:"last_pulse"`
		}
		if err == nil && json.Unmarshal(out, &v) == nil && v.Verdict == trusted && v.LastPulse.After(moved.Add(time.Second)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TRUSTED pulse of edge-0001 with its rotated certificate (started %s): %s", rotated.Format(time.RFC3339), out)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if b, _ := os.ReadFile(filepath.Join(scratch, "agent-edge-0001.log")); strings.Count(string(b), "enrolling") != 1 {
		t.Fatalf("edge-0001 enrolled %d times, want once", strings.Count(string(b), "enrolling"))
	}

	// 9: an update window, then the verifier upgrade procedure.
	if out := g.run("update-window"); !strings.Contains(out, "edge-*") {
		t.Fatalf("update-window:\n%s", out)
	}
	g.run("verifier-upgrade")
	f.verifier.stop(syscall.SIGTERM)
	g.run("verifier-migrate")
	f.startVerifier()
	f.waitVerdict("edge-0001", trusted, "REASON_OK", 45*time.Second)
	f.waitVerdict("edge-0002", trusted, "REASON_OK", 45*time.Second)

	// 10: decommission B: gone, revoked, audit-logged; it cannot come back,
	// A is untouched.
	if out := g.run("decommission", "AGENT_ID=edge-0002"); !strings.Contains(out, "removed edge-0002") || !strings.Contains(out, "agent") {
		t.Fatalf("decommission:\n%s", out)
	}
	time.Sleep(8 * time.Second) // several of its pulse intervals and revocation refreshes
	if _, ok := f.show("edge-0002"); ok {
		t.Fatal("the decommissioned edge-0002 is back in the store")
	}
	f.waitVerdict("edge-0001", trusted, "REASON_OK", 10*time.Second)
	// Removing an agent that is not enrolled changes nothing.
	cmd := exec.Command(bin("pulsectl"), "agents", "remove", "--cert", filepath.Join(scratch, "ca", "alice.pem"), "--key", filepath.Join(scratch, "ca", "alice-key.pem"),
		"--server-name", "localhost", "--admin", fmt.Sprintf("https://localhost:%d", aport), "--ca", filepath.Join(etcV, "ca.pem"), "edge-9999")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not enrolled") {
		t.Fatalf("removing an unknown agent: %v\n%s", err, out)
	}
	if out := run(t, "pulsectl", "revocations", "list", "--cert", filepath.Join(scratch, "ca", "alice.pem"), "--key", filepath.Join(scratch, "ca", "alice-key.pem"),
		"--server-name", "localhost", "--admin", fmt.Sprintf("https://localhost:%d", aport), "--ca", filepath.Join(etcV, "ca.pem")); strings.Contains(out, "edge-9999") {
		t.Fatalf("an unknown agent was revoked:\n%s", out)
	}

	var missed []string
	for name := range g.blocks {
		if !g.ran[name] {
			missed = append(missed, name)
		}
	}
	sort.Strings(missed)
	if len(missed) > 0 {
		t.Fatalf("docs/deploy.md blocks the test never ran: %v", missed)
	}
}

// TestDocsStayInRepository: README.md and docs/ link only to files of the
// repository (or to web addresses), and cite no design document kept
// outside it.
func TestDocsStayInRepository(t *testing.T) {
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	outside := regexp.MustCompile(`shared/|DESIGN`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if outside.MatchString(line) {
				t.Errorf("%s:%d refers outside the repository: %s", f, i+1, line)
			}
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				target, _, _ = strings.Cut(target, "#")
				abs, err := filepath.Abs(filepath.Join(filepath.Dir(f), target))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(abs, root+string(filepath.Separator)) && abs != root {
					t.Errorf("%s:%d links outside the repository: %s", f, i+1, m[1])
					continue
				}
				if _, err := os.Stat(abs); err != nil {
					t.Errorf("%s:%d links to a missing file: %s", f, i+1, m[1])
				}
			}
		}
	}
}
