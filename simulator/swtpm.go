// Package simulator runs test and demo TPMs: an swtpm process on unix
// sockets whose state (EK certificate from a local CA kept in the state
// directory, PCR banks) lives in one directory, that can be rebooted and
// "booted" through a real firmware event log so its PCRs 0-7 hold what the
// logged machine's TPM held.
//
// The state directory holds everything, so another process (pulsectl) can
// attach to a running simulator and stop or reboot it:
//
//	STATE/simulator.json          state file (pid, sockets, booted log)
//	STATE/swtpm.pid, swtpm.log    swtpm's pid file and log
//	STATE/tpm/                    swtpm's TPM state (NV, seeds, persistent keys)
//	STATE/localca/                swtpm_localca's CA; swtpm-localca-rootca-cert.pem is the root
//	STATE/setup/                  swtpm_setup / swtpm_localca configuration
//	STATE/tpm.sock, ctrl.sock     server (TPM commands) and control sockets
//	STATE/binary_bios_measurements the log last booted
//
// swtpm's control channel is not the mssim platform protocol: a reboot is
// CMD_INIT (swtpm_ioctl -i) followed by TPM2_Startup(CLEAR); no power
// commands are ever sent. A log whose StartupLocality record says 3 (a
// machine whose TPM was started by an H-CRTM) is booted by setting the
// locality to 3 with CMD_SET_LOCALITY (swtpm_ioctl -l 3) before
// TPM2_Startup, which makes PCR 0 start at 0...03, and back to 0 after.
//
// PCR banks: SHA-1 and SHA-256 are active (DefaultPCRBanks). Quotes use
// SHA-256; the SHA-1 bank lets legacy SHA-1-only logs (the debian-10
// fixture) be booted and checked too, at no cost to quote time. Boot extends
// the banks both the log and the TPM have; a bank the log lacks stays zero.
//
// Notes on swtpm 0.7 seen here: swtpm_setup creates an RSA 2048 EK at
// 0x81010001 with its certificate at NV 0x01c00002, and an ECC *P-384* EK at
// 0x81010016 with its certificate at 0x01c00016, but no low-range ECC P-256
// EK certificate (0x01c0000a). The EK certificate is signed by an
// intermediate (STATE/localca/issuercert.pem) under the root
// (swtpm-localca-rootca-cert.pem) and carries a critical SAN Go's x509 does
// not handle. libtpms answers TPM_RC_RETRY to the first use of some
// algorithms and TPM_RC_FAILURE (without entering failure mode) to a
// credential whose seed does not decrypt under the EK.
package simulator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/tpm"
)

// File names inside the state directory.
const (
	StateFile      = "simulator.json"
	PIDFile        = "swtpm.pid"
	LogFile        = "swtpm.log"
	TPMStateDir    = "tpm"
	LocalCADir     = "localca"
	SetupDir       = "setup"
	BootLogFile    = "binary_bios_measurements"
	LocalCARootPEM = "swtpm-localca-rootca-cert.pem"
	permallFile    = "tpm2-00.permall"
	serverSockName = "tpm.sock"
	ctrlSockName   = "ctrl.sock"
)

// DefaultPCRBanks are the banks swtpm_setup activates: SHA-256 for quotes,
// and SHA-1 so that legacy SHA-1-only firmware logs (debian-10) can be
// booted and replayed too. A bank costs nothing in quote time.
var DefaultPCRBanks = []string{"sha1", "sha256"}

// ErrNotRunning is returned when the state directory has no running simulator.
var ErrNotRunning = errors.New("no simulator running in this state directory")

// Options configures Start.
type Options struct {
	// StateDir holds the simulator's files (created if missing). An
	// existing, already set-up state is reused: the TPM keeps its EK,
	// persistent keys and NV across Stop and Start.
	StateDir string
	// Template, when set and StateDir is not yet set up, is a set-up state
	// directory to copy instead of running swtpm_setup (same EK, same CA).
	Template string
	// PCRBanks to activate at setup; nil means DefaultPCRBanks.
	PCRBanks []string
	// Detach runs swtpm as a daemon that outlives this process (pulsectl).
	// Otherwise swtpm is this process's child and dies with it.
	Detach bool
	Logger hclog.Logger
}

// State is the JSON state file another process uses to find a running
// simulator.
type State struct {
	PID          int       `json:"pid"`
	ServerSocket string    `json:"server_socket"`
	CtrlSocket   string    `json:"ctrl_socket"`
	SocketDir    string    `json:"socket_dir,omitempty"` // set when sockets live outside the state dir
	TPMSpec      string    `json:"tpm_spec"`
	LocalCACert  string    `json:"localca_cert"`
	BootLog      string    `json:"boot_log,omitempty"`
	Banks        []string  `json:"pcr_banks"`
	Detached     bool      `json:"detached"`
	StartedAt    time.Time `json:"started_at"`
}

// Swtpm is a running (or attached) swtpm.
type Swtpm struct {
	dir   string
	log   hclog.Logger
	mu    sync.Mutex
	state State
	// cmd and done are set when this process started swtpm as its child.
	cmd  *exec.Cmd
	done chan struct{}
}

// Start sets up the state directory if needed and starts swtpm on unix
// sockets in it. It returns once the TPM answers commands.
func Start(opts Options) (*Swtpm, error) {
	if opts.StateDir == "" {
		return nil, errors.New("simulator: state directory required")
	}
	dir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("simulator: state dir: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	logger = logger.Named("simulator")
	if err := requireTools("swtpm", "swtpm_ioctl"); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("simulator: create state dir: %w", err)
	}
	if st, err := readState(dir); err == nil && st.PID != 0 {
		if _, verr := verifyPID(st); verr == nil {
			return nil, fmt.Errorf("simulator: already running in %s (pid %d); stop it first", dir, st.PID)
		}
	}
	banks := opts.PCRBanks
	if banks == nil {
		banks = DefaultPCRBanks
	}
	if err := ensureSetup(dir, opts.Template, banks, logger); err != nil {
		return nil, err
	}
	s := &Swtpm{dir: dir, log: logger}
	if err := s.launch(banks, opts.Detach); err != nil {
		return nil, err
	}
	return s, nil
}

// Attach finds the simulator running in a state directory (for pulsectl
// stop/reboot from another process).
func Attach(stateDir string, logger hclog.Logger) (*Swtpm, error) {
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("simulator: state dir: %w", err)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	st, err := readState(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("simulator: %s: %w", dir, ErrNotRunning)
	}
	if err != nil {
		return nil, err
	}
	if st.PID == 0 {
		return nil, fmt.Errorf("simulator: %s: %w", dir, ErrNotRunning)
	}
	if _, err := verifyPID(st); err != nil {
		return nil, fmt.Errorf("simulator: %s: %w (%v)", dir, ErrNotRunning, err)
	}
	return &Swtpm{dir: dir, log: logger.Named("simulator"), state: st}, nil
}

func requireTools(names ...string) error {
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			return fmt.Errorf("simulator: %s not found on PATH (Debian packages swtpm swtpm-tools): %w", n, err)
		}
	}
	return nil
}

// IsSetUp reports whether dir holds a set-up TPM state (EK created, CA made).
func IsSetUp(dir string) bool {
	_, err1 := os.Stat(filepath.Join(dir, TPMStateDir, permallFile))
	_, err2 := os.Stat(filepath.Join(dir, LocalCADir, LocalCARootPEM))
	return err1 == nil && err2 == nil
}

// ensureSetup makes dir a set-up state: kept if already set up, else copied
// from template, else created with swtpm_setup and swtpm_localca.
func ensureSetup(dir, template string, banks []string, logger hclog.Logger) error {
	if IsSetUp(dir) {
		return nil
	}
	if template != "" {
		if !IsSetUp(template) {
			return fmt.Errorf("simulator: template %s is not a set-up state directory", template)
		}
		for _, sub := range []string{TPMStateDir, LocalCADir} {
			if err := copyTree(filepath.Join(template, sub), filepath.Join(dir, sub)); err != nil {
				return fmt.Errorf("simulator: copy template: %w", err)
			}
		}
		logger.Debug("state copied from template", "template", template, "state_dir", dir)
		return nil
	}
	return Setup(dir, banks, logger)
}

// Setup runs swtpm_setup in dir: a TPM 2.0 with the given PCR banks, RSA and
// ECC EKs with certificates and a platform certificate, issued by a local CA
// created in dir/localca (nothing is written outside dir).
func Setup(dir string, banks []string, logger hclog.Logger) error {
	if err := requireTools("swtpm", "swtpm_setup", "swtpm_localca"); err != nil {
		return err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	for _, b := range banks {
		if !slices.Contains([]string{"sha1", "sha256", "sha384", "sha512"}, b) {
			return fmt.Errorf("simulator: unknown pcr bank %q", b)
		}
	}
	if len(banks) == 0 {
		return errors.New("simulator: at least one pcr bank required")
	}
	setup := filepath.Join(dir, SetupDir)
	ca := filepath.Join(dir, LocalCADir)
	state := filepath.Join(dir, TPMStateDir)
	for _, d := range []string{setup, ca, state} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("simulator: setup: %w", err)
		}
	}
	files := map[string]string{
		"swtpm-localca.conf": fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")),
		"swtpm-localca.options": "--platform-manufacturer Pulse\n--platform-version 2.1\n--platform-model swtpm\n",
	}
	files["swtpm_setup.conf"] = fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = %s\n",
		mustLook("swtpm_localca"), filepath.Join(setup, "swtpm-localca.conf"), filepath.Join(setup, "swtpm-localca.options"), strings.Join(banks, ","))
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(setup, name), []byte(content), 0o600); err != nil {
			return fmt.Errorf("simulator: setup: %w", err)
		}
	}
	args := []string{
		"--tpm2", "--tpmstate", state,
		"--create-ek-cert", "--create-platform-cert",
		"--pcr-banks", strings.Join(banks, ","),
		"--config", filepath.Join(setup, "swtpm_setup.conf"),
		"--logfile", filepath.Join(setup, "swtpm_setup.log"),
		"--overwrite",
	}
	start := time.Now()
	cmd := exec.Command("swtpm_setup", args...)
	// Keep swtpm_setup from reading or creating per-user config files.
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+setup)
	out, err := cmd.CombinedOutput()
	if err != nil {
		logText, _ := os.ReadFile(filepath.Join(setup, "swtpm_setup.log"))
		return fmt.Errorf("simulator: swtpm_setup: %w: %s%s", err, bytes.TrimSpace(out), tail(logText, 2000))
	}
	if !IsSetUp(dir) {
		return fmt.Errorf("simulator: swtpm_setup succeeded but %s lacks the tpm state or the ca root", dir)
	}
	logger.Info("swtpm state set up", "state_dir", dir, "pcr_banks", strings.Join(banks, ","), "duration", time.Since(start))
	return nil
}

func mustLook(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return name
}

func tail(b []byte, n int) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return "\nswtpm_setup log: " + string(bytes.TrimSpace(b))
}

// maxSocketPath keeps sun_path (108 bytes with the terminating NUL) happy.
const maxSocketPath = 100

// launch starts swtpm and waits for it to answer.
func (s *Swtpm) launch(banks []string, detach bool) error {
	sockDir, short := s.dir, ""
	if len(filepath.Join(s.dir, serverSockName)) > maxSocketPath {
		d, err := os.MkdirTemp("", "pulse-swtpm-")
		if err != nil {
			return fmt.Errorf("simulator: socket dir: %w", err)
		}
		sockDir, short = d, d
	}
	server := filepath.Join(sockDir, serverSockName)
	ctrl := filepath.Join(sockDir, ctrlSockName)
	pidPath := filepath.Join(s.dir, PIDFile)
	for _, p := range []string{server, ctrl, pidPath} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("simulator: remove stale %s: %w", p, err)
		}
	}
	args := []string{"socket", "--tpm2",
		"--server", "type=unixio,path=" + server,
		"--ctrl", "type=unixio,path=" + ctrl,
		"--tpmstate", "dir=" + filepath.Join(s.dir, TPMStateDir),
		"--flags", "not-need-init,startup-clear",
		"--pid", "file=" + pidPath,
		"--log", "file=" + filepath.Join(s.dir, LogFile),
	}
	if detach {
		args = append(args, "--daemon")
	}
	cmd := exec.Command("swtpm", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if detach {
		// swtpm forks and the parent exits once the daemon is set up.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("simulator: swtpm --daemon: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
	} else {
		// The child dies with this process, so a killed test leaves no swtpm.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("simulator: start swtpm: %w", err)
		}
		s.cmd, s.done = cmd, make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(s.done)
		}()
	}
	s.state = State{
		ServerSocket: server,
		CtrlSocket:   ctrl,
		SocketDir:    short,
		TPMSpec:      "swtpm:" + server,
		LocalCACert:  filepath.Join(s.dir, LocalCADir, LocalCARootPEM),
		Banks:        slices.Clone(banks),
		Detached:     detach,
		StartedAt:    time.Now().UTC(),
	}
	if err := s.waitReady(pidPath, &stderr); err != nil {
		s.kill()
		return err
	}
	if !detach && s.state.PID != s.cmd.Process.Pid {
		s.kill()
		return fmt.Errorf("simulator: pid file says %d, started %d", s.state.PID, s.cmd.Process.Pid)
	}
	if err := s.saveState(); err != nil {
		s.kill()
		return err
	}
	s.log.Info("swtpm started", "pid", s.state.PID, "tpm_spec", s.state.TPMSpec, "detached", detach)
	return nil
}

// waitReady waits for the pid file and for the server socket to answer a
// TPM command.
func (s *Swtpm) waitReady(pidPath string, stderr *bytes.Buffer) error {
	deadline := time.Now().Add(15 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		if s.done != nil {
			select {
			case <-s.done:
				return fmt.Errorf("simulator: swtpm exited during start: %s", bytes.TrimSpace(stderr.Bytes()))
			default:
			}
		}
		if s.state.PID == 0 {
			if pid, err := readPIDFile(pidPath); err == nil {
				s.state.PID = pid
			} else {
				lastErr = err
			}
		}
		if s.state.PID != 0 {
			if err := s.ping(); err == nil {
				return nil
			} else {
				lastErr = err
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("simulator: swtpm not ready after 15s: %v: %s", lastErr, bytes.TrimSpace(stderr.Bytes()))
}

// ping probes the server socket with TPM2_Startup(CLEAR): swtpm started
// with startup-clear answers TPM_RC_INITIALIZE (already started) and changes
// nothing. Any well-formed answer means the TPM is serving.
func (s *Swtpm) ping() error {
	_, err := s.rawCommand(startupClear)
	return err
}

// startupClear is TPM2_Startup(TPM_SU_CLEAR).
var startupClear = []byte{0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x44, 0, 0}

const (
	rcSuccess    = 0x000
	rcInitialize = 0x100
)

// rawCommand sends a command on the server socket and returns the response
// code. It is used where go-tpm cannot be (before TPM2_Startup).
func (s *Swtpm) rawCommand(cmd []byte) (uint32, error) {
	conn, err := net.DialTimeout("unix", s.state.ServerSocket, 5*time.Second)
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", s.state.ServerSocket, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(cmd); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		return 0, fmt.Errorf("read response: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size > 10 {
		if _, err := io.CopyN(io.Discard, conn, int64(size-10)); err != nil {
			return 0, fmt.Errorf("read response: %w", err)
		}
	}
	return binary.BigEndian.Uint32(hdr[6:10]), nil
}

func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: bad content %q", path, b)
	}
	return pid, nil
}

// verifyPID checks that st.PID is alive and is the swtpm serving
// st.CtrlSocket (so a recycled pid is never signalled). It returns the
// process's state letter from /proc.
func verifyPID(st State) (string, error) {
	if st.PID <= 0 {
		return "", errors.New("no pid")
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.PID))
	if err != nil {
		return "", fmt.Errorf("pid %d: %w", st.PID, err)
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if len(args) == 0 || filepath.Base(args[0]) != "swtpm" {
		return "", fmt.Errorf("pid %d is %q, not swtpm", st.PID, args[0])
	}
	if !slices.Contains(args, "type=unixio,path="+st.CtrlSocket) {
		return "", fmt.Errorf("pid %d is an swtpm not serving %s", st.PID, st.CtrlSocket)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", st.PID))
	if err != nil {
		return "", fmt.Errorf("pid %d: %w", st.PID, err)
	}
	// The state letter follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return string(stat[i+2]), nil
	}
	return "", fmt.Errorf("pid %d: unreadable /proc stat", st.PID)
}

func readState(dir string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return st, fmt.Errorf("simulator: read state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("simulator: parse state %s: %w", filepath.Join(dir, StateFile), err)
	}
	return st, nil
}

func (s *Swtpm) saveState() error {
	b, err := json.MarshalIndent(s.state, "", "  ")
	if err != nil {
		return fmt.Errorf("simulator: encode state: %w", err)
	}
	tmp := filepath.Join(s.dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("simulator: write state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, StateFile)); err != nil {
		return fmt.Errorf("simulator: write state: %w", err)
	}
	return nil
}

// StateDir is the simulator's state directory.
func (s *Swtpm) StateDir() string { return s.dir }

// State returns a copy of the simulator's state.
func (s *Swtpm) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	st.Banks = slices.Clone(st.Banks)
	return st
}

// PID is swtpm's process ID.
func (s *Swtpm) PID() int { return s.State().PID }

// Spec is the tpm.Open spec of this simulator ("swtpm:" + server socket).
func (s *Swtpm) Spec() string { return s.State().TPMSpec }

// ServerSocket is swtpm's TPM command socket.
func (s *Swtpm) ServerSocket() string { return s.State().ServerSocket }

// CtrlSocket is swtpm's control socket.
func (s *Swtpm) CtrlSocket() string { return s.State().CtrlSocket }

// LocalCACert is the PEM root certificate of the local CA that issued the
// EK and platform certificates; a verifier trusts it as a "TPM vendor" root.
func (s *Swtpm) LocalCACert() string { return s.State().LocalCACert }

// IssuerCert is the PEM intermediate certificate (signed by LocalCACert)
// that signed the EK certificate. Real TPMs keep such intermediates in NV or
// behind an AIA URL; swtpm does not, so a verifier needs it configured.
func (s *Swtpm) IssuerCert() string { return filepath.Join(s.dir, LocalCADir, "issuercert.pem") }

// BootLogPath is the firmware log last booted ("" after a plain Reboot or
// before any Boot): the path to give the agent as its firmware log.
func (s *Swtpm) BootLogPath() string { return s.State().BootLog }

// Open opens the simulator's TPM.
func (s *Swtpm) Open(logger hclog.Logger) (*tpm.TPM, error) {
	return tpm.Open(s.Spec(), logger)
}

// ioctl runs swtpm_ioctl on the control socket; the caller holds s.mu.
func (s *Swtpm) ioctl(args ...string) error {
	all := append([]string{"--unix", s.state.CtrlSocket}, args...)
	out, err := exec.Command("swtpm_ioctl", all...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("swtpm_ioctl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Shutdown sends TPM2_Shutdown(CLEAR), what the kernel does before an
// orderly reboot. A reset without it (Reboot alone) is a power loss: an
// unorderly shutdown, which counts against the TPM's dictionary-attack
// protection for every DA-protected object used since.
func (s *Swtpm) Shutdown() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rc, err := s.rawCommand(shutdownClear)
	if err != nil {
		return fmt.Errorf("simulator: tpm2 shutdown: %w", err)
	}
	if rc != rcSuccess {
		return fmt.Errorf("simulator: tpm2 shutdown: response code 0x%x", rc)
	}
	return nil
}

// shutdownClear is TPM2_Shutdown(TPM_SU_CLEAR).
var shutdownClear = []byte{0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x45, 0, 0}

// Reboot resets the TPM as a machine reboot does: CMD_INIT on the control
// channel, then TPM2_Startup(CLEAR) from locality 0. It sends no
// TPM2_Shutdown first (a power loss); call Shutdown before it for an
// orderly reboot. PCRs 0-15 are zero
// afterwards, transient objects and sessions are gone, persistent objects
// and NV stay. The booted log is removed (nothing is measured yet).
func (s *Swtpm) Reboot() error {
	if err := s.reset(0); err != nil {
		return err
	}
	return s.setBootLog("")
}

// reset does CMD_INIT and TPM2_Startup(CLEAR) from the given locality.
func (s *Swtpm) reset(locality uint8) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ioctl("-i"); err != nil {
		return fmt.Errorf("simulator: reboot: %w", err)
	}
	if locality != 0 {
		if err := s.ioctl("-l", strconv.Itoa(int(locality))); err != nil {
			return fmt.Errorf("simulator: reboot: set locality %d: %w", locality, err)
		}
	}
	rc, err := s.rawCommand(startupClear)
	if locality != 0 {
		// Back to locality 0 for everything else, whatever Startup said.
		if lerr := s.ioctl("-l", "0"); lerr != nil && err == nil {
			err = fmt.Errorf("set locality 0: %w", lerr)
		}
	}
	if err != nil {
		return fmt.Errorf("simulator: reboot: tpm2 startup: %w", err)
	}
	if rc != rcSuccess {
		return fmt.Errorf("simulator: reboot: tpm2 startup from locality %d: response code 0x%x", locality, rc)
	}
	s.log.Debug("swtpm rebooted", "startup_locality", locality)
	return nil
}

func (s *Swtpm) setBootLog(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if path == "" {
		if err := os.Remove(filepath.Join(s.dir, BootLogFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("simulator: remove booted log: %w", err)
		}
	}
	s.state.BootLog = path
	return s.saveState()
}

// Stop stops the swtpm this simulator runs, and only it: the pid is checked
// to be an swtpm serving this state's control socket before it is
// signalled (SIGTERM, then SIGKILL after 5 s). The state directory is kept,
// so a later Start resumes the same TPM.
func (s *Swtpm) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.PID == 0 {
		return nil
	}
	letter, err := verifyPID(s.state)
	switch {
	case err != nil && s.cmd == nil:
		// Gone already (or the pid was recycled): nothing of ours to kill.
		s.log.Warn("swtpm not running, clearing state", "pid", s.state.PID, "reason", err.Error())
	case letter == "Z":
		s.log.Debug("swtpm already exited", "pid", s.state.PID)
	case err == nil:
		if err := s.terminate(); err != nil {
			return err
		}
	}
	if s.done != nil {
		<-s.done
	}
	s.log.Info("swtpm stopped", "pid", s.state.PID)
	s.state.PID = 0
	if s.state.SocketDir != "" {
		_ = os.RemoveAll(s.state.SocketDir)
	}
	for _, p := range []string{s.state.ServerSocket, s.state.CtrlSocket, filepath.Join(s.dir, PIDFile)} {
		_ = os.Remove(p)
	}
	return s.saveState()
}

// terminate signals the verified pid and waits for it to go.
func (s *Swtpm) terminate() error {
	proc, err := os.FindProcess(s.state.PID)
	if err != nil {
		return fmt.Errorf("simulator: stop: %w", err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if err := proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("simulator: stop pid %d: %w", s.state.PID, err)
		}
		if s.waitExit(5 * time.Second) {
			return nil
		}
		s.log.Warn("swtpm did not exit", "pid", s.state.PID, "signal", sig.String())
	}
	return fmt.Errorf("simulator: stop: pid %d did not exit", s.state.PID)
}

// waitExit waits for the process to exit (or become a zombie its parent has
// not reaped).
func (s *Swtpm) waitExit(d time.Duration) bool {
	deadline := time.After(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.done != nil {
			select {
			case <-s.done:
				return true
			default:
			}
		} else if letter, err := verifyPID(s.state); err != nil || letter == "Z" {
			return true
		}
		select {
		case <-deadline:
			return false
		case <-tick.C:
		}
	}
}

// kill is the cleanup of a failed start.
func (s *Swtpm) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
	} else if s.state.PID != 0 {
		if _, err := verifyPID(s.state); err == nil {
			_ = syscall.Kill(s.state.PID, syscall.SIGKILL)
		}
	}
	if s.state.SocketDir != "" {
		_ = os.RemoveAll(s.state.SocketDir)
	}
}

// copyTree copies regular files and directories (not lock files).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".lock") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
}
