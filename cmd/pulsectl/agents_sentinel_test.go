package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestAgentsShowSentinelEvents: agents show prints the agent's last
// Sentinel records (who signalled it: pid, comm, uid; the verifier's
// finding), escaping what the agent reported, and --json carries them.
func TestAgentsShowSentinelEvents(t *testing.T) {
	dir := t.TempDir()
	cfgPath, cfg := writeVerifierConfig(t, dir)
	ctx := context.Background()
	st, err := store.Open(ctx, cfg.Store.Engine, cfg.Store.DSN)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"edge-killed", "edge-quiet"} {
		if err := st.EnrollAgent(ctx, &store.Agent{ID: id, Partition: "fleet", EnrolledAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 12, 7, 9, 30, 0, 0, time.UTC)
	evs := []store.SentinelEvent{
		{Boot: "1.0", Seq: 41, Kind: "bpf_load", At: at, SenderPID: 900, SenderComm: "ev" + hostile, Detail: "xdp " + hostile},
		{Boot: "1.0", Seq: 42, Kind: "signal", At: at, SenderPID: 4242, SenderUID: 0, SenderComm: "sh", Signal: 9,
			Detail: "SIGKILL delivered uid 0", Finding: "REASON_AGENT_SIGNALLED"},
	}
	if err := st.RecordSentinel(ctx, "edge-killed", store.SentinelCursor{Boot: "1.0", LastSeq: 42}, evs, at); err != nil {
		t.Fatal(err)
	}
	st.Close()

	code, out, errOut := runCmd(t, "agents show", "--config", cfgPath, "edge-killed")
	if code != 0 {
		t.Fatalf("agents show = %d: %s", code, errOut)
	}
	assertTerminalSafe(t, "agents show", out)
	for _, want := range []string{"sentinel:  last 2 records", "4242", "sh", "SIGKILL delivered uid 0", "REASON_AGENT_SIGNALLED", "ev" + hostileEscaped} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "  42"), strings.Index(out, "  41"); i < 0 || j < 0 || i > j {
		t.Errorf("records not newest first:\n%s", out)
	}
	code, out, errOut = runCmd(t, "agents show", "--config", cfgPath, "--json", "edge-killed")
	if code != 0 {
		t.Fatalf("agents show --json = %d: %s", code, errOut)
	}
	var v agentView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.SentinelEvents) != 2 || v.SentinelEvents[0].SenderPID != 4242 || v.SentinelEvents[0].SenderComm != "sh" ||
		v.SentinelEvents[1].SenderPID != 900 || !strings.HasPrefix(v.SentinelEvents[1].SenderComm, "ev") {
		t.Fatalf("json records %+v", v.SentinelEvents)
	}
	if _, out, _ = runCmd(t, "agents show", "--config", cfgPath, "edge-quiet"); !strings.Contains(out, "sentinel:  no records") {
		t.Errorf("agent without records:\n%s", out)
	}
}
