package verifier

import (
	"errors"
	"fmt"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
)

// MaxRuntimeRecords bounds the runtime log kept per agent and boot.
const MaxRuntimeRecords = 4096

// runtimeEvidence is what a replayed runtime log proves.
type runtimeEvidence struct {
	// records is the whole verified log of this boot (CEL bytes) and count
	// its number of records: what the store keeps and acknowledges.
	records []byte
	count   uint64
	binary  *binaryMeasurement
	bpf     map[string]bpfMeasurement
	// fortressActive is the latest Fortress state record's flag.
	fortressActive bool
}

type binaryMeasurement struct {
	Path   string
	SHA256 []byte
}

type bpfMeasurement struct {
	insnSHA256 []byte
	tag        []byte
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
	default:
		return nil, pulsev1.Reason_REASON_RUNTIME_LOG_GAP, fmt.Errorf("pulse sends records from %d but the verifier holds %d", first, storedCount)
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
	if st.Agent != nil {
		rt.binary = &binaryMeasurement{Path: st.Agent.Path, SHA256: st.Agent.SHA256[:]}
	}
	for name, p := range st.Programs {
		rt.bpf[name] = bpfMeasurement{insnSHA256: p.InsnSHA256[:], tag: p.Tag[:]}
	}
	if st.Fortress != nil {
		rt.fortressActive = st.Fortress.Active
	}
	return rt, pulsev1.Reason_REASON_OK, nil
}
