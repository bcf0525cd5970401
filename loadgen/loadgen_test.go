package loadgen

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/pulsesig"
	"github.com/pulse-attest/pulse/internal/testutil"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/quote"
	"github.com/pulse-attest/pulse/verifier/store"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond) // 1µs .. 10ms, uniform
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.95, 9500 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {1, 10 * time.Millisecond}} {
		got := h.Quantile(c.q)
		if diff := float64(got-c.want) / float64(c.want); diff > 0.011 || diff < -0.011 {
			t.Errorf("q%.2f = %s, want %s ±1%%", c.q, got, c.want)
		}
	}
	if h.Max() != 10*time.Millisecond || h.Count() != 10000 {
		t.Fatalf("max %s count %d", h.Max(), h.Count())
	}
	var empty Histogram
	if empty.Quantile(0.99) != 0 {
		t.Fatal("empty histogram has a quantile")
	}
	var m Histogram
	m.Merge(&h)
	m.Record(time.Hour) // clamps to the last bucket, max stays exact
	if m.Count() != 10001 || m.Max() != time.Hour || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Fatalf("merge: count %d max %s", m.Count(), m.Max())
	}
}

func TestExpected(t *testing.T) {
	T, U := pulsev1.Verdict_VERDICT_TRUSTED, pulsev1.Verdict_VERDICT_UNTRUSTED
	for _, c := range []struct {
		k    Kind
		v    pulsev1.Verdict
		r    pulsev1.Reason
		want bool
	}{
		{KindHonest, T, pulsev1.Reason_REASON_OK, true},
		{KindHonest, U, pulsev1.Reason_REASON_POLICY_DENIED, false},
		{KindHonest, pulsev1.Verdict_VERDICT_CLOCK_DESYNC, pulsev1.Reason_REASON_CLOCK_DESYNC, false},
		{Kind(RoleReplay), U, pulsev1.Reason_REASON_NONCE_REPLAYED, true},
		{Kind(RoleReplay), T, pulsev1.Reason_REASON_OK, false},
		{Kind(RoleReplay), U, pulsev1.Reason_REASON_NONCE_UNKNOWN, false},
		{Kind(RoleBadSignature), U, pulsev1.Reason_REASON_BAD_SIGNATURE, true},
		{Kind(RoleBadSignature), U, pulsev1.Reason_REASON_NONCE_REPLAYED, false},
		{Kind(RoleStaleNonce), U, pulsev1.Reason_REASON_NONCE_REPLAYED, true},
		{Kind(RoleStaleNonce), U, pulsev1.Reason_REASON_NONCE_UNKNOWN, true},
		{Kind(RoleStaleNonce), U, pulsev1.Reason_REASON_NONCE_EXPIRED, false},
	} {
		if got := Expected(c.k, c.v, c.r); got != c.want {
			t.Errorf("Expected(%s, %s, %s) = %v", c.k, c.v, c.r, got)
		}
	}
}

func rhel8(t *testing.T) *Boot {
	t.Helper()
	b, err := LoadBoot(filepath.Join(testutil.EventLogDir(t), "rhel8-uefi.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBootMatchesRealTPM: the replayed PCRs are the values the real TPM
// reported with that log.
func TestBootMatchesRealTPM(t *testing.T) {
	fx := testutil.LoadFixture(t, "rhel8-uefi")
	b := rhel8(t)
	for i, v := range b.PCRs {
		if !bytes.Equal(v, fx.PCRs["sha256"][int(i)]) {
			t.Errorf("PCR %d = %x, the TPM reported %x", i, v, fx.PCRs["sha256"][int(i)])
		}
	}
	if !bytes.Equal(b.RuntimeInitial, fx.PCRs["sha256"][RuntimePCR]) {
		t.Errorf("PCR %d starts at %x, the TPM reported %x", RuntimePCR, b.RuntimeInitial, fx.PCRs["sha256"][RuntimePCR])
	}
	if !b.SecureBoot {
		t.Error("rhel8-uefi has Secure Boot on")
	}
	if _, err := NewBoot([]byte{1, 2, 3}); err == nil {
		t.Error("garbage accepted as a firmware log")
	}
}

// TestDevicePulse: a virtual agent's pulse verifies as the verifier checks
// it (signature, quote over the payload, PCRs, runtime log replay), and
// follows the verifier's state for what it sends.
func TestDevicePulse(t *testing.T) {
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(ca, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	boot := rhel8(t)
	d, err := NewDevice(id, boot, "p")
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 32)
	rand.Read(nonce) //nolint:errcheck // crypto/rand
	req, err := d.Build(BuildOptions{Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	if err := pulsesig.Verify(id.Cert.PublicKey, req.GetPayload(), req.GetSignature()); err != nil {
		t.Fatalf("signature: %v", err)
	}
	sum := sha256.Sum256(req.GetPayload())
	pcrs := map[uint32][]byte{}
	for _, p := range req.GetQuote().GetPcrs() {
		pcrs[p.GetIndex()] = p.GetDigest()
	}
	res, err := quote.Verify(id.AKPublic, req.GetQuote().GetAttest(), req.GetQuote().GetSignature(), sum[:], pcrs)
	if err != nil {
		t.Fatalf("quote: %v", err)
	}
	if len(res.PCRs) != len(QuotedPCRs()) {
		t.Fatalf("quoted %d PCRs", len(res.PCRs))
	}
	var p pulsev1.PulsePayload
	if err := proto.Unmarshal(req.GetPayload(), &p); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.GetVerifierNonce(), nonce) || p.GetAgentId() != "dev-1" || p.GetRuntimeFirstRecord() != 0 {
		t.Fatalf("payload %v", &p)
	}
	recs, err := cel.Decode(p.GetRuntimeRecords())
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(recs)) != d.Records() {
		t.Fatalf("%d records sent, %d measured", len(recs), d.Records())
	}
	if err := cel.VerifyRecords(recs, RuntimePCR, boot.RuntimeInitial, res.PCRs[RuntimePCR]); err != nil {
		t.Fatalf("runtime log does not replay: %v", err)
	}
	if len(req.GetFirmwareLog()) == 0 {
		t.Fatal("no state known: the firmware log must be sent")
	}

	// Steady state: the verifier holds the log and every record.
	st := &pulsev1.VerifierState{FirmwareLogSha256: boot.Digest[:], RuntimeRecordsAcked: d.Records(), BootResetCount: d.ResetCount}
	req2, err := d.Build(BuildOptions{Nonce: nonce, State: st})
	if err != nil {
		t.Fatal(err)
	}
	var p2 pulsev1.PulsePayload
	if err := proto.Unmarshal(req2.GetPayload(), &p2); err != nil {
		t.Fatal(err)
	}
	if len(req2.GetFirmwareLog()) != 0 || len(p2.GetRuntimeRecords()) != 0 || p2.GetRuntimeFirstRecord() != d.Records() || p2.GetSequence() != p.GetSequence()+1 {
		t.Fatalf("steady-state pulse: log %d bytes, records %d bytes from %d, seq %d", len(req2.GetFirmwareLog()),
			len(p2.GetRuntimeRecords()), p2.GetRuntimeFirstRecord(), p2.GetSequence())
	}
	// Another boot's acknowledgement, or a request for the log.
	for _, vs := range []*pulsev1.VerifierState{
		{FirmwareLogSha256: boot.Digest[:], RuntimeRecordsAcked: d.Records(), BootResetCount: d.ResetCount + 1},
		{FirmwareLogSha256: boot.Digest[:], RuntimeRecordsAcked: d.Records() + 1, BootResetCount: d.ResetCount},
	} {
		if d.recordsFrom(vs) != 0 {
			t.Errorf("state %v: records not resent from 0", vs)
		}
	}
	if !d.WantsFirmwareLog(&pulsev1.VerifierState{FirmwareLogSha256: boot.Digest[:], SendFirmwareLog: true}) {
		t.Error("asked for the log but would not send it")
	}

	// A misbehaving signer is caught by the signature check.
	wrong, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bad, err := d.Build(BuildOptions{Nonce: nonce, State: st, Signer: wrong})
	if err != nil {
		t.Fatal(err)
	}
	if err := pulsesig.Verify(id.Cert.PublicKey, bad.GetPayload(), bad.GetSignature()); !errors.Is(err, pulsesig.ErrBadSignature) {
		t.Fatalf("wrong-key signature: %v", err)
	}
}

func TestConfigRefusals(t *testing.T) {
	base := func() Config {
		return Config{Agents: 1, Interval: time.Second, Duration: time.Second, FirmwareLog: "x", Embedded: true}
	}
	for name, mut := range map[string]func(*Config){
		"no agents":         func(c *Config) { c.Agents = 0 },
		"no duration":       func(c *Config) { c.Duration = 0 },
		"shares over 1":     func(c *Config) { c.ReplayShare, c.SilentShare = 0.6, 0.6 },
		"negative share":    func(c *Config) { c.StaleNonceShare = -0.1 },
		"external no ca":    func(c *Config) { c.Embedded = false; c.VerifierAddr = "127.0.0.1:1" },
		"external no store": func(c *Config) { c.Embedded = false; c.VerifierAddr, c.CAFile, c.CAKeyFile = "127.0.0.1:1", "a", "b" },
		"before external": func(c *Config) {
			c.Embedded = false
			c.VerifierAddr, c.CAFile, c.CAKeyFile, c.StoreDSN, c.Preregister = "127.0.0.1:1", "a", "b", "x", PreregisterBefore
		},
		"bad prefix": func(c *Config) { c.IDPrefix = "a/b" },
	} {
		c := base()
		mut(&c)
		if err := c.defaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c := base()
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
}

func TestAssignRoles(t *testing.T) {
	c := Config{Agents: 100, ReplayShare: 0.05, BadSignatureShare: 0.05, StaleNonceShare: 0.001, SilentShare: 0.1}
	n := map[Role]int{}
	for _, r := range assignRoles(&c) {
		n[r]++
	}
	if n[RoleReplay] != 5 || n[RoleBadSignature] != 5 || n[RoleStaleNonce] != 1 || n[RoleSilent] != 10 || n[RoleHonest] != 79 {
		t.Fatalf("roles %v", n)
	}
}

// shortRun is a small embedded fleet with every kind of misbehaviour, fast
// enough for a unit test: 1s interval, silent agents BLINDED after 2s.
func shortRun(t *testing.T, engine string, mut func(*Config)) *Summary {
	t.Helper()
	c := Config{Agents: 12, Interval: time.Second, Duration: 4 * time.Second, Ramp: 500 * time.Millisecond, Jitter: 0.1,
		ReplayShare: 0.1, BadSignatureShare: 0.1, StaleNonceShare: 0.1, SilentShare: 0.1,
		FirmwareLog: filepath.Join(testutil.EventLogDir(t), "rhel8-uefi.bin"), Embedded: true, StoreEngine: engine,
		Missed: 2, Grace: time.Second, WaitBlinded: true, MaxWait: 15 * time.Second, IDPrefix: "t", Directives: true}
	if mut != nil {
		mut(&c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Run(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func checkPassed(t *testing.T, s *Summary) {
	t.Helper()
	var out bytes.Buffer
	PrintSummary(&out, s)
	if !s.Pass {
		t.Fatalf("run failed:\n%s", out.String())
	}
	if !s.RampDrained || s.SteadyLatency.Count == 0 || s.RampLatency.Count == 0 || s.SteadyLatency.Count+s.RampLatency.Count != s.Pulses {
		t.Fatalf("steady state not cut from the ramp: drained %v, steady %d + ramp %d of %d pulses\n%s",
			s.RampDrained, s.SteadyLatency.Count, s.RampLatency.Count, s.Pulses, out.String())
	}
	if s.ConnectedAtEnd == 0 || s.DirectiveStreams != int64(s.ConnectedAtEnd) {
		t.Fatalf("%d agents connected at the end, %d directive streams\n%s", s.ConnectedAtEnd, s.DirectiveStreams, out.String())
	}
	for _, k := range []Kind{KindHonest, Kind(RoleReplay), Kind(RoleBadSignature), Kind(RoleStaleNonce)} {
		kc := s.Kinds[k]
		if kc == nil || kc.AsExpected == 0 || kc.Unexpected != 0 {
			t.Fatalf("kind %s: %+v\n%s", k, kc, out.String())
		}
	}
	if s.Silent.Blinded != s.Roles[RoleSilent] || s.HonestStore.Trusted != s.Roles[RoleHonest] {
		t.Fatalf("silent %+v honest %+v\n%s", s.Silent, s.HonestStore, out.String())
	}
	if s.Wire.Steady.Mean == 0 || s.Wire.WithFirmwareLog.Mean < 30000 {
		t.Fatalf("wire bytes %+v", s.Wire)
	}
}

// TestRunEmbedded drives a real verifier over mTLS on loopback: every
// honest pulse TRUSTED, every attack caught with its own reason, silent
// agents BLINDED by the verifier's sweeper.
func TestRunEmbedded(t *testing.T) {
	t.Run("sqlite, registered before start", func(t *testing.T) {
		checkPassed(t, shortRun(t, store.EngineSQLite, nil))
	})
	t.Run("sqlite, registered while running", func(t *testing.T) {
		checkPassed(t, shortRun(t, store.EngineSQLite, func(c *Config) { c.Preregister = PreregisterRunning }))
	})
	t.Run("postgres", func(t *testing.T) {
		if _, err := PostgresBinDir(); err != nil {
			testutil.Unavailable(t, "%v", err)
			return
		}
		checkPassed(t, shortRun(t, store.EnginePostgres, func(c *Config) { c.Preregister = PreregisterRunning }))
	})
}

// TestRunCatchesWrongVerdicts: when the verifier does not answer as it
// should (here: a boot the policy denies), the run fails and names the
// pulses.
func TestRunCatchesWrongVerdicts(t *testing.T) {
	s := shortRun(t, store.EngineSQLite, func(c *Config) {
		c.FirmwareLog = filepath.Join(testutil.EventLogDir(t), "ubuntu-2104-no-secure-boot.bin")
		c.anyBoot = true
		c.SilentShare = 0
		c.Duration = 2 * time.Second
	})
	if s.Pass || s.MismatchCount == 0 || len(s.Mismatches) == 0 {
		t.Fatalf("a fleet the policy denies passed: %+v", s.Failures)
	}
	if got := s.Mismatches[0].Got; got != "UNTRUSTED/POLICY_DENIED" {
		t.Fatalf("mismatch names %q", got)
	}
	if s.HonestStore.Trusted != 0 || len(s.HonestStore.NotTrusted) == 0 {
		t.Fatalf("store check: %+v", s.HonestStore)
	}
	if !strings.Contains(strings.Join(s.Failures, ";"), "did not get the verdict") {
		t.Fatalf("failures %v", s.Failures)
	}
	// Without the override the run refuses the boot up front.
	_, err := Run(context.Background(), Config{Agents: 1, Interval: time.Second, Duration: time.Second, Embedded: true,
		FirmwareLog: filepath.Join(testutil.EventLogDir(t), "ubuntu-2104-no-secure-boot.bin")})
	if err == nil || !strings.Contains(err.Error(), "Secure Boot") {
		t.Fatalf("insecure boot: %v", err)
	}
}

func TestJudge(t *testing.T) {
	ok := func() *Summary {
		return &Summary{Agents: 2, Connected: 2, Roles: map[Role]int{RoleHonest: 2},
			Kinds:         map[Kind]*KindCount{KindHonest: {Sent: 4, AsExpected: 4}},
			HonestStore:   StoreCheck{Checked: 2, Trusted: 2},
			SteadyLatency: LatencySummary{Count: 4, P99Ms: 3}}
	}
	cfg := &Config{SLOP99: 50 * time.Millisecond}
	s := ok()
	judge(s, cfg)
	if !s.Pass || !s.SLOMet {
		t.Fatalf("good run judged %v %v", s.Failures, s.SLOMet)
	}
	for name, mut := range map[string]func(*Summary){
		"errors":           func(s *Summary) { s.ErrorCount = 1 },
		"mismatch":         func(s *Summary) { s.MismatchCount = 1 },
		"not connected":    func(s *Summary) { s.Connected = 1 },
		"silent wrong":     func(s *Summary) { s.Silent.Failed = 1 },
		"honest untrusted": func(s *Summary) { s.HonestStore.Trusted = 1 },
		"attack unsent": func(s *Summary) {
			s.Roles[RoleReplay] = 1
		},
	} {
		s := ok()
		mut(s)
		judge(s, cfg)
		if s.Pass || s.SLOMet {
			t.Errorf("%s: passed", name)
		}
	}
	s = ok()
	s.SteadyLatency.P99Ms = 51
	judge(s, cfg)
	if !s.Pass || s.SLOMet {
		t.Fatal("slow run: SLO judged met")
	}
}
