package launcher

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/agent/runtimelog"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// probeSource is the tiny program the launcher execs in these tests: it
// reports what the kernel says it is running.
const probeSource = `package main

import (
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"syscall"
)

const variant = %q

func main() {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		panic(err)
	}
	h := sha256.New()
	io.Copy(h, f)
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		panic(err)
	}
	link, _ := os.Readlink("/proc/self/exe")
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"variant": variant,
		"sha256":  h.Sum(nil),
		"dev":     st.Dev,
		"ino":     st.Ino,
		"link":    link,
		"args":    os.Args[1:],
		"record":  os.Getenv("PULSE_AGENT_LAUNCH_RECORD"),
		"env":     os.Environ(),
	})
}
`

type probeReport struct {
	Variant string
	SHA256  []byte
	Dev     uint64
	Ino     uint64
	Link    string
	Args    []string
	Record  string
	Env     []string
}

// buildProbe compiles the probe program with a variant string into dir.
func buildProbe(t *testing.T, dir, variant string) string {
	t.Helper()
	testutil.RequireTools(t, "go")
	src := filepath.Join(dir, "src-"+variant)
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(fmt.Sprintf(probeSource, variant)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module probe\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "probe-"+variant)
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, b)
	}
	return out
}

// TestHelperLaunch is not a test: it is the process the launcher runs in
// (the launcher replaces its process, so it cannot run inside the test).
func TestHelperLaunch(t *testing.T) {
	cfgPath := os.Getenv("PULSE_TEST_LAUNCH_CONFIG")
	if cfgPath == "" {
		t.Skip("helper process only")
	}
	cf, err := ReadConfig(cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	args := []string{"run", "--flag"}
	if a := os.Getenv("PULSE_TEST_LAUNCH_ARGS"); a != "" {
		args = strings.Split(a, "\x1f")
	}
	var keep []string
	if k := os.Getenv("PULSE_TEST_LAUNCH_KEEP"); k != "" {
		keep = strings.Split(k, ",")
	}
	// Options.Env is nil: the launcher takes this process's environment,
	// the test's variables included, and must reduce it.
	opts := Options{Config: cf, Binary: os.Getenv("PULSE_TEST_LAUNCH_BINARY"), Args: args, KeepEnv: keep,
		Logger: hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Debug})}
	if swap := os.Getenv("PULSE_TEST_LAUNCH_SWAP"); swap != "" {
		// Replace the path between measurement and exec: what runs must
		// still be the measured file.
		opts.beforeExec = func() {
			if err := os.Rename(swap, opts.Binary); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(4)
			}
		}
	}
	if edit := os.Getenv("PULSE_TEST_LAUNCH_EDIT_CONFIG"); edit != "" {
		// Rewrite the configuration file in place after it was measured:
		// the agent must still run with the measured bytes.
		opts.beforeExec = func() {
			f, err := os.OpenFile(cfgPath, os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				_, err = f.WriteString(edit)
				f.Close()
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(4)
			}
		}
	}
	err = Launch(opts)
	fmt.Fprintln(os.Stderr, "launch returned:", err)
	os.Exit(5)
}

type launchEnv struct {
	dir, cfgPath, runtimeLog, tpmSpec string
	initial                           []byte
}

func newLaunchEnv(t *testing.T, withTPM bool) *launchEnv {
	t.Helper()
	dir := t.TempDir()
	e := &launchEnv{dir: dir, runtimeLog: filepath.Join(dir, "run", "runtime.cel"), tpmSpec: "none"}
	fw := filepath.Join(dir, "no-firmware-log")
	if withTPM {
		sw := simtest.Start(t, "rhel8-uefi")
		e.tpmSpec, fw = sw.Spec(), sw.BootLogPath()
		raw, err := os.ReadFile(fw)
		if err != nil {
			t.Fatal(err)
		}
		if e.initial, err = runtimelog.FirmwareInitial(raw, 14); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"agent.crt", "agent.key", "ca.crt"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600)
	}
	e.cfgPath = filepath.Join(dir, "agent.hcl")
	cfg := fmt.Sprintf(`verifier = "127.0.0.1:1"
tls {
  cert = "agent.crt"
  key  = "agent.key"
  ca   = "ca.crt"
}
tpm          = %q
runtime_log  = %q
firmware_log = %q
state_dir    = %q
`, e.tpmSpec, e.runtimeLog, fw, filepath.Join(dir, "state"))
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *launchEnv) launch(t *testing.T, binary, swap string, extraEnv ...string) probeReport {
	t.Helper()
	var r probeReport
	e.launchInto(t, &r, binary, append([]string{"PULSE_TEST_LAUNCH_SWAP=" + swap}, extraEnv...)...)
	return r
}

// launchInto runs the launcher helper process with the given extra
// environment and decodes what the launched program printed into report.
func (e *launchEnv) launchInto(t *testing.T, report any, binary string, extraEnv ...string) {
	t.Helper()
	// Without -test.v the helper prints nothing to stdout before it execs:
	// stdout is the launched program's report alone.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLaunch$")
	// The allow-listed variables of the test's own environment are left
	// out, so each test decides which ones the launcher sees.
	base := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(keptEnv, name) || strings.HasPrefix(name, keptEnvPrefix)
	})
	cmd.Env = append(append(base, "PULSE_TEST_LAUNCH_CONFIG="+e.cfgPath, "PULSE_TEST_LAUNCH_BINARY="+binary), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("launcher process: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), report); err != nil {
		t.Fatalf("the launched program did not report (%v); stdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
}

func fileDigest(t *testing.T, p string) ([]byte, *syscall.Stat_t) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(b)
	return d[:], &st
}

// lastAgentRecord reads the runtime log (with the TPM, so it is reconciled
// with the PCR) and returns the latest agent-binary record.
func (e *launchEnv) lastAgentRecord(t *testing.T) (runtimelog.Summary, []cel.Record, *tpm.TPM) {
	t.Helper()
	opts := runtimelog.Options{PCR: 14, Initial: e.initial}
	var tp *tpm.TPM
	if e.tpmSpec != "none" {
		var err error
		if tp, err = tpm.Open(e.tpmSpec, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		opts.TPM = tp
	}
	l, err := runtimelog.Open(e.runtimeLog, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var sum runtimelog.Summary
	var recs []cel.Record
	err = l.View(func(v *runtimelog.View) error {
		sum, recs = v.Summary(), v.Decoded()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sum, recs, tp
}

// TestLaunchMeasuresWhatRuns: the record's digest is the file's, the PCR
// replays, and the exec'ed process is that very file.
func TestLaunchMeasuresWhatRuns(t *testing.T) {
	e := newLaunchEnv(t, true)
	bin := buildProbe(t, e.dir, "good")
	digest, st := fileDigest(t, bin)

	r := e.launch(t, bin, "")
	if r.Variant != "good" || !bytes.Equal(r.SHA256, digest) {
		t.Fatalf("launched %q with digest %x, want the measured file %x", r.Variant, r.SHA256, digest)
	}
	if r.Dev != st.Dev || r.Ino != st.Ino || r.Link != bin {
		t.Fatalf("launched file dev %d ino %d link %q, want dev %d ino %d %q", r.Dev, r.Ino, r.Link, st.Dev, st.Ino, bin)
	}
	// Record 0 is the launcher's configuration record, 1 the binary's.
	if strings.Join(r.Args, " ") != "run --flag" || r.Record != "1" {
		t.Fatalf("args %v, record env %q", r.Args, r.Record)
	}
	sum, recs, tp := e.lastAgentRecord(t)
	if sum.Agent == nil || !bytes.Equal(sum.Agent.SHA256[:], digest) || sum.Agent.Path != bin || sum.SelfMeasured {
		t.Fatalf("runtime log summary %+v", sum)
	}
	if len(recs) != 2 || sum.AgentBinaryRecord != 1 {
		t.Fatalf("%d records, agent binary record %d; want the configuration record then the binary's", len(recs), sum.AgentBinaryRecord)
	}
	cr, ok, err := FindConfigRecord(recs, 1)
	if err != nil || !ok {
		t.Fatalf("no configuration record before the binary's: %v", err)
	}
	cfgBytes, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cr.ConfigSHA256 != sha256.Sum256(cfgBytes) || cr.ConfigPath != e.cfgPath || cr.ConfigSize != uint64(len(cfgBytes)) ||
		!bytes.Equal(cr.AgentSHA256[:], digest) || strings.Join(cr.Args, " ") != "run --flag" {
		t.Fatalf("configuration record %+v", cr)
	}
	if sum.Agent.Size != uint64(st.Size) {
		t.Fatalf("recorded size %d, file %d", sum.Agent.Size, st.Size)
	}
	pcr, err := tp.ReadPCRs(tpm.AlgSHA256, []uint32{14})
	if err != nil {
		t.Fatal(err)
	}
	if err := cel.VerifyRecords(recs, 14, e.initial, pcr[14]); err != nil {
		t.Fatalf("runtime PCR does not replay: %v", err)
	}
}

// TestLaunchPathSwappedBeforeExec: replacing the binary's path after it
// was measured changes nothing: the measured file is what runs.
func TestLaunchPathSwappedBeforeExec(t *testing.T) {
	e := newLaunchEnv(t, true)
	bin := buildProbe(t, e.dir, "good")
	evil := buildProbe(t, e.dir, "evil")
	digest, st := fileDigest(t, bin)
	evilDigest, _ := fileDigest(t, evil)

	r := e.launch(t, bin, evil)
	if r.Variant != "good" || !bytes.Equal(r.SHA256, digest) || r.Ino != st.Ino {
		t.Fatalf("ran %q (%x, ino %d); want the measured file (%x, ino %d)", r.Variant, r.SHA256, r.Ino, digest, st.Ino)
	}
	if !strings.HasSuffix(r.Link, " (deleted)") {
		t.Fatalf("the running file should no longer be at its path: %q", r.Link)
	}
	now, _ := fileDigest(t, bin)
	if !bytes.Equal(now, evilDigest) {
		t.Fatal("the swap did not happen")
	}
	sum, _, _ := e.lastAgentRecord(t)
	if !bytes.Equal(sum.Agent.SHA256[:], digest) {
		t.Fatalf("record %x, want the measured (and running) file %x", sum.Agent.SHA256, digest)
	}
}

// TestLaunchWithoutTPM: without a TPM the record is still logged.
func TestLaunchWithoutTPM(t *testing.T) {
	e := newLaunchEnv(t, false)
	bin := buildProbe(t, e.dir, "plain")
	digest, _ := fileDigest(t, bin)
	r := e.launch(t, bin, "")
	if !bytes.Equal(r.SHA256, digest) {
		t.Fatalf("digest %x want %x", r.SHA256, digest)
	}
	sum, _, _ := e.lastAgentRecord(t)
	if sum.Agent == nil || !bytes.Equal(sum.Agent.SHA256[:], digest) {
		t.Fatalf("summary %+v", sum)
	}
}

func TestMeasureRefusesNonExecutables(t *testing.T) {
	e := newLaunchEnv(t, false)
	cf, err := ReadConfig(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(e.dir, "data")
	os.WriteFile(plain, []byte("not a program"), 0o644)
	for _, p := range []string{plain, e.dir, filepath.Join(e.dir, "missing")} {
		if m, err := Measure(Options{Config: cf, Binary: p}); err == nil {
			m.Close()
			t.Errorf("%s accepted", p)
		}
	}
	if _, err := os.Stat(e.runtimeLog); err == nil {
		if b, _ := os.ReadFile(e.runtimeLog); len(b) != 0 {
			t.Fatal("a refused binary was recorded")
		}
	}
}
