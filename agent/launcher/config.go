package launcher

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/pulse-attest/pulse/agent/config"
)

// How the measured configuration reaches the agent: the launcher reads the
// file once, hashes and parses those bytes, measures them, and copies them
// into a sealed memfd (no write, grow, shrink, or further seal changes: the
// kernel refuses any change to its content, by anyone). The memfd is
// inherited across exec; these variables tell the agent where it is and
// what it must hold. The agent reads its configuration from there, not
// from the path, so a change to the file after the launcher read it has no
// effect on the running agent.
const (
	// ConfigFDEnv is the descriptor number of the sealed copy.
	ConfigFDEnv = "PULSE_AGENT_CONFIG_FD"
	// ConfigSHA256Env is the hex SHA-256 the launcher measured.
	ConfigSHA256Env = "PULSE_AGENT_CONFIG_SHA256"
	// ConfigPathEnv is the absolute path the launcher read it from; the
	// agent's --config must name the same path (relative paths in the file
	// resolve against its directory).
	ConfigPathEnv = "PULSE_AGENT_CONFIG_PATH"
)

// MaxConfigSize bounds the configuration file the launcher reads.
const MaxConfigSize = 1 << 20

// requiredSeals are the seals the agent insists on.
const requiredSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// Errors of LoadConfig for a launched agent (matched with errors.Is).
var (
	// ErrConfigNotSealed: the descriptor is not a sealed memfd.
	ErrConfigNotSealed = errors.New("the launcher's configuration copy is not sealed")
	// ErrConfigDigest: the bytes are not the ones the launcher measured.
	ErrConfigDigest = errors.New("configuration does not match the launcher's measurement")
	// ErrConfigPath: --config names another file than the launcher read.
	ErrConfigPath = errors.New("configuration path differs from the one the launcher measured")
)

// ConfigFile is a configuration file read once: the bytes, their digest,
// and the configuration parsed from exactly those bytes.
type ConfigFile struct {
	// Path is the absolute path it was read from.
	Path   string
	Data   []byte
	SHA256 [sha256.Size]byte
	Config *config.Config
}

// ReadConfig reads the agent's configuration file once and parses those
// bytes. The error is an *hclconf.Error for a file that does not parse.
func ReadConfig(path string) (*ConfigFile, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("launch: configuration path: %w", err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("launch: open configuration: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("launch: stat configuration: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("launch: configuration %s is not a regular file", abs)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("launch: read configuration: %w", err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("launch: configuration %s is larger than %d bytes", abs, MaxConfigSize)
	}
	cfg, err := config.Parse(abs, data)
	if err != nil {
		return nil, err
	}
	return &ConfigFile{Path: abs, Data: data, SHA256: sha256.Sum256(data), Config: cfg}, nil
}

// sealedCopy returns a memfd holding data, sealed against every change.
// It is close-on-exec until Exec clears that.
func sealedCopy(data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("pulse-agent-config", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("launch: memfd for the configuration: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:pulse-agent-config")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("launch: copy the configuration: %w", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, requiredSeals); err != nil {
		f.Close()
		return nil, fmt.Errorf("launch: seal the configuration copy: %w", err)
	}
	return f, nil
}

// LoadConfig loads the agent's configuration. Started by the launcher
// (ConfigFDEnv set), it reads the sealed copy the launcher measured —
// never the file at path — and refuses it unless it is sealed, holds
// exactly the measured bytes (ConfigSHA256Env) and path is the file the
// launcher read (ConfigPathEnv). Otherwise it loads the file at path. The
// launcher's variables are removed from the environment once read.
func LoadConfig(path string) (*config.Config, error) {
	fdStr, launched := os.LookupEnv(ConfigFDEnv)
	if !launched {
		return config.Load(path)
	}
	want, wantPath := os.Getenv(ConfigSHA256Env), os.Getenv(ConfigPathEnv)
	for _, k := range []string{ConfigFDEnv, ConfigSHA256Env, ConfigPathEnv} {
		os.Unsetenv(k)
	}
	fd, err := strconv.Atoi(fdStr)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%w: %s=%q is not a descriptor", ErrConfigNotSealed, ConfigFDEnv, fdStr)
	}
	f := os.NewFile(uintptr(fd), "launcher configuration copy")
	defer f.Close()
	return loadSealed(f, path, want, wantPath)
}

func loadSealed(f *os.File, path, wantHex, wantPath string) (*config.Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("configuration path: %w", err)
	}
	if abs != wantPath {
		return nil, fmt.Errorf("%w: --config %s, launcher read %s", ErrConfigPath, abs, wantPath)
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfigNotSealed, err)
	}
	if seals&requiredSeals != requiredSeals {
		return nil, fmt.Errorf("%w: seals %#x", ErrConfigNotSealed, seals)
	}
	data, err := io.ReadAll(io.NewSectionReader(f, 0, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read the launcher's configuration copy: %w", err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("the launcher's configuration copy is larger than %d bytes", MaxConfigSize)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != wantHex {
		return nil, fmt.Errorf("%w: copy has sha256 %s, launcher measured %q", ErrConfigDigest, got, wantHex)
	}
	return config.Parse(abs, data)
}
