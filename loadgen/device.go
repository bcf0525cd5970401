package loadgen

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/internal/pulsesig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/tpm/quote"
)

// Agent build the virtual fleet runs: what its runtime log measures and
// what the benchmark policy allows.
const (
	AgentBinaryPath = "/usr/bin/pulse-agent"
	AgentVersion    = "loadgen"
)

// AgentBinarySHA256 is the digest of the (virtual) agent build.
var AgentBinarySHA256 = sha256.Sum256([]byte("pulse-agent build measured by pulse-loadgen"))

// Programs are the eBPF programs every virtual agent has pinned and
// measured into its runtime log, as the real agent does for Shield and
// Sentinel.
var Programs = []*cel.EBPFProgram{
	program("shield_xdp", "xdp", "lo"),
	program("sentinel_signal", "tracepoint", "signal/signal_generate"),
}

func program(name, typ, attach string) *cel.EBPFProgram {
	p := &cel.EBPFProgram{Name: name, ProgramType: typ, AttachPoint: attach, KernelRelease: "6.1.0-loadgen"}
	p.InsnSHA256 = sha256.Sum256([]byte("instructions of " + name))
	obj := sha256.Sum256([]byte("object of " + name))
	p.ObjectSHA256 = obj[:]
	copy(p.Tag[:], p.InsnSHA256[:8])
	return p
}

// clockEpoch is the virtual TPMs' last Clear: their Clock (ms since) only
// grows, also across runs against the same store.
var clockEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Device is a virtual agent's attestation state: a virtual TPM's PCRs (the
// firmware's, and the runtime PCR extended with the runtime log) and the
// runtime log. It builds pulses exactly as the agent does. Not safe for
// concurrent use.
type Device struct {
	ID        *Identity
	Boot      *Boot
	Partition string
	// ResetCount is the virtual TPM's reset count (boot number).
	ResetCount uint32

	records    [][]byte // encoded CEL records of this boot
	runtimePCR []byte
	seq        uint64
	started    time.Time
	sent       uint64
}

// NewDevice boots a virtual device: the runtime PCR starts from the
// firmware log's value and the agent binary, its eBPF programs and the
// Fortress state are measured into it.
func NewDevice(id *Identity, boot *Boot, partition string) (*Device, error) {
	d := &Device{ID: id, Boot: boot, Partition: partition, ResetCount: 1,
		runtimePCR: append([]byte(nil), boot.RuntimeInitial...), started: time.Now()}
	contents := []cel.Content{&cel.AgentBinary{Path: AgentBinaryPath, SHA256: AgentBinarySHA256, Size: 24 << 20}}
	for _, p := range Programs {
		contents = append(contents, p)
	}
	contents = append(contents, &cel.FortressState{Active: false, Mechanism: "bpf-lsm", Reason: "BPF-LSM refused (lockdown=integrity)"})
	for _, c := range contents {
		if err := d.measure(c); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// measure appends a record to the runtime log and extends the runtime PCR
// with its digest (log first, as the agent does).
func (d *Device) measure(c cel.Content) error {
	r, err := cel.NewRecord(uint64(len(d.records)), RuntimePCR, c)
	if err != nil {
		return fmt.Errorf("loadgen: measure: %w", err)
	}
	enc, err := r.Append(nil)
	if err != nil {
		return fmt.Errorf("loadgen: measure: %w", err)
	}
	d.records = append(d.records, enc)
	h := sha256.New()
	h.Write(d.runtimePCR)
	h.Write(r.Digests[0].Value)
	d.runtimePCR = h.Sum(nil)
	return nil
}

// Records is the number of runtime-log records of this boot.
func (d *Device) Records() uint64 { return uint64(len(d.records)) }

// PCRs returns the virtual TPM's quoted PCR values (SHA-256 bank).
func (d *Device) PCRs() map[uint32][]byte {
	m := make(map[uint32][]byte, len(firmwarePCRs)+1)
	for i, v := range d.Boot.PCRs {
		m[i] = v
	}
	m[RuntimePCR] = d.runtimePCR
	return m
}

// WantsFirmwareLog reports whether a pulse must carry the whole firmware
// log: the verifier said it lacks this exact log, or asked for it (the
// agent's rule).
func (d *Device) WantsFirmwareLog(vs *pulsev1.VerifierState) bool {
	return vs == nil || vs.GetSendFirmwareLog() || !bytes.Equal(vs.GetFirmwareLogSha256(), d.Boot.Digest[:])
}

// recordsFrom is the first runtime record to send: what the verifier has
// acknowledged for this boot, else everything.
func (d *Device) recordsFrom(vs *pulsev1.VerifierState) uint64 {
	if vs == nil || vs.GetBootResetCount() != d.ResetCount || vs.GetRuntimeRecordsAcked() > uint64(len(d.records)) {
		return 0
	}
	return vs.GetRuntimeRecordsAcked()
}

// BuildOptions are the inputs of one pulse.
type BuildOptions struct {
	// Nonce is the verifier nonce the pulse spends.
	Nonce []byte
	// State is what the verifier said it holds (nil: nothing known).
	State *pulsev1.VerifierState
	// Signer signs the payload instead of the certificate's key (a
	// misbehaving agent).
	Signer crypto.Signer
	// Now is the payload time and TPM clock source (time.Now when zero).
	Now time.Time
}

// Build makes one signed, quoted pulse request.
func (d *Device) Build(o BuildOptions) (*pulsev1.PulseRequest, error) {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	d.seq++
	pn := make([]byte, 16)
	if _, err := rand.Read(pn); err != nil {
		return nil, err
	}
	from := d.recordsFrom(o.State)
	var rt []byte
	for _, r := range d.records[from:] {
		rt = append(rt, r...)
	}
	pinned := make([]*pulsev1.PinnedProgram, len(Programs))
	for i, p := range Programs {
		pinned[i] = &pulsev1.PinnedProgram{Name: p.Name, Id: uint32(100 + i), Tag: p.Tag[:], InsnSha256: p.InsnSHA256[:]}
	}
	id := d.ID
	p := &pulsev1.PulsePayload{
		AgentId: id.ID, Partition: d.Partition, Time: timestamppb.New(now), VerifierNonce: o.Nonce, PulseNonce: pn,
		Sequence: d.seq, LeafKeySha256: id.LeafKey[:], AgentBinarySha256: AgentBinarySHA256[:], AgentVersion: AgentVersion,
		Tpm: true, RuntimePcr: RuntimePCR, RuntimeFirstRecord: from, RuntimeRecords: rt, RuntimeBank: uint32(eventlog.AlgSHA256),
		FirmwareLogSha256: d.Boot.Digest[:],
		Bpf:               &pulsev1.BPFSnapshot{Pinned: pinned, HostProgramCount: 12},
		Fortress:          &pulsev1.FortressStatus{LsmListed: true, Loaded: false, Reason: "BPF-LSM refused (lockdown=integrity)"},
		Health: &pulsev1.Health{Uptime: durationpb.New(now.Sub(d.started)), RssBytes: 38 << 20, CpuMicros: d.seq * 900,
			PulsesSent: d.sent},
		AgentBinaryPath: AgentBinaryPath, AgentBinaryDiskSha256: AgentBinarySHA256[:],
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("loadgen: marshal payload: %w", err)
	}
	signer := o.Signer
	if signer == nil {
		signer = id.Key
	}
	sig, err := pulsesig.Sign(signer, raw)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	pcrs := d.PCRs()
	sel := quote.PCRSelection{Alg: uint16(eventlog.AlgSHA256), PCRs: QuotedPCRs()}
	clock := quote.ClockInfo{Clock: uint64(now.Sub(clockEpoch).Milliseconds()), ResetCount: d.ResetCount, Safe: true}
	attest, qsig, err := quote.SignQuote(id.AK, pcrs, sel, sum[:], clock)
	if err != nil {
		return nil, err
	}
	q := &pulsev1.Quote{Attest: attest, Signature: qsig, PcrBank: uint32(eventlog.AlgSHA256)}
	for _, i := range sel.PCRs {
		q.Pcrs = append(q.Pcrs, &pulsev1.PCRValue{Index: i, Digest: pcrs[i]})
	}
	req := &pulsev1.PulseRequest{Payload: raw, Signature: sig, Quote: q}
	if d.WantsFirmwareLog(o.State) {
		req.FirmwareLog = d.Boot.Log
	}
	d.sent++
	return req, nil
}
