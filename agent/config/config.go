// Package config loads the agent's HCL configuration file. Unknown keys,
// missing required settings and bad values are errors whose messages name
// file:line:col (see internal/hclconf). Defaults are documented in
// docs/agent.md and in the Default* constants below.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/tpm"
)

// Defaults for settings the file leaves out.
const (
	DefaultTPM         = "auto"
	DefaultRuntimePCR  = 14
	DefaultFirmwareLog = tpm.DefaultFirmwareLogPath
	DefaultStateDir    = "/var/lib/pulse-agent"
	// DefaultRuntimeLog lives on /run: the runtime log only has to live as
	// long as the PCR it explains, which a reboot resets.
	DefaultRuntimeLog = "/run/pulse-agent/runtime.cel"
	DefaultInterval   = 30 * time.Second
	DefaultBPFPinDir  = "/sys/fs/bpf/pulse"
	DefaultAKHandle   = tpm.DefaultAKHandle
	DefaultLogLevel   = "info"
	// DefaultBinaryRehashEvery: the running binary is hashed in full at
	// least every 10th pulse, and at once when its file's identity changes.
	DefaultBinaryRehashEvery = 10
	// DefaultReleaseCodePages: after each pulse the agent drops its mappings
	// of its binary's code and read-only data (they stay in the page cache).
	DefaultReleaseCodePages = true

	// MinInterval and MaxInterval bound interval (and the verifier's
	// set_interval directives, which the agent clamps to them).
	MinInterval = time.Second
	MaxInterval = 24 * time.Hour
)

// Config is a loaded and checked agent configuration. Relative paths in the
// file are resolved against the file's directory.
type Config struct {
	// File is the path the configuration was loaded from.
	File string
	// Verifier is the verifier's gRPC address, host:port, or several
	// replicas' addresses separated by commas (the agent fails over between
	// them; any replica serves any agent).
	Verifier string
	TLS      TLS
	// TPM is the TPM spec (tpm.ParseSpec): auto, none, sim, swtpm:SOCKET or
	// a device path.
	TPM string
	// AKHandle is the persistent handle of the attestation key.
	AKHandle uint32
	// RuntimePCR is the PCR the runtime log extends.
	RuntimePCR uint32
	// RuntimeLog is the path of the runtime log (CEL) of the current boot.
	RuntimeLog string
	// FirmwareLog is the path of the firmware (TCG PC client) event log.
	FirmwareLog string
	// StateDir holds the enrollment and sequence state.
	StateDir string
	// Interval is the heartbeat interval until the verifier sets another.
	Interval time.Duration
	// Partition is the partition the agent expects to be in (empty: none).
	// The verifier's operator assigns partitions; an agent that names
	// another one than its assignment is refused enrollment. It never
	// selects a policy by itself.
	Partition string
	BPF       BPF
	// LogLevel is trace, debug, info, warn or error.
	LogLevel string
	// LogJSON writes logs as JSON lines.
	LogJSON bool
	// BinaryRehashEvery: the running binary's file is hashed in full when
	// its identity (device, inode, size, mtime, ctime) changes and at least
	// every BinaryRehashEvery pulses (1: every pulse).
	BinaryRehashEvery int
	// DirectiveKey is the verifier's directive public key (PKIX PEM,
	// Ed25519): quarantine and release directives are acted on only when
	// signed with it. Empty: every quarantine and release is refused
	// (docs/agent.md, "Directive key").
	DirectiveKey string
	// ProtectedAddresses are never quarantined by this agent's Shield, in
	// addition to the verifier's addresses (replicas, gateways, proxies).
	ProtectedAddresses []netip.Prefix
	// ReleaseCodePages: after each pulse, drop the process's mappings of its
	// own binary's read-only pages (madvise MADV_DONTNEED); they stay in the
	// page cache and fault back in as the next pulse runs them.
	ReleaseCodePages bool
}

// String summarises the configuration (no secrets: only paths).
func (c *Config) String() string {
	return fmt.Sprintf("verifier=%s tpm=%s runtime_pcr=%d interval=%s partition=%s state_dir=%s runtime_log=%s bpf=%t",
		c.Verifier, c.TPM, c.RuntimePCR, c.Interval, c.Partition, c.StateDir, c.RuntimeLog, c.BPF.Enabled)
}

// TLS is the agent's mTLS identity and trust.
type TLS struct {
	// Cert and Key are the agent certificate (chain) and private key (PEM),
	// re-read when they change.
	Cert, Key string
	// CA holds the CA certificates the verifier's certificate must chain to.
	CA string
	// ServerName is checked against the verifier certificate; empty uses the
	// host of Verifier.
	ServerName string
}

// BPF configures the agent's eBPF programs.
type BPF struct {
	Enabled bool
	// PinDir is the agent's bpffs directory.
	PinDir string
	// Interfaces are the network interfaces Shield filters.
	Interfaces []string
}

type rawConfig struct {
	Verifier    string         `hcl:"verifier"`
	TLS         rawTLS         `hcl:"tls,block"`
	TPM         *string        `hcl:"tpm,optional"`
	AKHandle    hcl.Expression `hcl:"ak_handle,optional"`
	RuntimePCR  *int           `hcl:"runtime_pcr,optional"`
	RuntimeLog  *string        `hcl:"runtime_log,optional"`
	FirmwareLog *string        `hcl:"firmware_log,optional"`
	StateDir    *string        `hcl:"state_dir,optional"`
	Interval    *string        `hcl:"interval,optional"`
	Partition   *string        `hcl:"partition,optional"`
	LogLevel    *string        `hcl:"log_level,optional"`
	LogJSON     *bool          `hcl:"log_json,optional"`
	// BinaryRehashEvery: see Config.
	BinaryRehashEvery *int    `hcl:"binary_rehash_every,optional"`
	BPF               *rawBPF `hcl:"bpf,block"`
	// DirectiveKey and ProtectedAddresses: see Config.
	DirectiveKey       *string  `hcl:"directive_key,optional"`
	ProtectedAddresses []string `hcl:"protected_addresses,optional"`
	// ReleaseCodePages: see Config.
	ReleaseCodePages *bool `hcl:"release_code_pages,optional"`
}

type rawTLS struct {
	Cert       string  `hcl:"cert"`
	Key        string  `hcl:"key"`
	CA         string  `hcl:"ca"`
	ServerName *string `hcl:"server_name,optional"`
}

type rawBPF struct {
	Enabled    *bool    `hcl:"enabled,optional"`
	PinDir     *string  `hcl:"pin_dir,optional"`
	Interfaces []string `hcl:"interfaces,optional"`
}

// Load reads, decodes and checks the configuration file at path. The error
// is an *hclconf.Error listing every problem as file:line:col.
func Load(path string) (*Config, error) {
	f, err := hclconf.Load(path)
	if err != nil {
		return nil, err
	}
	return decode(f)
}

// Parse is Load for a file already in memory; filename names it in
// diagnostics and anchors relative paths.
func Parse(filename string, src []byte) (*Config, error) {
	f, err := hclconf.Parse(filename, src)
	if err != nil {
		return nil, err
	}
	return decode(f)
}

func decode(f *hclconf.File) (*Config, error) {
	var raw rawConfig
	f.Decode(&raw)
	if err := f.Err(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(f.Name)
	if err != nil {
		abs = f.Name
	}
	c := &Config{
		File:        abs,
		Verifier:    raw.Verifier,
		TPM:         str(raw.TPM, DefaultTPM),
		AKHandle:    DefaultAKHandle,
		RuntimePCR:  DefaultRuntimePCR,
		RuntimeLog:  f.Path(str(raw.RuntimeLog, DefaultRuntimeLog)),
		FirmwareLog: f.Path(str(raw.FirmwareLog, DefaultFirmwareLog)),
		StateDir:    f.Path(str(raw.StateDir, DefaultStateDir)),
		Partition:   str(raw.Partition, ""),
		LogLevel:    str(raw.LogLevel, DefaultLogLevel),
		LogJSON:     raw.LogJSON != nil && *raw.LogJSON,
		TLS: TLS{
			Cert:       f.Path(raw.TLS.Cert),
			Key:        f.Path(raw.TLS.Key),
			CA:         f.Path(raw.TLS.CA),
			ServerName: str(raw.TLS.ServerName, ""),
		},
		BPF: BPF{PinDir: DefaultBPFPinDir},
	}
	if raw.BPF != nil {
		if raw.BPF.Enabled != nil {
			c.BPF.Enabled = *raw.BPF.Enabled
		}
		c.BPF.PinDir = f.Path(str(raw.BPF.PinDir, DefaultBPFPinDir))
		c.BPF.Interfaces = raw.BPF.Interfaces
	}

	checkVerifier(f, c.Verifier)
	for _, p := range []struct{ key, path string }{{"cert", c.TLS.Cert}, {"key", c.TLS.Key}, {"ca", c.TLS.CA}} {
		f.RequireFile(p.path, "tls", p.key)
	}
	if _, err := tpm.ParseSpec(c.TPM); err != nil {
		f.Errorf([]string{"tpm"}, "invalid tpm", "%v", err)
	}
	if h, ok := akHandle(f, raw.AKHandle); ok {
		c.AKHandle = h
	}
	if raw.RuntimePCR != nil {
		if pcr, ok := checkRuntimePCR(f, *raw.RuntimePCR); ok {
			c.RuntimePCR = pcr
		}
	}
	c.Interval = f.Duration(str(raw.Interval, ""), DefaultInterval, MinInterval, MaxInterval, "interval")
	if raw.Partition != nil {
		checkPartition(f, c.Partition)
	}
	c.ReleaseCodePages = DefaultReleaseCodePages
	if raw.ReleaseCodePages != nil {
		c.ReleaseCodePages = *raw.ReleaseCodePages
	}
	c.BinaryRehashEvery = DefaultBinaryRehashEvery
	if raw.BinaryRehashEvery != nil {
		if n := *raw.BinaryRehashEvery; n < 1 || n > 1000 {
			f.Errorf([]string{"binary_rehash_every"}, "invalid binary_rehash_every", "%d: use 1 (hash every pulse) to 1000", n)
		} else {
			c.BinaryRehashEvery = n
		}
	}
	if raw.DirectiveKey != nil {
		c.DirectiveKey = f.Path(*raw.DirectiveKey)
		f.RequireFile(c.DirectiveKey, "directive_key")
	}
	for _, a := range raw.ProtectedAddresses {
		p, err := ParseProtected(a)
		if err != nil {
			f.Errorf([]string{"protected_addresses"}, "invalid protected address", "%q: %v (an IP address or CIDR prefix)", a, err)
			continue
		}
		c.ProtectedAddresses = append(c.ProtectedAddresses, p)
	}
	if _, ok := logLevels[strings.ToLower(c.LogLevel)]; !ok {
		f.Errorf([]string{"log_level"}, "invalid log level", "%q: use trace, debug, info, warn or error", c.LogLevel)
	}
	for _, p := range []struct {
		path string
		key  []string
	}{
		{c.RuntimeLog, []string{"runtime_log"}},
		{c.FirmwareLog, []string{"firmware_log"}},
		{c.StateDir, []string{"state_dir"}},
		{c.BPF.PinDir, []string{"bpf", "pin_dir"}},
	} {
		if p.path == "" {
			f.Errorf(p.key, "empty path", "%s must name a path", strings.Join(p.key, "."))
		}
	}
	if err := f.Err(); err != nil {
		return nil, err
	}
	for _, p := range []*string{&c.TLS.Cert, &c.TLS.Key, &c.TLS.CA, &c.RuntimeLog, &c.FirmwareLog, &c.StateDir, &c.BPF.PinDir, &c.DirectiveKey} {
		*p = absPath(*p)
	}
	return c, nil
}

// ParseProtected reads a protected address: an IP address (a single-address
// prefix) or a CIDR prefix, IPv4-mapped addresses unmapped.
func ParseProtected(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%s: an IPv4-mapped prefix shorter than /96", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.WithZone("").Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

var logLevels = map[string]hclog.Level{
	"trace": hclog.Trace, "debug": hclog.Debug, "info": hclog.Info, "warn": hclog.Warn, "error": hclog.Error,
}

// Level is the hclog level of LogLevel (Info when unset).
func (c *Config) Level() hclog.Level {
	if l, ok := logLevels[strings.ToLower(c.LogLevel)]; ok {
		return l
	}
	return hclog.Info
}

// absPath makes a (config-relative, already resolved) path absolute, so
// the agent does not depend on its working directory.
func absPath(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func str(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func checkVerifier(f *hclconf.File, addrs string) {
	for _, addr := range strings.Split(addrs, ",") {
		checkVerifierAddr(f, strings.TrimSpace(addr))
	}
}

// VerifierAddrs returns the verifier replicas' addresses.
func (c *Config) VerifierAddrs() []string {
	var out []string
	for _, a := range strings.Split(c.Verifier, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func checkVerifierAddr(f *hclconf.File, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		f.Errorf([]string{"verifier"}, "invalid verifier address", "%q: want host:port (%v)", addr, err)
		return
	}
	if host == "" {
		f.Errorf([]string{"verifier"}, "invalid verifier address", "%q: the host is empty", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		f.Errorf([]string{"verifier"}, "invalid verifier address", "%q: port must be 1-65535", addr)
	}
}

// akHandle reads ak_handle, a number or a string such as "0x81020001".
func akHandle(f *hclconf.File, expr hcl.Expression) (uint32, bool) {
	if expr == nil {
		return 0, false
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		f.Diags = append(f.Diags, diags...)
		return 0, false
	}
	if v.IsNull() {
		return 0, false
	}
	var n uint64
	switch {
	case v.Type() == cty.String:
		var err error
		n, err = strconv.ParseUint(strings.TrimSpace(v.AsString()), 0, 32)
		if err != nil {
			f.Errorf([]string{"ak_handle"}, "invalid ak_handle", "%q is not a handle such as \"0x81020001\"", v.AsString())
			return 0, false
		}
	case v.Type() == cty.Number:
		bf := v.AsBigFloat()
		if !bf.IsInt() || bf.Sign() < 0 {
			f.Errorf([]string{"ak_handle"}, "invalid ak_handle", "%s is not a handle such as \"0x81020001\"", bf.String())
			return 0, false
		}
		u, acc := bf.Uint64()
		if acc != 0 || u > 0xffffffff {
			f.Errorf([]string{"ak_handle"}, "invalid ak_handle", "%s does not fit in 32 bits", bf.String())
			return 0, false
		}
		n = u
	default:
		f.Errorf([]string{"ak_handle"}, "invalid ak_handle", "want a string such as \"0x81020001\" or a number, got %s", v.Type().FriendlyName())
		return 0, false
	}
	if n < 0x81000000 || n >= 0x81800000 {
		f.Errorf([]string{"ak_handle"}, "invalid ak_handle",
			"0x%08x is not an owner persistent handle (0x81000000-0x817fffff); the default is 0x%08x", n, DefaultAKHandle)
		return 0, false
	}
	return uint32(n), true
}

// checkRuntimePCR accepts only PCRs that nothing but a reboot resets and
// that nothing else Pulse relies on extends.
func checkRuntimePCR(f *hclconf.File, pcr int) (uint32, bool) {
	why := RuntimePCRProblem(pcr)
	if why != "" {
		f.Errorf([]string{"runtime_pcr"}, "unusable runtime_pcr", "%s", why)
		return 0, false
	}
	return uint32(pcr), true
}

// RuntimePCRProblem explains why pcr cannot hold the runtime log, or returns
// "" when it can (11-15).
func RuntimePCRProblem(pcr int) string {
	switch {
	case pcr < 0 || pcr > 23:
		return fmt.Sprintf("PCR %d does not exist (0-23); use %d", pcr, DefaultRuntimePCR)
	case pcr <= 9:
		return fmt.Sprintf("PCR %d holds firmware and boot loader measurements that the verifier replays from the firmware log; use %d", pcr, DefaultRuntimePCR)
	case pcr == 10:
		return fmt.Sprintf("PCR 10 is extended by IMA, whose events are not in Pulse's runtime log; use %d", DefaultRuntimePCR)
	case pcr == 16 || pcr == 23:
		return fmt.Sprintf("PCR %d can be reset by any root process (TPM2_PCR_Reset from locality 0), "+
			"which would let a root attacker erase the runtime history; use a PCR only a reboot resets, such as %d", pcr, DefaultRuntimePCR)
	case pcr >= 17 && pcr <= 22:
		return fmt.Sprintf("PCR %d belongs to dynamic launch (DRTM): only localities above 0 may extend it and a late launch resets it; use %d", pcr, DefaultRuntimePCR)
	}
	return ""
}

func checkPartition(f *hclconf.File, p string) {
	if p == "" || len(p) > 64 {
		f.Errorf([]string{"partition"}, "invalid partition", "must be 1-64 characters of [A-Za-z0-9._-]")
		return
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			f.Errorf([]string{"partition"}, "invalid partition", "%q: byte %q at offset %d is not in [A-Za-z0-9._-]", p, c, i)
			return
		}
	}
}
