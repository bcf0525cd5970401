// Package agent is the Pulse agent daemon: it measures itself into the
// runtime log (or checks the launcher did), enrolls its TPM's attestation
// key with the verifier, and every interval sends a pulse — a signed
// payload of claims bound to a TPM quote over SHA-256 of that payload — over
// gRPC with mutual TLS 1.3. It keeps a Directives stream open for the
// verifier's orders (next nonce, interval, firmware log, quarantine,
// release, pulse now).
//
// The agent never imports the verifier or policy packages. Its eBPF
// programs are reached only through the BPF interface (bpf.go).
package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/agent/config"
	"github.com/pulse-attest/pulse/agent/runtimelog"
	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
	"github.com/pulse-attest/pulse/internal/version"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// Version is the agent version reported in enrollments and pulses
// (agent_version) and logged at start: the build's version and revision
// (internal/version; `pulse-agent --version` prints the whole of it).
var Version = version.Agent()

// quotedFirmwarePCRs are quoted in every pulse together with the runtime PCR.
var quotedFirmwarePCRs = []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// rpcTimeout bounds each unary call to the verifier.
const rpcTimeout = 20 * time.Second

// Options configures New.
type Options struct {
	Config *config.Config
	// Logger is the parent logger; the agent names its own ("agent", ...).
	Logger hclog.Logger
	// BPF is the eBPF seam. nil, or bpf.enabled = false in the
	// configuration, means DisabledBPF. When used, Agent.Close closes it.
	BPF BPF
	// BPFFactory, when BPF is nil and bpf is enabled, builds the BPF once
	// the runtime log is open (see agent/ebpf).
	BPFFactory BPFFactory
	// TPM, when set, is used instead of opening Config.TPM; the agent does
	// not close it.
	TPM *tpm.TPM
	// CertPollInterval is how often the certificate files are checked for
	// a new pair (tlsconfig.DefaultPollInterval when zero).
	CertPollInterval time.Duration
	// BinaryPollInterval is how often the agent binary's path is checked
	// for a change on disk (1 s when zero).
	BinaryPollInterval time.Duration
	// Clock reads the kernel's clock discipline state for every pulse
	// (AdjtimexReader when nil).
	Clock ClockReader
	// Now is the wall clock a pulse's time is read from (time.Now when
	// nil); tests set a misset clock here.
	Now func() time.Time
}

// Agent is a running agent. Create with New, then Run; Close releases the
// TPM and the runtime log.
type Agent struct {
	cfg      *config.Config
	log      hclog.Logger
	bpf      BPF
	tpm      *tpm.TPM // nil in mTLS-only mode
	ownTPM   bool
	ak       *tpm.AK
	akDigest string
	rtlog    *runtimelog.Log
	state    *State
	reloader *tlsconfig.Reloader
	tlsBase  *tls.Config
	started  time.Time
	counters counters

	exePath     string
	disk        *diskBinary
	exe         *runningBinary
	certPoll    time.Duration
	binaryPoll  time.Duration
	fwLog       []byte
	fwDigest    []byte
	runtimeInit []byte
	// dauth verifies quarantine and release directives and holds the
	// addresses Shield never drops (directives_sig.go).
	dauth *directiveAuth

	sentinelMu   sync.Mutex    // guards sentinelRead
	sentinelRead SentinelBatch // the last read of Sentinel, acknowledged once committed

	mu           sync.Mutex // guards the fields below
	interval     time.Duration
	nonce        *pulsev1.Nonce
	vstate       *pulsev1.VerifierState
	sendFirmware bool
	resetCount   uint32
	resetKnown   bool
	logStarted   time.Time // start of the runtime log the verifier's acks refer to
	pending      []*pulsev1.SentinelEvent
	lastVerdict  pulsev1.Verdict
	lastReason   pulsev1.Reason
	inLockout    bool // the TPM's lockout state at the last read (logged on change)

	readClock ClockReader
	now       func() time.Time

	// stopSignal is the signal of a planned stop (StopPlanned), 0 until one.
	stopSignal atomic.Int32

	wake        chan struct{} // interval changed
	pulseNow    chan struct{} // pulse as soon as possible
	reconnected chan struct{} // the connection is back: pulse at once, whatever the backoff

	// retryBounds gives the retry waits for an interval (the package's
	// retryBounds; tests replace it).
	retryBounds func(interval time.Duration) (lo, hi time.Duration)

	// code: release_code_pages's state (memory.go).
	code codeRelease
}

// Run loads the configuration's TPM, runtime log, state and certificate,
// runs the agent until ctx is done, and releases everything. It returns nil
// when ctx ends the agent and an error when it cannot start.
func Run(ctx context.Context, cfg *config.Config, logger hclog.Logger) error {
	a, err := New(Options{Config: cfg, Logger: logger})
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}

// New prepares an agent: opens the TPM (mTLS-only when tpm = "auto" finds
// none or tpm = "none"), loads or creates the AK, opens the runtime log of
// this boot, checks that the running binary was measured into it (and
// measures it itself, marked self-measured, when it was not), reads the
// firmware log, the state and the certificate.
func New(opts Options) (*Agent, error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("agent: no configuration")
	}
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	a := &Agent{
		cfg:        cfg,
		log:        logger.Named("agent"),
		bpf:        opts.BPF,
		started:    time.Now(),
		interval:   cfg.Interval,
		certPoll:   opts.CertPollInterval,
		binaryPoll: opts.BinaryPollInterval,
		wake:       make(chan struct{}, 1),
		pulseNow:   make(chan struct{}, 1),

		reconnected: make(chan struct{}, 1),
		retryBounds: retryBounds,
		readClock:   opts.Clock,
		now:         opts.Now,
	}
	if a.readClock == nil {
		a.readClock = AdjtimexReader
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.binaryPoll <= 0 {
		a.binaryPoll = time.Second
	}
	if a.bpf == nil && opts.BPFFactory == nil || !cfg.BPF.Enabled {
		if cfg.BPF.Enabled {
			a.log.Warn("bpf is enabled in the configuration but no bpf implementation is wired into this build; running without eBPF")
		}
		a.bpf = DisabledBPF{}
	}
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()

	if err := a.openTPM(opts.TPM, logger); err != nil {
		return nil, err
	}
	a.readFirmwareLog()

	var err error
	if a.state, err = OpenState(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	rtOpts := runtimelog.Options{PCR: cfg.RuntimePCR, Initial: a.runtimeInit, Logger: logger.Named("agent")}
	if a.tpm != nil {
		rtOpts.TPM = a.tpm
	}
	if a.rtlog, err = runtimelog.Open(cfg.RuntimeLog, rtOpts); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := a.checkMeasured(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if a.bpf == nil && opts.BPFFactory != nil {
		// Programs are measured (log first, then PCR) before they attach.
		b, err := opts.BPFFactory(context.Background(), func(_ context.Context, c cel.Content) error {
			_, err := a.rtlog.Append(c)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.bpf = b
	}
	if a.dauth, err = newDirectiveAuth(cfg, a.log.Named("directives")); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := a.rtlog.View(func(v *runtimelog.View) error {
		a.logStarted = v.Started()
		return nil
	}); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}

	reloader, err := tlsconfig.NewReloader(cfg.TLS.Cert, cfg.TLS.Key, tlsconfig.ReloaderOptions{
		Logger: logger.Named("agent.tls"),
		// A replacement certificate must still name an agent; one that
		// does not is refused and the current pair stays in use.
		Check: checkAgentCert,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	tlsCfg, _, err := tlsconfig.ClientConfig(tlsconfig.ClientOptions{
		Reloader:          reloader,
		ServerCAFile:      cfg.TLS.CA,
		ServerName:        cfg.TLS.ServerName,
		RequireServerRole: pki.RoleVerifier,
		Logger:            logger.Named("agent.tls"),
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.tlsBase, a.reloader = tlsCfg, reloader
	ok = true
	return a, nil
}

// checkAgentCert requires a certificate naming pulse://agent/<id>.
func checkAgentCert(leaf *x509.Certificate) error {
	id, err := pki.IdentityFromCert(leaf)
	if err != nil {
		return fmt.Errorf("agent certificate: %w", err)
	}
	if id.Role != pki.RoleAgent {
		return fmt.Errorf("agent certificate names %s, not pulse://agent/<id>", id)
	}
	return nil
}

// openTPM opens the configured TPM and the AK; no TPM means mTLS-only.
func (a *Agent) openTPM(given *tpm.TPM, logger hclog.Logger) error {
	t := given
	if t == nil {
		var err error
		t, err = tpm.Open(a.cfg.TPM, logger.Named("agent"))
		switch {
		case errors.Is(err, tpm.ErrNoTPM):
			if a.cfg.TPM == "none" {
				a.log.Info("tpm disabled by configuration; running in mtls-only mode (weaker trust, policy must allow it)")
			} else {
				a.log.Warn("no tpm found; running in mtls-only mode (weaker trust, policy must allow it)", "tpm", a.cfg.TPM)
			}
			return nil
		case err != nil:
			return fmt.Errorf("agent: open tpm: %w", err)
		}
		a.ownTPM = true
	}
	a.tpm = t
	ak, err := t.AK(tpm.AKOptions{Handle: a.cfg.AKHandle})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.ak = ak
	sum := sha256.Sum256(ak.Public())
	a.akDigest = hex.EncodeToString(sum[:])
	// One quote at start tells the TPM's reset count (the boot the runtime
	// log belongs to), so the first pulse can send only what the verifier
	// lacks.
	probe := make([]byte, 32)
	if _, err := rand.Read(probe); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if _, err := a.quoteData(probe, []uint32{a.cfg.RuntimePCR}); err != nil {
		return fmt.Errorf("agent: probe quote: %w", err)
	}
	a.log.Info("attestation key ready", "ak_handle", fmt.Sprintf("0x%08x", ak.Handle()), "ak_sha256", a.akDigest[:16], "tpm_reset_count", a.resetCount)
	return nil
}

// readFirmwareLog reads the firmware event log once (it does not change
// within a boot) and derives the value it left in the runtime PCR, where
// the runtime log's replay starts.
func (a *Agent) readFirmwareLog() {
	raw, err := tpm.ReadFirmwareLog(a.cfg.FirmwareLog)
	if err != nil {
		if a.tpm != nil {
			a.log.Warn("cannot read the firmware event log; the verifier will not be able to verify the boot", "path", a.cfg.FirmwareLog, "error", err)
		}
		return
	}
	sum := sha256.Sum256(raw)
	a.fwLog, a.fwDigest = raw, sum[:]
	init, err := runtimelog.FirmwareInitial(raw, a.cfg.RuntimePCR)
	if err != nil {
		a.log.Warn("cannot replay the firmware event log; sending it anyway for the verifier to judge", "path", a.cfg.FirmwareLog, "error", err)
		return
	}
	a.runtimeInit = init
	a.log.Debug("firmware event log read", "path", a.cfg.FirmwareLog, "bytes", len(raw))
}

// checkMeasured makes sure the runtime log's latest agent-binary record is
// the running binary. A record written by the launcher before exec is the
// strong case; otherwise the agent measures itself and marks the record
// self-measured (see docs/agent.md for what that can and cannot prove).
func (a *Agent) checkMeasured() error {
	path, err := ExecutablePath()
	if err != nil {
		return err
	}
	a.exePath = path
	a.disk = &diskBinary{path: path}
	a.exe = &runningBinary{path: SelfExe, every: a.cfg.BinaryRehashEvery}
	fixComm(path)
	digest, err := HashFile(SelfExe)
	if err != nil {
		return fmt.Errorf("hash running binary: %w", err)
	}
	sum, err := a.rtlog.Latest()
	if err != nil {
		return err
	}
	if b := sum.Agent; b != nil && bytes.Equal(b.SHA256[:], digest) {
		a.log.Info("running binary matches its runtime log measurement",
			"path", path, "sha256", hex.EncodeToString(digest), "record", sum.AgentBinaryRecord, "self_measured", sum.SelfMeasured)
		return nil
	}
	return a.selfMeasure(digest)
}

// selfMeasure appends the self-measured marker and an agent-binary record
// for the running binary (digest is its SHA-256).
func (a *Agent) selfMeasure(digest []byte) error {
	st, err := os.Stat(SelfExe)
	if err != nil {
		return fmt.Errorf("stat running binary: %w", err)
	}
	m := &cel.AgentBinary{Path: a.exePath, Size: uint64(st.Size())}
	copy(m.SHA256[:], digest)
	rec, err := a.rtlog.AppendSelfMeasured(m)
	if err != nil {
		return fmt.Errorf("self-measure: %w", err)
	}
	a.log.Warn("agent was not started through the launcher (or its measurement is gone): measured itself after starting (weaker: a modified agent could report any digest)",
		"path", a.exePath, "sha256", hex.EncodeToString(digest), "record", rec)
	return nil
}

// Close releases the runtime log, the BPF seam and the TPM (if the agent
// opened it).
func (a *Agent) Close() error {
	var errs []error
	if a.rtlog != nil {
		errs = append(errs, a.rtlog.Close())
	}
	if a.bpf != nil {
		errs = append(errs, a.bpf.Close())
		a.bpf = DisabledBPF{}
	}
	if a.tpm != nil && a.ownTPM {
		errs = append(errs, a.tpm.Close())
		a.tpm = nil
	}
	return errors.Join(errs...)
}

// ReloadCertificate re-reads the certificate and key now (e.g. on SIGHUP);
// the next pulse moves to a connection made with the new pair.
func (a *Agent) ReloadCertificate() error { return a.reloader.Reload() }

// PulseNow asks for a pulse as soon as possible.
func (a *Agent) PulseNow() {
	select {
	case a.pulseNow <- struct{}{}:
	default:
	}
}

// TPMMode reports whether pulses carry a TPM quote.
func (a *Agent) TPMMode() bool { return a.tpm != nil }

// Interval is the current heartbeat interval.
func (a *Agent) Interval() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.interval
}

func (a *Agent) setInterval(d time.Duration, why string) {
	if d < config.MinInterval {
		d = config.MinInterval
	}
	if d > config.MaxInterval {
		d = config.MaxInterval
	}
	a.mu.Lock()
	old := a.interval
	a.interval = d
	a.mu.Unlock()
	if old != d {
		a.log.Info("heartbeat interval changed", "interval", d.String(), "previous", old.String(), "by", why)
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

// Run runs the agent until ctx is done: enrollment, then pulses every
// interval (and at once on a PulseNow directive or a change of the agent
// binary on disk), directives, certificate reloads, and reconnection with
// exponential backoff and jitter while the verifier is away. While the
// verifier is unreachable no wait exceeds retryBounds' cap (a quarter of the
// interval), and a pulse goes out at once whenever the connection comes
// back (docs/agent.md, "Reconnects").
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go a.reloader.Run(ctx, a.certPoll)
	go a.watchBinary(ctx)

	sess, err := a.dial()
	if err != nil {
		return err
	}
	dirs := a.startDirectives(ctx, sess)
	defer func() {
		// A planned stop (StopPlanned) says so in a last pulse while the
		// connection is still open.
		a.finalPulse(sess)
		dirs()
		sess.close(a.log)
	}()
	a.log.Info("agent started", "verifier", a.cfg.Verifier, "agent_id", sess.agentID, "partition", a.cfg.Partition,
		"tpm", a.tpm != nil, "runtime_pcr", a.cfg.RuntimePCR, "interval", a.Interval().String(), "version", Version)

	pulseLog := a.log.Named("pulse")
	retry := Backoff{Min: time.Second, Max: maxRetryWait}
	next := time.Now()
	swapPending := false
	var swapAt time.Time
	swapBackoff := Backoff{Min: 5 * time.Second, Max: 5 * time.Minute}
	for {
		// A new certificate: move to a connection made with it once the
		// verifier answered on it; until then the old one keeps pulsing.
		if swapPending && !time.Now().Before(swapAt) {
			if ns, err := a.swapSession(ctx, sess); err != nil {
				wait := swapBackoff.Next()
				swapAt = time.Now().Add(wait)
				a.log.Warn("new certificate not usable yet, keeping the current connection", "error", err, "retry_in", wait.Round(time.Second).String())
			} else if ns == sess {
				swapPending = false
				swapBackoff.Reset()
			} else {
				dirs()
				sess.close(a.log)
				sess = ns
				dirs = a.startDirectives(ctx, sess)
				swapPending = false
				swapBackoff.Reset()
				next = time.Now() // pulse on the new connection at once
			}
		}

		if !a.enrolled(sess) {
			if err := a.enroll(ctx, sess); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, ErrEnrollRefused) {
					// The verifier answered: no hurry, an operator must act.
					retry.limit(time.Second, maxRetryWait)
				} else {
					a.limitRetry(&retry, sess)
				}
				wait := retry.Next()
				a.log.Warn("enrollment failed", "error", err, "retry_in", wait.Round(time.Millisecond).String())
				if !a.waitFor(ctx, wait, certChanged(sess, swapPending), a.reconnected) {
					return nil
				}
				if changed(sess.changed) && !swapPending {
					swapPending, swapAt = true, time.Now()
				}
				continue
			}
			retry.Reset()
			next = time.Now()
		}

		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-a.pulseNow:
			timer.Stop()
			if retry.Failures() > 0 && time.Now().Before(next) {
				// Backing off from a failure: a pulse now would fail too.
				continue
			}
		case <-a.reconnected:
			// The verifier is reachable again: pulse at once, whatever the
			// backoff, before a grace or deadline runs out on its side.
			timer.Stop()
		case <-a.wake:
			timer.Stop()
			next = a.nextAfterIntervalChange(next)
			continue
		case <-certChanged(sess, swapPending):
			timer.Stop()
			if !swapPending {
				swapPending, swapAt = true, time.Now()
			}
			continue
		}

		err := a.pulse(ctx, sess)
		if ctx.Err() != nil {
			return nil
		}
		a.releaseAfterPulse()
		switch {
		case errors.Is(err, errNeedEnroll):
			pulseLog.Warn("verifier does not know this agent's attestation key; enrolling again", "error", err)
			if serr := a.state.SetEnrollment(nil); serr != nil {
				return serr
			}
			next = time.Now()
		case err != nil:
			a.counters.pulseErrors.Add(1)
			a.limitRetry(&retry, sess)
			wait := retry.Next()
			pulseLog.Warn("pulse failed", "error", err, "retry_in", wait.Round(time.Millisecond).String(), "failures", retry.Failures())
			next = time.Now().Add(wait)
		default:
			retry.Reset()
			// The pulse went through: a reconnect signalled meanwhile
			// needs no second pulse.
			changed(a.reconnected)
			next = time.Now().Add(a.Interval())
		}
	}
}

// limitRetry caps the waits of b for the current interval while the
// verifier is unreachable. When the interval shrank below the one s was
// dialled for, gRPC's own reconnect backoff may be longer than the new
// cap: it is cut short so the next attempt really dials.
func (a *Agent) limitRetry(b *Backoff, s *session) {
	lo, hi := a.retryBounds(a.Interval())
	b.limit(lo, hi)
	if s.retryCap > hi {
		s.cc.ResetConnectBackoff()
	}
}

// nextAfterIntervalChange reschedules the pending pulse for a new interval.
func (a *Agent) nextAfterIntervalChange(next time.Time) time.Time {
	n := time.Now().Add(a.Interval())
	if n.Before(next) {
		return n
	}
	return next
}

// certChanged is the channel announcing a new certificate, or nil (never
// ready) once a move to it is already pending: a closed channel must not
// wake the loop again and again while a refused move backs off.
func certChanged(s *session, pending bool) <-chan struct{} {
	if pending {
		return nil
	}
	return s.changed
}

// waitFor sleeps d, returning false when ctx ended. A ready wake or
// reconnect channel ends the wait early (the caller checks why).
func (a *Agent) waitFor(ctx context.Context, d time.Duration, wake, reconnect <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
	case <-reconnect:
	}
	return true
}

func changed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// swapSession dials with the newest certificate and asks for a nonce on
// the new connection: only a verifier that accepted the new certificate
// answers, so the old connection is dropped only once the new one works.
// It returns old itself when the newest pair is the one old already uses.
func (a *Agent) swapSession(ctx context.Context, old *session) (*session, error) {
	ns, err := a.dial()
	if err != nil {
		return nil, err
	}
	if bytes.Equal(ns.cert.Certificate[0], old.cert.Certificate[0]) {
		// The pair in use is the one this connection already has (it was
		// swapped back): nothing to move to; watch for the next change.
		old.changed = ns.changed
		ns.close(a.log)
		return old, nil
	}
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := ns.client.Challenge(cctx, &pulsev1.ChallengeRequest{})
	if err != nil {
		ns.close(a.log)
		return nil, fmt.Errorf("challenge with the new certificate: %w", err)
	}
	a.noteNonce(resp.GetNonce(), resp.GetState())
	a.log.Info("moved to the new certificate", "cert_serial", ns.serial, "previous_serial", old.serial, "agent_id", ns.agentID)
	return ns, nil
}

// watchBinary polls the agent binary's path and asks for a pulse as soon
// as the file there changes (replaced, rewritten or removed).
func (a *Agent) watchBinary(ctx context.Context) {
	last, err := statID(a.exePath)
	if err != nil {
		a.log.Warn("cannot stat the agent binary", "path", a.exePath, "error", err)
	}
	t := time.NewTicker(a.binaryPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		id, err := statID(a.exePath)
		if err != nil || id == last {
			continue
		}
		last = id
		a.log.Warn("agent binary changed on disk; pulsing now", "path", a.exePath, "missing", id.missing)
		a.PulseNow()
	}
}

// noteNonce stores a nonce (and state) the verifier handed out.
func (a *Agent) noteNonce(n *pulsev1.Nonce, st *pulsev1.VerifierState) {
	a.mu.Lock()
	// Keep the freshest nonce: a next_nonce directive and a response's
	// next_nonce may cross; the one expiring later was issued later.
	if len(n.GetValue()) > 0 && (a.nonce == nil || !n.GetExpires().AsTime().Before(a.nonce.GetExpires().AsTime())) {
		a.nonce = n
	}
	if st != nil {
		a.vstate = st
	}
	a.mu.Unlock()
	if d := st.GetInterval(); d != nil && d.AsDuration() > 0 {
		a.setInterval(d.AsDuration(), "verifier state")
	}
}

// takeNonce returns an unexpired nonce, asking for one when none is held,
// and forgets it (a nonce is single use).
func (a *Agent) takeNonce(ctx context.Context, s *session) (*pulsev1.Nonce, *pulsev1.VerifierState, error) {
	a.mu.Lock()
	n := a.nonce
	a.nonce = nil
	st := a.vstate
	a.mu.Unlock()
	// Keep a margin so the nonce does not expire on the way.
	if n != nil && (n.GetExpires() == nil || time.Until(n.GetExpires().AsTime()) > 2*time.Second) && st != nil {
		return n, st, nil
	}
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := s.client.Challenge(cctx, &pulsev1.ChallengeRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("challenge: %w", err)
	}
	if len(resp.GetNonce().GetValue()) == 0 {
		return nil, nil, errors.New("challenge: verifier sent no nonce")
	}
	a.noteNonce(nil, resp.GetState())
	a.mu.Lock()
	st = a.vstate
	a.mu.Unlock()
	return resp.GetNonce(), st, nil
}
