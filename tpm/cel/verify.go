package cel

import (
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"fmt"

	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// bankFor infers the bank from a PCR value's size.
func bankFor(initial []byte) (eventlog.HashAlg, error) {
	switch len(initial) {
	case 20:
		return eventlog.AlgSHA1, nil
	case 32:
		return eventlog.AlgSHA256, nil
	case 48:
		return eventlog.AlgSHA384, nil
	case 64:
		return eventlog.AlgSHA512, nil
	}
	return 0, fmt.Errorf("cel: a PCR value of %d bytes names no bank: %w", len(initial), eventlog.ErrUnsupportedAlg)
}

// Replay extends initial (the PCR's value before the first record; its size
// selects the bank: 20 SHA-1, 32 SHA-256, 48 SHA-384, 64 SHA-512) with the
// digest of every record for pcr, in order, and returns the result. Records
// for other PCRs are skipped. It does not check the digests against the
// contents: that is VerifyRecords.
func Replay(records []Record, pcr uint32, initial []byte) ([]byte, error) {
	alg, err := bankFor(initial)
	if err != nil {
		return nil, err
	}
	cur := bytes.Clone(initial)
	h := alg.Hash().New()
	for _, r := range records {
		if r.PCR != pcr {
			continue
		}
		var d []byte
		for _, x := range r.Digests {
			if x.Alg == alg {
				d = x.Value
			}
		}
		if d == nil {
			return nil, &RecordError{RecNum: r.RecNum, Err: ErrMissingBank, Detail: alg.String()}
		}
		h.Reset()
		h.Write(cur)
		h.Write(d)
		cur = h.Sum(cur[:0])
	}
	return cur, nil
}

// RecordError names the record that failed a check; it wraps ErrContentDigest,
// ErrSequence, ErrWrongPCR or ErrMissingBank.
type RecordError struct {
	RecNum uint64
	Detail string
	Err    error
}

func (e *RecordError) Error() string {
	msg := fmt.Sprintf("cel: record %d: %v", e.RecNum, e.Err)
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

func (e *RecordError) Unwrap() error { return e.Err }

// ReplayError reports records that do not reproduce the quoted PCR value.
// It matches ErrReplayMismatch.
type ReplayError struct {
	PCR       uint32
	Want, Got []byte
}

func (e *ReplayError) Error() string {
	return fmt.Sprintf("cel: PCR %d: quoted %s, records replay to %s", e.PCR,
		hex.EncodeToString(e.Want), hex.EncodeToString(e.Got))
}

// Is makes ReplayError match ErrReplayMismatch.
func (e *ReplayError) Is(target error) bool { return target == ErrReplayMismatch }

// VerifyRecords checks a runtime log segment against a quoted PCR value:
// every record is for pcr (ErrWrongPCR), record numbers are consecutive
// (ErrSequence), every digest is the digest of the record's content
// (ErrContentDigest), and extending initial with the records gives quoted
// (*ReplayError, ErrReplayMismatch). initial is the PCR value before the
// first record: what the firmware log left in the PCR for a fresh boot, or
// the last verified value for an incremental segment.
func VerifyRecords(records []Record, pcr uint32, initial, quoted []byte) error {
	for i, r := range records {
		if r.PCR != pcr {
			return &RecordError{RecNum: r.RecNum, Err: ErrWrongPCR, Detail: fmt.Sprintf("pcr %d, runtime PCR is %d", r.PCR, pcr)}
		}
		if i > 0 && r.RecNum != records[i-1].RecNum+1 {
			return &RecordError{RecNum: r.RecNum, Err: ErrSequence, Detail: fmt.Sprintf("follows record %d", records[i-1].RecNum)}
		}
		if len(r.Digests) == 0 {
			return &RecordError{RecNum: r.RecNum, Err: ErrContentDigest, Detail: "no digests"}
		}
		for _, d := range r.Digests {
			want, err := r.ContentDigest(d.Alg)
			if err != nil {
				return &RecordError{RecNum: r.RecNum, Err: ErrContentDigest, Detail: err.Error()}
			}
			if subtle.ConstantTimeCompare(want, d.Value) != 1 {
				return &RecordError{RecNum: r.RecNum, Err: ErrContentDigest, Detail: d.Alg.String()}
			}
		}
	}
	got, err := Replay(records, pcr, initial)
	if err != nil {
		return err
	}
	if len(got) != len(quoted) || subtle.ConstantTimeCompare(got, quoted) != 1 {
		return &ReplayError{PCR: pcr, Want: bytes.Clone(quoted), Got: got}
	}
	return nil
}

// State is the latest measured state a runtime log describes.
type State struct {
	Agent *AgentBinary
	// Programs maps an eBPF program's name to its latest measurement.
	Programs map[string]*EBPFProgram
	Fortress *FortressState
	// Binaries is every agent-binary record of the log, in order. The latest
	// one is Agent; a verifier judges all of them, since a record cannot be
	// taken back out of the PCR.
	Binaries []BinaryRecord
}

// SelfMeasuredMarker names the Generic record an agent appends right before
// the agent-binary record of a binary it measured itself after it started
// (it was not started through the launcher). Its data is that binary's
// SHA-256.
const SelfMeasuredMarker = "pulse.agent.self_measured"

// BinaryRecord is one agent-binary record and how it was made.
type BinaryRecord struct {
	RecNum uint64
	Binary *AgentBinary
	// SelfMeasured is true when the record directly follows a
	// SelfMeasuredMarker for the same digest: the agent measured itself. A
	// record without the marker is the launcher's. Root on the device can
	// write either form, so the distinction describes how an honest agent
	// started; what decides trust is that every record is judged.
	SelfMeasured bool
}

// Latest folds records into the latest agent binary, per-name eBPF program
// and Fortress state, and lists every agent-binary record. Use it on
// verified records only.
func Latest(records []Record) State {
	s := State{Programs: map[string]*EBPFProgram{}}
	for i, r := range records {
		switch c := r.Content.(type) {
		case *AgentBinary:
			s.Agent = c
			br := BinaryRecord{RecNum: r.RecNum, Binary: c}
			if i > 0 {
				if g, ok := records[i-1].Content.(*Generic); ok && g.Name == SelfMeasuredMarker && bytes.Equal(g.Data, c.SHA256[:]) {
					br.SelfMeasured = true
				}
			}
			s.Binaries = append(s.Binaries, br)
		case *EBPFProgram:
			s.Programs[c.Name] = c
		case *FortressState:
			s.Fortress = c
		}
	}
	return s
}
