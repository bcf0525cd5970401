package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// Heartbeat is the policy's pulse schedule for the fleet.
type Heartbeat struct {
	Interval time.Duration
	Missed   int
	Grace    time.Duration
}

func policyDuration(d time.Duration) string {
	if d%time.Second != 0 || d < time.Second {
		d = d.Round(time.Second)
		if d < time.Second {
			d = time.Second
		}
	}
	return fmt.Sprintf("%ds", int64(d/time.Second))
}

// BenchPolicy is the policy the benchmark verifier enforces on every agent:
// a TPM quote, Secure Boot, the boot chain of the rhel8-uefi fixture (the
// production example's digests), the virtual fleet's agent build and its two
// required eBPF programs, and the heartbeat.
func BenchPolicy(hb Heartbeat) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by pulse-loadgen: the load test's policy.
policy "loadgen" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  heartbeat {
    interval = %q
    missed   = %d
    grace    = %q
  }
  measured_boot {
    bank = "sha256"
    secure_boot {}
    allow "boot-chain" {
      types = ["EV_EFI_BOOT_SERVICES_APPLICATION", "EV_EFI_BOOT_SERVICES_DRIVER"]
      digests = [
        "40d6cae02973789080cf4c3a9ad11b5a0a4d8bba4438ab96e276cc784454dee7",
        "e8a268c431da72caaae407f729f602b9dbf5d1d43492d4a51cc2b688a08586e3",
        "e4c0382f98feaebfd43923a85fd6da9a20e1a48524a4d5928c31850ca1a96a6e",
      ]
    }
  }
  agent_binary {
    allow = [%q]
  }
  ebpf {
`, policyDuration(hb.Interval), hb.Missed, policyDuration(hb.Grace), hex.EncodeToString(AgentBinarySHA256[:]))
	for _, p := range Programs {
		fmt.Fprintf(&b, "    require %q {\n      digests = [%q]\n    }\n", p.Name, hex.EncodeToString(p.InsnSHA256[:]))
	}
	b.WriteString("  }\n}\n")
	return b.String()
}

// Setup is a directory holding what a verifier for the load test needs: a
// CA (agents' and verifier's), the verifier's certificate, the policy, and a
// verifier configuration file for an external pulse-verifier.
type Setup struct {
	Dir                 string
	CA                  *pki.CA
	CAFile, CAKeyFile   string
	CertFile, KeyFile   string
	PolicyFile          string
	ConfigFile          string
	Engine, DSN, Listen string
	Heartbeat           Heartbeat
	NonceTTL, ClockSkew time.Duration
	StartupGrace        time.Duration
	LogLevel            string
}

// Prepare writes a Setup into dir (created when missing). Engine "sqlite"
// uses dir/state.db unless dsn is set.
func Prepare(dir, engine, dsn, listen string, hb Heartbeat) (*Setup, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	ca, err := pki.NewCA("pulse-loadgen CA", 30*24*time.Hour)
	if err != nil {
		return nil, err
	}
	s := &Setup{Dir: dir, CA: ca, Engine: engine, DSN: dsn, Listen: listen, Heartbeat: hb,
		CAFile: filepath.Join(dir, "ca.pem"), CAKeyFile: filepath.Join(dir, "ca-key.pem"),
		CertFile: filepath.Join(dir, "verifier.pem"), KeyFile: filepath.Join(dir, "verifier-key.pem"),
		PolicyFile: filepath.Join(dir, "policy.hcl"), ConfigFile: filepath.Join(dir, "verifier.hcl"),
		NonceTTL: 2 * time.Minute, ClockSkew: 30 * time.Second, StartupGrace: hb.Grace, LogLevel: "warn"}
	if s.Engine == "" {
		s.Engine = store.EngineSQLite
	}
	if s.Engine == store.EngineSQLite && s.DSN == "" {
		s.DSN = filepath.Join(dir, "state.db")
	}
	if s.Listen == "" {
		s.Listen = "127.0.0.1:0"
	}
	if err := ca.WriteFiles(s.CAFile, s.CAKeyFile, true); err != nil {
		return nil, err
	}
	vc, err := pki.Issue(ca, pki.Request{Role: pki.RoleVerifier, ID: "loadgen-verifier", DNSNames: []string{"localhost"}})
	if err != nil {
		return nil, err
	}
	if err := vc.WriteFiles(s.CertFile, s.KeyFile, true); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.PolicyFile, []byte(BenchPolicy(hb)), 0o644); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	if err := s.WriteConfig(s.ConfigFile, s.Listen, "", ""); err != nil {
		return nil, err
	}
	return s, nil
}

// WriteConfig writes a pulse-verifier configuration file for this setup at
// path: the agent listener on listen, the replica name (empty: the
// verifier's default), and, when adminListen is set, the admin listener
// (metrics, pprof) with a bearer token written to path + ".token" (0600).
// Replicas of one fleet share the setup (CA, certificate, policy, store)
// and differ by listen address and name.
func (s *Setup) WriteConfig(path, listen, replica, adminListen string) error {
	conf := fmt.Sprintf(`# Written by pulse-loadgen prepare.
listen       = %q
policy_files = [%q]
nonce_ttl    = %q
clock_skew   = %q
startup_grace = %q
log_level    = %q
tls {
  cert     = %q
  key      = %q
  agent_ca = %q
}
store {
  engine = %q
  dsn    = %q
}
`, listen, s.PolicyFile, policyDuration(s.NonceTTL), policyDuration(s.ClockSkew), policyDuration(s.StartupGrace), s.LogLevel,
		s.CertFile, s.KeyFile, s.CAFile, s.Engine, s.DSN)
	if replica != "" {
		// Each replica keeps its own audit log (one writer per file).
		conf += fmt.Sprintf("replica_id   = %q\nalerts {\n  audit_log = %q\n}\n", replica, strings.TrimSuffix(path, ".hcl")+"-audit.log")
	}
	if adminListen != "" {
		tok := make([]byte, 32)
		if _, err := rand.Read(tok); err != nil {
			return fmt.Errorf("loadgen: admin token: %w", err)
		}
		tokenFile := path + ".token"
		if err := os.WriteFile(tokenFile, []byte(hex.EncodeToString(tok)+"\n"), 0o600); err != nil {
			return fmt.Errorf("loadgen: %w", err)
		}
		conf += fmt.Sprintf("admin_listen = %q\nadmin_token_file = %q\n", adminListen, tokenFile)
	}
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("loadgen: %w", err)
	}
	return nil
}

// Config is the verifier configuration of the setup (what ConfigFile says).
func (s *Setup) Config() *config.Config {
	return &config.Config{
		Listen:       s.Listen,
		TLS:          config.TLS{Cert: s.CertFile, Key: s.KeyFile, AgentCA: s.CAFile},
		Store:        config.Store{Engine: s.Engine, DSN: s.DSN},
		Policy:       []string{s.PolicyFile},
		Enrollment:   config.Enrollment{Timeout: config.DefaultEnrollTTL},
		NonceTTL:     s.NonceTTL,
		ClockSkew:    s.ClockSkew,
		StartupGrace: s.StartupGrace,
		LogLevel:     s.LogLevel,
		Replica:      "loadgen",
	}
}

// Embedded is a verifier started in this process (verifier.Start) over a
// Setup, with its own PostgreSQL cluster when asked for one.
type Embedded struct {
	Setup   *Setup
	Daemon  *verifier.Daemon
	Started time.Time
	pg      *Postgres
	ownDir  string
	cancel  context.CancelFunc
}

// EmbeddedOptions configure StartEmbedded.
type EmbeddedOptions struct {
	// Dir holds the setup; a temporary directory (removed by Stop) when empty.
	Dir string
	// Engine is "sqlite" or "postgres". For postgres without DSN a
	// throwaway cluster is started (and stopped by Stop).
	Engine, DSN string
	// PostgresDurable makes the throwaway cluster wait for WAL flushes.
	PostgresDurable bool
	Heartbeat       Heartbeat
	Logger          hclog.Logger
	// BeforeStart runs with the setup (its CA mints agent certificates) and
	// the opened store before the verifier starts (pre-registration).
	// nil skips it.
	BeforeStart func(ctx context.Context, s *Setup, st *store.Store) error
}

// StartEmbedded prepares a setup and starts a verifier on 127.0.0.1.
func StartEmbedded(ctx context.Context, o EmbeddedOptions) (*Embedded, error) {
	e := &Embedded{}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "pulse-loadgen-")
		if err != nil {
			return nil, fmt.Errorf("loadgen: %w", err)
		}
		dir, e.ownDir = d, d
	}
	fail := func(err error) (*Embedded, error) {
		e.Stop()
		return nil, err
	}
	dsn := o.DSN
	if o.Engine == store.EnginePostgres && dsn == "" {
		pg, err := StartPostgres(o.PostgresDurable)
		if err != nil {
			return fail(err)
		}
		e.pg = pg
		dsn = pg.DSN()
	}
	s, err := Prepare(dir, o.Engine, dsn, "127.0.0.1:0", o.Heartbeat)
	e.Setup = s
	if err != nil {
		return fail(err)
	}
	if o.BeforeStart != nil {
		st, err := store.Open(ctx, s.Engine, s.DSN)
		if err != nil {
			return fail(err)
		}
		err = o.BeforeStart(ctx, s, st)
		st.Close()
		if err != nil {
			return fail(err)
		}
	}
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	vctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.Started = time.Now()
	d, err := verifier.Start(vctx, s.Config(), log)
	if err != nil {
		return fail(err)
	}
	e.Daemon = d
	return e, nil
}

// Addr is the verifier's agent-facing address.
func (e *Embedded) Addr() string { return e.Daemon.Addr() }

// Stop stops the verifier and removes what StartEmbedded created.
func (e *Embedded) Stop() {
	if e.Daemon != nil {
		e.Daemon.Stop()
		e.Daemon = nil
	}
	if e.cancel != nil {
		e.cancel()
	}
	if e.pg != nil {
		e.pg.Stop()
		e.pg = nil
	}
	if e.ownDir != "" {
		os.RemoveAll(e.ownDir)
		e.ownDir = ""
	}
}
