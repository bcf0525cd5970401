package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/testutil"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator"
	"github.com/pulse-attest/pulse/verifier/store"
)

// stopInterval is the heartbeat interval of TestPlannedStop; missed = 2,
// so a silent agent is BLINDED within about 2 intervals plus a sweep.
const stopInterval = 2 * time.Second

const stopPolicy = `
policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
    missed   = 2
    grace    = "2s"
  }
  measured_boot {
    secure_boot {}
  }
  planned_stop {
    stopped_by  = ["systemd"]
    max_offline = "1h"
  }
}
`

// TestPlannedStop: real pulse-agent processes (through the launcher) on
// swtpm, a real pulse-verifier, real signals. SIGTERM — what systemctl
// stop sends — ends the agent with a final quoted pulse, and the verifier
// records OFFLINE/AGENT_STOPPED instead of BLINDED: severity 4 inside a
// maintenance window opened with pulsectl (audit-logged), severity 2
// without one; no BLINDED and no compromised alert while the agent stays
// away within its shelter; an agent that stays away past a (short) window
// is BLINDED as usual, and one that comes back is TRUSTED. SIGKILL leaves
// the agent silent: BLINDED with a compromised alert, as before.
func TestPlannedStop(t *testing.T) {
	var tpms []*simulator.Swtpm
	for range 4 {
		sw := startTPM(t, "rhel8-uefi", false)
		if sw == nil {
			return
		}
		tpms = append(tpms, sw)
	}
	f := newFleet(t, stopPolicy, tpms...)
	adminArgs := enableAdmin(t, f)
	ids := []string{"edge-window", "edge-nowindow", "edge-kill", "edge-shortwindow"}
	for i, id := range ids {
		f.launchAgent(id, f.agentConfig(id, tpms[i], ""), bin("pulse-agent"))
	}
	for _, id := range ids {
		f.waitVerdict(id, trusted, "REASON_OK", 45*time.Second)
	}
	out := run(t, "pulsectl", append([]string{"agents", "maintenance"}, append(adminArgs, "edge-window", "--for", "30m", "--reason", "kernel update")...)...)
	if !strings.Contains(out, "maintenance window for edge-window open until") {
		t.Fatalf("pulsectl agents maintenance: %s", out)
	}
	run(t, "pulsectl", append([]string{"agents", "maintenance"}, append(adminArgs, "edge-shortwindow", "--for", "12s")...)...)
	if out := run(t, "pulsectl", append([]string{"agents", "maintenance", "--list"}, adminArgs...)...); !strings.Contains(out, "edge-window") || !strings.Contains(out, "kernel update") {
		t.Fatalf("maintenance list: %s", out)
	}
	audit, err := os.ReadFile(filepath.Join(f.dir, "audit.log"))
	if err != nil || !strings.Contains(string(audit), "operator_maintenance") || !strings.Contains(string(audit), "alice") {
		t.Fatalf("the maintenance window is not in the audit log (%v)", err)
	}

	stopped := time.Now()
	f.stopAgent("edge-window", syscall.SIGTERM)
	f.stopAgent("edge-nowindow", syscall.SIGTERM)
	f.stopAgent("edge-shortwindow", syscall.SIGTERM)
	f.stopAgent("edge-kill", syscall.SIGKILL)

	f.waitVerdict("edge-window", "VERDICT_OFFLINE", "REASON_AGENT_STOPPED", 10*time.Second)
	f.waitVerdict("edge-nowindow", "VERDICT_OFFLINE", "REASON_AGENT_STOPPED", 10*time.Second)
	f.waitVerdict("edge-shortwindow", "VERDICT_OFFLINE", "REASON_AGENT_STOPPED", 10*time.Second)
	f.waitVerdict("edge-kill", "VERDICT_BLINDED", "REASON_SILENT", 20*time.Second)

	// Well past interval x missed and several sweeps: the stopped agents
	// are still OFFLINE, never BLINDED.
	time.Sleep(time.Until(stopped.Add(5 * stopInterval)))
	for _, c := range []struct {
		id      string
		wantSev int
	}{{"edge-window", 4}, {"edge-nowindow", 2}, {"edge-shortwindow", 4}} {
		t.Run(c.id, func(t *testing.T) {
			f.waitVerdict(c.id, "VERDICT_OFFLINE", "REASON_AGENT_STOPPED", time.Second)
			if al := f.alertsOf(c.id, "agent_stopped"); len(al) != 1 || al[0].Severity != c.wantSev {
				t.Fatalf("agent_stopped alerts %+v, want one of severity %d", al, c.wantSev)
			}
			if n := f.alerts(c.id, "compromised"); n != 0 {
				t.Fatalf("%d compromised alerts after a planned stop", n)
			}
			f.noVerdictInHistory(c.id, pulsev1.Verdict_VERDICT_BLINDED)
			log, err := os.ReadFile(filepath.Join(f.dir, "agent-"+c.id+".log"))
			if err != nil || !strings.Contains(string(log), "final pulse sent: planned stop") || !strings.Contains(string(log), "verifier recorded the planned stop") {
				t.Fatalf("the agent did not log its final pulse and the verifier's answer (%v)", err)
			}
		})
	}
	if n := f.alerts("edge-kill", "compromised"); n != 1 {
		t.Fatalf("SIGKILL: %d compromised alerts, want 1", n)
	}
	if al := f.alertsOf("edge-kill", "agent_stopped"); len(al) != 0 {
		t.Fatalf("SIGKILL raised agent_stopped: %+v", al)
	}

	// Past the short window: judged as usual (BLINDED, compromised).
	f.waitVerdict("edge-shortwindow", "VERDICT_BLINDED", "REASON_SILENT", 20*time.Second)
	if n := f.alerts("edge-shortwindow", "compromised"); n != 1 {
		t.Fatalf("past its window: %d compromised alerts, want 1", n)
	}
	// Back from maintenance: TRUSTED again.
	f.launchAgent("edge-window", filepath.Join(f.dir, "agent-edge-window", "agent.hcl"), bin("pulse-agent"))
	f.waitVerdict("edge-window", trusted, "REASON_OK", 30*time.Second)
}

// TestPlannedStopBySystemd: with eBPF, Sentinel records who sent the
// SIGTERM; a sender named "systemd" (a process whose command name is
// systemd, as the service manager's is) matches the policy's stopped_by,
// so the stop is severity 4 without any maintenance window, and the
// verifier's message names the sender. The same agent stopped by "kill"
// is severity 2.
func TestPlannedStopBySystemd(t *testing.T) {
	testutil.RequireRoot(t)
	sh := testutil.RequireTools(t, "dash")["dash"]
	if sh == "" {
		return
	}
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleet(t, stopPolicy, sw)
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	pinDir := "/sys/fs/bpf/pulse-e2e-stop-" + suffix
	t.Cleanup(func() { bpf.RemoveAll(pinDir) })
	const id = "edge-systemd"
	cfg := f.agentConfig(id, sw, "")
	replaceInFile(t, cfg, "bpf {\n  enabled = false\n}", "bpf {\n  enabled = true\n  pin_dir = \""+pinDir+"\"\n}")
	// A shell whose command name is "systemd" sends the signal.
	systemd := filepath.Join(f.dir, "systemd")
	copyBinary(t, sh, systemd, nil)
	kill := filepath.Join(f.dir, "kill")
	copyBinary(t, sh, kill, nil)

	for _, c := range []struct {
		sender  string
		wantSev int
	}{{systemd, 4}, {kill, 2}} {
		name := filepath.Base(c.sender)
		t.Run(name, func(t *testing.T) {
			f.launchAgent(id, cfg, bin("pulse-agent"))
			f.waitVerdict(id, trusted, "REASON_OK", 45*time.Second)
			before := len(f.alertsOf(id, "agent_stopped"))
			f.mu.Lock()
			p := f.agents[id]
			delete(f.agents, id)
			f.mu.Unlock()
			sent := time.Now()
			if out, err := exec.Command(c.sender, "-c", fmt.Sprintf("kill -TERM %d", p.cmd.Process.Pid)).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s", name, err, out)
			}
			select {
			case <-p.done:
				t.Logf("SIGTERM to exit, final pulse included: %s", time.Since(sent).Round(time.Millisecond))
			case <-time.After(20 * time.Second):
				t.Fatal("the agent did not stop on SIGTERM")
			}
			v := f.waitVerdict(id, "VERDICT_OFFLINE", "REASON_AGENT_STOPPED", 10*time.Second)
			t.Logf("verdict: %s", v.Message)
			if !strings.Contains(v.Message, strconv.Quote(name)) {
				t.Fatalf("the verdict does not name the sender %q: %s", name, v.Message)
			}
			al := f.alertsOf(id, "agent_stopped")
			if len(al) != before+1 || al[0].Severity != c.wantSev {
				t.Fatalf("agent_stopped alerts %+v, want a new one of severity %d", al, c.wantSev)
			}
		})
	}
}

// enableAdmin restarts the fleet's verifier with an admin listener that
// takes operator certificates and returns pulsectl's flags for operator
// alice.
func enableAdmin(t *testing.T, f *fleet) []string {
	t.Helper()
	f.verifier.stop(syscall.SIGTERM)
	adminPort := freePort(t)
	replaceInFile(t, f.vcfg, `agent_ca = "pki/ca.pem"`, "agent_ca = \"pki/ca.pem\"\n  operator_ca = \"pki/ca.pem\"")
	cfg, err := os.ReadFile(f.vcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, []byte(fmt.Sprintf("admin_listen = \"127.0.0.1:%d\"\n", adminPort))...)
	if err := os.WriteFile(f.vcfg, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	f.startVerifier()
	pkiDir := filepath.Join(f.dir, "pki")
	run(t, "pulsectl", "pki", "issue", "--dir", pkiDir, "--role", "operator", "--id", "alice", "--out", filepath.Join(pkiDir, "alice"))
	return []string{"--admin", fmt.Sprintf("https://127.0.0.1:%d", adminPort), "--ca", f.caFile,
		"--cert", filepath.Join(pkiDir, "alice.pem"), "--key", filepath.Join(pkiDir, "alice-key.pem")}
}

// alertsOf lists the agent's alerts of a kind, newest first.
func (f *fleet) alertsOf(id, kind string) []*store.Alert {
	f.t.Helper()
	all, err := f.store().ListAlerts(context.Background(), store.AlertFilter{AgentID: id})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []*store.Alert
	for _, a := range all {
		if a.Kind == kind {
			out = append(out, a)
		}
	}
	return out
}

// noVerdictInHistory fails when the agent's history holds verdict v.
func (f *fleet) noVerdictInHistory(id string, v pulsev1.Verdict) {
	f.t.Helper()
	hist, err := f.store().History(context.Background(), id, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, e := range hist {
		if e.Verdict == int32(v) {
			f.t.Fatalf("%s was %s at %s: %s", id, v, e.At.Format(time.RFC3339Nano), e.Message)
		}
	}
}
