package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/internal/testutil"
)

// openPTY returns a pseudo-terminal's master and the path of its slave.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	return master, fmt.Sprintf("/dev/pts/%d", n)
}

// terminal collects what a program writes to its terminal.
type terminal struct {
	mu  sync.Mutex
	out strings.Builder
}

func (tm *terminal) text() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.String()
}

// waitFor waits until the output matches re and returns the submatches.
func (tm *terminal) waitFor(t *testing.T, re *regexp.Regexp, within time.Duration, done <-chan struct{}) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(tm.text()); m != nil {
			return m
		}
		select {
		case <-done:
			t.Fatalf("the demo exited before printing %q:\n%s", re, tm.text())
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("no %q within %s:\n%s", re, within, tm.text())
	return nil
}

// TestMakeDemo runs `make demo` on a terminal (a pty, as a user would):
// it prints a dashboard URL with a token that opens the dashboard, showing
// the demo agent TRUSTED, in headless Chromium (a browser without the token
// gets no agent data); the printed `source` line makes pulsectl agents
// list and alerts list work from another shell; the output is verdict
// changes, not tables; Ctrl-C on the terminal ends it with exit status 0
// and one "stopped; state in DIR" line, with its audit log intact.
func TestMakeDemo(t *testing.T) {
	tools := testutil.RequireTools(t, "make", "chromium", "swtpm", "swtpm_setup", "swtpm_ioctl", "swtpm_localca")
	if tools == nil || tools["chromium"] == "" {
		return
	}
	master, slave := openPTY(t)
	defer master.Close()
	tty, err := os.OpenFile(slave, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	demoDir := filepath.Join(t.TempDir(), "demo")
	// deps and build are not remade: TestMain built the binaries.
	cmd := exec.Command("make", "-s", "-C", "..", "-o", "deps", "-o", "build", "demo")
	cmd.Env = append(os.Environ(), "PULSE_DEMO_BIN="+binDir, "PULSE_DEMO_DIR="+demoDir, "PULSE_DEMO_INTERVAL=2s", "TERM=dumb")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var term terminal
	done := make(chan struct{})
	var waitErr error
	go func() {
		br := bufio.NewReader(master)
		buf := make([]byte, 4096)
		for {
			n, err := br.Read(buf)
			term.mu.Lock()
			term.out.Write(buf[:n])
			term.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck
			<-done
		}
		exec.Command(bin("pulsectl"), "sim", "stop", "--state", filepath.Join(demoDir, "tpm")).Run() //nolint:errcheck
		if t.Failed() {
			for _, name := range []string{"verifier.log", "agent.log", "setup.log"} {
				if b, err := os.ReadFile(filepath.Join(demoDir, name)); err == nil {
					t.Logf("---- %s (tail)\n%s", name, tail(string(b), 30))
				}
			}
		}
	})

	url := term.waitFor(t, regexp.MustCompile(`dashboard\s+(https://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]+))`), 60*time.Second, done)
	source := term.waitFor(t, regexp.MustCompile(`(source \S+pulsectl\.env)`), 5*time.Second, done)[1]
	term.waitFor(t, regexp.MustCompile(`demo-agent-1: new -> TRUSTED \(OK\)`), 60*time.Second, done)

	// Another terminal: one source line, then pulsectl.
	out, err := exec.Command("bash", "-c", source+" && pulsectl agents list && pulsectl alerts list && pulsectl updates list").CombinedOutput()
	if err != nil || !regexp.MustCompile(`demo-agent-1\s+tpm\s+VERDICT_TRUSTED`).Match(out) {
		t.Fatalf("pulsectl after %q: %v\n%s", source, err, out)
	}

	// The printed URL opens the dashboard in a browser.
	spki := serverSPKI(t, filepath.Join(demoDir, "pki", "verifier.pem"))
	browse := func(u string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		c := exec.CommandContext(ctx, tools["chromium"], "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
			"--user-data-dir="+t.TempDir(), "--ignore-certificate-errors-spki-list="+spki,
			"--virtual-time-budget=6000", "--dump-dom", u)
		c.Env = append(os.Environ(), "HOME="+t.TempDir())
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
		c.WaitDelay = 5 * time.Second
		var stdout, stderr strings.Builder
		c.Stdout, c.Stderr = &stdout, &stderr
		if err := c.Run(); err != nil {
			t.Fatalf("chromium: %v\n%s", err, tail(stderr.String(), 20))
		}
		return stdout.String()
	}
	agentRow := regexp.MustCompile(`data-agent-id="demo-agent-1"[^>]*data-verdict="TRUSTED"|data-verdict="TRUSTED"[^>]*data-agent-id="demo-agent-1"`)
	if dom := browse(url[1]); !agentRow.MatchString(dom) {
		t.Fatalf("the printed dashboard URL does not show demo-agent-1 TRUSTED:\n%s", tail(dom, 40))
	}
	if dom := browse("https://127.0.0.1:" + url[2] + "/"); strings.Contains(dom, `data-agent-id="demo-agent-1"`) {
		t.Fatal("the dashboard served agent data without the token")
	}
	if dom := browse("https://127.0.0.1:" + url[2] + "/?token=" + strings.Repeat("x", len(url[3]))); strings.Contains(dom, `data-agent-id="demo-agent-1"`) {
		t.Fatal("the dashboard served agent data for a wrong token")
	}

	// Verdict changes, not tables.
	if strings.Contains(term.text(), "LAST PULSE") {
		t.Fatalf("the demo printed a table:\n%s", term.text())
	}

	// Ctrl-C on the terminal.
	if _, err := master.Write([]byte{0x03}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the demo did not stop on Ctrl-C:\n%s", term.text())
	}
	if waitErr != nil {
		t.Fatalf("make demo after Ctrl-C: %v (want exit 0)\n%s", waitErr, term.text())
	}
	time.Sleep(200 * time.Millisecond) // the reader drains the pty
	text := strings.ReplaceAll(term.text(), "\r", "")
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	last := strings.TrimPrefix(lines[len(lines)-1], "^C")
	if last != "demo: stopped; state in "+demoDir {
		t.Fatalf("last line %q, want %q\n%s", last, "demo: stopped; state in "+demoDir, text)
	}
	if strings.Contains(text, "Error") || strings.Contains(text, "Interrupt") || strings.Contains(text, "exited") {
		t.Fatalf("make or the demo reported a failure:\n%s", text)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+url[2], time.Second); err == nil {
		c.Close()
		t.Fatal("the verifier's admin listener still accepts after the demo stopped")
	}
	run(t, "pulsectl", "audit", "verify", "--file", filepath.Join(demoDir, "audit.log"))
}
