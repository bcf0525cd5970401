// Package launcher measures the agent binary before it runs: it opens the
// file, hashes the open file, appends an agent-binary record to the runtime
// log (which extends the runtime PCR), then executes that same open file
// through /proc/self/fd/N. Whatever happens to the path in between — a
// rename, a replacement — the program that runs is the file that was
// hashed, because the kernel resolves /proc/self/fd/N to the open file
// description, not to the path.
//
// What the binary does also depends on what it is given, so the launcher
// measures that too and hands over only what it measured:
//
//   - the configuration file is read once; those bytes are hashed, parsed,
//     and passed to the agent in a sealed memfd (see LoadConfig), so the
//     agent runs with exactly the measured configuration;
//   - the arguments are measured as given;
//   - the environment is reduced to an allow-list (AgentEnv) and measured.
//
// They are measured in a Generic record (ConfigRecordName) appended right
// before the agent-binary record, so the two sit together in the log.
//
// The guarantee holds only if the launcher itself is trustworthy: run it
// from a copy of pulse-agent that is part of the measured, read-only base
// image (see docs/agent.md), and let it launch the updatable agent binary.
package launcher

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

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
	// Config is the agent's configuration as ReadConfig read it: these
	// bytes are measured and handed to the agent.
	Config *ConfigFile
	// Binary is the agent binary to launch; empty means the running
	// executable (the launcher is a subcommand of pulse-agent).
	Binary string
	// Args are the agent's arguments (without argv[0]); empty means
	// "run --config <Config.Path>".
	Args []string
	// Env is the environment the agent's is taken from (through AgentEnv);
	// nil means os.Environ().
	Env []string
	// KeepEnv names variables to pass on beyond the default allow-list
	// (see AgentEnv for the names it refuses).
	KeepEnv []string
	Logger  hclog.Logger
	// TPM, when set, is used instead of opening the configuration's TPM
	// (and is not closed by Measure).
	TPM *tpm.TPM

	// beforeExec runs between measuring and exec (tests).
	beforeExec func()
}

// Measured is a binary that was opened, hashed and measured, with the
// configuration, arguments and environment it is to run with.
type Measured struct {
	// File is the open binary; Exec runs exactly this file.
	File   *os.File
	Path   string
	SHA256 [sha256.Size]byte
	Size   uint64
	// Record is the runtime-log record number of the agent-binary
	// measurement; ConfigRecord (always Record-1) holds the launcher's
	// configuration record.
	Record       uint64
	ConfigRecord uint64
	// Launch is what the configuration record measured: the arguments
	// and environment Exec passes.
	Launch ConfigRecord

	// config is the sealed copy of the configuration Exec hands over.
	config *os.File
}

// Close releases the open binary and the configuration copy (after a
// failed Exec, or when Exec is not called).
func (m *Measured) Close() error {
	return errors.Join(m.File.Close(), m.config.Close())
}

// Measure opens the binary and hashes it through the open descriptor,
// reduces the environment, and appends the launcher's configuration record
// and then the agent-binary record to the runtime log (extending the PCR).
// The file and the configuration copy stay open for Exec.
func Measure(opts Options) (*Measured, error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("launcher")
	if opts.Config == nil || opts.Config.Config == nil {
		return nil, errors.New("launch: no configuration")
	}
	cfg := opts.Config.Config
	envIn := opts.Env
	if envIn == nil {
		envIn = os.Environ()
	}
	env, err := AgentEnv(envIn, opts.KeepEnv)
	if err != nil {
		return nil, err
	}
	args := slices.Clone(opts.Args)
	if len(args) == 0 {
		args = []string{"run", "--config", opts.Config.Path}
	}
	path := opts.Binary
	if path == "" {
		p, err := os.Readlink("/proc/self/exe")
		if err != nil {
			return nil, fmt.Errorf("launch: find own executable: %w", err)
		}
		path = p
	}
	path, err = filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("launch: open agent binary: %w", err)
	}
	m := &Measured{File: f, Path: path}
	ok := false
	defer func() {
		if !ok {
			m.File.Close()
			if m.config != nil {
				m.config.Close()
			}
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
	m.Size = uint64(n)
	copy(m.SHA256[:], h.Sum(nil))

	m.Launch = ConfigRecord{AgentSHA256: m.SHA256, ConfigPath: opts.Config.Path, ConfigSHA256: opts.Config.SHA256,
		ConfigSize: uint64(len(opts.Config.Data)), Args: args, Env: env}
	content, err := m.Launch.Generic()
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	if m.config, err = sealedCopy(opts.Config.Data); err != nil {
		return nil, err
	}

	t := opts.TPM
	if t == nil {
		t, err = tpm.Open(cfg.TPM, log)
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
	rtOpts := runtimelog.Options{PCR: cfg.RuntimePCR, Logger: log}
	if t != nil {
		rtOpts.TPM = t
		if raw, err := tpm.ReadFirmwareLog(cfg.FirmwareLog); err == nil {
			if v, err := runtimelog.FirmwareInitial(raw, cfg.RuntimePCR); err == nil {
				rtOpts.Initial = v
			}
		}
	}
	rl, err := runtimelog.Open(cfg.RuntimeLog, rtOpts)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	defer rl.Close()
	// The configuration record first, adjacent to the binary's (no other
	// process's record between them): the record right before an
	// agent-binary record says how that binary was started (this one, or
	// the agent's self-measured marker). A crash between the two leaves a
	// configuration record no binary follows, which names nothing.
	nums, err := rl.AppendAdjacent(content, &cel.AgentBinary{Path: path, SHA256: m.SHA256, Size: m.Size})
	if err != nil {
		return nil, fmt.Errorf("launch: measure agent configuration and binary: %w", err)
	}
	m.ConfigRecord, m.Record = nums[0], nums[1]
	log.Info("measured agent binary and configuration before running them", "path", path, "sha256", fmt.Sprintf("%x", m.SHA256),
		"size", m.Size, "record", m.Record, "config", opts.Config.Path, "config_sha256", fmt.Sprintf("%x", opts.Config.SHA256),
		"config_record", m.ConfigRecord, "args", args, "env", envNames(env), "pcr", cfg.RuntimePCR, "tpm", t != nil)
	if dropped := droppedNames(envIn, env); len(dropped) > 0 {
		// Names only: values may hold anything.
		log.Info("environment variables not passed to the agent", "names", dropped)
	}
	ok = true
	return m, nil
}

// Exec replaces the current process with the measured file, with the
// measured arguments and environment and the sealed configuration copy. It
// returns only on failure.
func (m *Measured) Exec() error {
	argv := append([]string{m.Path}, m.Launch.Args...)
	env := append(slices.Clone(m.Launch.Env),
		RecordEnv+"="+strconv.FormatUint(m.Record, 10),
		ConfigFDEnv+"="+strconv.Itoa(int(m.config.Fd())),
		ConfigSHA256Env+"="+hex.EncodeToString(m.Launch.ConfigSHA256[:]),
		ConfigPathEnv+"="+m.Launch.ConfigPath)
	// The configuration copy must survive the exec; the binary's
	// descriptor need not (the kernel opens /proc/self/fd/N before it
	// closes close-on-exec descriptors).
	if _, err := unix.FcntlInt(m.config.Fd(), unix.F_SETFD, 0); err != nil {
		return fmt.Errorf("launch: pass the configuration copy: %w", err)
	}
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
	defer m.Close()
	if opts.beforeExec != nil {
		opts.beforeExec()
	}
	return m.Exec()
}
