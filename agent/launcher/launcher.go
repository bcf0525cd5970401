// Package launcher measures the agent binary before it runs: it opens the
// file, hashes the open file, appends an agent-binary record to the runtime
// log (which extends the runtime PCR), then executes that same open file
// through /proc/self/fd/N. Whatever happens to the path in between — a
// rename, a replacement — the program that runs is the file that was
// hashed, because the kernel resolves /proc/self/fd/N to the open file
// description, not to the path.
//
// The guarantee holds only if the launcher itself is trustworthy: run it
// from a copy of pulse-agent that is part of the measured, read-only base
// image (see docs/agent.md), and let it launch the updatable agent binary.
package launcher

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/agent/config"
	"github.com/pulse-attest/pulse/agent/runtimelog"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// RecordEnv is set in the launched agent's environment to the number of the
// runtime-log record the launcher wrote for it (informational: the agent
// checks the log itself).
const RecordEnv = "PULSE_AGENT_LAUNCH_RECORD"

// Options configures Measure and Launch.
type Options struct {
	Config *config.Config
	// Binary is the agent binary to launch; empty means the running
	// executable (the launcher is a subcommand of pulse-agent).
	Binary string
	// Args are the agent's arguments (without argv[0]); empty means
	// "run --config <Config.File>".
	Args []string
	// Env is the agent's environment; nil means os.Environ().
	Env    []string
	Logger hclog.Logger
	// TPM, when set, is used instead of opening Config.TPM (and is not
	// closed by Measure).
	TPM *tpm.TPM

	// beforeExec runs between measuring and exec (tests).
	beforeExec func()
}

// Measured is a binary that was opened, hashed and measured.
type Measured struct {
	// File is the open binary; Exec runs exactly this file.
	File   *os.File
	Path   string
	SHA256 [sha256.Size]byte
	Size   uint64
	// Record is the runtime-log record number of the measurement.
	Record uint64
}

// Measure opens the binary, hashes it through the open descriptor and
// appends its agent-binary record to the runtime log (extending the PCR).
// The file stays open for Exec.
func Measure(opts Options) (*Measured, error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("launcher")
	if opts.Config == nil {
		return nil, errors.New("launch: no configuration")
	}
	path := opts.Binary
	if path == "" {
		p, err := os.Readlink("/proc/self/exe")
		if err != nil {
			return nil, fmt.Errorf("launch: find own executable: %w", err)
		}
		path = p
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("launch: open agent binary: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("launch: stat agent binary: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("launch: %s is not a regular file", path)
	}
	if st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("launch: %s is not executable", path)
	}
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62))
	if err != nil {
		return nil, fmt.Errorf("launch: hash agent binary: %w", err)
	}
	m := &Measured{File: f, Path: path, Size: uint64(n)}
	copy(m.SHA256[:], h.Sum(nil))

	t := opts.TPM
	if t == nil {
		t, err = tpm.Open(opts.Config.TPM, log)
		switch {
		case errors.Is(err, tpm.ErrNoTPM):
			log.Warn("no tpm: the measurement is logged but not extended into a pcr (mtls-only mode)")
			t = nil
		case err != nil:
			return nil, fmt.Errorf("launch: %w", err)
		default:
			defer t.Close()
		}
	}
	rtOpts := runtimelog.Options{PCR: opts.Config.RuntimePCR, Logger: log}
	if t != nil {
		rtOpts.TPM = t
		if raw, err := tpm.ReadFirmwareLog(opts.Config.FirmwareLog); err == nil {
			if v, err := runtimelog.FirmwareInitial(raw, opts.Config.RuntimePCR); err == nil {
				rtOpts.Initial = v
			}
		}
	}
	rl, err := runtimelog.Open(opts.Config.RuntimeLog, rtOpts)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	defer rl.Close()
	m.Record, err = rl.Append(&cel.AgentBinary{Path: path, SHA256: m.SHA256, Size: m.Size})
	if err != nil {
		return nil, fmt.Errorf("launch: measure agent binary: %w", err)
	}
	log.Info("measured agent binary before running it", "path", path, "sha256", fmt.Sprintf("%x", m.SHA256),
		"size", m.Size, "record", m.Record, "pcr", opts.Config.RuntimePCR, "tpm", t != nil)
	ok = true
	return m, nil
}

// Exec replaces the current process with the measured file. It returns
// only on failure.
func (m *Measured) Exec(args, env []string) error {
	argv := append([]string{m.Path}, args...)
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, RecordEnv+"=") })
	env = append(env, RecordEnv+"="+strconv.FormatUint(m.Record, 10))
	// /proc/self/fd/N names the open file description: the kernel executes
	// the file that was hashed even if the path now names another one.
	fdPath := "/proc/self/fd/" + strconv.Itoa(int(m.File.Fd()))
	if err := syscall.Exec(fdPath, argv, env); err != nil {
		return fmt.Errorf("launch: exec %s (%s): %w", m.Path, fdPath, err)
	}
	return nil
}

// Launch measures the binary and executes it. It returns only on failure.
func Launch(opts Options) error {
	m, err := Measure(opts)
	if err != nil {
		return err
	}
	defer m.File.Close()
	args := opts.Args
	if len(args) == 0 {
		args = []string{"run", "--config", opts.Config.File}
	}
	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	if opts.beforeExec != nil {
		opts.beforeExec()
	}
	return m.Exec(args, env)
}
