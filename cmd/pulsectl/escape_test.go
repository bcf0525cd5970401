package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// hostile is what an agent can put in the strings it reports: a clear
// screen, a carriage return (overwrite the line), a bell and invalid UTF-8.
const hostile = "x\x1b[2J\rEVIL\x07\xff"

// hostileEscaped is how text output must show it.
const hostileEscaped = `x\x1b[2J\rEVIL\a\xff`

// assertTerminalSafe fails when out holds anything but printable text,
// spaces and newlines.
func assertTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("%s: output is not valid UTF-8: %q", what, out)
	}
	for _, r := range out {
		if r != '\n' && !unicode.IsPrint(r) {
			t.Fatalf("%s: output holds the raw control %U: %q", what, r, out)
		}
	}
}

// writeVerifierConfig writes a verifier configuration whose store is a
// sqlite file in dir, and returns its path and the loaded configuration.
func writeVerifierConfig(t *testing.T, dir string) (string, *config.Config) {
	t.Helper()
	for _, n := range []string{"v.pem", "v-key.pem", "ca.pem", "policy.hcl", "ek-root.pem"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "verifier.hcl")
	src := `listen = "127.0.0.1:7443"
tls {
  cert     = "v.pem"
  key      = "v-key.pem"
  agent_ca = "ca.pem"
}
store {
  engine = "sqlite"
  dsn    = "state.db"
}
policy_files = ["policy.hcl"]
enrollment {
  ek_roots = ["ek-root.pem"]
}
allow_tpmless = true
`
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, cfg
}

// TestAgentsCommandsEscapeAgentStrings: an agent ID, verdict message and
// quarantined list holding escape sequences are printed escaped by agents
// list and agents show, and unchanged (JSON-escaped) with --json.
func TestAgentsCommandsEscapeAgentStrings(t *testing.T) {
	dir := t.TempDir()
	cfgPath, cfg := writeVerifierConfig(t, dir)
	ctx := context.Background()
	st, err := store.Open(ctx, cfg.Store.Engine, cfg.Store.DSN)
	if err != nil {
		t.Fatal(err)
	}
	id := "edge-" + hostile
	for _, a := range []*store.Agent{
		{ID: "edge-plain", Partition: "default", EnrolledAt: time.Now()},
		{ID: id, Partition: "part-" + hostile, EnrolledAt: time.Now()},
	} {
		if err := st.EnrollAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	msg := "binary /opt/" + hostile + " is not allowed\nsecond line"
	quarantined := "10.0.0.1," + hostile
	// agent_version as a store older than the verifier's sanitising (or a
	// hand-edited one) may hold it: agents show still escapes it.
	if _, err := st.DB().ExecContext(ctx, `UPDATE agents SET last_message = ?, quarantined = ?, agent_version = ? WHERE id = ?`, msg, quarantined, "v1-"+hostile, id); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		cmd  string
		args []string
		want []string
	}{
		{"list", "agents list", []string{"--config", cfgPath}, []string{"edge-" + hostileEscaped, "edge-plain"}},
		{"show", "agents show", []string{"--config", cfgPath, id}, []string{
			"agent:     edge-" + hostileEscaped + " (partition part-" + hostileEscaped + ",",
			"version:   v1-" + hostileEscaped + "\n",
			"message:   binary /opt/" + hostileEscaped + " is not allowed second line\n",
			"quarantined by this agent: 10.0.0.1, " + hostileEscaped + "\n",
		}},
		{"show unknown agent", "agents show", []string{"--config", cfgPath, "nope-" + hostile}, []string{"nope-" + hostileEscaped}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, out, errOut := runCmd(t, tc.cmd, tc.args...)
			assertTerminalSafe(t, tc.cmd+" stdout", out)
			assertTerminalSafe(t, tc.cmd+" stderr", errOut)
			for _, w := range tc.want {
				if !strings.Contains(out+errOut, w) {
					t.Errorf("output lacks %q:\n%s%s", w, out, errOut)
				}
			}
		})
	}

	// JSON output is unchanged: the exact stored strings, JSON-escaped.
	code, out, errOut := runCmd(t, "agents show", "--config", cfgPath, "--json", id)
	if code != 0 {
		t.Fatalf("agents show --json = %d: %s", code, errOut)
	}
	var v agentView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	// encoding/json replaces invalid UTF-8 with U+FFFD; everything else
	// round-trips.
	clean := strings.ToValidUTF8(hostile, "\uFFFD")
	if v.ID != "edge-"+clean || v.Message != strings.ToValidUTF8(msg, "\uFFFD") || len(v.Quarantined) != 2 || v.Quarantined[1] != clean {
		t.Errorf("JSON view %+v", v)
	}
	if strings.ContainsAny(out, "\x1b\r\x07") {
		t.Errorf("JSON output holds raw control characters: %q", out)
	}
}

// TestAdminCommandsEscapeAgentStrings: alerts list and agents quarantine
// print the alert's agent ID and message and the quarantine's address,
// offender and reason escaped; ordinary text and multi-line messages stay
// readable.
func TestAdminCommandsEscapeAgentStrings(t *testing.T) {
	e := startAdminServer(t)
	now := time.Now().UTC().Truncate(time.Second)
	e.be.alerts = append(e.be.alerts, admin.Alert{ID: "a-3", AgentID: "edge-" + hostile, Kind: "binary_changed", Severity: 1,
		Reason: "REASON_BINARY_CHANGED", Message: "agent binary /opt/" + hostile + " changed", CreatedAt: now})
	e.be.quarantine = append(e.be.quarantine, admin.Quarantine{Address: "10.0.0.7" + hostile, Offender: "edge-" + hostile,
		Reason: "shield: " + hostile, Since: now})

	// The admin API's JSON already turned the invalid byte into U+FFFD; the
	// control characters arrive intact and must be escaped here.
	esc := `x\x1b[2J\rEVIL\a` + "\uFFFD"
	tests := []struct {
		name string
		cmd  string
		want []string
	}{
		{"alerts list", "alerts list", []string{"edge-" + esc, "agent binary /opt/" + esc + " changed", "no pulse for 95s"}},
		{"quarantine", "agents quarantine", []string{"10.0.0.7" + esc, "edge-" + esc, "shield: " + esc, "10.0.0.66"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.cmd, e.byToken()...)
			if code != 0 {
				t.Fatalf("%s = %d: %s", tc.cmd, code, errOut)
			}
			assertTerminalSafe(t, tc.cmd, out)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			// One row per entry: nothing folded a row into two.
			if n := strings.Count(out, "\n"); n != 4 && tc.cmd == "alerts list" {
				t.Errorf("%d lines:\n%s", n, out)
			}
		})
	}

	// JSON is the raw data.
	code, out, _ := runCmd(t, "alerts list", e.byToken("--json")...)
	var alerts []admin.Alert
	if code != 0 || json.Unmarshal([]byte(out), &alerts) != nil {
		t.Fatalf("alerts list --json = %d: %s", code, out)
	}
	if got := alerts[len(alerts)-1].AgentID; got != "edge-"+strings.ToValidUTF8(hostile, "\uFFFD") {
		t.Errorf("JSON agent ID %q", got)
	}

	// An error that quotes what the operator (or an agent, through an
	// alert ID) gave is escaped as well.
	_, _, errOut := runCmd(t, "alerts ack", e.byToken("a-"+hostile)...)
	assertTerminalSafe(t, "alerts ack stderr", errOut)
	if !strings.Contains(errOut, "a-"+hostileEscaped) {
		t.Errorf("alerts ack error: %q", errOut)
	}
}

// TestAuditVerifyEscapesLogContent: a broken audit log whose line holds an
// escape sequence, and a path holding one, are reported escaped.
func TestAuditVerifyEscapesLogContent(t *testing.T) {
	path, _ := writeAuditLog(t, 2)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(filepath.Dir(path), "audit-"+hostile+".jsonl")
	if err := os.WriteFile(bad, append(raw, []byte(hostile+"\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runAuditCmd(t, "--file", bad)
	if code != 1 {
		t.Fatalf("exit %d: %q %q", code, out, errOut)
	}
	assertTerminalSafe(t, "audit verify stdout", out)
	assertTerminalSafe(t, "audit verify stderr", errOut)
	if !strings.Contains(out, "broken: "+filepath.Dir(bad)+"/audit-"+hostileEscaped+".jsonl: first broken record seq 3 at line 3") {
		t.Errorf("audit verify output: %q", out)
	}
}
