// Package config reads the verifier's HCL configuration file. Unknown keys and
// bad values are errors naming file:line:col. Relative paths are resolved
// against the configuration file's directory.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/pulse-attest/pulse/internal/hclconf"
	"github.com/pulse-attest/pulse/policy"
)

// Config is the verifier's validated configuration.
type Config struct {
	// Listen is the agent-facing gRPC address (mTLS, agent certificates).
	Listen string
	// AdminListen is the operator address (dashboard, JSON API, metrics);
	// empty disables it.
	AdminListen string

	TLS        TLS
	Store      Store
	Policy     []string
	Enrollment Enrollment

	NonceTTL  time.Duration
	ClockSkew time.Duration
	// AllowTPMless lets agents without a TPM enroll; whether their pulses are
	// then DEGRADED or UNTRUSTED is the policy's tpm mode.
	AllowTPMless bool
	// StartupGrace is how long every agent gets after a verifier start before
	// it can be BLINDED.
	StartupGrace time.Duration
	LogLevel     string
	LogJSON      bool
	// Replica names this replica (default: hostname-pid).
	Replica string
	Alerts  Alerts
	// AdminTokenFile holds a bearer token for the admin listener (mode 0600);
	// empty means operator certificates only.
	AdminTokenFile string

	// RuntimePCR is the PCR every agent's runtime log extends. The verifier
	// records it at enrollment and never takes it from a pulse.
	RuntimePCR uint32
	// Pulses bounds how long failures may repeat before they alert.
	Pulses Pulses
	// FirmwareLogs bounds what agents may make the verifier store.
	FirmwareLogs FirmwareLogs

	// ProtectedAddresses are never quarantined (the verifier's own and its
	// replicas' addresses, gateways, proxies): addresses or CIDR prefixes.
	ProtectedAddresses []netip.Prefix

	// IsolationHold is how long an operator's release holds off isolating
	// the released agent again at most (an accepted pulse ends it sooner).
	IsolationHold time.Duration

	// DirectiveKey is the Ed25519 private key (PKCS#8 PEM, mode 0600) that
	// signs quarantine and release directives; empty: a key generated
	// into the store (docs/operations.md, "Signed directives").
	DirectiveKey string
	// AgentAddressTTL is how long an address an agent was accepted from
	// stays registered to it (isolation by identity).
	AgentAddressTTL time.Duration

	// MemoryLimit is the process's soft memory limit in bytes
	// (runtime/debug.SetMemoryLimit); 0: none set here (GOMEMLIMIT, if
	// set in the environment, or Go's default of no limit).
	MemoryLimit int64
}

// DefaultAgentAddressTTL is how long an agent's address stays registered
// (agent_address_ttl).
const DefaultAgentAddressTTL = 24 * time.Hour

// Pulses configures how repeated non-compromise failures escalate.
type Pulses struct {
	// TransientAlertAfter is how many transient failures in a row (expired
	// nonce, firmware log requested) raise a transient_streak alert.
	TransientAlertAfter int
	// ClockDesyncEscalateAfter is how many CLOCK_DESYNC pulses in a row are
	// tolerated; the next one is UNTRUSTED (REASON_CLOCK_DESYNC_PERSISTENT).
	ClockDesyncEscalateAfter int
}

// FirmwareLogs bounds the firmware logs kept for agents.
type FirmwareLogs struct {
	// PerAgent is how many distinct firmware logs one agent may have stored
	// (a reboot into a new firmware or boot path adds one).
	PerAgent int
	// CacheBytes bounds the parsed-log cache in bytes (estimated).
	CacheBytes int64
}

// PartitionRule assigns agents whose ID matches one of Agents to Name.
type PartitionRule struct {
	Name   string
	Agents []string
}

// Alerts configures where alerts go besides the structured log.
type Alerts struct {
	// AuditLog is the append-only hash-chained audit log (default audit.log
	// beside the configuration file).
	AuditLog string
	Webhooks []Webhook
}

// Webhook is one alert receiver; its secret is read from a file so it never
// sits in the configuration.
type Webhook struct {
	Name       string
	URL        string
	SecretFile string
}

// Defaults of the tls block's connection settings.
const (
	DefaultTLSReloadInterval     = 10 * time.Second
	DefaultMaxConnectionAge      = time.Hour
	DefaultMaxConnectionAgeGrace = time.Minute
	DefaultRevocationRefresh     = 5 * time.Second
	DefaultProbeAlertAfter       = 20
)

// TLS names the verifier's certificate and the CAs it trusts, and bounds
// how long a certificate decision lasts on an open connection.
type TLS struct {
	Cert, Key  string
	AgentCA    string
	OperatorCA string
	// ReloadInterval is how often the certificate, key and CA files are
	// checked for changes (default 10s).
	ReloadInterval time.Duration
	// MaxConnectionAge closes agent connections this old (with
	// MaxConnectionAgeGrace for calls in flight), so every agent
	// handshakes again against the current CAs and revocation list
	// (default 1h).
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	// RevocationRefresh is how often the revocation list is re-read from
	// the store and every open stream's certificate is checked again
	// (validity and revocation; default 5s).
	RevocationRefresh time.Duration
	// ProbeAlertAfter is how many refused handshakes from one address
	// within a minute raise a probe alert (default 20; docs/operations.md).
	ProbeAlertAfter int
}

// Store selects the state store.
type Store struct {
	Engine string
	DSN    string
}

// Enrollment says which TPMs may enroll.
type Enrollment struct {
	// EKRoots are PEM files of TPM-vendor root (and intermediate) certificates.
	EKRoots []string
	// EKAllowSHA256 lists hex SHA-256 digests of EK public areas allowed
	// without a certificate.
	EKAllowSHA256 []string
	Timeout       time.Duration
	// Partitions assign agents to partitions by agent ID, first match in
	// file order; DefaultPartition takes the rest. The agent never chooses.
	Partitions       []PartitionRule
	DefaultPartition string
	// AllowNonconformingEK accepts EK certificates without the TCG EK
	// extended key usage or TPM subject alternative name (some vendors omit
	// them). Off by default.
	AllowNonconformingEK bool
	// EKMaxAgents is how many agent IDs one EK may back (default 1).
	EKMaxAgents int
	// RatePerMinute bounds Enroll calls per source address (default 30).
	RatePerMinute int
}

// PartitionOf returns the partition the operator assigned to agentID.
func (e Enrollment) PartitionOf(agentID string) string {
	for _, r := range e.Partitions {
		for _, g := range r.Agents {
			if policy.Glob(g, agentID) {
				return r.Name
			}
		}
	}
	if e.DefaultPartition == "" {
		return DefaultPartition
	}
	return e.DefaultPartition
}

type fileTLS struct {
	Cert       string `hcl:"cert"`
	Key        string `hcl:"key"`
	AgentCA    string `hcl:"agent_ca"`
	OperatorCA string `hcl:"operator_ca,optional"`

	ReloadInterval        string `hcl:"reload_interval,optional"`
	MaxConnectionAge      string `hcl:"max_connection_age,optional"`
	MaxConnectionAgeGrace string `hcl:"max_connection_age_grace,optional"`
	RevocationRefresh     string `hcl:"revocation_refresh,optional"`
	ProbeAlertAfter       *int   `hcl:"probe_alert_after,optional"`
}

type fileStore struct {
	Engine string `hcl:"engine,optional"`
	DSN    string `hcl:"dsn,optional"`
}

type fileEnrollment struct {
	EKRoots              []string        `hcl:"ek_roots,optional"`
	EKAllowSHA256        []string        `hcl:"ek_allow_sha256,optional"`
	Timeout              string          `hcl:"timeout,optional"`
	DefaultPartition     string          `hcl:"default_partition,optional"`
	Partitions           []filePartition `hcl:"partition,block"`
	AllowNonconformingEK bool            `hcl:"allow_nonconforming_ek,optional"`
	EKMaxAgents          *int            `hcl:"ek_max_agents,optional"`
	RatePerMinute        *int            `hcl:"rate_per_minute,optional"`
}

type filePartition struct {
	Name   string   `hcl:"name,label"`
	Agents []string `hcl:"agents"`
}

type filePulses struct {
	TransientAlertAfter      *int `hcl:"transient_alert_after,optional"`
	ClockDesyncEscalateAfter *int `hcl:"clock_desync_escalate_after,optional"`
}

type fileFirmwareLogs struct {
	PerAgent   *int   `hcl:"per_agent,optional"`
	CacheBytes *int64 `hcl:"cache_bytes,optional"`
}

type file struct {
	Listen       string            `hcl:"listen,optional"`
	AdminListen  string            `hcl:"admin_listen,optional"`
	TLS          *fileTLS          `hcl:"tls,block"`
	Store        *fileStore        `hcl:"store,block"`
	Policy       []string          `hcl:"policy_files,optional"`
	Enrollment   *fileEnrollment   `hcl:"enrollment,block"`
	NonceTTL     string            `hcl:"nonce_ttl,optional"`
	ClockSkew    string            `hcl:"clock_skew,optional"`
	AllowTPMless bool              `hcl:"allow_tpmless,optional"`
	StartupGrace string            `hcl:"startup_grace,optional"`
	LogLevel     string            `hcl:"log_level,optional"`
	LogJSON      bool              `hcl:"log_json,optional"`
	Replica      string            `hcl:"replica_id,optional"`
	Alerts       *fileAlerts       `hcl:"alerts,block"`
	AdminToken   string            `hcl:"admin_token_file,optional"`
	RuntimePCR   *int              `hcl:"runtime_pcr,optional"`
	Pulses       *filePulses       `hcl:"pulses,block"`
	FirmwareLogs *fileFirmwareLogs `hcl:"firmware_logs,block"`

	IsolationHold string `hcl:"isolation_hold,optional"`

	ProtectedAddresses []string `hcl:"protected_addresses,optional"`

	DirectiveKey    string `hcl:"directive_key,optional"`
	AgentAddressTTL string `hcl:"agent_address_ttl,optional"`

	MemoryLimit string `hcl:"memory_limit,optional"`
}

type fileAlerts struct {
	AuditLog string        `hcl:"audit_log,optional"`
	Webhooks []fileWebhook `hcl:"webhook,block"`
}

type fileWebhook struct {
	Name       string `hcl:"name,label"`
	URL        string `hcl:"url"`
	SecretFile string `hcl:"secret_file"`
}

// DefaultIsolationHold bounds an operator's release hold (isolation_hold).
const DefaultIsolationHold = 24 * time.Hour

// Defaults.
const (
	DefaultListen       = "127.0.0.1:7443"
	DefaultNonceTTL     = 2 * time.Minute
	DefaultClockSkew    = 30 * time.Second
	DefaultStartupGrace = 2 * time.Minute
	DefaultEnrollTTL    = 5 * time.Minute
	// DefaultRuntimePCR is the runtime log's PCR unless runtime_pcr says
	// otherwise; only 11-15 (not resettable, left to the OS by the PC Client
	// profile; 10 is IMA's) are accepted.
	DefaultRuntimePCR = 14
	// DefaultPartition takes every agent no partition rule names.
	DefaultPartition = "default"
	// MaxPartitionLen bounds a partition name.
	MaxPartitionLen = 64
	// Escalation and quota defaults.
	DefaultTransientAlertAfter      = 5
	DefaultClockDesyncEscalateAfter = 5
	DefaultFirmwareLogsPerAgent     = 4
	DefaultFirmwareLogCacheBytes    = 64 << 20
	DefaultEKMaxAgents              = 1
	DefaultEnrollRatePerMinute      = 30
)

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	f, err := hclconf.Load(path)
	if err != nil {
		return nil, err
	}
	return decode(f)
}

// Parse validates configuration source named filename.
func Parse(filename string, src []byte) (*Config, error) {
	f, err := hclconf.Parse(filename, src)
	if err != nil {
		return nil, err
	}
	return decode(f)
}

func decode(f *hclconf.File) (*Config, error) {
	var raw file
	f.Decode(&raw)
	if err := f.Err(); err != nil {
		return nil, err
	}
	c := &Config{
		Listen:       raw.Listen,
		AdminListen:  raw.AdminListen,
		AllowTPMless: raw.AllowTPMless,
		LogLevel:     raw.LogLevel,
		LogJSON:      raw.LogJSON,
		Replica:      raw.Replica,
	}
	if c.Replica == "" {
		host, _ := os.Hostname()
		c.Replica = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	checkAddr(f, c.Listen, "listen")
	if c.AdminListen != "" {
		checkAddr(f, c.AdminListen, "admin_listen")
	}
	if raw.AdminToken != "" {
		c.AdminTokenFile = f.Path(raw.AdminToken)
		f.RequireFile(c.AdminTokenFile, "admin_token_file")
	}
	switch c.LogLevel {
	case "":
		c.LogLevel = "info"
	case "trace", "debug", "info", "warn", "error":
	default:
		f.Errorf([]string{"log_level"}, "invalid log level", "%q is not one of trace, debug, info, warn, error", c.LogLevel)
	}
	c.NonceTTL = f.Duration(raw.NonceTTL, DefaultNonceTTL, 5*time.Second, time.Hour, "nonce_ttl")
	c.ClockSkew = f.Duration(raw.ClockSkew, DefaultClockSkew, time.Second, time.Hour, "clock_skew")
	c.StartupGrace = f.Duration(raw.StartupGrace, DefaultStartupGrace, 0, 24*time.Hour, "startup_grace")
	c.IsolationHold = f.Duration(raw.IsolationHold, DefaultIsolationHold, time.Second, 30*24*time.Hour, "isolation_hold")
	c.AgentAddressTTL = f.Duration(raw.AgentAddressTTL, DefaultAgentAddressTTL, time.Minute, 30*24*time.Hour, "agent_address_ttl")
	if raw.MemoryLimit != "" {
		c.MemoryLimit = memoryLimit(f, raw.MemoryLimit)
	}
	if raw.DirectiveKey != "" {
		c.DirectiveKey = f.Path(raw.DirectiveKey)
		f.RequireFile(c.DirectiveKey, "directive_key")
		checkPrivateFile(f, c.DirectiveKey, "directive_key")
	}
	for _, a := range raw.ProtectedAddresses {
		p, err := parsePrefix(a)
		if err != nil {
			f.Errorf([]string{"protected_addresses"}, "invalid protected address", "%q: %v (an IP address or CIDR prefix)", a, err)
			continue
		}
		c.ProtectedAddresses = append(c.ProtectedAddresses, p)
	}

	if raw.TLS == nil {
		f.Errorf(nil, "missing tls block", "the verifier needs tls { cert, key, agent_ca }: agents are only ever accepted over mutual TLS")
	} else {
		c.TLS = TLS{Cert: f.Path(raw.TLS.Cert), Key: f.Path(raw.TLS.Key), AgentCA: f.Path(raw.TLS.AgentCA), OperatorCA: f.Path(raw.TLS.OperatorCA)}
		c.TLS.ReloadInterval = f.Duration(raw.TLS.ReloadInterval, DefaultTLSReloadInterval, time.Second, time.Hour, "tls", "reload_interval")
		c.TLS.MaxConnectionAge = f.Duration(raw.TLS.MaxConnectionAge, DefaultMaxConnectionAge, time.Minute, 7*24*time.Hour, "tls", "max_connection_age")
		c.TLS.MaxConnectionAgeGrace = f.Duration(raw.TLS.MaxConnectionAgeGrace, DefaultMaxConnectionAgeGrace, time.Second, time.Hour, "tls", "max_connection_age_grace")
		c.TLS.RevocationRefresh = f.Duration(raw.TLS.RevocationRefresh, DefaultRevocationRefresh, 100*time.Millisecond, 5*time.Minute, "tls", "revocation_refresh")
		c.TLS.ProbeAlertAfter = intIn(f, raw.TLS.ProbeAlertAfter, DefaultProbeAlertAfter, 1, 100000, "tls", "probe_alert_after")
		f.RequireFile(c.TLS.Cert, "tls", "cert")
		f.RequireFile(c.TLS.Key, "tls", "key")
		checkPrivateFile(f, c.TLS.Key, "tls", "key")
		f.RequireFile(c.TLS.AgentCA, "tls", "agent_ca")
		if c.TLS.OperatorCA != "" {
			f.RequireFile(c.TLS.OperatorCA, "tls", "operator_ca")
		}
	}

	c.Store = Store{Engine: "sqlite", DSN: "pulse-verifier.db"}
	if raw.Store != nil {
		if raw.Store.Engine != "" {
			c.Store.Engine = raw.Store.Engine
		}
		if raw.Store.DSN != "" {
			c.Store.DSN = raw.Store.DSN
		}
	}
	switch c.Store.Engine {
	case "sqlite":
		c.Store.DSN = f.Path(c.Store.DSN)
	case "postgres":
	default:
		f.Errorf([]string{"store", "engine"}, "unknown store engine", "%q: use \"sqlite\" (embedded, one verifier) or \"postgres\" (several replicas)", c.Store.Engine)
	}

	for _, p := range raw.Policy {
		c.Policy = append(c.Policy, f.Path(p))
	}
	if len(c.Policy) == 0 {
		f.Errorf([]string{"policy_files"}, "no policy files", "set policy_files = [\"policy.hcl\"]: without a policy every pulse would be refused (Pulse fails closed)")
	}
	for _, p := range c.Policy {
		f.RequireFile(p, "policy_files")
	}

	c.Alerts.AuditLog = f.Path("audit.log")
	if raw.Alerts != nil {
		if raw.Alerts.AuditLog != "" {
			c.Alerts.AuditLog = f.Path(raw.Alerts.AuditLog)
		}
		for _, w := range raw.Alerts.Webhooks {
			if !strings.HasPrefix(w.URL, "https://") && !strings.HasPrefix(w.URL, "http://127.") && !strings.HasPrefix(w.URL, "http://localhost") {
				f.Errorf([]string{"alerts"}, "insecure webhook URL", "webhook %q: use https:// (plain http only to localhost)", w.Name)
			}
			sf := f.Path(w.SecretFile)
			f.RequireFile(sf, "alerts")
			checkSecretFile(f, sf, "alerts", "webhook="+w.Name, "secret_file")
			c.Alerts.Webhooks = append(c.Alerts.Webhooks, Webhook{Name: w.Name, URL: w.URL, SecretFile: sf})
		}
	}

	c.RuntimePCR = DefaultRuntimePCR
	if raw.RuntimePCR != nil {
		if *raw.RuntimePCR < 11 || *raw.RuntimePCR > 15 {
			f.Errorf([]string{"runtime_pcr"}, "invalid runtime PCR", "%d: use one of 11-15 (16 and 23 are resettable by any root process, 0-9 and 17-22 belong to firmware and the dynamic root of trust, 10 to IMA)", *raw.RuntimePCR)
		}
		c.RuntimePCR = uint32(*raw.RuntimePCR)
	}
	c.Pulses = Pulses{TransientAlertAfter: DefaultTransientAlertAfter, ClockDesyncEscalateAfter: DefaultClockDesyncEscalateAfter}
	if raw.Pulses != nil {
		c.Pulses.TransientAlertAfter = intIn(f, raw.Pulses.TransientAlertAfter, DefaultTransientAlertAfter, 1, 1000, "pulses", "transient_alert_after")
		c.Pulses.ClockDesyncEscalateAfter = intIn(f, raw.Pulses.ClockDesyncEscalateAfter, DefaultClockDesyncEscalateAfter, 1, 1000, "pulses", "clock_desync_escalate_after")
	}
	c.FirmwareLogs = FirmwareLogs{PerAgent: DefaultFirmwareLogsPerAgent, CacheBytes: DefaultFirmwareLogCacheBytes}
	if raw.FirmwareLogs != nil {
		c.FirmwareLogs.PerAgent = intIn(f, raw.FirmwareLogs.PerAgent, DefaultFirmwareLogsPerAgent, 1, 64, "firmware_logs", "per_agent")
		if b := raw.FirmwareLogs.CacheBytes; b != nil {
			if *b < 1<<20 || *b > 16<<30 {
				f.Errorf([]string{"firmware_logs", "cache_bytes"}, "value out of range", "%d: use 1 MiB to 16 GiB", *b)
			}
			c.FirmwareLogs.CacheBytes = *b
		}
	}

	c.Enrollment.Timeout = DefaultEnrollTTL
	c.Enrollment.DefaultPartition = DefaultPartition
	c.Enrollment.EKMaxAgents = DefaultEKMaxAgents
	c.Enrollment.RatePerMinute = DefaultEnrollRatePerMinute
	if raw.Enrollment != nil {
		if raw.Enrollment.DefaultPartition != "" {
			c.Enrollment.DefaultPartition = raw.Enrollment.DefaultPartition
			checkPartition(f, raw.Enrollment.DefaultPartition, "enrollment", "default_partition")
		}
		seen := map[string]bool{}
		for _, p := range raw.Enrollment.Partitions {
			// "partition=NAME" locates the (last) block with that label.
			at := []string{"enrollment", "partition=" + p.Name}
			checkPartition(f, p.Name, at...)
			if seen[p.Name] {
				f.Errorf(at, "duplicate partition", "partition %q is defined twice", p.Name)
			}
			seen[p.Name] = true
			if len(p.Agents) == 0 {
				f.Errorf(append(at, "agents"), "empty partition rule", "partition %q: list the agent ID globs it takes (agents = [\"edge-*\"])", p.Name)
			}
			for _, g := range p.Agents {
				if err := policy.ValidateGlob(g); err != nil {
					f.Errorf(append(at, "agents"), "invalid agent glob", "partition %q: %v", p.Name, err)
				}
			}
			c.Enrollment.Partitions = append(c.Enrollment.Partitions, PartitionRule(p))
		}
		c.Enrollment.AllowNonconformingEK = raw.Enrollment.AllowNonconformingEK
		c.Enrollment.EKMaxAgents = intIn(f, raw.Enrollment.EKMaxAgents, DefaultEKMaxAgents, 1, 1024, "enrollment", "ek_max_agents")
		c.Enrollment.RatePerMinute = intIn(f, raw.Enrollment.RatePerMinute, DefaultEnrollRatePerMinute, 1, 100000, "enrollment", "rate_per_minute")
		for _, p := range raw.Enrollment.EKRoots {
			p = f.Path(p)
			f.RequireFile(p, "enrollment", "ek_roots")
			c.Enrollment.EKRoots = append(c.Enrollment.EKRoots, p)
		}
		for _, h := range raw.Enrollment.EKAllowSHA256 {
			if len(h) != 64 || !isHex(h) {
				f.Errorf([]string{"enrollment", "ek_allow_sha256"}, "invalid EK digest", "%q is not 64 hex characters (SHA-256 of the EK public area)", h)
			}
			c.Enrollment.EKAllowSHA256 = append(c.Enrollment.EKAllowSHA256, h)
		}
		c.Enrollment.Timeout = f.Duration(raw.Enrollment.Timeout, DefaultEnrollTTL, 10*time.Second, time.Hour, "enrollment", "timeout")
	}
	if err := f.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// ValidPartition reports whether p is a well-formed partition name: 1-64
// characters of [A-Za-z0-9._-].
func ValidPartition(p string) bool {
	if p == "" || len(p) > MaxPartitionLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkPartition(f *hclconf.File, p string, path ...string) {
	if !ValidPartition(p) {
		f.Errorf(path, "invalid partition", "%q: use 1-%d characters of [A-Za-z0-9._-]", p, MaxPartitionLen)
	}
}

// memoryLimit reads memory_limit; a bad value is an error at its line.
func memoryLimit(f *hclconf.File, v string) int64 {
	n, err := ParseSize(v)
	if err != nil {
		f.Errorf([]string{"memory_limit"}, "invalid size", "%v", err)
		return 0
	}
	if n < MinMemoryLimit || n > MaxMemoryLimit {
		f.Errorf([]string{"memory_limit"}, "size out of range", "%s: use %s to %s", v, FormatSize(MinMemoryLimit), FormatSize(MaxMemoryLimit))
		return 0
	}
	return n
}

func intIn(f *hclconf.File, v *int, def, lo, hi int, path ...string) int {
	if v == nil {
		return def
	}
	if *v < lo || *v > hi {
		f.Errorf(path, "value out of range", "%d: use %d-%d", *v, lo, hi)
	}
	return *v
}

// checkSecretFile holds a webhook secret file to what the admin token file
// must be: a regular file readable by the verifier only (mode 0600 or
// stricter) and owned by the user the verifier runs as. A missing file is
// left to RequireFile.
func checkSecretFile(f *hclconf.File, p string, path ...string) {
	st, err := os.Stat(p)
	if err != nil {
		return
	}
	if !st.Mode().IsRegular() {
		f.Errorf(path, "webhook secret file is not a regular file", "%s: point secret_file at a file holding the secret", p)
		return
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		f.Errorf(path, "webhook secret file is readable by others", "%s has mode %04o: make it 0600 (readable by the verifier only), e.g. chmod 600 %s", p, perm, p)
	}
	if uid, ok := fileOwner(st); ok && uid != os.Geteuid() {
		f.Errorf(path, "webhook secret file belongs to another user", "%s is owned by uid %d and the verifier runs as uid %d: chown it to the verifier's user", p, uid, os.Geteuid())
	}
}

// parsePrefix reads an IP address (a /32 or /128) or a CIDR prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Protected reports whether addr may never be quarantined.
func (c *Config) Protected(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	for _, p := range c.ProtectedAddresses {
		if p.Contains(a.Unmap()) || p.Contains(a) {
			return true
		}
	}
	return false
}

func checkAddr(f *hclconf.File, addr, key string) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		f.Errorf([]string{key}, "invalid address", "%q: %v (want host:port)", addr, err)
	}
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// String summarises the configuration without secrets.
func (c *Config) String() string {
	return fmt.Sprintf("listen=%s admin=%s store=%s policy=%v", c.Listen, c.AdminListen, c.Store.Engine, c.Policy)
}
