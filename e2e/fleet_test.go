// Package e2e runs the real binaries — pulse-verifier, pulse-agent (through
// its measuring launcher) and pulsectl — against swtpm, over real gRPC with
// mutual TLS on loopback.
package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/directivesig"
	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/simulator"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/verifier/store"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pulse-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "../cmd/pulse-agent", "../cmd/pulse-verifier", "../cmd/pulsectl")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	if err := initArtefacts(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := finishArtefacts(pgtest.Main(m))
	os.RemoveAll(dir)
	os.Exit(code)
}

func bin(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(binDir, name)
}

// fleet is a verifier process and the agents attesting to it.
type fleet struct {
	t        *testing.T
	dir      string
	ca       *pki.CA
	caFile   string
	port     int
	vcfg     string
	verifier *proc
	mu       sync.Mutex
	agents   map[string]*proc
	ekRoots  []string
	pgDSN    string
	// netns, when set, is the network namespace the daemons run in.
	netns string
}

func storeBlock(pgDSN string) string {
	if pgDSN == "" {
		return "engine = \"sqlite\"\n  dsn    = \"verifier.db\""
	}
	return fmt.Sprintf("engine = \"postgres\"\n  dsn    = %q", pgDSN)
}

// proc is a running binary with its output in a log file.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin(name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (f *fleet) start(name, logName string, args ...string) *proc {
	f.t.Helper()
	logPath := filepath.Join(f.dir, logName)
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		f.t.Fatal(err)
	}
	path := name
	if name != "ip" {
		path = bin(name)
	}
	if f.netns != "" && name != "ip" {
		args = append([]string{"netns", "exec", f.netns, path}, args...)
		path = "ip"
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); lf.Close(); close(p.done) }()
	return p
}

// stop signals the process and waits for it.
func (p *proc) stop(sig syscall.Signal) {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(sig) //nolint:errcheck // may have exited
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill() //nolint:errcheck
		<-p.done
	}
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// newFleet makes a PKI with pulsectl, a policy, and a verifier config
// trusting the EK CAs of the given simulated TPMs; it starts the verifier.
func newFleet(t *testing.T, policy string, tpms ...*simulator.Swtpm) *fleet {
	t.Helper()
	return newFleetWith(t, "", policy, tpms...)
}

// newFleetWith is newFleet on PostgreSQL when pgDSN is set.
func newFleetWith(t *testing.T, pgDSN, policy string, tpms ...*simulator.Swtpm) *fleet {
	t.Helper()
	dir := t.TempDir()
	f := &fleet{t: t, dir: dir, port: freePort(t), agents: map[string]*proc{}, pgDSN: pgDSN}
	pkiDir := filepath.Join(dir, "pki")
	run(t, "pulsectl", "pki", "init", "--dir", pkiDir)
	run(t, "pulsectl", "pki", "issue", "--dir", pkiDir, "--role", "verifier", "--id", "v1", "--dns", "localhost", "--ip", "127.0.0.1", "--out", filepath.Join(pkiDir, "verifier"))
	ca, err := pki.LoadCA(filepath.Join(pkiDir, "ca.pem"), filepath.Join(pkiDir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	f.ca, f.caFile = ca, filepath.Join(pkiDir, "ca.pem")
	for _, sw := range tpms {
		f.ekRoots = append(f.ekRoots, sw.LocalCACert(), sw.IssuerCert())
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	roots, _ := json.Marshal(f.ekRoots)
	writeDirectiveKey(t, dir)
	f.vcfg = filepath.Join(dir, "verifier.hcl")
	cfg := fmt.Sprintf(`listen = "127.0.0.1:%d"
policy_files = ["policy.hcl"]
allow_tpmless = true
directive_key = "directive-key.pem"
tls {
  cert     = "pki/verifier.pem"
  key      = "pki/verifier-key.pem"
  agent_ca = "pki/ca.pem"
}
store {
  %s
}
enrollment {
  ek_roots = %s
  # The operator assigns partitions; agents ask for what they are given.
  default_partition = "fleet"
  partition "lab" {
    agents = ["lab-*"]
  }
  # simtest TPMs started from the shared set-up state share one EK.
  ek_max_agents = 8
}
alerts {
  audit_log = "audit.log"
}
log_level = "debug"
replica_id = "r1"
`, f.port, storeBlock(pgDSN), roots)
	if err := os.WriteFile(f.vcfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "pulse-verifier", "validate", "--config", f.vcfg)
	f.startVerifier()
	t.Cleanup(func() {
		f.mu.Lock()
		for _, a := range f.agents {
			a.stop(syscall.SIGTERM)
		}
		f.mu.Unlock()
		f.verifier.stop(syscall.SIGTERM)
		collectArtefacts(t, dir, pgDSN)
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			for _, path := range logs {
				name := filepath.Base(path)
				if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
					t.Logf("---- %s (tail)\n%s", name, tail(string(b), 60))
				}
			}
		}
	})
	return f
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (f *fleet) addr() string { return fmt.Sprintf("127.0.0.1:%d", f.port) }

func (f *fleet) startVerifier() {
	f.t.Helper()
	f.startVerifierAt(f.addr())
}

// startVerifierAt starts the verifier and waits for addr to accept.
func (f *fleet) startVerifierAt(addr string) {
	f.t.Helper()
	f.verifier = f.start("pulse-verifier", "verifier.log", "run", "--config", f.vcfg)
	deadline := time.Now().Add(15 * time.Second)
	for {
		var err error
		if f.netns != "" {
			err = exec.Command("ip", "netns", "exec", f.netns, "bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(addr, ":", "/", 1)).Run()
		} else {
			var c net.Conn
			if c, err = net.Dial("tcp", addr); err == nil {
				c.Close()
			}
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) || !f.verifier.running() {
			b, _ := os.ReadFile(f.verifier.log)
			f.t.Fatalf("verifier did not start: %v\n%s", err, tail(string(b), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// agentConfig writes an agent certificate and configuration for id using
// the simulated TPM sw ("" tpm spec means tpm = "none").
func (f *fleet) agentConfig(id string, sw *simulator.Swtpm, extra string) string {
	f.t.Helper()
	adir := filepath.Join(f.dir, "agent-"+id)
	if err := os.MkdirAll(adir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	is, err := pki.Issue(f.ca, pki.Request{Role: pki.RoleAgent, ID: id})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := is.WriteFiles(filepath.Join(adir, "agent.pem"), filepath.Join(adir, "agent-key.pem"), true); err != nil {
		f.t.Fatal(err)
	}
	spec, fw := "none", "/nonexistent"
	if sw != nil {
		spec, fw = sw.Spec(), sw.BootLogPath()
	}
	cfg := fmt.Sprintf(`verifier     = "%s"
tpm          = "%s"
firmware_log = "%s"
runtime_log  = "runtime.cel"
state_dir    = "state"
interval     = "2s"
partition    = "fleet"
log_level    = "debug"
directive_key = "%s"
tls {
  cert        = "agent.pem"
  key         = "agent-key.pem"
  ca          = "%s"
  server_name = "localhost"
}
bpf {
  enabled = false
}
%s`, f.addr(), spec, fw, filepath.Join(f.dir, "directive.pub"), f.caFile, extra)
	path := filepath.Join(adir, "agent.hcl")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return path
}

// launchAgent starts pulse-agent through the launcher, which measures
// binary before exec'ing it.
func (f *fleet) launchAgent(id, cfg, binary string) {
	f.t.Helper()
	p := f.start(binary, "agent-"+id+".log", "launch", "--config", cfg, "--", "run", "--config", cfg)
	f.mu.Lock()
	f.agents[id] = p
	f.mu.Unlock()
}

func (f *fleet) stopAgent(id string, sig syscall.Signal) {
	f.mu.Lock()
	p := f.agents[id]
	delete(f.agents, id)
	f.mu.Unlock()
	p.stop(sig)
}

type agentView struct {
	Quarantined []string `json:"quarantined"`
	ID          string   `json:"id"`
	Verdict     string   `json:"verdict"`
	Reason      string   `json:"reason"`
	Message     string   `json:"message"`
}

// show reads an agent's last verdict with pulsectl.
func (f *fleet) show(id string) (agentView, bool) {
	out, err := exec.Command(bin("pulsectl"), "agents", "show", "--config", f.vcfg, "--json", id).Output()
	if err != nil {
		return agentView{}, false
	}
	var v agentView
	if err := json.Unmarshal(out, &v); err != nil {
		return agentView{}, false
	}
	return v, true
}

// waitVerdict waits until the agent's last verdict is verdict/reason.
func (f *fleet) waitVerdict(id, verdict, reason string, within time.Duration) agentView {
	f.t.Helper()
	deadline := time.Now().Add(within)
	var last agentView
	for time.Now().Before(deadline) {
		if v, ok := f.show(id); ok {
			last = v
			if v.Verdict == verdict && (reason == "" || v.Reason == reason) {
				return v
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	f.t.Fatalf("agent %s: verdict %s/%s (%s), want %s/%s within %s", id, last.Verdict, last.Reason, last.Message, verdict, reason, within)
	return last
}

func (f *fleet) store() *store.Store {
	f.t.Helper()
	engine, dsn := store.EngineSQLite, filepath.Join(f.dir, "verifier.db")
	if f.pgDSN != "" {
		engine, dsn = store.EnginePostgres, f.pgDSN
	}
	s, err := store.Open(context.Background(), engine, dsn)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { s.Close() })
	return s
}

func (f *fleet) alerts(id, kind string) int {
	f.t.Helper()
	all, err := f.store().ListAlerts(context.Background(), store.AlertFilter{AgentID: id})
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, a := range all {
		if a.Kind == kind {
			n++
		}
	}
	return n
}

// copyBinary copies a binary to path (optionally with trailing bytes that
// change its digest but not its behaviour).
func copyBinary(t *testing.T, from, to string, suffix []byte) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, suffix...)
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatal(err)
	}
}

func startTPM(t *testing.T, fixture string, fresh bool) *simulator.Swtpm {
	t.Helper()
	if fresh {
		return simtest.StartFresh(t, fixture)
	}
	return simtest.Start(t, fixture)
}

func replaceInFile(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), old, new, 1)
	if s == string(b) {
		t.Fatalf("%q not in %s", old, path)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// showQuarantined returns what the agent's Shield reported dropping.
func (f *fleet) showQuarantined(id string) (string, bool) {
	v, ok := f.show(id)
	return strings.Join(v.Quarantined, ","), ok
}

// writeDirectiveKey writes the verifier's directive key (0600) and its
// public half, which every agent is configured with, into dir.
func writeDirectiveKey(t *testing.T, dir string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := directivesig.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := directivesig.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "directive-key.pem"), k, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "directive.pub"), p, 0o644); err != nil {
		t.Fatal(err)
	}
}
