package verifier

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/keepalive"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/ektrust"
	"github.com/pulse-attest/pulse/verifier/metrics"
	"github.com/pulse-attest/pulse/verifier/store"
)

// Intervals of the daemon's background loops.
var (
	// PolicyPollInterval is how often the policy files are checked for edits.
	PolicyPollInterval = 2 * time.Second
	// SweepInterval is how often silent agents are looked for.
	SweepInterval = time.Second
	// DirectivePollInterval is how often the shared directive outbox is read.
	DirectivePollInterval = 500 * time.Millisecond
)

// Daemon is a running verifier: store, policy watcher, gRPC server.
type Daemon struct {
	Verifier *Verifier
	Store    *store.Store
	Watcher  *policy.Watcher
	grpc     *grpc.Server
	lis      net.Listener
	log      hclog.Logger
	cancel   context.CancelFunc
	alerter  *dispatchAlerter
	admin    *admin.Server
	certs    *certGuard
	registry *prometheus.Registry
	// health answers grpc.health.v1 on the agent listener; certReloader
	// re-reads the tls block's files (server_health.go).
	health       *health.Server
	certReloader *tlsconfig.Reloader
}

// RefreshRevocations re-reads the revocation list now (it is re-read every
// tls.revocation_refresh anyway); open streams of newly revoked agents end.
func (d *Daemon) RefreshRevocations(ctx context.Context) error { return d.certs.refresh(ctx) }

// AdminAddr is the admin listener's address ("" when disabled).
func (d *Daemon) AdminAddr() string {
	if d.admin == nil {
		return ""
	}
	return d.admin.Addr()
}

// Start opens the store, loads the policy (failing closed when it does not
// validate), and starts serving agents on cfg.Listen.
func Start(ctx context.Context, cfg *config.Config, log hclog.Logger, opts ...func(*Options)) (*Daemon, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	applyMemoryLimit(cfg.MemoryLimit, log)
	st, err := store.Open(ctx, cfg.Store.Engine, cfg.Store.DSN)
	if err != nil {
		return nil, err
	}
	var alerter *dispatchAlerter
	fail := func(err error) (*Daemon, error) {
		if alerter != nil {
			alerter.close()
		}
		st.Close()
		return nil, err
	}
	w, err := policy.NewWatcher(cfg.Policy, log.Named("policy"), nil)
	if err != nil {
		return fail(fmt.Errorf("verifier: policy: %w", err))
	}
	trust, err := ektrust.Load(cfg.Enrollment.EKRoots, cfg.Enrollment.EKAllowSHA256)
	if err != nil {
		return fail(err)
	}
	alerter, err = newDispatchAlerter(cfg.Alerts, log)
	if err != nil {
		return fail(err)
	}
	reg := metrics.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		return fail(err)
	}
	if err := watchComponents(m, w, alerter.d); err != nil {
		return fail(err)
	}
	o := Options{Config: cfg, Store: st, Policies: w, EKTrust: trust, Logger: log, Replica: cfg.Replica, Alerter: alerter, Metrics: m}
	for _, f := range opts {
		f(&o)
	}
	v, err := New(o)
	if err != nil {
		return fail(err)
	}
	tcfg := tlsDefaults(cfg.TLS)
	certs, err := newCertGuard(ctx, st, v.now, tcfg.RevocationRefresh, log.Named("certs"))
	if err != nil {
		return fail(err)
	}
	// One Reloader serves the verifier's certificate to agents and
	// operators and re-reads the agent and operator CA files; its loop is
	// started below.
	tlsCfg, certReloader, err := tlsconfig.ServerConfig(tlsconfig.ServerOptions{CertFile: cfg.TLS.Cert, KeyFile: cfg.TLS.Key,
		ClientCAFile: cfg.TLS.AgentCA, RequireRole: pki.RoleAgent, Logger: log.Named("tls"),
		Now: v.now, CheckPeer: certs.revoked, NextProtos: []string{"h2"}, QuietRefusals: true})
	if err != nil {
		return fail(err)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(fmt.Errorf("verifier: listen %s: %w", cfg.Listen, err))
	}
	// Every refused handshake and undecodable request is counted, logged
	// (rate-limited) and, in a burst from one address, alerted on.
	probes := newProbes(v, tcfg.ProbeAlertAfter, log.Named("probes"))
	decode := newDecodeGuard(probes.malformed)
	srv := grpc.NewServer(
		grpc.Creds(probeCreds{TransportCredentials: credentials.NewTLS(tlsCfg), probes: probes}),
		grpc.ForceServerCodecV2(decode.Codec()),
		grpc.MaxRecvMsgSize(MaxFirmwareLogBytes+MaxPayloadBytes+64<<10),
		// Per-connection cost (docs/performance.md, "Cost per agent"): no
		// read buffer of gRPC's own (32 KiB per connection; TLS already
		// buffers a record; write buffers are shared by default) and
		// fixed windows, which turn off the BDP estimator's ping on every
		// burst of data. 1 MiB lets a 4 MiB firmware log through in four
		// round trips, where the estimator would grow to 16 MiB.
		grpc.ReadBufferSize(0),
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<20),
		// Connections end after max_connection_age (plus grace for calls in
		// flight), so agents handshake again against the current CA files
		// and revocation list. The server pings a connection idle for 2
		// minutes: live agents pulse (and ping, agent/conn.go) more often
		// than that, so only dead peers are pinged, not every idle
		// connection every 30 s ("Cost per agent").
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 10 * time.Second,
			MaxConnectionAge: tcfg.MaxConnectionAge, MaxConnectionAgeGrace: tcfg.MaxConnectionAgeGrace}),
		grpc.ChainUnaryInterceptor(certs.unary),
		grpc.ChainStreamInterceptor(certs.stream),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	srv.RegisterService(decode.Desc(&pulsev1.Attestation_ServiceDesc), v)
	hs := registerEcosystem(srv, decode)
	var adm *admin.Server
	if cfg.AdminListen != "" {
		if adm, err = startAdmin(cfg, cfg.AdminTokenFile, v, reg, log.Named("admin"), certReloader); err != nil {
			lis.Close()
			return fail(err)
		}
		log.Info("admin listener", "listen", adm.Addr())
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &Daemon{Verifier: v, Store: st, Watcher: w, grpc: srv, lis: lis, log: log, cancel: cancel, alerter: alerter, admin: adm}
	d.certs = certs
	d.registry = reg
	d.health, d.certReloader = hs, certReloader
	go certReloader.Run(ctx, tcfg.ReloadInterval)
	go certs.run(ctx)
	go w.Run(ctx, PolicyPollInterval)
	go v.policyFleet(ctx, w)
	go v.sweep(ctx, SweepInterval)
	go v.deliverDirectives(ctx, DirectivePollInterval)
	go v.redispatchAlerts(ctx, AlertOutboxInterval)
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Error("grpc server stopped", "error", err)
		}
	}()
	alerter.raiseAuditChainBroken(ctx, v)
	set := w.Current()
	log.Info("verifier listening", "listen", lis.Addr().String(), "store", st.Engine(), "policy_digest", set.Digest())
	return d, nil
}

// Addr is the agent-facing listen address.
func (d *Daemon) Addr() string { return d.lis.Addr().String() }

// Stop stops serving and closes everything.
func (d *Daemon) Stop() {
	d.health.Shutdown() // health checks see NOT_SERVING while calls drain
	done := make(chan struct{})
	go func() { d.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.grpc.Stop()
	}
	if d.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d.admin.Stop(ctx) //nolint:errcheck // best effort on shutdown
		cancel()
	}
	d.cancel()
	d.alerter.close()
	d.Store.Close()
}

// Run starts the daemon and blocks until ctx is done.
func Run(ctx context.Context, cfg *config.Config, log hclog.Logger) error {
	d, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("verifier stopping")
	d.Stop()
	return nil
}

// tlsDefaults fills the tls block's connection settings left zero (a
// Config built in code rather than loaded).
func tlsDefaults(t config.TLS) config.TLS {
	if t.ReloadInterval <= 0 {
		t.ReloadInterval = config.DefaultTLSReloadInterval
	}
	if t.MaxConnectionAge <= 0 {
		t.MaxConnectionAge = config.DefaultMaxConnectionAge
	}
	if t.MaxConnectionAgeGrace <= 0 {
		t.MaxConnectionAgeGrace = config.DefaultMaxConnectionAgeGrace
	}
	if t.RevocationRefresh <= 0 {
		t.RevocationRefresh = config.DefaultRevocationRefresh
	}
	if t.ProbeAlertAfter <= 0 {
		t.ProbeAlertAfter = config.DefaultProbeAlertAfter
	}
	return t
}
