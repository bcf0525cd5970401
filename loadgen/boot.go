package loadgen

import (
	"crypto/sha256"
	"fmt"
	"os"

	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// RuntimePCR is the PCR virtual agents extend with their runtime log (the
// agent's default: only a reboot resets it).
const RuntimePCR = 14

// firmwarePCRs are the PCRs every pulse quotes besides the runtime PCR.
var firmwarePCRs = []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// QuotedPCRs are the PCRs a virtual agent quotes, ascending.
func QuotedPCRs() []uint32 { return append(append([]uint32(nil), firmwarePCRs...), RuntimePCR) }

// Boot is the firmware side of a virtual device: a real firmware event log
// and the SHA-256 PCR values it replays to.
type Boot struct {
	// Path is where the log was read from.
	Path string
	Log  []byte
	// Digest is SHA-256 of Log (what payloads carry).
	Digest [32]byte
	// PCRs holds PCRs 0-9 as the log replays them (zero when the log does
	// not extend one).
	PCRs map[uint32][]byte
	// RuntimeInitial is the runtime PCR's value after the firmware log: the
	// start of the runtime log's replay.
	RuntimeInitial []byte
	// SecureBoot is whether the log shows Secure Boot enabled.
	SecureBoot bool
}

// LoadBoot reads a firmware event log and replays it in the SHA-256 bank.
func LoadBoot(path string) (*Boot, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loadgen: firmware log: %w", err)
	}
	b, err := NewBoot(raw)
	if err != nil {
		return nil, fmt.Errorf("loadgen: firmware log %s: %w", path, err)
	}
	b.Path = path
	return b, nil
}

// NewBoot replays raw (a firmware event log) in the SHA-256 bank and checks
// that the log verifies against its own replay, as the verifier will.
func NewBoot(raw []byte) (*Boot, error) {
	l, err := eventlog.Parse(raw)
	if err != nil {
		return nil, err
	}
	replayed, err := l.Replay(eventlog.AlgSHA256)
	if err != nil {
		return nil, err
	}
	b := &Boot{Log: raw, Digest: sha256.Sum256(raw), PCRs: map[uint32][]byte{}}
	for _, i := range firmwarePCRs {
		if v, ok := replayed[i]; ok {
			b.PCRs[i] = v
		} else {
			b.PCRs[i] = l.InitialPCR(eventlog.AlgSHA256, i)
		}
	}
	if v, ok := replayed[RuntimePCR]; ok {
		b.RuntimeInitial = v
	} else {
		b.RuntimeInitial = l.InitialPCR(eventlog.AlgSHA256, RuntimePCR)
	}
	ver, err := l.Verify(eventlog.AlgSHA256, b.PCRs)
	if err != nil {
		return nil, fmt.Errorf("log does not verify against its own replay: %w", err)
	}
	b.SecureBoot = ver.SecureBoot.Known && ver.SecureBoot.Enabled
	return b, nil
}
