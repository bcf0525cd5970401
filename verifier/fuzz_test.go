package verifier

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/pulsesig"
	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/credential"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/tpm/quote"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/ektrust"
	"github.com/pulse-attest/pulse/verifier/ektrust/ektrusttest"
	"github.com/pulse-attest/pulse/verifier/store"
)

// The fuzz targets run the verifier's own decoding of what an agent sends,
// in process and without a network: FuzzPulseRequest the pulse pipeline
// (verify, then settle as Pulse does), FuzzEnrollRequest the Enroll RPC
// with the context gRPC builds after an mTLS handshake. Keys, the nonce key
// and the clock are fixed, so a pulse input that fails reproduces.

// fuzzNow is the verifier's clock in FuzzPulseRequest.
var fuzzNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

const (
	fuzzTPMAgent  = "fuzz-tpm"
	fuzzMTLSAgent = "fuzz-mtls"
	fuzzPCR       = 14
	// fuzzTPMClock is the virtual TPM's clock (ms) in every quote.
	fuzzTPMClock = 7_200_000
)

// Mode bits of FuzzPulseRequest: which TLS peer sends the request, and
// whether the harness re-signs the payload and re-quotes it (with the
// request's PCR values), so mutated payloads reach the steps after the
// signature and the quote.
const (
	fuzzPeerMTLS = 1 << iota
	fuzzResign
	fuzzRequote
)

const fuzzPolicy = `
policy "fuzz" {
  match {
    agents = ["*"]
  }
  tpm = "optional"
}
`

type fuzzPolicies struct{ set *policy.Set }

func (p fuzzPolicies) Current() *policy.Set { return p.set }

// fuzzKey is a P-256 key derived from label: the same in every run.
func fuzzKey(tb testing.TB, label string) *ecdsa.PrivateKey {
	tb.Helper()
	d := sha256.Sum256([]byte("pulse fuzz key\x00" + label))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// fuzzDevice is a virtual TPM agent: a real firmware log replayed into PCRs
// 0-9, a runtime log extended into the runtime PCR, a software AK.
type fuzzDevice struct {
	fwLog      []byte
	fwDigest   [32]byte
	pcrs       map[uint32][]byte
	records    []cel.Record
	ak         *ecdsa.PrivateKey
	binary     [32]byte
	programs   []*cel.EBPFProgram
	runtimePCR []byte
}

func newFuzzDevice(tb testing.TB) *fuzzDevice {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "eventlogs", "arch-linux-workstation.bin"))
	if err != nil {
		tb.Fatal(err)
	}
	l, err := eventlog.Parse(raw)
	if err != nil {
		tb.Fatal(err)
	}
	replayed, err := l.Replay(eventlog.AlgSHA256)
	if err != nil {
		tb.Fatal(err)
	}
	d := &fuzzDevice{fwLog: raw, fwDigest: sha256.Sum256(raw), pcrs: map[uint32][]byte{}, ak: fuzzKey(tb, "ak"),
		binary: sha256.Sum256([]byte("pulse-agent build under fuzzing"))}
	for _, i := range append(slices.Clone(firmwarePCRs), fuzzPCR) {
		if v, ok := replayed[i]; ok {
			d.pcrs[i] = v
		} else {
			d.pcrs[i] = l.InitialPCR(eventlog.AlgSHA256, i)
		}
	}
	d.runtimePCR = d.pcrs[fuzzPCR]
	for _, name := range []string{"shield_xdp", "sentinel_signal"} {
		p := &cel.EBPFProgram{Name: name, ProgramType: "xdp", AttachPoint: "lo", KernelRelease: "6.1.0"}
		p.InsnSHA256 = sha256.Sum256([]byte("instructions of " + name))
		obj := sha256.Sum256([]byte("object of " + name))
		p.ObjectSHA256 = obj[:]
		copy(p.Tag[:], p.InsnSHA256[:8])
		d.programs = append(d.programs, p)
	}
	d.measure(tb, &cel.AgentBinary{Path: "/usr/bin/pulse-agent", SHA256: d.binary, Size: 24 << 20})
	for _, p := range d.programs {
		d.measure(tb, p)
	}
	d.measure(tb, &cel.FortressState{Active: false, Mechanism: "bpf-lsm", Reason: "lockdown=integrity"})
	return d
}

// measure appends a runtime record and extends the runtime PCR.
func (d *fuzzDevice) measure(tb testing.TB, c cel.Content) {
	tb.Helper()
	r, err := cel.NewRecord(uint64(len(d.records)), fuzzPCR, c)
	if err != nil {
		tb.Fatal(err)
	}
	d.records = append(d.records, r)
	h := sha256.New()
	h.Write(d.runtimePCR)
	h.Write(r.Digests[0].Value)
	d.runtimePCR = h.Sum(nil)
	d.pcrs[fuzzPCR] = d.runtimePCR
}

// fuzzPeer is a TLS peer of FuzzPulseRequest and its signing key.
type fuzzPeer struct {
	peer Peer
	key  crypto.Signer
}

func newFuzzPeer(tb testing.TB, id string) fuzzPeer {
	tb.Helper()
	k := fuzzKey(tb, "agent "+id)
	sum, err := pulsesig.PublicKeyDigest(&k.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return fuzzPeer{peer: Peer{AgentID: id, Key: &k.PublicKey, KeySHA256: sum, Addr: "192.0.2.7"}, key: k}
}

// pulseFuzz is the verifier and agents FuzzPulseRequest runs against.
type pulseFuzz struct {
	v          *Verifier
	dev        *fuzzDevice
	tpm, mtls  fuzzPeer
	tpmNonce   []byte
	mtlsNonce  []byte
	storedRecs uint64
}

func newPulseFuzz(tb testing.TB) *pulseFuzz {
	tb.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.EngineSQLite, filepath.Join(tb.TempDir(), "state.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	nonceKey := sha256.Sum256([]byte("pulse fuzz nonce key"))
	if _, err := st.Secret(ctx, nonceKeyName, func() ([]byte, error) { return nonceKey[:], nil }); err != nil {
		tb.Fatal(err)
	}
	set, diags := policy.Parse("fuzz.hcl", []byte(fuzzPolicy))
	if diags.HasErrors() {
		tb.Fatal(diags)
	}
	trust, err := ektrust.Load(nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := &config.Config{NonceTTL: time.Hour, ClockSkew: 30 * time.Second, AllowTPMless: true, RuntimePCR: fuzzPCR,
		Enrollment: config.Enrollment{Timeout: time.Minute, DefaultPartition: "fleet"}}
	v, err := New(Options{Config: cfg, Store: st, Policies: fuzzPolicies{set}, EKTrust: trust, Now: func() time.Time { return fuzzNow }})
	if err != nil {
		tb.Fatal(err)
	}
	pf := &pulseFuzz{v: v, dev: newFuzzDevice(tb), tpm: newFuzzPeer(tb, fuzzTPMAgent), mtls: newFuzzPeer(tb, fuzzMTLSAgent)}
	akPub, err := quote.SoftwareAK(&pf.dev.ak.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	akName, err := quote.AKName(akPub)
	if err != nil {
		tb.Fatal(err)
	}
	ek := sha256.Sum256([]byte("stand-in EK of " + fuzzTPMAgent))
	for _, a := range []*store.Agent{
		{ID: fuzzTPMAgent, Partition: "fleet", TPM: true, EKSHA256: ek[:], AKPublic: akPub, AKName: akName, EnrolledAt: fuzzNow, RuntimePCR: fuzzPCR},
		{ID: fuzzMTLSAgent, Partition: "fleet", EnrolledAt: fuzzNow, RuntimePCR: fuzzPCR},
	} {
		if err := st.EnrollAgent(ctx, a); err != nil {
			tb.Fatal(err)
		}
	}
	// One verified pulse carrying both logs brings the TPM agent to the
	// steady state (the verifier holds its firmware log and runtime log).
	pf.tpmNonce = pf.nonce(tb, fuzzTPMAgent, 0)
	first := pf.pulse(tb, pf.dev, nil)
	o := v.verify(ctx, pf.tpm.peer, first, fuzzNow)
	if o.Verdict != pulsev1.Verdict_VERDICT_TRUSTED {
		tb.Fatalf("first pulse: %s/%s: %s", o.Verdict, o.Reason, o.Message)
	}
	v.settle(ctx, o)
	if !v.commit(ctx, o) {
		tb.Fatalf("first pulse not committed: %s/%s: %s", o.Verdict, o.Reason, o.Message)
	}
	pf.storedRecs = uint64(len(pf.dev.records))
	pf.tpmNonce = pf.nonce(tb, fuzzTPMAgent, 1)
	pf.mtlsNonce = pf.nonce(tb, fuzzMTLSAgent, 0)
	return pf
}

func (pf *pulseFuzz) nonce(tb testing.TB, agentID string, epoch uint64) []byte {
	tb.Helper()
	n, err := pf.v.nonces.Issue(agentID, epoch, fuzzNow.Add(time.Hour), []byte("fuzzrand"))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// payload is the honest payload of dev sending its records from first.
func (pf *pulseFuzz) payload(tb testing.TB, dev *fuzzDevice, first uint64) *pulsev1.PulsePayload {
	tb.Helper()
	rt, err := cel.Encode(dev.records[first:])
	if err != nil {
		tb.Fatal(err)
	}
	var pinned []*pulsev1.PinnedProgram
	for i, p := range dev.programs {
		pinned = append(pinned, &pulsev1.PinnedProgram{Name: p.Name, Id: uint32(40 + i), Tag: p.Tag[:], InsnSha256: p.InsnSHA256[:]})
	}
	return &pulsev1.PulsePayload{
		AgentId: fuzzTPMAgent, Partition: "fleet", Time: timestamppb.New(fuzzNow.Add(-2 * time.Second)), VerifierNonce: pf.tpmNonce,
		PulseNonce: bytes.Repeat([]byte{0x5a}, 16), Sequence: 2, LeafKeySha256: pf.tpm.peer.KeySHA256[:],
		AgentBinarySha256: dev.binary[:], AgentVersion: "0.9.0", Tpm: true, RuntimePcr: fuzzPCR,
		RuntimeFirstRecord: first, RuntimeRecords: rt, RuntimeBank: uint32(eventlog.AlgSHA256), FirmwareLogSha256: dev.fwDigest[:],
		Bpf:             &pulsev1.BPFSnapshot{Pinned: pinned, HostProgramCount: 9},
		Fortress:        &pulsev1.FortressStatus{LsmListed: true, Reason: "lockdown=integrity"},
		Health:          &pulsev1.Health{Uptime: durationpb.New(time.Hour), RssBytes: 38 << 20, PulsesSent: 2},
		AgentBinaryPath: "/usr/bin/pulse-agent", AgentBinaryDiskSha256: dev.binary[:],
	}
}

// pulse builds a signed, quoted pulse of dev; mut changes the payload and
// the request before signing and quoting.
func (pf *pulseFuzz) pulse(tb testing.TB, dev *fuzzDevice, mut func(*pulsev1.PulsePayload, *pulsev1.PulseRequest)) *pulsev1.PulseRequest {
	tb.Helper()
	first := uint64(0)
	if pf.storedRecs > 0 {
		first = pf.storedRecs
	}
	p := pf.payload(tb, dev, first)
	req := &pulsev1.PulseRequest{Quote: &pulsev1.Quote{PcrBank: uint32(eventlog.AlgSHA256)}}
	if pf.storedRecs == 0 {
		req.FirmwareLog = dev.fwLog
	}
	idx := append(slices.Clone(firmwarePCRs), fuzzPCR)
	for _, i := range idx {
		req.Quote.Pcrs = append(req.Quote.Pcrs, &pulsev1.PCRValue{Index: i, Digest: dev.pcrs[i]})
	}
	if mut != nil {
		mut(p, req)
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	if err != nil {
		tb.Fatal(err)
	}
	req.Payload = raw
	signer := pf.tpm.key
	if p.GetAgentId() == fuzzMTLSAgent {
		signer = pf.mtls.key
	}
	if req.Signature, err = pulsesig.Sign(signer, raw); err != nil {
		tb.Fatal(err)
	}
	if req.Quote != nil {
		if err := pf.requote(req); err != nil {
			tb.Fatal(err)
		}
	}
	return req
}

// requote quotes the request's PCR values over SHA-256 of its payload
// with the agent's AK, as an honest TPM holding those values would.
func (pf *pulseFuzz) requote(req *pulsev1.PulseRequest) error {
	q := req.GetQuote()
	pcrs := map[uint32][]byte{}
	for _, pv := range q.GetPcrs() {
		pcrs[pv.GetIndex()] = pv.GetDigest()
	}
	sel := quote.PCRSelection{Alg: uint16(q.GetPcrBank())}
	for i := range pcrs {
		sel.PCRs = append(sel.PCRs, i)
	}
	slices.Sort(sel.PCRs)
	sum := sha256.Sum256(req.GetPayload())
	attest, sig, err := quote.SignQuote(pf.dev.ak, pcrs, sel, sum[:], quote.ClockInfo{Clock: fuzzTPMClock, ResetCount: 1, Safe: true})
	if err != nil {
		return err
	}
	q.Attest, q.Signature = attest, sig
	return nil
}

// check runs one request through the verifier as Pulse does (verify, then
// settle; nothing is committed, so every input meets the same state) and
// fails on an outcome without a typed reason.
func (pf *pulseFuzz) check(t *testing.T, req *pulsev1.PulseRequest, mode uint8) *Outcome {
	t.Helper()
	fp := pf.tpm
	if mode&fuzzPeerMTLS != 0 {
		fp = pf.mtls
	}
	if mode&fuzzResign != 0 && len(req.GetPayload()) > 0 {
		sig, err := pulsesig.Sign(fp.key, req.GetPayload())
		if err != nil {
			t.Fatal(err)
		}
		req.Signature = sig
	}
	if mode&fuzzRequote != 0 && req.GetQuote() != nil {
		// Selections a TPM cannot express are left as they are.
		_ = pf.requote(req)
	}
	ctx := context.Background()
	o := pf.v.verify(ctx, fp.peer, req, fuzzNow)
	if o == nil {
		t.Fatal("verify returned no outcome")
	}
	if o.agent != nil && o.Reason != pulsev1.Reason_REASON_INTERNAL {
		pf.v.settle(ctx, o)
	}
	_ = pf.v.state(o.agent, o)
	switch {
	case o.Reason == pulsev1.Reason_REASON_INTERNAL:
		t.Fatalf("internal failure on a healthy store: %s", o.Message)
	case accepted(o.Verdict):
		if o.Reason != pulsev1.Reason_REASON_OK || o.Err() != nil {
			t.Fatalf("accepted as %s with reason %s", o.Verdict, o.Reason)
		}
		if o.TPM != (o.Verdict == pulsev1.Verdict_VERDICT_TRUSTED) {
			t.Fatalf("%s with quote verified = %v", o.Verdict, o.TPM)
		}
	default:
		if o.Verdict == pulsev1.Verdict_VERDICT_UNSPECIFIED || o.Reason == pulsev1.Reason_REASON_UNSPECIFIED || o.Reason == pulsev1.Reason_REASON_OK {
			t.Fatalf("not accepted without a typed verdict and reason: %s/%s: %s", o.Verdict, o.Reason, o.Message)
		}
		var f *Failure
		if err := o.Err(); !errors.As(err, &f) || f.Reason != o.Reason {
			t.Fatalf("outcome %s/%s: error %v does not carry the reason", o.Verdict, o.Reason, err)
		}
	}
	return o
}

// FuzzPulseRequest feeds PulseRequest encodings to the pulse pipeline. The
// seeds are honest pulses and typical failures, each checked to end as
// expected so the corpus reaches every pipeline step.
func FuzzPulseRequest(f *testing.F) {
	pf := newPulseFuzz(f)
	withRecord := *pf.dev
	withRecord.records = slices.Clone(pf.dev.records)
	withRecord.pcrs = map[uint32][]byte{}
	for i, val := range pf.dev.pcrs {
		withRecord.pcrs[i] = val
	}
	withRecord.measure(f, &cel.FortressState{Active: false, Mechanism: "bpf-lsm", Reason: "still refused"})
	mtls := func(p *pulsev1.PulsePayload, r *pulsev1.PulseRequest) {
		p.AgentId, p.VerifierNonce, p.LeafKeySha256, p.Tpm = fuzzMTLSAgent, pf.mtlsNonce, pf.mtls.peer.KeySHA256[:], false
		p.RuntimeRecords, p.RuntimeFirstRecord = nil, 0
		r.Quote, r.FirmwareLog = nil, nil
	}
	seeds := []struct {
		name    string
		dev     *fuzzDevice
		mut     func(*pulsev1.PulsePayload, *pulsev1.PulseRequest)
		mode    uint8
		verdict pulsev1.Verdict
		reason  pulsev1.Reason
	}{
		{name: "steady state", verdict: pulsev1.Verdict_VERDICT_TRUSTED, reason: pulsev1.Reason_REASON_OK},
		{name: "whole logs again", mut: func(p *pulsev1.PulsePayload, r *pulsev1.PulseRequest) {
			rt, _ := cel.Encode(pf.dev.records)
			p.RuntimeFirstRecord, p.RuntimeRecords = 0, rt
			r.FirmwareLog = pf.dev.fwLog
		}, verdict: pulsev1.Verdict_VERDICT_TRUSTED, reason: pulsev1.Reason_REASON_OK},
		{name: "new runtime record", dev: &withRecord, verdict: pulsev1.Verdict_VERDICT_TRUSTED, reason: pulsev1.Reason_REASON_OK},
		{name: "informational fields", mut: func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
			p.Quarantined = []string{"198.51.100.4", "2001:db8::1"}
			p.SentinelEvents = []*pulsev1.SentinelEvent{{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, Time: timestamppb.New(fuzzNow),
				SenderPid: 1, SenderComm: "kill", TargetPid: 77, Signal: 15, Detail: "SIGTERM"}}
			p.Bpf.HostPrograms = []*pulsev1.HostProgram{{Id: 3, Name: "sd_fw_egress", Type: "cgroup_skb", Tag: []byte("12345678")}}
			p.Bpf.HostProgramsSha256 = bytes.Repeat([]byte{1}, 32)
		}, verdict: pulsev1.Verdict_VERDICT_TRUSTED, reason: pulsev1.Reason_REASON_OK},
		{name: "clock off", mut: func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
			p.Time = timestamppb.New(fuzzNow.Add(-time.Hour))
		}, verdict: pulsev1.Verdict_VERDICT_CLOCK_DESYNC, reason: pulsev1.Reason_REASON_CLOCK_DESYNC},
		{name: "pin missing", mut: func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
			p.Bpf.Pinned[0].ProblemKind, p.Bpf.Pinned[0].Problem = pulsev1.PinProblem_PIN_PROBLEM_MISSING, "gone"
		}, verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_BPF_PROGRAM_MISSING},
		{name: "runtime PCR", mut: func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) { p.RuntimePcr = 15 },
			verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_RUNTIME_PCR_MISMATCH},
		{name: "sha1 bank", mut: func(_ *pulsev1.PulsePayload, r *pulsev1.PulseRequest) { r.Quote.PcrBank = uint32(eventlog.AlgSHA1) },
			verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_PCR_BANK_NOT_ALLOWED},
		{name: "runtime log gap", mut: func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) { p.RuntimeFirstRecord = 9 },
			verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_RUNTIME_LOG_GAP},
		{name: "claimed binary", mut: func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
			p.AgentBinarySha256 = bytes.Repeat([]byte{9}, 32)
		}, verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_CLAIM_MISMATCH},
		{name: "no quote", mut: func(_ *pulsev1.PulsePayload, r *pulsev1.PulseRequest) { r.Quote = nil },
			verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_TPM_DOWNGRADE},
		{name: "unknown firmware log", mut: func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) {
			p.FirmwareLogSha256 = bytes.Repeat([]byte{7}, 32)
		}, verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING},
		{name: "mTLS only", mut: mtls, mode: fuzzPeerMTLS, verdict: pulsev1.Verdict_VERDICT_DEGRADED, reason: pulsev1.Reason_REASON_OK},
		{name: "bad quarantined list", mut: func(p *pulsev1.PulsePayload, _ *pulsev1.PulseRequest) { p.Quarantined = []string{"fe80::1%eth0"} },
			verdict: pulsev1.Verdict_VERDICT_UNTRUSTED, reason: pulsev1.Reason_REASON_MALFORMED_PAYLOAD},
	}
	for _, s := range seeds {
		dev := s.dev
		if dev == nil {
			dev = pf.dev
		}
		req := pf.pulse(f, dev, s.mut)
		raw, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, s.mode)
		f.Add(raw, s.mode|fuzzResign|fuzzRequote)
		// The seed's outcome, checked once here (a *testing.F cannot run
		// subtests; FuzzPulseRequest's own calls check the invariants).
		o := pf.v.verify(context.Background(), map[bool]fuzzPeer{false: pf.tpm, true: pf.mtls}[s.mode&fuzzPeerMTLS != 0].peer, req, fuzzNow)
		if o.agent != nil {
			pf.v.settle(context.Background(), o)
		}
		if o.Verdict != s.verdict || o.Reason != s.reason {
			f.Fatalf("seed %q: %s/%s (%s), want %s/%s", s.name, o.Verdict, o.Reason, o.Message, s.verdict, s.reason)
		}
	}
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, raw []byte, mode uint8) {
		req := &pulsev1.PulseRequest{}
		if err := proto.Unmarshal(raw, req); err != nil {
			return // gRPC refuses the request before the verifier sees it
		}
		pf.check(t, req, mode)
	})
}

// FuzzEnrollRequest feeds EnrollRequest encodings to the decoding steps of
// enrollment (EK public area and certificate, AK public area and name,
// credential) and to the Enroll RPC itself, with the context gRPC builds
// after an mTLS handshake. Enroll must answer every input with a challenge
// or a typed refusal, never an RPC error or a panic.
func FuzzEnrollRequest(f *testing.F) {
	ctx := context.Background()
	vendor := ektrusttest.NewVendor(f)
	ekKey := fuzzKey(f, "ek")
	ekTmpl := tpm2.ECCEKTemplate
	pt, err := ekKey.PublicKey.Bytes()
	if err != nil {
		f.Fatal(err)
	}
	ekTmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]}, Y: tpm2.TPM2BECCParameter{Buffer: pt[33:]}})
	ekPub := tpm2.Marshal(ekTmpl)
	ekCert := vendor.Issue(f, ekPub, ektrusttest.Profile{})
	akPub, err := quote.SoftwareAK(&fuzzKey(f, "ak").PublicKey)
	if err != nil {
		f.Fatal(err)
	}

	st, err := store.Open(ctx, store.EngineSQLite, filepath.Join(f.TempDir(), "state.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	trust, err := ektrust.Load([]string{vendor.RootFile}, nil)
	if err != nil {
		f.Fatal(err)
	}
	set, diags := policy.Parse("fuzz.hcl", []byte(fuzzPolicy))
	if diags.HasErrors() {
		f.Fatal(diags)
	}
	// No mTLS-only enrollments: Enroll then writes no agent row, and every
	// input meets the same state.
	cfg := &config.Config{NonceTTL: time.Hour, ClockSkew: 30 * time.Second, RuntimePCR: fuzzPCR,
		Enrollment: config.Enrollment{Timeout: time.Minute, DefaultPartition: "fleet", RatePerMinute: 1 << 30,
			Partitions: []config.PartitionRule{{Name: "lab", Agents: []string{"lab-*"}}}}}
	now := time.Now()
	v, err := New(Options{Config: cfg, Store: st, Policies: fuzzPolicies{set}, EKTrust: trust, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	akName, err := quote.AKName(akPub)
	if err != nil {
		f.Fatal(err)
	}
	ekSum := sha256.Sum256(ekPub)
	// An agent enrolled with this EK: a request from it meets the
	// re-enrollment checks, one from a new agent the EK-reuse limit.
	if err := st.EnrollAgent(ctx, &store.Agent{ID: "fuzz-enrolled", Partition: "fleet", TPM: true, EKPublic: ekPub, EKSHA256: ekSum[:],
		EKCertificate: ekCert, AKPublic: akPub, AKName: akName, EnrolledAt: now, RuntimePCR: fuzzPCR}); err != nil {
		f.Fatal(err)
	}
	ca, err := pki.NewCA("pulse fuzz agent CA", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	peerCtx := func(id string) context.Context {
		is, err := pki.Issue(ca, pki.Request{Role: pki.RoleAgent, ID: id})
		if err != nil {
			f.Fatal(err)
		}
		return peer.NewContext(ctx, &peer.Peer{
			Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 40000},
			AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true,
				PeerCertificates: []*x509.Certificate{is.Cert}, VerifiedChains: [][]*x509.Certificate{{is.Cert, ca.Cert}}}},
		})
	}
	enrolled, fresh := peerCtx("fuzz-enrolled"), peerCtx("fuzz-new")

	check := func(t *testing.T, req *pulsev1.EnrollRequest, asEnrolled bool) *pulsev1.EnrollResponse {
		t.Helper()
		// The decoding steps on their own: errors are answers, panics are not.
		if k, err := ektrust.EKPublicKey(req.GetEkPublic()); err == nil {
			_, _, _ = credential.Make(k, akName, []byte("secret"))
		}
		_, _ = ektrust.ParseEKCertificate(req.GetEkCertificate())
		_, _ = trust.Check(req.GetEkPublic(), req.GetEkCertificate(), req.GetEkIntermediates(), now, ektrust.Options{AllowNonconforming: true})
		_ = checkAKAttributes(req.GetAkPublic())
		_, _ = quote.ParseAK(req.GetAkPublic())
		if name, err := quote.AKName(req.GetAkPublic()); err == nil {
			_, _, _ = credential.MakeForPublic(req.GetEkPublic(), name, []byte("secret"))
		}
		c := fresh
		if asEnrolled {
			c = enrolled
		}
		resp, err := v.Enroll(c, req)
		if err != nil {
			t.Fatalf("Enroll: RPC error %v", err)
		}
		switch r := resp.GetResult(); {
		case r == nil:
			if resp.GetEnrollmentId() == "" || len(resp.GetCredentialBlob()) == 0 || len(resp.GetEncryptedSecret()) == 0 {
				t.Fatalf("Enroll: neither a result nor a complete challenge: %v", resp)
			}
		case r.GetReason() == pulsev1.Reason_REASON_UNSPECIFIED:
			t.Fatalf("Enroll: result without a reason: %v", r)
		case r.GetEnrolled() != (r.GetReason() == pulsev1.Reason_REASON_OK):
			t.Fatalf("Enroll: enrolled=%v with reason %s", r.GetEnrolled(), r.GetReason())
		}
		return resp
	}

	seeds := []struct {
		name     string
		req      *pulsev1.EnrollRequest
		enrolled bool
		want     pulsev1.Reason // REASON_UNSPECIFIED: a challenge
	}{
		{name: "re-enrollment", req: &pulsev1.EnrollRequest{Tpm: true, EkPublic: ekPub, EkCertificate: ekCert, AkPublic: akPub, Partition: "fleet", AgentVersion: "0.9.0"}, enrolled: true},
		{name: "EK in use", req: &pulsev1.EnrollRequest{Tpm: true, EkPublic: ekPub, EkCertificate: ekCert, AkPublic: akPub}, want: pulsev1.Reason_REASON_EK_IN_USE},
		{name: "intermediate", req: &pulsev1.EnrollRequest{Tpm: true, EkPublic: ekPub, EkCertificate: ekCert, EkIntermediates: [][]byte{vendor.CA.Cert.Raw}, AkPublic: akPub}, enrolled: true},
		{name: "partition", req: &pulsev1.EnrollRequest{Tpm: true, EkPublic: ekPub, EkCertificate: ekCert, AkPublic: akPub, Partition: "lab"}, enrolled: true, want: pulsev1.Reason_REASON_PARTITION_MISMATCH},
		{name: "AK is the EK", req: &pulsev1.EnrollRequest{Tpm: true, EkPublic: ekPub, EkCertificate: ekCert, AkPublic: ekPub}, enrolled: true, want: pulsev1.Reason_REASON_AK_UNKNOWN},
		{name: "no certificate", req: &pulsev1.EnrollRequest{Tpm: true, EkPublic: ekPub, AkPublic: akPub}, want: pulsev1.Reason_REASON_EK_UNTRUSTED},
		{name: "no TPM", req: &pulsev1.EnrollRequest{Partition: "fleet"}, want: pulsev1.Reason_REASON_TPM_REQUIRED},
	}
	for _, s := range seeds {
		raw, err := proto.Marshal(s.req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, s.enrolled)
		resp, err := v.Enroll(map[bool]context.Context{true: enrolled, false: fresh}[s.enrolled], s.req)
		if err != nil {
			f.Fatalf("seed %q: %v", s.name, err)
		}
		if got := resp.GetResult().GetReason(); got != s.want {
			f.Fatalf("seed %q: reason %s (%s), want %s", s.name, got, resp.GetResult().GetMessage(), s.want)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte, asEnrolled bool) {
		req := &pulsev1.EnrollRequest{}
		if err := proto.Unmarshal(raw, req); err != nil {
			return // gRPC refuses the request before the verifier sees it
		}
		check(t, req, asEnrolled)
	})
}
