package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/agent/config"
	"github.com/pulse-attest/pulse/agent/runtimelog"
	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/pulsesig"
	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/internal/version"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/cel"
)

const (
	testAgentID = "edge-7"
	testFixture = "rhel8-uefi"
)

// harness runs an agent against the fake verifier over real mTLS on
// loopback, with swtpm as its TPM (or none).
type harness struct {
	t       *testing.T
	pki     *testPKI
	fv      *fakeVerifier
	addr    string
	stop    func()
	cfg     *config.Config
	tpm     *tpm.TPM
	reboot  func() // swtpm reboot replaying the firmware log
	bpf     BPF
	log     hclog.Logger
	initial []byte

	agent  *Agent
	cancel context.CancelFunc
	done   chan error
}

type harnessOpts struct {
	tpm      bool
	interval time.Duration
	bpf      BPF
	addr     string // listen address for the verifier; "" = any port
	noServer bool   // do not start the verifier
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, pki: newTestPKI(t, testAgentID), log: simtest.Logger(t), bpf: o.bpf}
	dir := t.TempDir()
	fw := filepath.Join(dir, "no-firmware-log")
	if o.tpm {
		sw := simtest.Start(t, testFixture)
		tp, err := sw.Open(h.log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		h.tpm, fw = tp, sw.BootLogPath()
		raw, err := os.ReadFile(fw)
		if err != nil {
			t.Fatal(err)
		}
		h.reboot = func() {
			if _, err := sw.Boot(raw); err != nil {
				t.Fatal(err)
			}
		}
		if h.initial, err = runtimelog.FirmwareInitial(raw, 14); err != nil {
			t.Fatal(err)
		}
	}
	h.fv = newFakeVerifier(t, h.initial)
	addr := o.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if !o.noServer {
		h.addr, h.stop = h.fv.serve(t, h.pki, addr)
	} else {
		h.addr = addr
	}
	interval := o.interval
	if interval == 0 {
		interval = 300 * time.Millisecond
	}
	tpmSpec := "none"
	if o.tpm {
		tpmSpec = "auto" // unused: the harness passes the open TPM
	}
	h.cfg = &config.Config{
		Verifier:    h.addr,
		TLS:         config.TLS{Cert: h.pki.agentCert, Key: h.pki.agentKy, CA: h.pki.caFile},
		TPM:         tpmSpec,
		AKHandle:    tpm.DefaultAKHandle,
		RuntimePCR:  14,
		RuntimeLog:  filepath.Join(dir, "run", "runtime.cel"),
		FirmwareLog: fw,
		StateDir:    filepath.Join(dir, "state"),
		Interval:    interval,
		Partition:   "test-partition",
		BPF:         config.BPF{Enabled: o.bpf != nil, PinDir: "/sys/fs/bpf/pulse-test"},
		LogLevel:    "debug",
	}
	return h
}

// newAgent builds an agent (not running yet).
func (h *harness) newAgent() *Agent {
	h.t.Helper()
	a, err := New(Options{Config: h.cfg, Logger: h.log, TPM: h.tpm, BPF: h.bpf,
		CertPollInterval: 200 * time.Millisecond, BinaryPollInterval: 200 * time.Millisecond})
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// start runs a (or a new agent) until the test ends or stopAgent.
func (h *harness) start(a *Agent) *Agent {
	h.t.Helper()
	if a == nil {
		a = h.newAgent()
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.agent, h.cancel, h.done = a, cancel, make(chan error, 1)
	go func() { h.done <- a.Run(ctx) }()
	h.t.Cleanup(h.stopAgent)
	return a
}

func (h *harness) stopAgent() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("agent Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		h.t.Error("agent did not stop")
	}
	h.agent.Close()
	h.cancel = nil
}

func requireAccepted(t *testing.T, rs []received) {
	t.Helper()
	for i, r := range rs {
		if r.Err != nil {
			t.Fatalf("pulse %d refused by the verifier: %v", i, r.Err)
		}
	}
}

func selfDigest(t *testing.T) []byte {
	t.Helper()
	d, err := HashFile(SelfExe)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestEnrollAndPulse: enrollment by credential activation on swtpm, then
// pulses whose quote, signature, nonce and runtime log all verify; the
// steady state uses the next nonce from each response, sends runtime
// records incrementally and the firmware log only once.
func TestEnrollAndPulse(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true})
	h.start(nil)
	rs := h.fv.waitPulses(t, 4, 60*time.Second)
	requireAccepted(t, rs)
	challenges, enrolls, _ := h.fv.counts()
	if enrolls != 1 || challenges != 1 {
		t.Fatalf("%d enrollments and %d challenges, want 1 and 1 (later pulses use next_nonce)", enrolls, challenges)
	}
	if rs[0].NonceSource != "challenge" || rs[1].NonceSource != "response" || rs[3].NonceSource != "response" {
		t.Fatalf("nonce sources %q %q %q", rs[0].NonceSource, rs[1].NonceSource, rs[3].NonceSource)
	}
	if len(rs[0].FirmwareLog) == 0 || len(rs[1].FirmwareLog) != 0 {
		t.Fatalf("firmware log sizes %d then %d: want whole once, then only its digest", len(rs[0].FirmwareLog), len(rs[1].FirmwareLog))
	}
	first, second := rs[0].Payload, rs[1].Payload
	recs, err := cel.Decode(first.GetRuntimeRecords())
	if err != nil {
		t.Fatal(err)
	}
	if first.GetRuntimeFirstRecord() != 0 || len(recs) != 2 {
		t.Fatalf("first pulse sends records from %d (%d records); want the whole log: self-measured marker and binary", first.GetRuntimeFirstRecord(), len(recs))
	}
	if second.GetRuntimeFirstRecord() != 2 || len(second.GetRuntimeRecords()) != 0 {
		t.Fatalf("second pulse sends records from %d (%d bytes); want nothing new", second.GetRuntimeFirstRecord(), len(second.GetRuntimeRecords()))
	}
	exe := selfDigest(t)
	for i, r := range rs {
		p := r.Payload
		switch {
		case p.GetAgentId() != testAgentID, p.GetPartition() != "test-partition", !p.GetTpm(),
			len(p.GetVerifierNonce()) != 32, len(p.GetPulseNonce()) != PulseNonceSize,
			!bytes.Equal(p.GetLeafKeySha256(), r.PeerKey[:]),
			!bytes.Equal(p.GetAgentBinarySha256(), exe), !bytes.Equal(p.GetAgentBinaryDiskSha256(), exe),
			p.GetRuntimePcr() != 14, p.GetRuntimeBank() != uint32(tpm.AlgSHA256),
			len(p.GetFirmwareLogSha256()) != 32, p.GetHealth().GetRssBytes() == 0,
			p.GetFortress().GetActive(), p.GetFortress().GetReason() == "":
			t.Fatalf("pulse %d payload: %v", i, p)
		}
		if d := time.Since(p.GetTime().AsTime()); d < 0 || d > time.Minute {
			t.Fatalf("pulse %d time %s", i, p.GetTime().AsTime())
		}
		if i > 0 && p.GetSequence() <= rs[i-1].Payload.GetSequence() {
			t.Fatalf("sequence %d after %d", p.GetSequence(), rs[i-1].Payload.GetSequence())
		}
		if i > 0 && bytes.Equal(p.GetPulseNonce(), rs[i-1].Payload.GetPulseNonce()) {
			t.Fatal("pulse nonce repeated")
		}
	}
	lastSeq := rs[len(rs)-1].Payload.GetSequence()
	h.stopAgent()

	// A restart: no new enrollment, no new measurement, the sequence goes on.
	n := len(h.fv.received())
	h.start(nil)
	rs = h.fv.waitPulses(t, n+2, 60*time.Second)
	requireAccepted(t, rs)
	if _, enrolls, _ := h.fv.counts(); enrolls != 1 {
		t.Fatalf("restart enrolled again (%d enrollments)", enrolls)
	}
	after := rs[n].Payload
	if after.GetSequence() <= lastSeq {
		t.Fatalf("sequence went back from %d to %d across a restart", lastSeq, after.GetSequence())
	}
	if after.GetRuntimeFirstRecord() != 2 || len(after.GetRuntimeRecords()) != 0 {
		t.Fatalf("after restart: records from %d (%d bytes); the log should not have grown", after.GetRuntimeFirstRecord(), len(after.GetRuntimeRecords()))
	}
}

// TestTPMResetUnderRunningAgent: a TPM reset (swtpm reboot) while the
// agent runs starts a fresh runtime log, the agent measures itself into it
// again and sends it from record 0; pulses stay trusted.
func TestTPMResetUnderRunningAgent(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true})
	h.start(nil)
	h.fv.waitPulses(t, 2, 60*time.Second)
	h.reboot()
	n := len(h.fv.received())
	rs := h.fv.waitPulses(t, n+3, 60*time.Second)
	// A pulse being built at the instant of the reset may be refused (its
	// records and its quote straddle the reset); the ones after must not.
	requireAccepted(t, rs[len(rs)-2:])
	var fromZero bool
	for _, r := range rs[n:] {
		if r.Err == nil && r.Payload.GetRuntimeFirstRecord() == 0 && len(r.Payload.GetRuntimeRecords()) > 0 {
			fromZero = true
		}
	}
	if !fromZero {
		t.Fatal("the new log was never sent from record 0")
	}
}

// TestMTLSOnly: with no TPM the agent enrolls with tpm=false and pulses
// without a quote.
func TestMTLSOnly(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	a := h.start(nil)
	if a.TPMMode() {
		t.Fatal("agent claims a tpm")
	}
	rs := h.fv.waitPulses(t, 2, 30*time.Second)
	requireAccepted(t, rs)
	for _, r := range rs {
		if r.Payload.GetTpm() || r.Quote != nil {
			t.Fatalf("mtls-only pulse with tpm=%t quote=%v", r.Payload.GetTpm(), r.Quote != nil)
		}
		if !bytes.Equal(r.Payload.GetAgentBinarySha256(), selfDigest(t)) {
			t.Fatal("binary digest")
		}
		if got, want := r.Payload.GetAgentVersion(), version.Agent(); got != want || got == "" {
			t.Fatalf("pulse agent_version %q, want the build's %q", got, want)
		}
	}
	if _, enrolls, _ := h.fv.counts(); enrolls != 1 {
		t.Fatalf("%d enrollments", enrolls)
	}
	h.fv.mu.Lock()
	tpmEnrolled, enrollVersion := h.fv.tpmEnrolled, h.fv.enrollVersion
	h.fv.mu.Unlock()
	if tpmEnrolled {
		t.Fatal("enrolled with a tpm")
	}
	if enrollVersion != version.Agent() {
		t.Fatalf("enrollment agent_version %q, want the build's %q", enrollVersion, version.Agent())
	}
}

// TestReenrollWhenForgotten: a verifier that lost the enrollment answers
// NOT_ENROLLED; the agent enrolls again and goes on.
func TestReenrollWhenForgotten(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true})
	h.start(nil)
	h.fv.waitPulses(t, 2, 60*time.Second)
	h.fv.mu.Lock()
	h.fv.enrolled = false
	h.fv.mu.Unlock()
	rs := h.fv.waitPulses(t, len(h.fv.received())+3, 60*time.Second)
	if _, enrolls, _ := h.fv.counts(); enrolls != 2 {
		t.Fatalf("%d enrollments, want 2", enrolls)
	}
	if last := rs[len(rs)-1]; last.Err != nil {
		t.Fatalf("after re-enrollment: %v", last.Err)
	}
}

// TestEnrollmentRefusedThenApproved: a refused enrollment is retried with
// backoff and no pulse is sent until the verifier accepts it.
func TestEnrollmentRefusedThenApproved(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true})
	h.fv.mu.Lock()
	h.fv.refuseEnrolls = 2
	h.fv.mu.Unlock()
	h.start(nil)
	rs := h.fv.waitPulses(t, 1, 60*time.Second)
	requireAccepted(t, rs)
	if _, enrolls, _ := h.fv.counts(); enrolls != 3 {
		t.Fatalf("%d enrollment attempts, want 3 (two refused)", enrolls)
	}
	err := error(&EnrollError{Reason: pulsev1.Reason_REASON_EK_UNTRUSTED, Message: "m"})
	if !errors.Is(err, ErrEnrollRefused) {
		t.Fatal("EnrollError does not match ErrEnrollRefused")
	}
}

// TestTransientRefusalRetried: PCR_DIGEST (a PCR extended between read and
// quote) and a spent nonce are retried at once with a fresh nonce.
func TestTransientRefusalRetried(t *testing.T) {
	for _, reason := range []pulsev1.Reason{pulsev1.Reason_REASON_PCR_DIGEST, pulsev1.Reason_REASON_NONCE_REPLAYED} {
		t.Run(reason.String(), func(t *testing.T) {
			h := newHarness(t, harnessOpts{tpm: true, interval: time.Hour})
			a := h.start(nil)
			h.fv.waitPulses(t, 1, 60*time.Second)
			h.fv.mu.Lock()
			h.fv.refuseNext = reason
			h.fv.mu.Unlock()
			a.PulseNow()
			rs := h.fv.waitPulses(t, 3, 30*time.Second)
			// Pulse 2 was refused by the test; pulse 3 is the immediate
			// retry (the interval is an hour).
			if rs[2].Err != nil || rs[2].Payload.GetSequence() <= rs[1].Payload.GetSequence() {
				t.Fatalf("retry: %v", rs[2].Err)
			}
		})
	}
}

// TestReconnectWithBackoff: while the verifier is away the agent retries
// with growing, jittered waits (no busy loop); when it comes back on the
// same address the agent enrolls and pulses, and after an outage it
// reconnects by itself.
func TestReconnectWithBackoff(t *testing.T) {
	// Something listening that is not a verifier: every TLS handshake fails.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	// A 2 s interval caps the waits at 500 ms, the shortest being 125 ms.
	h := newHarness(t, harnessOpts{addr: addr, noServer: true, interval: 2 * time.Second})
	h.start(nil)
	time.Sleep(4 * time.Second)
	lis.Close()
	// gRPC's own dial backoff plus the agent's: a few attempts per
	// interval, never more than one per shortest wait, not a busy loop.
	lo, _ := retryBounds(h.cfg.Interval)
	if n := accepted.Load(); n == 0 || n > int64(4*time.Second/lo) {
		t.Fatalf("%d connection attempts in 4 s while the verifier was away", n)
	}
	t.Logf("%d connection attempts in 4 s while the verifier was away", accepted.Load())
	_, stop := h.fv.serve(t, h.pki, addr)
	rs := h.fv.waitPulses(t, 2, 90*time.Second)
	requireAccepted(t, rs)

	// An outage after working, longer than an interval (a pulse falls
	// due and fails): the agent comes back by itself.
	stop()
	before := len(h.fv.received())
	time.Sleep(h.cfg.Interval + time.Second)
	h.fv.serve(t, h.pki, addr)
	rs = h.fv.waitPulses(t, before+2, 90*time.Second)
	requireAccepted(t, rs)
	if last := rs[len(rs)-1].Payload.GetHealth(); last.GetPulseErrors() == 0 {
		t.Fatalf("health does not count the failures: %v", last)
	}
}

// TestCertificateReload: a new certificate and key on disk are picked up
// without a restart; every pulse is signed with the key its TLS connection
// proved (no LEAF_KEY_MISMATCH), and a replacement that is not an agent
// certificate is refused while pulses go on with the old one.
func TestCertificateReload(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true})
	h.start(nil)
	rs := h.fv.waitPulses(t, 2, 60*time.Second)
	oldKey := rs[0].PeerKey

	// A verifier certificate is not an agent's: refused, pulses go on.
	bad, err := pki.Issue(h.pki.ca, pki.Request{Role: pki.RoleVerifier, ID: "not-an-agent"})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.WriteFiles(h.pki.agentCert, h.pki.agentKy, true); err != nil {
		t.Fatal(err)
	}
	n := len(h.fv.received())
	rs = h.fv.waitPulses(t, n+3, 60*time.Second)
	requireAccepted(t, rs)
	if rs[len(rs)-1].PeerKey != oldKey {
		t.Fatal("a refused certificate was used")
	}

	iss := h.pki.issueAgent(t, testAgentID)
	newKey := pulsesig.LeafKeyDigest(iss.Cert)
	deadline := time.Now().Add(60 * time.Second)
	for {
		rs = h.fv.received()
		if rs[len(rs)-1].PeerKey == newKey {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent never moved to the new certificate")
		}
		time.Sleep(100 * time.Millisecond)
	}
	rs = h.fv.waitPulses(t, len(rs)+2, 60*time.Second)
	requireAccepted(t, rs)
	for _, r := range rs {
		if !bytes.Equal(r.Payload.GetLeafKeySha256(), r.PeerKey[:]) {
			t.Fatal("payload leaf key differs from the connection's")
		}
	}
	if _, enrolls, _ := h.fv.counts(); enrolls != 1 {
		t.Fatalf("a new certificate of the same agent re-enrolled (%d)", enrolls)
	}
}

// fakeBPF records what the agent asks of it.
type fakeBPF struct {
	mu          sync.Mutex
	quarantined []netip.Addr
	calls       []string
	events      []*pulsev1.SentinelEvent
}

func (f *fakeBPF) Snapshot(context.Context) (*pulsev1.BPFSnapshot, error) {
	d := sha256.Sum256([]byte("host programs"))
	return &pulsev1.BPFSnapshot{
		Pinned:             []*pulsev1.PinnedProgram{{Name: "shield", Id: 7, Tag: []byte{1, 2, 3, 4, 5, 6, 7, 8}, InsnSha256: progDigest[:]}},
		HostPrograms:       []*pulsev1.HostProgram{{Id: 7, Name: "shield", Type: "xdp"}},
		HostProgramsSha256: d[:],
		HostProgramCount:   1,
	}, nil
}

var progDigest = sha256.Sum256([]byte("shield instructions"))

func (f *fakeBPF) Measured(context.Context) ([]*cel.EBPFProgram, error) {
	return []*cel.EBPFProgram{{Name: "shield", ProgramType: "xdp", AttachPoint: "lo", InsnSHA256: progDigest,
		Tag: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, KernelRelease: "test"}}, nil
}

func (f *fakeBPF) Fortress(context.Context) (*pulsev1.FortressStatus, error) {
	return &pulsev1.FortressStatus{LsmListed: true, Reason: "bpf-lsm refused: EPERM (lockdown)"}, nil
}

func (f *fakeBPF) SentinelEvents(context.Context) ([]*pulsev1.SentinelEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ev := f.events
	f.events = nil
	return ev, nil
}

func (f *fakeBPF) Quarantine(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "quarantine "+a.String())
	if !slices.Contains(f.quarantined, a) {
		f.quarantined = append(f.quarantined, a)
	}
	return nil
}

func (f *fakeBPF) Release(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "release "+a.String())
	f.quarantined = slices.DeleteFunc(f.quarantined, func(x netip.Addr) bool { return x == a })
	return nil
}

func (f *fakeBPF) Quarantined() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.quarantined)
}

func (f *fakeBPF) Close() error { return nil }

// TestDirectives: each directive kind does what it says, through the
// stream the agent keeps open.
func TestDirectives(t *testing.T) {
	fb := &fakeBPF{events: []*pulsev1.SentinelEvent{{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, SenderPid: 42, Signal: 9, Time: timestamppb.Now()}}}
	h := newHarness(t, harnessOpts{tpm: true, interval: time.Hour, bpf: fb})
	dkey := useDirectiveKey(t, h) // quarantine and release act only when signed
	h.start(nil)
	rs := h.fv.waitPulses(t, 1, 60*time.Second)
	requireAccepted(t, rs)
	first := rs[0].Payload
	if len(first.GetSentinelEvents()) != 1 || len(first.GetBpf().GetHostPrograms()) != 1 {
		t.Fatalf("first pulse: events %v, host programs %v", first.GetSentinelEvents(), first.GetBpf().GetHostPrograms())
	}
	recs, _ := cel.Decode(first.GetRuntimeRecords())
	st := cel.Latest(recs)
	if st.Programs["shield"] == nil || st.Fortress == nil || st.Fortress.Active {
		t.Fatalf("runtime log lacks the program or fortress records: %+v", st)
	}
	// Wait until the directives stream is open.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, _, streams := h.fv.counts(); streams > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no directives stream")
		}
		time.Sleep(50 * time.Millisecond)
	}
	send := func(d *pulsev1.Directive) { h.fv.directives <- d }
	next := func() received {
		t.Helper()
		rs := h.fv.waitPulses(t, len(h.fv.received())+1, 30*time.Second)
		requireAccepted(t, rs)
		return rs[len(rs)-1]
	}

	send(&pulsev1.Directive{Id: "1", Kind: &pulsev1.Directive_PulseNow{PulseNow: &pulsev1.PulseNow{}}})
	r := next()
	if len(r.Payload.GetSentinelEvents()) != 0 || len(r.Payload.GetBpf().GetHostPrograms()) != 0 {
		t.Fatalf("delivered events or an unchanged host program list sent again: %v", r.Payload)
	}

	send(signFor(t, dkey, &pulsev1.Directive{Kind: &pulsev1.Directive_Quarantine{Quarantine: &pulsev1.Quarantine{
		Addresses: []string{"10.0.0.9", "not-an-ip", "::ffff:10.0.0.10"}, Offender: "edge-13", Reason: pulsev1.Reason_REASON_BINARY_CHANGED}}}, testAgentID, time.Now()))
	r = next()
	if got := r.Payload.GetQuarantined(); !slices.Equal(got, []string{"10.0.0.9", "10.0.0.10"}) {
		t.Fatalf("quarantined %v", got)
	}
	send(signFor(t, dkey, &pulsev1.Directive{Kind: &pulsev1.Directive_Release{Release: &pulsev1.Release{Addresses: []string{"10.0.0.9"}}}}, testAgentID, time.Now()))
	r = next()
	if got := r.Payload.GetQuarantined(); !slices.Equal(got, []string{"10.0.0.10"}) {
		t.Fatalf("after release %v", got)
	}

	send(&pulsev1.Directive{Id: "4", Kind: &pulsev1.Directive_SendFirmwareLog{SendFirmwareLog: &pulsev1.SendFirmwareLog{}}})
	if r = next(); len(r.FirmwareLog) == 0 {
		t.Fatal("send_firmware_log: the next pulse lacks the firmware log")
	}

	send(&pulsev1.Directive{Id: "5", Kind: &pulsev1.Directive_NextNonce{NextNonce: &pulsev1.Nonce{}}}) // the server fills the value
	send(&pulsev1.Directive{Id: "6", Kind: &pulsev1.Directive_Rotate{Rotate: &pulsev1.Rotate{}}})
	send(&pulsev1.Directive{Id: "7", Kind: &pulsev1.Directive_PulseNow{PulseNow: &pulsev1.PulseNow{}}})
	if r = next(); r.NonceSource != "directive" {
		t.Fatalf("pulse used a %s nonce, want the directive's", r.NonceSource)
	}

	send(&pulsev1.Directive{Id: "8", Kind: &pulsev1.Directive_SetInterval{SetInterval: durationpb.New(time.Second)}})
	n := len(h.fv.received())
	h.fv.waitPulses(t, n+2, 30*time.Second) // with an hour's interval only the new one explains these
	if got := h.agent.Interval(); got != time.Second {
		t.Fatalf("interval %s", got)
	}
	fb.mu.Lock()
	calls := slices.Clone(fb.calls)
	fb.mu.Unlock()
	if !slices.Equal(calls, []string{"quarantine 10.0.0.9", "quarantine 10.0.0.10", "release 10.0.0.9"}) {
		t.Fatalf("bpf calls %v", calls)
	}
}

// TestBinaryChangeTriggersPulse: replacing the agent binary on disk is
// reported at once, not at the next interval.
func TestBinaryChangeTriggersPulse(t *testing.T) {
	h := newHarness(t, harnessOpts{tpm: true, interval: time.Hour})
	a := h.newAgent()
	// Watch a copy of the running binary standing in for its install path.
	p := filepath.Join(t.TempDir(), "pulse-agent")
	src, err := os.ReadFile(SelfExe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, src, 0o755); err != nil {
		t.Fatal(err)
	}
	a.exePath, a.disk = p, &diskBinary{path: p}
	h.start(a)
	rs := h.fv.waitPulses(t, 1, 60*time.Second)
	if !bytes.Equal(rs[0].Payload.GetAgentBinaryDiskSha256(), rs[0].Payload.GetAgentBinarySha256()) {
		t.Fatal("disk and running digests differ before the change")
	}
	if err := os.WriteFile(p+".new", append(src, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".new", p); err != nil {
		t.Fatal(err)
	}
	rs = h.fv.waitPulses(t, 2, 30*time.Second)
	got := rs[1].Payload
	want := sha256.Sum256(append(src, 0))
	if !bytes.Equal(got.GetAgentBinaryDiskSha256(), want[:]) || bytes.Equal(got.GetAgentBinaryDiskSha256(), got.GetAgentBinarySha256()) {
		t.Fatalf("after replacement: disk %x running %x", got.GetAgentBinaryDiskSha256(), got.GetAgentBinarySha256())
	}
	if got.GetAgentBinaryPath() != p {
		t.Fatalf("path %q", got.GetAgentBinaryPath())
	}
}

// TestNoImportOfVerifierOrPolicy: the agent (and its command) never
// depends on the verifier or the policy engine.
func TestNoImportOfVerifierOrPolicy(t *testing.T) {
	testutil.RequireTools(t, "go")
	root := testutil.RepoRoot(t)
	out, err := runGo(root, "list", "-deps", "-f", "{{.ImportPath}}", "./agent/...", "./cmd/pulse-agent")
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/pulse-attest/pulse/"
	checked := 0
	for _, line := range bytes.Split(out, []byte("\n")) {
		p := string(bytes.TrimSpace(line))
		if p == "" {
			continue
		}
		checked++
		for _, banned := range []string{mod + "verifier", mod + "policy"} {
			if p == banned || len(p) > len(banned) && p[:len(banned)+1] == banned+"/" {
				t.Errorf("the agent depends on %s", p)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("go list returned only %d packages", checked)
	}
}

// TestPulseAtOnceOnReconnect: when the connection to the verifier comes
// back the agent pulses at once, even when its next pulse (interval) and
// its next retry (backoff, here stretched to an hour) are far away — so
// only the reconnect can bring the pulse the test waits for.
func TestPulseAtOnceOnReconnect(t *testing.T) {
	for _, tc := range []struct {
		name string
		// failWhileAway asks for a pulse during the outage: it fails and
		// puts the agent in an hour-long backoff.
		failWhileAway bool
	}{
		{name: "no pulse due while away"},
		{name: "pulse failed while away", failWhileAway: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{interval: time.Hour})
			a := h.newAgent()
			a.retryBounds = func(time.Duration) (time.Duration, time.Duration) { return time.Hour, time.Hour }
			h.start(a)
			h.fv.waitPulses(t, 1, 60*time.Second)
			waitCounter(t, "answered pulses", &a.counters.pulsesSent)
			h.stop()
			before := len(h.fv.received())
			if tc.failWhileAway {
				a.PulseNow()
				waitCounter(t, "failed pulses", &a.counters.pulseErrors)
			} else {
				time.Sleep(500 * time.Millisecond) // let the agent see the loss
			}
			_, h.stop = h.fv.serve(t, h.pki, h.addr)
			rs := h.fv.waitPulses(t, before+1, 60*time.Second)
			requireAccepted(t, rs)
			if n := a.counters.reconnects.Load(); n == 0 {
				t.Fatal("the reconnect was not counted")
			}
			if n := a.counters.pulseErrors.Load(); !tc.failWhileAway && n != 0 {
				t.Fatalf("%d pulses failed although none was due during the outage", n)
			}
		})
	}
}

// waitCounter waits until c is not zero.
func waitCounter(t *testing.T, what string, c *atomic.Uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
