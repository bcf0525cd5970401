package verifier_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/simulator"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

const runtimePCR = verifiertest.RuntimePCR

// policyTPM requires a TPM and Secure Boot; policyOptional accepts
// mTLS-only agents in partition "lab" (agents lab-*, by the verifier's
// configuration).
const testPolicy = `
policy "lab" {
  match {
    partitions = ["lab"]
  }
  tpm = "optional"
}

policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  measured_boot {
    secure_boot {}
  }
  on_failure {
    isolate = true
  }
}
`

// env is a verifier served over real gRPC with mTLS on loopback, with its
// own CA, store and policy, and a swtpm booted with a real firmware log.
type env struct {
	t      *testing.T
	dir    string
	ca     *pki.CA
	caFile string
	sw     *simulator.Swtpm
	fwLog  []byte
	daemon *verifier.Daemon
	clock  *fakeClock
}

type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

func init() { verifier.PolicyPollInterval = 200 * time.Millisecond }

func newEnv(t *testing.T, fixture string, extraTPMs ...*simulator.Swtpm) *env {
	t.Helper()
	return newEnvCfg(t, fixture, nil, extraTPMs...)
}

// newEnvCfg is newEnv with the verifier configuration changed by mut
// before the verifier starts.
func newEnvCfg(t *testing.T, fixture string, mut func(*config.Config), extraTPMs ...*simulator.Swtpm) *env {
	t.Helper()
	sw := simtest.Start(t, fixture)
	if sw == nil {
		return nil
	}
	fwLog, err := os.ReadFile(sw.BootLogPath())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tp := verifiertest.WritePKI(t, dir, "pulse test CA", 7*24*time.Hour)
	ca, caFile := tp.CA, tp.CAFile
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte(testPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	ekRoots := []string{sw.LocalCACert(), sw.IssuerCert()}
	for _, x := range extraTPMs {
		ekRoots = append(ekRoots, x.LocalCACert(), x.IssuerCert())
	}
	cfg := &config.Config{
		Listen: "127.0.0.1:0",
		TLS:    config.TLS{Cert: filepath.Join(dir, "v.pem"), Key: filepath.Join(dir, "v-key.pem"), AgentCA: caFile},
		Store:  config.Store{Engine: "sqlite", DSN: filepath.Join(dir, "state.db")},
		Policy: []string{filepath.Join(dir, "policy.hcl")},
		// The operator assigns partitions: lab-* to "lab", the rest to
		// "fleet" (what verifiertest clients ask for by default).
		Enrollment: config.Enrollment{EKRoots: ekRoots, Timeout: time.Minute, DefaultPartition: "fleet",
			Partitions: []config.PartitionRule{{Name: "lab", Agents: []string{"lab-*"}}}},
		NonceTTL:     time.Minute,
		ClockSkew:    30 * time.Second,
		AllowTPMless: true,
		Alerts:       config.Alerts{AuditLog: filepath.Join(dir, "audit.log")},
	}
	if mut != nil {
		mut(cfg)
	}
	clock := &fakeClock{}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := verifier.Start(ctx, cfg, simtest.Logger(t), func(o *verifier.Options) { o.Now = clock.Now })
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(); cancel() })
	return &env{t: t, dir: dir, ca: ca, caFile: caFile, sw: sw, fwLog: fwLog, daemon: d, clock: clock}
}

func (e *env) agent(id string, dev *tpm.TPM) *verifiertest.Client {
	return verifiertest.NewClient(e.t, e.daemon.Addr(), e.caFile, e.ca, id, dev, e.fwLog)
}

func (e *env) openTPM(sw *simulator.Swtpm) *tpm.TPM {
	e.t.Helper()
	dev, err := sw.Open(simtest.Logger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { dev.Close() })
	return dev
}

func ctx(t *testing.T) context.Context { return verifiertest.Ctx(t) }

type parts = verifiertest.Parts

// tlsConfigFor returns a plain client TLS config with an optional certificate.
func (e *env) tlsConfigFor(cert *tls.Certificate) *tls.Config {
	pool, err := pki.ReadCertPool(e.caFile)
	if err != nil {
		e.t.Fatal(err)
	}
	c := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// newForeignCert is an agent certificate from a CA the verifier does not trust.
func newForeignCert(t *testing.T) *tls.Certificate {
	t.Helper()
	ca, err := pki.NewCA("someone else", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.Issue(ca, pki.Request{Role: pki.RoleAgent, ID: "intruder"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// fleetPolicy makes the env's only policy "fleet": every agent, a TPM
// required, and the given sections (HCL, indented two spaces).
func fleetPolicy(t *testing.T, sections string) func(*config.Config) {
	return func(c *config.Config) {
		polFile := filepath.Join(t.TempDir(), "fleet.hcl")
		pol := "policy \"fleet\" {\n  match {\n    agents = [\"*\"]\n  }\n  tpm = \"required\"\n" + sections + "}\n"
		if err := os.WriteFile(polFile, []byte(pol), 0o644); err != nil {
			t.Fatal(err)
		}
		c.Policy = []string{polFile}
	}
}
