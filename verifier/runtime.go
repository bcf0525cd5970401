package verifier

import (
	"errors"
	"fmt"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// MaxRuntimeRecords and MaxRuntimeBytes bound the runtime log kept per
// agent and boot, in records and in bytes.
const (
	MaxRuntimeRecords = 4096
	MaxRuntimeBytes   = 1 << 20
)

// runtimeEvidence is what a replayed runtime log proves.
type runtimeEvidence struct {
	// records is the whole verified log of this boot (CEL bytes) and count
	// its number of records: what the store keeps and acknowledges.
	records []byte
	count   uint64
	binary  *binaryMeasurement
	// binaries is every agent-binary record of the boot, in order: each
	// one is judged, since none can be taken back out of the PCR.
	binaries []binaryMeasurement
	bpf      map[string]bpfMeasurement
	// fortressActive is the latest Fortress state record's flag.
	fortressActive bool
	// kernel is what the log says about kernel evidence (kernel.go).
	kernel kernelLog
	// sentinel is what the log says about Sentinel (sentinel.go).
	sentinel sentinelLog
}

type binaryMeasurement struct {
	Path   string
	SHA256 []byte
	// SelfMeasured: the agent measured itself (no launcher record).
	SelfMeasured bool
}

type bpfMeasurement struct {
	insnSHA256 []byte
	tag        []byte
	// objectSHA256 is the eBPF object the program came from (nil: none named).
	objectSHA256 []byte
}

// verifyRuntime joins the records the verifier holds for this boot with the
// new ones the pulse carries, checks every record's digest against its
// content, and replays them from initial (the value the firmware log left
// in the runtime PCR) to the quoted value.
func verifyRuntime(stored []byte, storedCount, first uint64, fresh []byte, pcr uint32, initial, quoted []byte) (*runtimeEvidence, pulsev1.Reason, error) {
	if len(quoted) == 0 {
		return nil, pulsev1.Reason_REASON_PCR_SELECTION, fmt.Errorf("runtime PCR %d was not quoted", pcr)
	}
	var base []byte
	switch {
	case first == storedCount:
		base = stored
	case first == 0:
		// The agent resent the whole log of this boot.
		base = nil
	case first < storedCount:
		// The agent missed an acknowledgement (a lost response): keep the
		// records it builds on; the replay checks the rest.
		held, err := cel.Decode(stored)
		if err != nil || uint64(len(held)) < first {
			return nil, pulsev1.Reason_REASON_RUNTIME_LOG_MALFORMED, fmt.Errorf("stored runtime log: %d records, %v", len(held), err)
		}
		if base, err = cel.Encode(held[:first]); err != nil {
			return nil, pulsev1.Reason_REASON_RUNTIME_LOG_MALFORMED, fmt.Errorf("stored runtime log: %w", err)
		}
	default:
		// Records the verifier never acknowledged cannot be built on: no
		// honest agent sends this.
		return nil, pulsev1.Reason_REASON_RUNTIME_LOG_GAP, fmt.Errorf("pulse sends records from %d but the verifier holds only %d", first, storedCount)
	}
	if len(base)+len(fresh) > MaxRuntimeBytes {
		return nil, pulsev1.Reason_REASON_RUNTIME_LOG_MALFORMED, fmt.Errorf("%d bytes exceed the limit of %d", len(base)+len(fresh), MaxRuntimeBytes)
	}
	all := make([]byte, 0, len(base)+len(fresh))
	all = append(append(all, base...), fresh...)
	records, err := cel.Decode(all)
	if err != nil {
		return nil, pulsev1.Reason_REASON_RUNTIME_LOG_MALFORMED, err
	}
	if len(records) > MaxRuntimeRecords {
		return nil, pulsev1.Reason_REASON_RUNTIME_LOG_MALFORMED, fmt.Errorf("%d records exceed the limit of %d", len(records), MaxRuntimeRecords)
	}
	if len(records) > 0 && records[0].RecNum != 0 {
		return nil, pulsev1.Reason_REASON_RUNTIME_LOG_GAP, fmt.Errorf("log starts at record %d", records[0].RecNum)
	}
	if err := cel.VerifyRecords(records, pcr, initial, quoted); err != nil {
		if errors.Is(err, cel.ErrReplayMismatch) || errors.Is(err, cel.ErrContentDigest) || errors.Is(err, cel.ErrMissingBank) {
			return nil, pulsev1.Reason_REASON_RUNTIME_LOG_REPLAY, err
		}
		return nil, pulsev1.Reason_REASON_RUNTIME_LOG_MALFORMED, err
	}
	st := cel.Latest(records)
	rt := &runtimeEvidence{records: all, count: uint64(len(records)), bpf: make(map[string]bpfMeasurement, len(st.Programs))}
	for _, b := range st.Binaries {
		rt.binaries = append(rt.binaries, binaryMeasurement{Path: b.Binary.Path, SHA256: b.Binary.SHA256[:], SelfMeasured: b.SelfMeasured})
	}
	if n := len(rt.binaries); n > 0 {
		rt.binary = &rt.binaries[n-1]
	}
	for name, p := range st.Programs {
		rt.bpf[name] = bpfMeasurement{insnSHA256: p.InsnSHA256[:], tag: p.Tag[:], objectSHA256: p.ObjectSHA256}
	}
	if st.Fortress != nil {
		rt.fortressActive = st.Fortress.Active
	}
	rt.kernel = readKernelLog(records)
	rt.sentinel = readSentinelLog(records)
	return rt, pulsev1.Reason_REASON_OK, nil
}
