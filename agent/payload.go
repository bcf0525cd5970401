package agent

import (
	"crypto"
	"crypto/rand"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/internal/pulsesig"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// PulseNonceSize is the size of the agent's own random pulse nonce (128 bits).
const PulseNonceSize = 16

// PayloadInput is everything one pulse claims, gathered before signing.
type PayloadInput struct {
	AgentID       string
	Partition     string
	Version       string
	Time          time.Time
	VerifierNonce []byte
	Sequence      uint64
	// PlannedStop marks the agent's last pulse before an orderly stop.
	PlannedStop   *pulsev1.PlannedStop
	LeafKeySHA256 []byte
	// AgentBinarySHA256 is the digest of /proc/self/exe, recomputed for this
	// pulse; AgentBinaryPath and AgentBinaryDiskSHA256 describe the file now
	// at the path the binary was started from.
	AgentBinarySHA256     []byte
	AgentBinaryPath       string
	AgentBinaryDiskSHA256 []byte
	TPM                   bool
	RuntimePCR            uint32
	RuntimeBank           uint16
	RuntimeFirstRecord    uint64
	RuntimeRecords        []byte
	FirmwareLogSHA256     []byte
	BPF                   *pulsev1.BPFSnapshot
	Fortress              *pulsev1.FortressStatus
	SentinelEvents        []*pulsev1.SentinelEvent
	Sentinel              *pulsev1.SentinelReport
	Quarantined           []string
	Health                *pulsev1.Health
	// ClockSync is the kernel's clock discipline state (adjtimex).
	ClockSync *pulsev1.ClockSync
}

// marshalOptions serialise a payload once, deterministically. The verifier
// parses the signed bytes and never re-serialises them, so determinism is
// not needed for verification; it makes equal claims give equal bytes,
// which tests and debugging rely on.
var marshalOptions = proto.MarshalOptions{Deterministic: true}

// Payload builds the PulsePayload message with a fresh pulse nonce.
func (in *PayloadInput) Payload() (*pulsev1.PulsePayload, error) {
	nonce := make([]byte, PulseNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("pulse nonce: %w", err)
	}
	return &pulsev1.PulsePayload{
		AgentId:               in.AgentID,
		Partition:             in.Partition,
		Time:                  timestamppb.New(in.Time.UTC()),
		VerifierNonce:         in.VerifierNonce,
		PulseNonce:            nonce,
		Sequence:              in.Sequence,
		PlannedStop:           in.PlannedStop,
		LeafKeySha256:         in.LeafKeySHA256,
		AgentBinarySha256:     in.AgentBinarySHA256,
		AgentVersion:          in.Version,
		Tpm:                   in.TPM,
		RuntimePcr:            in.RuntimePCR,
		RuntimeFirstRecord:    in.RuntimeFirstRecord,
		RuntimeRecords:        in.RuntimeRecords,
		FirmwareLogSha256:     in.FirmwareLogSHA256,
		Bpf:                   in.BPF,
		Fortress:              in.Fortress,
		SentinelEvents:        in.SentinelEvents,
		Sentinel:              in.Sentinel,
		Health:                in.Health,
		Quarantined:           in.Quarantined,
		AgentBinaryPath:       in.AgentBinaryPath,
		AgentBinaryDiskSha256: in.AgentBinaryDiskSHA256,
		RuntimeBank:           uint32(in.RuntimeBank),
		ClockSync:             in.ClockSync,
	}, nil
}

// SignedPayload is a serialised payload and its signature.
type SignedPayload struct {
	Message   *pulsev1.PulsePayload
	Payload   []byte
	Signature []byte
}

// BuildSigned builds the payload, serialises it once and signs the bytes
// with signer (the private key of the certificate the connection uses).
func BuildSigned(in *PayloadInput, signer crypto.Signer) (*SignedPayload, error) {
	msg, err := in.Payload()
	if err != nil {
		return nil, err
	}
	b, err := marshalOptions.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("marshal payload: %w", err)
	}
	sig, err := pulsesig.Sign(signer, b)
	if err != nil {
		return nil, fmt.Errorf("sign payload: %w", err)
	}
	return &SignedPayload{Message: msg, Payload: b, Signature: sig}, nil
}
