package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/testutil"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/verifier/store"
)

// The fault drills of docs/operations.md ("Fault drills"): each breaks one
// part under a running fleet with real processes and signals and asserts
// that nothing is lost or doubled and that no false alert is raised.

// faultPolicy: heartbeat every 2 s, BLINDED after two missed pulses, and a
// grace of 4 s after the verifier's start or its store's return.
const faultPolicy = `
policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "2s"
    missed   = 2
    grace    = "4s"
  }
  measured_boot {
    secure_boot {}
  }
}
`

// faultDeadline is interval × missed of faultPolicy: a fault held longer
// than this has every agent overdue by the verifier's clock.
const faultDeadline = 4 * time.Second

// metric reads one sample of the verifier's /metrics (admin listener):
// the series name with every label of labels ("" when none); ok false
// when the series is absent.
func (d *drill) metric(t *testing.T, name string, labels ...string) (float64, bool) {
	t.Helper()
	resp, err := d.adminClient(t).Get(d.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && strings.Contains(line, l)
		}
		if !match {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		return v, true
	}
	return 0, false
}

// openStore opens the verifier's store (read side of a drill).
func openStore(t *testing.T, engine, dsn string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), engine, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// noFalseAlarm fails on any BLINDED verdict in the agents' histories since
// from and on any alert at all.
func noFalseAlarm(t *testing.T, st *store.Store, from time.Time, ids ...string) {
	t.Helper()
	ctx := context.Background()
	for _, id := range ids {
		hist, err := st.History(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range hist {
			if e.At.After(from) && e.Verdict == int32(pulsev1.Verdict_VERDICT_BLINDED) {
				t.Errorf("agent %s: false BLINDED at %s: %s", id, e.At.Format(time.RFC3339Nano), e.Message)
			}
		}
	}
	alerts, err := st.ListAlerts(ctx, store.AlertFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		t.Errorf("false alert %s severity %d for %s: %s", a.Kind, a.Severity, a.AgentID, a.Message)
	}
}

// waitPulseAfter waits until the store holds a TRUSTED pulse of agent id
// accepted after at.
func waitPulseAfter(t *testing.T, st *store.Store, id string, at time.Time, within time.Duration) *store.Agent {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		a, err := st.GetAgent(context.Background(), id)
		if err == nil && a.LastPulseAt.After(at) && a.LastVerdict == int32(pulsev1.Verdict_VERDICT_TRUSTED) {
			return a
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("agent %s: no trusted pulse after %s within %s: %v", id, at.Format(time.RFC3339Nano), within, err)
			}
			t.Fatalf("agent %s: no trusted pulse after %s within %s: last at %s, %s/%s %s", id, at.Format(time.RFC3339Nano), within,
				a.LastPulseAt.Format(time.RFC3339Nano), pulsev1.Verdict(a.LastVerdict), pulsev1.Reason(a.LastReason), a.LastMessage)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logLine returns the first line of the log at path holding every one of
// want ("" when none does).
func logLine(t *testing.T, path string, want ...string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, w := range want {
			all = all && strings.Contains(line, w)
		}
		if all {
			return line
		}
	}
	return ""
}

// fillDisk writes zeros into path until the file system is full and
// returns how many bytes it took.
func fillDisk(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestDrillSQLiteFullDisk: the verifier's SQLite store on a 2 MiB tmpfs
// that fills up under a running agent. While it is full every pulse is
// refused with Unavailable (nothing of it recorded) and the verifier says
// why in its log ("database or disk is full") and in
// pulse_store_errors_total{op="pulse"}; the agent keeps retrying. The
// fault is held past the agent's deadline. Once space returns the agent
// is TRUSTED again by a pulse accepted after the return, without a
// BLINDED verdict or any alert, and PRAGMA integrity_check says ok.
func TestDrillSQLiteFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "mounting a tmpfs needs root")
		return
	}
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		testutil.Unavailable(t, "mount -t tmpfs: %v: %s", err, out)
		return
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	dbPath := filepath.Join(mnt, "verifier.db")
	f := newFleet(t, faultPolicy, sw)
	f.verifier.stop(syscall.SIGTERM)
	replaceInFile(t, f.vcfg, `dsn    = "verifier.db"`, fmt.Sprintf("dsn    = %q", dbPath))
	d := newDrill(t, f)
	st := openStore(t, store.EngineSQLite, dbPath)

	const id = "edge-full"
	f.launchAgent(id, f.agentConfig(id, sw, ""), bin("pulse-agent"))
	f.waitVerdict(id, trusted, "REASON_OK", 30*time.Second)
	start := time.Now()
	if up, ok := d.metric(t, "pulse_store_up"); !ok || up != 1 {
		t.Fatalf("pulse_store_up = %v (present %t) with a healthy store, want 1", up, ok)
	}
	before, _ := d.metric(t, "pulse_store_errors_total", `op="pulse"`)

	// The WAL file reuses its space after each checkpoint, so a disk that
	// fills up between checkpoints is noticed only when the WAL or the
	// database must grow: truncate the WAL first (a checkpoint in TRUNCATE
	// mode, as an operator's backup does), so the next commit must grow.
	if _, err := st.DB().ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	n := fillDisk(t, filler)
	full := time.Now()
	t.Logf("tmpfs full after %d more bytes", n)
	waitFor(t, "a pulse refused for the full disk", func() bool {
		v, _ := d.metric(t, "pulse_store_errors_total", `op="pulse"`)
		return v > before
	})
	if line := logLine(t, f.verifier.log, "store unavailable", "full"); line == "" {
		t.Error("the verifier's log does not say the store is unavailable because the disk is full")
	} else {
		t.Logf("verifier: %s", line)
	}
	// Held past the agent's deadline and two sweeps.
	time.Sleep(faultDeadline + 3*time.Second)
	if !f.verifier.running() {
		t.Fatal("the verifier exited on a full disk")
	}
	refused, _ := d.metric(t, "pulse_store_errors_total", `op="pulse"`)
	if a, err := st.GetAgent(context.Background(), id); err != nil {
		t.Fatal(err)
	} else if a.LastPulseAt.After(full.Add(time.Second)) {
		t.Errorf("a pulse was recorded at %s on a full disk (full since %s)", a.LastPulseAt.Format(time.RFC3339Nano), full.Format(time.RFC3339Nano))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	a := waitPulseAfter(t, st, id, back, 2*faultDeadline)
	t.Logf("full for %s, %.0f pulses refused; first pulse %s after space returned", back.Sub(full).Round(time.Millisecond), refused-before, a.LastPulseAt.Sub(back).Round(time.Millisecond))
	// Past the grace and the deadline: every sweep that could find the
	// agent silent has run.
	time.Sleep(faultDeadline + 2*time.Second)
	f.waitVerdict(id, trusted, "REASON_OK", 5*time.Second)
	noFalseAlarm(t, st, start, id)
	if up, _ := d.metric(t, "pulse_store_up"); up != 1 {
		t.Errorf("pulse_store_up = %v after the disk has space again, want 1", up)
	}
	var check string
	if err := st.DB().QueryRowContext(context.Background(), "PRAGMA integrity_check").Scan(&check); err != nil {
		t.Fatal(err)
	}
	if check != "ok" {
		t.Fatalf("PRAGMA integrity_check after the full disk: %s", check)
	}
}

// TestDrillSwtpmKilled: the swtpm under a running agent is killed
// (SIGKILL) and started again from its state, booting the same firmware
// (the TPM lost power: a TPM reset). The agent, not restarted and with no
// operator action, is TRUSTED again by a pulse from the new boot (another
// TPM reset count), whose verdict carries the reboot note, with a new
// runtime log for the new boot; no BLINDED verdict and no alert.
func TestDrillSwtpmKilled(t *testing.T) {
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	// The agent reaches the TPM through a link this test moves to the new
	// swtpm's socket (a restarted simulator may get another socket path).
	link := filepath.Join(t.TempDir(), "tpm.sock")
	if err := os.Symlink(sw.ServerSocket(), link); err != nil {
		t.Fatal(err)
	}
	bootLog, err := os.ReadFile(sw.BootLogPath())
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(t, faultPolicy, sw)
	const id = "edge-tpm"
	cfg := f.agentConfig(id, sw, "")
	replaceInFile(t, cfg, sw.Spec(), "swtpm:"+link)
	f.launchAgent(id, cfg, bin("pulse-agent"))
	f.waitVerdict(id, trusted, "REASON_OK", 30*time.Second)
	st := f.store()
	start := time.Now()
	before, err := st.GetAgent(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(sw.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	time.Sleep(3 * time.Second) // pulses fail on a missing TPM
	if err := sw.Stop(); err != nil {
		t.Fatal(err)
	}
	sw2, err := simulator.Start(simulator.Options{StateDir: sw.StateDir(), Logger: simtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sw2.Stop() })
	if _, err := sw2.Boot(bootLog); err != nil {
		t.Fatal(err)
	}
	tmp := link + ".new"
	if err := os.Symlink(sw2.ServerSocket(), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()

	a := waitNewBoot(t, st, id, before, 30*time.Second)
	t.Logf("swtpm down for %s; first trusted pulse of the new boot %s after its restart", restarted.Sub(killed).Round(time.Millisecond), a.LastPulseAt.Sub(restarted).Round(time.Millisecond))
	f.waitVerdict(id, trusted, "REASON_OK", 10*time.Second)
	if line := logLine(t, f.verifier.log, "pulse note", "agent_id="+id, "REASON_REBOOTED"); line == "" {
		t.Error("the verifier noted no reboot for the new boot")
	}
	agentLog := filepath.Join(f.dir, "agent-"+id+".log")
	if line := logLine(t, agentLog, "started a new runtime log", "the tpm was reset"); line == "" {
		t.Error("the agent started no new runtime log for the new boot")
	} else {
		t.Logf("agent: %s", line)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(cfg), "runtime.cel.prev")); err != nil {
		t.Errorf("the previous boot's runtime log was not kept: %v", err)
	}
	if a.ResetCount == before.ResetCount {
		t.Errorf("TPM reset count %d unchanged after the swtpm restart", a.ResetCount)
	}
	time.Sleep(faultDeadline + 2*time.Second)
	f.waitVerdict(id, trusted, "REASON_OK", 5*time.Second)
	noFalseAlarm(t, st, start, id)
	if !f.agents[id].running() {
		t.Fatal("the agent exited")
	}
}
