package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
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

// chromium runs headless Chromium once against url and returns its stdout.
// The browser trusts exactly the admin server's key (SPKI pin), in a fresh
// profile; its whole process group is killed if it overruns.
func chromium(t *testing.T, bin string, p *testPKI, url string, extra ...string) string {
	t.Helper()
	spki := sha256.Sum256(p.server.Cert.RawSubjectPublicKeyInfo)
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--no-default-browser-check", "--mute-audio",
		"--user-data-dir=" + t.TempDir(),
		"--ignore-certificate-errors-spki-list=" + base64.StdEncoding.EncodeToString(spki[:]),
	}
	args = append(append(args, extra...), url)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\nstderr:\n%s", strings.Join(extra, " "), err, quiet(stderr.String()))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chromium stderr (%s):\n%s", strings.Join(extra, " "), quiet(stderr.String()))
		}
	})
	return stdout.String()
}

// quiet drops Chromium's D-Bus complaints (there is no bus in a container)
// and keeps the last 4 KiB of the rest.
func quiet(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, "dbus") {
			keep = append(keep, l)
		}
	}
	s = strings.Join(keep, "\n")
	if len(s) > 4096 {
		return "..." + s[len(s)-4096:]
	}
	return s
}

// agentRow finds the <tr> of an agent in a dumped DOM and returns its
// opening tag and contents.
func agentRow(dom, id string) (string, bool) {
	re := regexp.MustCompile(`(?s)<tr[^>]*data-agent-id="` + regexp.QuoteMeta(id) + `"[^>]*>.*?</tr>`)
	m := re.FindString(dom)
	return m, m != ""
}

func attr(tag, name string) string {
	m := regexp.MustCompile(name + `="([^"]*)"`).FindStringSubmatch(tag)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestAdminDashboardChromium drives the real dashboard in headless Chromium:
// refused without credentials, opened with ?token= (session cookie), and
// re-rendered from the JSON API as an agent goes from TRUSTED to UNTRUSTED.
func TestAdminDashboardChromium(t *testing.T) {
	bin := testutil.RequireTools(t, "chromium")["chromium"]
	p := newTestPKI(t)
	be := sampleBackend(time.Now())
	// Hostile text from an agent must render as text.
	const hostile = `<img src=x onerror="document.body.setAttribute('data-pwned','1')"><b>bold</b>`
	be.agents[0].Message = hostile
	be.agents = append(be.agents,
		AgentStatus{ID: "edge-4", Partition: "field", Trust: TrustTPM, Verdict: "VERDICT_UNSPECIFIED", Reason: "REASON_UNSPECIFIED"},
		AgentStatus{ID: "edge-5", Partition: "field", Trust: TrustTPM, Verdict: "VERDICT_CLOCK_DESYNC", Reason: "REASON_CLOCK_DESYNC",
			Message: "agent clock 3m12s ahead of the verifier (tolerance 30s)", LastPulse: time.Now(), Connected: true})
	// The first two polls see edge-1 TRUSTED; from the third on it is
	// UNTRUSTED with a policy denial and an open alert. Only a page that
	// refreshes itself from the API can show the change.
	const changeAt = 3
	be.onList = func(call int, f *fakeBackend) {
		if call != changeAt {
			return
		}
		for i := range f.agents {
			if f.agents[i].ID == "edge-1" {
				f.agents[i].Verdict, f.agents[i].Reason = "VERDICT_UNTRUSTED", "REASON_POLICY_DENIED"
				f.agents[i].Message = "rule boot.secure_boot (policy.hcl:12): secure boot is off"
				f.agents[i].OpenAlerts = 1
			}
		}
		f.alerts = append(f.alerts, Alert{ID: "a-3", AgentID: "edge-1", Kind: "policy_denied", Severity: 1,
			Reason: "REASON_POLICY_DENIED", Message: "secure boot is off", CreatedAt: time.Now()})
	}
	logs := &syncBuffer{}
	s := startAdmin(t, p, testToken, true, be, logs)
	base := "https://" + s.Addr()

	// Without credentials: HTTP 401 and the refusal page, no data.
	resp, err := httpClient(t, p, "", "", 0).Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dashboard without credentials: HTTP %d", resp.StatusCode)
	}
	dom := chromium(t, bin, p, base+"/", "--virtual-time-budget=3000", "--dump-dom")
	if !strings.Contains(dom, `id="refused"`) || strings.Contains(dom, "data-agent-id") {
		t.Fatalf("unauthenticated browser got:\n%s", dom)
	}
	if be.calls() != 0 {
		t.Fatalf("backend queried %d times for an unauthenticated browser", be.calls())
	}

	// With the token: session cookie, redirect, then the page polls every 2s.
	dom = chromium(t, bin, p, base+"/?token="+testToken, "--virtual-time-budget=12000", "--dump-dom")
	if n := be.calls(); n < changeAt+1 {
		t.Fatalf("page polled /api/v1/agents %d times, want at least %d (no 2s refresh?)\n%s", n, changeAt+1, dom)
	}
	row, ok := agentRow(dom, "edge-1")
	if !ok {
		t.Fatalf("no row for edge-1 in:\n%s", dom)
	}
	if v := attr(row, "data-verdict"); v != "UNTRUSTED" {
		t.Errorf("edge-1 data-verdict=%q after the change, want UNTRUSTED:\n%s", v, row)
	}
	for _, want := range []string{"verdict-UNTRUSTED", "POLICY_DENIED", "secure boot is off", "TPM", "v0.4.0+b6d9127a0c1e"} {
		if !strings.Contains(row, want) {
			t.Errorf("edge-1 row lacks %q:\n%s", want, row)
		}
	}
	row2, ok := agentRow(dom, "edge-2")
	if !ok || attr(row2, "data-verdict") != "DEGRADED" || attr(row2, "data-trust") != TrustMTLSOnly || !strings.Contains(row2, "mTLS-only") {
		t.Errorf("edge-2 row:\n%s", row2)
	}
	if strings.Contains(row2, "<img") || strings.Contains(row2, "<b>") || !strings.Contains(row2, "&lt;img src=x") {
		t.Errorf("agent message not escaped:\n%s", row2)
	}
	if regexp.MustCompile(`<body[^>]*data-pwned`).MatchString(dom) {
		t.Error("agent-supplied markup ran script")
	}
	row3, ok := agentRow(dom, "edge-3")
	if !ok || attr(row3, "data-verdict") != "BLINDED" || !strings.Contains(row3, "verdict-BLINDED") || !regexp.MustCompile(`>[1-9]\d?m \d{1,2}s ago<`).MatchString(row3) {
		t.Errorf("edge-3 row (BLINDED, ~95s ago):\n%s", row3)
	}
	if row4, ok := agentRow(dom, "edge-4"); !ok || attr(row4, "data-verdict") != "UNSPECIFIED" || !strings.Contains(row4, ">PENDING<") || !strings.Contains(row4, ">never<") {
		t.Errorf("edge-4 (enrolled, no pulse yet) row:\n%s", row4)
	}
	if row5, ok := agentRow(dom, "edge-5"); !ok || attr(row5, "data-verdict") != "CLOCK_DESYNC" || !strings.Contains(row5, "verdict-CLOCK_DESYNC") {
		t.Errorf("edge-5 row:\n%s", row5)
	}
	if !strings.Contains(dom, `data-alert-id="a-3"`) || !strings.Contains(dom, `data-alert-id="a-2"`) || strings.Contains(dom, `data-alert-id="a-1"`) {
		t.Errorf("alerts panel should list the open alerts a-2 and a-3 only:\n%s", dom)
	}
	if !strings.Contains(dom, `data-address="10.0.0.66"`) {
		t.Error("quarantine panel empty")
	}
	if !strings.Contains(dom, "signed in as token (session)") {
		t.Error("session line missing: the API calls did not use the cookie session")
	}
	if strings.Contains(logs.String(), testToken) {
		t.Error("token in logs")
	}

	// A screenshot for humans, in the test's directory and $PULSE_ARTIFACTS.
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	chromium(t, bin, p, base+"/?token="+testToken, "--virtual-time-budget=5000", "--window-size=1400,900", "--screenshot="+shot)
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10<<10 {
		t.Fatalf("screenshot is not a plausible PNG (%d bytes)", len(png))
	}
	if dir := os.Getenv("PULSE_ARTIFACTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "admin-dashboard.png")
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", out)
	}
}
