package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
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

	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/internal/pki"
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
	agentLog := filepath.Join(f.dir, "agent-"+id+".log")
	waitFor(t, "the agent to log the refusal", func() bool {
		return logLine(t, agentLog, "pulse failed", "Unavailable", "database or disk is full") != ""
	})
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
// swapLink points the symbolic link link at target, atomically.
func swapLink(t *testing.T, link, target string) {
	t.Helper()
	tmp := link + ".new"
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

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
	// The policy allows only this agent binary: the agent is judged on
	// its measurement in the new boot's runtime log too.
	sum := agentDigest(t, bin("pulse-agent"))
	pol := strings.Replace(faultPolicy, "  measured_boot {", fmt.Sprintf("  agent_binary {\n    allow = [%q]\n  }\n  measured_boot {", sum), 1)
	f := newFleet(t, pol, sw)
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
	// The link points nowhere until the new simulator has booted: it may
	// listen on the same socket path, and an agent reaching it between its
	// start and the end of its boot (a TPM reset and the firmware log's
	// replay) would extend the runtime PCR into a half-booted TPM.
	swapLink(t, link, link+".down")
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
	swapLink(t, link, sw2.ServerSocket())
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

// pgOutagePolicy: the load generator's agents pulse every 5 s; BLINDED
// after two missed pulses (10 s, a third of the outage), grace 10 s.
const pgOutagePolicy = `
policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = "5s"
    missed   = 2
    grace    = "10s"
  }
  measured_boot {
    secure_boot {}
  }
}
`

const (
	pgOutageAgents   = 200
	pgOutageInterval = 5 * time.Second
	pgOutage         = 30 * time.Second
)

// loadSummary is what the drills read of pulse-loadgen's JSON summary.
type loadSummary struct {
	Agents        int               `json:"agents"`
	Connected     int               `json:"connected"`
	Pulses        uint64            `json:"pulses"`
	Verdicts      map[string]uint64 `json:"verdicts"`
	Errors        map[string]uint64 `json:"errors"`
	ErrorExamples []string          `json:"error_examples"`
	MismatchCount uint64            `json:"mismatch_count"`
	Mismatches    []any             `json:"mismatches"`
	HonestStore   struct {
		Checked    int      `json:"checked"`
		Trusted    int      `json:"trusted"`
		NotTrusted []string `json:"not_trusted"`
	} `json:"honest_in_store"`
	Failures []string `json:"failures"`
}

// buildLoadgen builds cmd/pulse-loadgen into the suite's binaries.
func buildLoadgen(t *testing.T) string {
	t.Helper()
	path := bin("pulse-loadgen")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	out, err := exec.Command("go", "build", "-o", path, "../cmd/pulse-loadgen").CombinedOutput()
	if err != nil {
		t.Fatalf("building pulse-loadgen: %v\n%s", err, out)
	}
	return path
}

// pgCluster is a PostgreSQL cluster of this test's own (the suite's shared
// one serves other tests), stopped and started with pg_ctl.
type pgCluster struct {
	*pgtest.Cluster
	bin string
}

func (c *pgCluster) pgCtl(t *testing.T, args ...string) {
	t.Helper()
	cmd := append([]string{filepath.Join(c.bin, "pg_ctl"), "-D", filepath.Join(c.Dir, "data")}, args...)
	if os.Geteuid() == 0 {
		// PostgreSQL runs as user postgres under root (pgtest.Start).
		cmd = append([]string{"runuser", "-u", "postgres", "--"}, cmd...)
	}
	if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd, " "), err, out)
	}
}

// stop shuts PostgreSQL down (pg_ctl -m fast: SIGINT to the postmaster,
// every connection cut).
func (c *pgCluster) stop(t *testing.T) { c.pgCtl(t, "-m", "fast", "-w", "stop") }

// start starts it again with the options pgtest.Start gave it.
func (c *pgCluster) start(t *testing.T) {
	opts := fmt.Sprintf("-c listen_addresses='' -c unix_socket_directories=%s -c port=%d -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", c.Dir, c.Port)
	c.pgCtl(t, "-l", filepath.Join(c.Dir, "log"), "-o", opts, "-w", "-t", "60", "start")
}

// TestDrillPostgresOutage: PostgreSQL stopped for 30 s under 200 virtual
// agents (pulse-loadgen, pre-registered, pulsing every 5 s against the
// real pulse-verifier) and started again. While it is down the verifier
// answers Unavailable and the agents retry; pulse_store_up reads 0 and
// pulse_store_errors_total counts the refusals. Afterwards: every honest
// pulse answered got its deserved verdict; every TRUSTED answer is in the
// store exactly once (the agents' nonce epochs, one per committed pulse,
// add up to the TRUSTED answers, so no pulse was lost or recorded twice);
// the only errors the agents saw are Unavailable; every agent is TRUSTED
// and none was ever BLINDED; no alert was raised.
func TestDrillPostgresOutage(t *testing.T) {
	pgBin, err := pgtest.BinDir()
	if err != nil {
		testutil.Unavailable(t, "%v", err)
		return
	}
	pc, err := pgtest.Start(pgBin)
	if err != nil {
		t.Fatal(err)
	}
	c := &pgCluster{Cluster: pc, bin: pgBin}
	t.Cleanup(pc.Stop)
	admin, err := sql.Open("pgx", pc.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec("CREATE DATABASE drill"); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	dsn := pc.DSN("drill")
	loadgen := buildLoadgen(t)

	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleetWith(t, dsn, pgOutagePolicy, sw)
	d := newDrill(t, f)
	st := openStore(t, store.EnginePostgres, dsn)
	ctx := context.Background()
	// A real agent on swtpm besides the load.
	const real = "edge-pg"
	f.launchAgent(real, f.agentConfig(real, sw, ""), bin("pulse-agent"))
	f.waitVerdict(real, trusted, "REASON_OK", 30*time.Second)

	const before, after = 15 * time.Second, 25 * time.Second
	summary := filepath.Join(f.dir, "loadgen-summary.json")
	lg := f.start(loadgen, "loadgen.log", "run", "--quiet",
		"--verifier", f.addr(), "--ca", f.caFile, "--ca-key", filepath.Join(f.dir, "pki", "ca-key.pem"),
		"--store-engine", "postgres", "--store-dsn", dsn, "--preregister", "running",
		"--agents", strconv.Itoa(pgOutageAgents), "--interval", pgOutageInterval.String(), "--ramp", pgOutageInterval.String(),
		"--duration", (before + pgOutage + after).String(), "--id-prefix", "lg", "--partition", "fleet",
		"--wait-blinded=false", "--firmware-log", "../testdata/eventlogs/rhel8-uefi.bin", "--summary", summary)
	t.Cleanup(func() { lg.stop(syscall.SIGTERM) })

	// All 200 connected and TRUSTED before the outage.
	waitTrusted := func(within time.Duration) int {
		deadline := time.Now().Add(within)
		for {
			counts, err := st.CountByVerdict(ctx)
			if err != nil {
				t.Fatal(err)
			}
			n := counts[int32(pulsev1.Verdict_VERDICT_TRUSTED)]
			if n >= pgOutageAgents+1 || time.Now().After(deadline) || !lg.running() {
				return n
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	if n := waitTrusted(before + 20*time.Second); n < pgOutageAgents+1 {
		b, _ := os.ReadFile(lg.log)
		t.Fatalf("%d of %d agents TRUSTED before the outage\n%s", n, pgOutageAgents+1, tail(string(b), 30))
	}
	start := time.Now()
	t.Logf("%d load agents and %s TRUSTED; stopping PostgreSQL for %s", pgOutageAgents, real, pgOutage)

	c.stop(t)
	down := time.Now()
	waitFor(t, "pulse_store_up 0 while PostgreSQL is down", func() bool {
		v, ok := d.metric(t, "pulse_store_up")
		return ok && v == 0
	})
	time.Sleep(time.Until(down.Add(pgOutage)))
	refusedPulses, _ := d.metric(t, "pulse_store_errors_total", `op="pulse"`)
	refusedChallenges, _ := d.metric(t, "pulse_store_errors_total", `op="challenge"`)
	failedSweeps, _ := d.metric(t, "pulse_store_errors_total", `op="sweep"`)
	c.start(t)
	back := time.Now()
	t.Logf("PostgreSQL down %s: %.0f pulses and %.0f challenges refused, %.0f sweeps failed", back.Sub(down).Round(time.Millisecond), refusedPulses, refusedChallenges, failedSweeps)
	if refusedPulses+refusedChallenges == 0 || failedSweeps == 0 {
		t.Errorf("the outage does not show in pulse_store_errors_total: pulse %v, challenge %v, sweep %v", refusedPulses, refusedChallenges, failedSweeps)
	}
	waitFor(t, "pulse_store_up 1 once PostgreSQL is back", func() bool {
		v, _ := d.metric(t, "pulse_store_up")
		return v == 1
	})
	if !f.verifier.running() {
		t.Fatal("the verifier exited during the outage")
	}

	select {
	case <-lg.done:
	case <-time.After(after + 2*time.Minute):
		t.Fatal("pulse-loadgen did not finish")
	}
	var sum loadSummary
	b, err := os.ReadFile(summary)
	if err != nil {
		out, _ := os.ReadFile(lg.log)
		t.Fatalf("no loadgen summary: %v\n%s", err, tail(string(out), 30))
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	t.Logf("loadgen: %d pulses answered %v; errors %v", sum.Pulses, sum.Verdicts, sum.Errors)
	for k, n := range sum.Errors {
		if !strings.HasSuffix(k, "/Unavailable") {
			t.Errorf("%d agent errors %s (want only Unavailable): %q", n, k, sum.ErrorExamples)
		}
	}
	if sum.MismatchCount != 0 {
		t.Errorf("%d pulses did not get the verdict they deserved: %v", sum.MismatchCount, sum.Mismatches)
	}
	if sum.Connected != pgOutageAgents || sum.HonestStore.Checked != pgOutageAgents || sum.HonestStore.Trusted != pgOutageAgents {
		t.Errorf("connected %d, TRUSTED in the store %d of %d: %v", sum.Connected, sum.HonestStore.Trusted, sum.HonestStore.Checked, sum.HonestStore.NotTrusted)
	}
	// One nonce epoch per committed pulse: as many as TRUSTED answers.
	var epochs int64
	if err := st.DB().QueryRowContext(ctx, "SELECT COALESCE(SUM(nonce_epoch), 0) FROM agents WHERE id LIKE 'lg-%'").Scan(&epochs); err != nil {
		t.Fatal(err)
	}
	if uint64(epochs) != sum.Verdicts["TRUSTED"] {
		t.Errorf("the store holds %d committed pulses, the agents were answered TRUSTED %d times: pulses lost or doubled", epochs, sum.Verdicts["TRUSTED"])
	}
	// And the verifier counted each committed pulse once (the real
	// agent's too).
	var all int64
	if err := st.DB().QueryRowContext(ctx, "SELECT COALESCE(SUM(nonce_epoch), 0) FROM agents").Scan(&all); err != nil {
		t.Fatal(err)
	}
	if v, _ := d.metric(t, "pulse_pulses_total", `verdict="TRUSTED"`, `reason="OK"`); int64(v) != all {
		t.Errorf("pulse_pulses_total{TRUSTED,OK} = %v, the store holds %d committed pulses", v, all)
	}
	ids := make([]string, 0, pgOutageAgents)
	rows, err := st.DB().QueryContext(ctx, "SELECT id FROM agents WHERE id LIKE 'lg-%'")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) != pgOutageAgents {
		t.Fatalf("%d load agents in the store, want %d", len(ids), pgOutageAgents)
	}
	// The real agent was refused with Unavailable, retried, and is
	// TRUSTED by a pulse accepted after the return.
	if line := logLine(t, filepath.Join(f.dir, "agent-"+real+".log"), "pulse failed", "Unavailable"); line == "" {
		t.Error("the real agent logged no pulse refused with Unavailable")
	}
	waitPulseAfter(t, st, real, back, time.Second)
	f.waitVerdict(real, trusted, "REASON_OK", 5*time.Second)
	noFalseAlarm(t, st, start, append(ids, real)...)
}

// certSerial reads the serial of the first certificate of a PEM file.
func certSerial(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.String()
}

// servedSerial is the serial of the certificate the verifier presents to
// a new connection (made with an agent's certificate).
func servedSerial(t *testing.T, f *fleet, certFile, keyFile string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pki.ReadCertPool(f.caFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", f.addr(), &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "localhost",
		Certificates: []tls.Certificate{pair}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestDrillCertRotation: the verifier's and an agent's certificates are
// replaced on disk and the daemons told with SIGHUP, under a load of 50
// pulse-loadgen agents and a real agent on swtpm. The verifier serves its
// new certificate to new connections while the connections it holds go on;
// the agent moves to a connection made with its new certificate. No pulse
// fails (the agent logs no failed or untrusted pulse; the load generator
// sees no error and every verdict as deserved), the agent's accepted
// pulses never stop for more than an interval and a half, and no alert or
// BLINDED verdict is raised.
func TestDrillCertRotation(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	if dsn == "" {
		return
	}
	loadgen := buildLoadgen(t)
	sw := startTPM(t, "rhel8-uefi", false)
	if sw == nil {
		return
	}
	f := newFleetWith(t, dsn, faultPolicy, sw)
	st := openStore(t, store.EnginePostgres, dsn)
	ctx := context.Background()
	const id = "edge-rot"
	cfg := f.agentConfig(id, sw, "")
	adir := filepath.Dir(cfg)
	f.launchAgent(id, cfg, bin("pulse-agent"))

	const loadAgents = 50
	summary := filepath.Join(f.dir, "loadgen-summary.json")
	lg := f.start(loadgen, "loadgen.log", "run", "--quiet",
		"--verifier", f.addr(), "--ca", f.caFile, "--ca-key", filepath.Join(f.dir, "pki", "ca-key.pem"),
		"--store-engine", "postgres", "--store-dsn", dsn, "--preregister", "running",
		"--agents", strconv.Itoa(loadAgents), "--interval", "2s", "--ramp", "2s", "--duration", "35s",
		"--id-prefix", "lg", "--partition", "fleet", "--wait-blinded=false",
		"--firmware-log", "../testdata/eventlogs/rhel8-uefi.bin", "--summary", summary)
	t.Cleanup(func() { lg.stop(syscall.SIGTERM) })
	f.waitVerdict(id, trusted, "REASON_OK", 30*time.Second)
	waitFor(t, "the load agents TRUSTED", func() bool {
		counts, err := st.CountByVerdict(ctx)
		return err == nil && counts[int32(pulsev1.Verdict_VERDICT_TRUSTED)] >= loadAgents+1
	})
	start := time.Now()

	// The agent's accepted pulses, sampled until the end of the drill.
	gaps := make(chan time.Duration, 1)
	stopWatch := make(chan struct{})
	go func() {
		var last time.Time
		var worst time.Duration
		for {
			select {
			case <-stopWatch:
				gaps <- worst
				return
			case <-time.After(100 * time.Millisecond):
			}
			a, err := st.GetAgent(ctx, id)
			if err != nil || a.LastVerdict != int32(pulsev1.Verdict_VERDICT_TRUSTED) || !a.LastPulseAt.After(last) {
				continue
			}
			if !last.IsZero() && a.LastPulseAt.Sub(last) > worst {
				worst = a.LastPulseAt.Sub(last)
			}
			last = a.LastPulseAt
		}
	}()

	// 1. The verifier's certificate: a new one issued, written over the
	// old files (key first, each atomically), SIGHUP.
	pkiDir := filepath.Join(f.dir, "pki")
	oldVerifier := certSerial(t, filepath.Join(pkiDir, "verifier.pem"))
	nextOut := filepath.Join(t.TempDir(), "verifier-next")
	run(t, "pulsectl", "pki", "issue", "--dir", pkiDir, "--role", "verifier", "--id", "v1", "--dns", "localhost", "--ip", "127.0.0.1", "--out", nextOut)
	replacePair(t, nextOut+".pem", nextOut+"-key.pem", filepath.Join(pkiDir, "verifier.pem"), filepath.Join(pkiDir, "verifier-key.pem"))
	newVerifier := certSerial(t, filepath.Join(pkiDir, "verifier.pem"))
	if err := f.verifier.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the verifier to serve its new certificate", func() bool {
		return servedSerial(t, f, filepath.Join(adir, "agent.pem"), filepath.Join(adir, "agent-key.pem")) == newVerifier
	})
	if line := logLine(t, f.verifier.log, "reloaded certificate", "serial="+newVerifier, "previous_serial="+oldVerifier); line == "" {
		t.Error("the verifier did not log the reload of its certificate")
	}
	// Two intervals on the new verifier certificate.
	time.Sleep(4 * time.Second)

	// 2. The agent's certificate, the same way.
	oldAgent := certSerial(t, filepath.Join(adir, "agent.pem"))
	is, err := pki.Issue(f.ca, pki.Request{Role: pki.RoleAgent, ID: id})
	if err != nil {
		t.Fatal(err)
	}
	if err := is.WriteFiles(filepath.Join(adir, "agent.pem"), filepath.Join(adir, "agent-key.pem"), true); err != nil {
		t.Fatal(err)
	}
	newAgent := certSerial(t, filepath.Join(adir, "agent.pem"))
	f.mu.Lock()
	agent := f.agents[id]
	f.mu.Unlock()
	if err := agent.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	agentLog := filepath.Join(f.dir, "agent-"+id+".log")
	waitFor(t, "the agent to reload its certificate", func() bool {
		return logLine(t, agentLog, "reloaded certificate", "serial="+newAgent, "previous_serial="+oldAgent) != ""
	})
	rotated := time.Now()
	waitFor(t, "the agent's connection made with its new certificate", func() bool {
		return logLine(t, agentLog, "connected to verifier", "cert_serial="+newAgent) != ""
	})
	waitPulseAfter(t, st, id, rotated, 2*faultDeadline)
	time.Sleep(4 * time.Second)

	close(stopWatch)
	worst := <-gaps
	t.Logf("verifier certificate %s -> %s, agent certificate %s -> %s; longest wait between the agent's accepted pulses %s",
		oldVerifier, newVerifier, oldAgent, newAgent, worst.Round(time.Millisecond))
	if worst > 3*time.Second {
		t.Errorf("the agent's accepted pulses stopped for %s during the rotation (interval 2s)", worst.Round(time.Millisecond))
	}
	for _, bad := range []string{"pulse failed", "pulse not trusted", "new certificate not usable", "certificate reload refused", "enrollment failed"} {
		if line := logLine(t, agentLog, bad); line != "" {
			t.Errorf("agent: %s", line)
		}
	}

	select {
	case <-lg.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("pulse-loadgen did not finish")
	}
	var sum loadSummary
	b, err := os.ReadFile(summary)
	if err != nil {
		out, _ := os.ReadFile(lg.log)
		t.Fatalf("no loadgen summary: %v\n%s", err, tail(string(out), 30))
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	t.Logf("loadgen: %d pulses answered %v; errors %v", sum.Pulses, sum.Verdicts, sum.Errors)
	if len(sum.Errors) != 0 || sum.MismatchCount != 0 || sum.HonestStore.Trusted != loadAgents {
		t.Errorf("under the rotation the load generator saw errors %v (%q), %d undeserved verdicts, %d of %d TRUSTED at the end",
			sum.Errors, sum.ErrorExamples, sum.MismatchCount, sum.HonestStore.Trusted, loadAgents)
	}
	f.waitVerdict(id, trusted, "REASON_OK", 5*time.Second)
	noFalseAlarm(t, st, start, id)
}

// replacePair writes a certificate and key pair over another, as an
// operator's rotation does (key first, each file atomically).
func replacePair(t *testing.T, certFrom, keyFrom, certTo, keyTo string) {
	t.Helper()
	c, err := os.ReadFile(certFrom)
	if err != nil {
		t.Fatal(err)
	}
	k, err := os.ReadFile(keyFrom)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WritePair(certTo, c, keyTo, k, true); err != nil {
		t.Fatal(err)
	}
}

// agentDigest is the hex SHA-256 of an agent binary.
func agentDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
