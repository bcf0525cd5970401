package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/verifier/store"
)

// walkPolicy is the e2e fleet policy allowing one agent build. The
// heartbeat's deadline is long: only accepted pulses move an agent's
// deadline, so a denied agent would otherwise turn silent (BLINDED) while
// the walk looks at it UNTRUSTED.
func walkPolicy(allow string) string {
	p := strings.Replace(fleetPolicy, "  measured_boot {", fmt.Sprintf("  agent_binary {\n    allow = [%q]\n  }\n  measured_boot {", allow), 1)
	return strings.Replace(p, "missed   = 3", "missed   = 300", 1)
}

// TestDashboardWalk: the fleet explorer in headless Chromium (DevTools
// protocol), against the real verifier and a real agent on swtpm. An
// operator signed in with a client certificate walks overview → filtered
// list → agent detail (the UNTRUSTED agent's failing rule with expected
// vs. seen) → alerts (acknowledge with a note, on the audit record) →
// policy (dry-run of an uploaded candidate). An operator signed in with a
// token sees the overview; a browser without credentials sees no data. A
// screenshot of each page goes to $PULSE_ARTIFACTS when set.
func TestDashboardWalk(t *testing.T) {
	testutil.RequireRoot(t) // installs a Chromium policy under /etc for the test
	tools := testutil.RequireTools(t, "chromium", "openssl", "certutil", "pk12util")
	chromiumBin := tools["chromium"]
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil || chromiumBin == "" {
		return
	}
	// The policy allows the agent binary as built.
	probe := filepath.Join(t.TempDir(), "pulse-agent")
	copyBinary(t, bin("pulse-agent"), probe, nil)
	raw, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	build := hex.EncodeToString(sum[:])
	f := newFleet(t, walkPolicy(build), sw)

	// The verifier with an admin listener: operator certificates and a
	// named token.
	const token = "walk-token-0123456789abcdefghij"
	f.verifier.stop(syscall.SIGTERM)
	adminPort := freePort(t)
	replaceInFile(t, f.vcfg, `agent_ca = "pki/ca.pem"`, "agent_ca = \"pki/ca.pem\"\n  operator_ca = \"pki/ca.pem\"")
	if err := os.WriteFile(filepath.Join(f.dir, "admin-tokens"), []byte("bob:"+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(f.vcfg)
	cfg = append(cfg, []byte(fmt.Sprintf("admin_listen = \"127.0.0.1:%d\"\nadmin_token_file = \"admin-tokens\"\n", adminPort))...)
	if err := os.WriteFile(f.vcfg, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	f.startVerifier()
	base := fmt.Sprintf("https://127.0.0.1:%d", adminPort)

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
	policyFile := filepath.Join(policyDir, fmt.Sprintf("pulse-e2e-walk-%d.json", adminPort))
	pol := fmt.Sprintf(`{"AutoSelectCertificateForUrls": ["{\"pattern\":\"%s\",\"filter\":{}}"]}`, base)
	if err := os.WriteFile(policyFile, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(policyFile) })

	// The agent runs its eBPF programs (Shield in tcx mode on a veth,
	// Sentinel; Fortress as the kernel allows it), so that the detail page
	// has a kernel snapshot to show.
	agentBin := filepath.Join(f.dir, "pulse-agent")
	copyBinary(t, bin("pulse-agent"), agentBin, nil)
	ifname, _ := kernelEvidenceVeth(t)
	suffix := make([]byte, 4)
	rand.Read(suffix) //nolint:errcheck
	pinDir := "/sys/fs/bpf/pulse-e2e-walk-" + hex.EncodeToString(suffix)
	t.Cleanup(func() { bpf.RemoveAll(pinDir) }) //nolint:errcheck // best effort
	agentCfg := f.agentConfig("edge-walk", sw, "")
	replaceInFile(t, agentCfg, "bpf {\n  enabled = false\n}", fmt.Sprintf("bpf {\n  enabled    = true\n  pin_dir    = %q\n  interfaces = [%q]\n}", pinDir, ifname))
	certs, err := pki.ReadCertificates(filepath.Join(filepath.Dir(agentCfg), "agent.pem"))
	if err != nil || len(certs) == 0 {
		t.Fatalf("agent certificate: %v", err)
	}
	agentCert := certs[0]
	f.launchAgent("edge-walk", agentCfg, agentBin)
	f.waitVerdict("edge-walk", trusted, "REASON_OK", 45*time.Second)

	// The policy is tightened: the agent's build is no longer allowed.
	other := sha256.Sum256([]byte("the next build"))
	if err := os.WriteFile(filepath.Join(f.dir, "policy.hcl"), []byte(walkPolicy(hex.EncodeToString(other[:]))), 0o644); err != nil {
		t.Fatal(err)
	}
	f.waitVerdict("edge-walk", untrusted, "REASON_POLICY_DENIED", 30*time.Second)

	shots := os.Getenv("PULSE_ARTIFACTS")
	if shots == "" {
		shots = t.TempDir()
	}
	shots = filepath.Join(shots, "dashboard-walk")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	spki := serverSPKI(t, filepath.Join(pkiDir, "verifier.pem"))
	shot := func(b *cdpBrowser, name string) {
		t.Helper()
		p := filepath.Join(shots, name+".png")
		b.screenshot(p)
		t.Logf("screenshot %s", p)
	}
	loaded := func(page string) string {
		return `document.body.getAttribute("data-loaded") === "` + page + `"`
	}

	// A browser without credentials: refused, no agent data anywhere.
	anon := startBrowser(t, chromiumBin, t.TempDir(), spki)
	for _, p := range []string{"/fleet", "/fleet/agent?id=edge-walk", "/api/v1/agents?verdict=UNTRUSTED"} {
		anon.navigate(base + p)
		time.Sleep(300 * time.Millisecond)
		if html := anon.text(`document.documentElement.outerHTML`); strings.Contains(html, "edge-walk\"") || strings.Contains(html, "POLICY_DENIED") || strings.Contains(html, build[:16]) {
			t.Fatalf("a browser without credentials got agent data from %s", p)
		}
	}
	anon.navigate(base + "/fleet")
	if anon.text(`document.getElementById("refused") ? "refused" : document.body.getAttribute("data-loaded")`) != "refused" {
		t.Fatalf("unauthenticated explorer: %s", anon.text(`document.body.innerText`))
	}
	shot(anon, "0-no-credentials")

	// The operator, with a client certificate.
	op := startBrowser(t, chromiumBin, operatorHome, spki)
	op.navigate(base + "/fleet")
	op.waitTrue("overview", loaded("overview"), 30*time.Second)
	if s := op.text(`document.getElementById("session").textContent`); !strings.Contains(s, "alice") {
		t.Fatalf("signed in as %q, want alice", s)
	}
	op.waitTrue("verdict chart", `document.querySelector("#series-chart canvas") !== null`, 10*time.Second)
	href := op.text(`document.querySelector('#by-verdict a[data-count-key="UNTRUSTED"]').getAttribute("href")`)
	if href != "/fleet/agents?verdict=UNTRUSTED" {
		t.Fatalf("UNTRUSTED count links to %q", href)
	}
	op.waitTrue("verifier health sampled", `Number(document.getElementById("health-chart").getAttribute("data-samples")) >= 1`, 15*time.Second)
	shot(op, "1-overview")

	// The count's link: the filtered list, its filter in the URL.
	op.js(`document.querySelector('#by-verdict a[data-count-key="UNTRUSTED"]').click()`)
	op.waitTrue("filtered list", loaded("agents")+` && location.search === "?verdict=UNTRUSTED"`, 30*time.Second)
	op.waitTrue("edge-walk listed", `document.querySelector('#agent-list-rows tr[data-agent-id="edge-walk"][data-verdict="UNTRUSTED"]') !== null`, 10*time.Second)
	if n := op.text(`document.querySelectorAll("#agent-list-rows tr").length`); n != "1" {
		t.Fatalf("the UNTRUSTED list holds %s rows", n)
	}
	if v := op.text(`document.querySelector('#agent-filter select[name="verdict"]').value`); v != "UNTRUSTED" {
		t.Fatalf("the filter form shows verdict %q", v)
	}
	shot(op, "2-agents-untrusted")

	// The agent: the failing rule, expected vs. seen, and the evidence.
	op.js(`document.querySelector('#agent-list-rows tr[data-agent-id="edge-walk"] a').click()`)
	op.waitTrue("agent detail", loaded("agent"), 30*time.Second)
	row := `document.querySelector('#agent-findings-rows tr[data-rule="agent_binary"]')`
	op.waitTrue("agent_binary finding", row+` !== null`, 10*time.Second)
	expected := op.text(row + `.querySelector(".expected").textContent`)
	seen := op.text(row + `.querySelector(".seen").textContent`)
	if !strings.Contains(expected, hex.EncodeToString(other[:])[:16]) || !strings.Contains(seen, build[:16]) || !strings.Contains(op.text(row+`.className`), "enforce") {
		t.Fatalf("agent_binary finding: expected %q seen %q", expected, seen)
	}
	if v := op.text(`document.getElementById("agent-verdict").getAttribute("data-verdict")`); v != "UNTRUSTED" {
		t.Fatalf("detail verdict %q", v)
	}
	if op.text(`document.querySelectorAll("#ev-pcr-rows tr").length`) == "0" || op.text(`document.getElementById("ev-secureboot").textContent`) == "" ||
		!strings.Contains(op.text(`document.getElementById("ev-runtime").textContent`), build) {
		t.Fatalf("evidence not shown: %s", op.text(`document.getElementById("evidence").innerText`))
	}
	// Identity: the certificate the pulses' handshakes verified, its
	// expiry highlighted when within 14 days.
	subject := op.text(`document.querySelector('#agent-identity dd[data-field="certificate subject"]').textContent`)
	expiry := `document.querySelector('#agent-identity dd[data-field="certificate expires"]')`
	if !strings.Contains(subject, "CN=edge-walk") || !strings.Contains(op.text(expiry+`.textContent`), agentCert.NotAfter.UTC().Format("2006-01-02 15:04:05")) {
		t.Fatalf("certificate: subject %q, expires %q (NotAfter %v)", subject, op.text(expiry+`.textContent`), agentCert.NotAfter)
	}
	soon := time.Until(agentCert.NotAfter) < 14*24*time.Hour
	if got := op.text(expiry+`.classList.contains("cert-soon")`) == "true"; got != soon {
		t.Fatalf("certificate expiring in %v highlighted %v", time.Until(agentCert.NotAfter).Round(time.Hour), got)
	}
	shot(op, "3-agent-detail")

	// The kernel: Shield's and Sentinel's pins as loaded and live, the tcx
	// chain on the veth, Fortress's status and Sentinel's counters.
	op.waitTrue("kernel summary", `!document.getElementById("kernel").hidden && document.querySelectorAll("#kernel-pin-rows tr").length > 0`, 10*time.Second)
	if n := op.text(`document.querySelectorAll('#kernel-pin-rows tr[data-problem=""]').length`); n == "0" || n != op.text(`document.querySelectorAll("#kernel-pin-rows tr").length`) {
		t.Fatalf("pins without a problem: %s of %s", n, op.text(`document.querySelectorAll("#kernel-pin-rows tr").length`))
	}
	if h := op.text(`Array.from(document.querySelectorAll("#kernel-hook-rows tr")).map((r) => r.innerText).join("|")`); !strings.Contains(h, ifname) || !strings.Contains(h, "shield") {
		t.Fatalf("hook chains %q name no Shield program on %s", h, ifname)
	}
	fortress := op.text(`document.querySelector('#kernel-fortress dd[data-field="active"]').textContent`)
	if fortress != "active" && fortress != "not active" {
		t.Fatalf("Fortress status %q", fortress)
	}
	if fortress == "not active" && op.text(`document.querySelector('#kernel-fortress dd[data-field="reason"]').textContent`) == "—" {
		t.Fatal("Fortress not active without a reason")
	}
	if c := op.text(`document.querySelector('#kernel-sentinel dd[data-field="configured for the agent"]').textContent`); c != "yes" {
		t.Fatalf("Sentinel configured for the agent: %q", c)
	}
	if op.text(`document.getElementById("agent-windows-empty").hidden`) != "false" {
		t.Fatalf("update windows listed before any approval: %s", op.text(`document.getElementById("agent-windows").innerText`))
	}
	op.js(`document.getElementById("kernel").scrollIntoView()`)
	shot(op, "3b-agent-kernel")
	// What the store keeps for the agent with its kernel summary: within
	// the per-agent bound.
	x, err := f.store().GetExplanation(t.Context(), "edge-walk")
	if err != nil || len(x.Kernel) == 0 || x.Size() > store.MaxExplanationBytes {
		t.Fatalf("stored explanation: %v", err)
	}
	t.Logf("stored explanation of a real agent with eBPF: %d bytes (kernel summary %d, evidence %d, findings %d, certificate subject %d)",
		x.Size(), len(x.Kernel), len(x.Evidence), len(x.Findings), len(x.CertSubject))

	// An operator action from the page: a maintenance window, confirmed,
	// on the audit record.
	op.js(`(() => { const f = document.getElementById("agent-actions"); f.elements.action.value = "maintenance"; f.elements.action.dispatchEvent(new Event("change")); f.elements.for.value = "10m"; f.elements.reason.value = "walk: reimaging"; document.getElementById("action-submit").click(); })()`)
	op.waitTrue("confirmation asked", `!document.getElementById("action-confirm").hidden`, 5*time.Second)
	op.js(`document.getElementById("action-yes").click()`)
	op.waitTrue("maintenance window opened", `document.getElementById("action-result").getAttribute("data-result") === "ok"`, 10*time.Second)

	// An update approval from the page: listed among the update windows
	// that apply to the agent once the page is read again.
	nextBuild := hex.EncodeToString(other[:])
	op.js(`(() => { document.getElementById("action-result").setAttribute("data-result", ""); const f = document.getElementById("agent-actions"); f.elements.action.value = "approve"; f.elements.action.dispatchEvent(new Event("change")); f.elements.digest.value = "` + nextBuild + `"; document.getElementById("action-submit").click(); })()`)
	op.waitTrue("confirmation asked", `!document.getElementById("action-confirm").hidden`, 5*time.Second)
	op.js(`document.getElementById("action-yes").click()`)
	op.waitTrue("update approved", `document.getElementById("action-result").getAttribute("data-result") === "ok"`, 10*time.Second)
	op.navigate(base + "/fleet/agent?id=edge-walk")
	op.waitTrue("agent detail again", loaded("agent")+` && document.querySelector("#agent-window-rows tr") !== null`, 30*time.Second)
	if w := op.text(`document.querySelector("#agent-window-rows tr").innerText`); !strings.Contains(w, nextBuild[:16]) || !strings.Contains(w, "operator (alice)") || !strings.Contains(w, "open") {
		t.Fatalf("update window row %q", w)
	}
	op.js(`document.getElementById("agent-windows").scrollIntoView()`)
	shot(op, "3c-agent-update-window")

	// Alerts: acknowledge the agent's alert with a note.
	op.navigate(base + "/fleet/alerts?open=1&agent=edge-walk")
	op.waitTrue("alerts", loaded("alerts")+` && document.querySelector("#alert-list-rows tr[data-agent-id=edge-walk] button.ack") !== null`, 30*time.Second)
	op.waitTrue("audit chain verified", `document.getElementById("audit-status").getAttribute("data-whole") === "true"`, 10*time.Second)
	alertID := op.text(`document.querySelector("#alert-list-rows tr[data-agent-id=edge-walk]").getAttribute("data-alert-id")`)
	shot(op, "4-alerts")
	op.js(`(() => { const tr = document.querySelector("#alert-list-rows tr[data-agent-id=edge-walk]"); tr.querySelector("input.ack-note").value = "walk: build retired, reimaging"; tr.querySelector("button.ack").click(); })()`)
	op.waitTrue("acknowledged", `document.querySelector("#alert-list-rows tr[data-alert-id='`+alertID+`'] .acked") !== null`, 10*time.Second)
	shot(op, "5-alert-acknowledged")
	acked := false
	for _, a := range listAlerts(t, f.store(), "edge-walk") {
		if a.ID == alertID && a.AckedBy == "alice" {
			acked = true
		}
	}
	if !acked {
		t.Fatal("the store does not hold the acknowledgement by alice")
	}
	audit, _ := os.ReadFile(filepath.Join(f.dir, "audit.log"))
	if !strings.Contains(string(audit), "walk: build retired, reimaging") {
		t.Fatal("the note is not on the audit record")
	}
	if !strings.Contains(string(audit), "walk: reimaging") {
		t.Fatal("the maintenance window is not on the audit record")
	}

	// Policy: in force, then a candidate that allows the build again.
	op.navigate(base + "/fleet/policy")
	op.waitTrue("policy", loaded("policy")+` && document.querySelector('#policy-rows tr[data-policy="fleet"]') !== null`, 30*time.Second)
	cand, _ := json.Marshal(walkPolicy(build))
	op.js(`(() => { const f = document.getElementById("dryrun-form"); f.elements.name.value = "fleet.hcl"; f.elements.content.value = ` + string(cand) + `; document.getElementById("dryrun-submit").click(); })()`)
	op.waitTrue("dry-run", `document.getElementById("dryrun-summary").getAttribute("data-changed") === "1"`, 30*time.Second)
	if c := op.text(`document.querySelector('#dryrun-rows tr[data-agent-id="edge-walk"]').innerText`); !strings.Contains(c, "UNTRUSTED/POLICY_DENIED") || !strings.Contains(c, "TRUSTED/OK") {
		t.Fatalf("dry-run row %q", c)
	}
	shot(op, "6-policy-dry-run")

	// The agent moves to a certificate that ends in 3 days: the detail
	// page shows it from the first pulse made with it, highlighted.
	f.stopAgent("edge-walk", syscall.SIGTERM)
	short, err := pki.Issue(f.ca, pki.Request{Role: pki.RoleAgent, ID: "edge-walk", Validity: 72 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := short.WriteFiles(filepath.Join(filepath.Dir(agentCfg), "agent.pem"), filepath.Join(filepath.Dir(agentCfg), "agent-key.pem"), true); err != nil {
		t.Fatal(err)
	}
	f.launchAgent("edge-walk", agentCfg, agentBin)
	want := short.Cert.NotAfter.UTC().Format("2006-01-02 15:04:05")
	for deadline := time.Now().Add(45 * time.Second); ; {
		op.navigate(base + "/fleet/agent?id=edge-walk")
		op.waitTrue("agent detail", loaded("agent"), 30*time.Second)
		if strings.Contains(op.text(expiry+`.textContent`), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page still shows certificate expiry %q, want %s", op.text(expiry+`.textContent`), want)
		}
		time.Sleep(time.Second)
	}
	if op.text(expiry+`.classList.contains("cert-soon")`) != "true" || !strings.Contains(op.text(expiry+`.textContent`), "expires within 14 days") {
		t.Fatalf("a certificate ending in 3 days is not highlighted: %q class %q", op.text(expiry+`.textContent`), op.text(expiry+`.className`))
	}
	shot(op, "6b-agent-certificate-expiring")

	// An operator with a token: the session opened from ?token=.
	tok := startBrowser(t, chromiumBin, t.TempDir(), spki)
	tok.navigate(base + "/?token=" + token)
	tok.navigate(base + "/fleet/agents?verdict=UNTRUSTED")
	tok.waitTrue("token session", loaded("agents")+` && document.querySelector('#agent-list-rows tr[data-agent-id="edge-walk"]') !== null`, 30*time.Second)
	if s := tok.text(`document.getElementById("session").textContent`); !strings.Contains(s, "token:bob") {
		t.Fatalf("token session signed in as %q", s)
	}
	shot(tok, "7-token-session")
}

func listAlerts(t *testing.T, s *store.Store, id string) []*store.Alert {
	t.Helper()
	al, err := s.ListAlerts(t.Context(), store.AlertFilter{AgentID: id, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	return al
}
