package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/verifier/store"
)

// powerCuts is the number of power cuts in a row of the drill.
const powerCuts = 10

// TestPowerCutDrill is the power-loss drill of docs/agent.md ("TPM
// lockout"): ten power cuts in a row on swtpm with its default lockout
// settings (three failures, 1000 s). Each cut kills the agent (SIGKILL: no
// orderly stop), resets the TPM with `pulsectl sim reboot --unclean` (no
// TPM2_Shutdown first), empties /run (the runtime log) as a reboot does,
// and starts the agent again through the launcher. After every cut the
// agent is TRUSTED in the new boot, and at the end the TPM's lockout
// counter is 0 and no alert was raised. (With an AK without noDA the
// third cut locks the TPM out: tpm.TestAKSurvivesUncleanReboots.)
func TestPowerCutDrill(t *testing.T) {
	sw := startTPM(t, "rhel8-uefi", true)
	if sw == nil {
		return
	}
	f := newFleet(t, fleetPolicy, sw)
	agentBin := filepath.Join(f.dir, "pulse-agent")
	copyBinary(t, bin("pulse-agent"), agentBin, nil)
	cfg := f.agentConfig("edge-1", sw, "")
	runtimeLog := filepath.Join(filepath.Dir(cfg), "runtime.cel")
	bootLog, err := os.ReadFile(sw.BootLogPath())
	if err != nil {
		t.Fatal(err)
	}
	fixture := filepath.Join(t.TempDir(), "firmware.log")
	if err := os.WriteFile(fixture, bootLog, 0o644); err != nil {
		t.Fatal(err)
	}
	f.launchAgent("edge-1", cfg, agentBin)
	f.waitVerdict("edge-1", trusted, "REASON_OK", 30*time.Second)
	st := f.store()
	ctx := context.Background()
	before, err := st.GetAgent(ctx, "edge-1")
	if err != nil {
		t.Fatal(err)
	}

	for i := 1; i <= powerCuts; i++ {
		f.stopAgent("edge-1", syscall.SIGKILL)
		out := run(t, "pulsectl", "sim", "reboot", "--state", sw.StateDir(), "--boot-log", fixture, "--unclean")
		if !strings.Contains(out, "tpm_spec=") {
			t.Fatalf("power cut %d: pulsectl sim reboot printed %q", i, out)
		}
		// /run is emptied by the reboot: the runtime log and its .meta and .lock.
		files, _ := filepath.Glob(runtimeLog + "*")
		for _, p := range files {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		f.launchAgent("edge-1", cfg, agentBin)
		a := waitNewBoot(t, st, "edge-1", before, 30*time.Second)
		if v := f.waitVerdict("edge-1", trusted, "REASON_OK", 10*time.Second); v.Verdict != trusted {
			t.Fatalf("power cut %d: %+v", i, v)
		}
		t.Logf("power cut %d: TRUSTED in the new boot", i)
		before = a
	}
	f.stopAgent("edge-1", syscall.SIGKILL)

	dev, err := tpm.Open(sw.Spec(), simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	lo, err := dev.Lockout()
	dev.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d power cuts: lockout counter %d of %d, in lockout %t, last shutdown orderly %t", powerCuts, lo.Counter, lo.MaxAuthFail, lo.InLockout, lo.Orderly)
	if lo.Counter != 0 || lo.InLockout || lo.MaxAuthFail != 3 {
		t.Fatalf("after %d power cuts the TPM's lockout state is %+v; want counter 0 of swtpm's default 3", powerCuts, lo)
	}
	if lo.Orderly {
		t.Fatal("the TPM reports its last shutdown orderly: the reboots were not power cuts")
	}
	getcapLockout(t, sw.ServerSocket(), sw.CtrlSocket(), lo.Counter)
	alerts, err := st.ListAlerts(ctx, store.AlertFilter{AgentID: "edge-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		t.Errorf("alert raised during the drill: %s severity %d: %s", a.Kind, a.Severity, a.Message)
	}
}

// waitNewBoot waits until the verifier accepted a pulse of the agent from
// another boot (TPM reset count) than prev's.
func waitNewBoot(t *testing.T, st *store.Store, id string, prev *store.Agent, within time.Duration) *store.Agent {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		a, err := st.GetAgent(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if a.ResetCount != prev.ResetCount && a.LastPulseAt.After(prev.LastPulseAt) {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s: no accepted pulse from a new boot within %s (reset count %d, last verdict %d: %s)",
				id, within, a.ResetCount, a.LastVerdict, a.LastMessage)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// getcapLockout cross-checks the lockout counter with tpm2-tools, an
// independent TPM client, when it is installed (its swtpm TCTI finds the
// control socket at PATH.ctrl: symlinks give it that layout).
func getcapLockout(t *testing.T, server, ctrl string, want uint32) {
	t.Helper()
	if _, err := exec.LookPath("tpm2_getcap"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tpm2_getcap not installed (scripts/install-deps.sh installs tpm2-tools): %v", err)
		}
		t.Logf("tpm2_getcap not installed (Debian package tpm2-tools): lockout counter not cross-checked")
		return
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "tpm.sock")
	if err := os.Symlink(server, sock); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(ctrl, sock+".ctrl"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tpm2_getcap", "-T", "swtpm:path="+sock, "properties-variable").CombinedOutput()
	if err != nil {
		t.Fatalf("tpm2_getcap properties-variable: %v\n%s", err, out)
	}
	t.Logf("tpm2_getcap properties-variable:\n%s", out)
	wantLine := fmt.Sprintf("TPM2_PT_LOCKOUT_COUNTER: 0x%X", want)
	if !strings.Contains(string(out), wantLine) {
		t.Fatalf("tpm2_getcap does not report %q", wantLine)
	}
}
