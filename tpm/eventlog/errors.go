package eventlog

import (
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Sentinel errors for errors.Is. Every *ParseError matches ErrMalformed; a
// ParseError whose Reason is ReasonTruncated also matches ErrTruncated.
var (
	ErrMalformed          = errors.New("eventlog: malformed log")
	ErrTruncated          = errors.New("eventlog: log truncated")
	ErrUnsupportedAlg     = errors.New("eventlog: unsupported hash algorithm")
	ErrReplayMismatch     = errors.New("eventlog: replay does not match PCR values")
	ErrDataDigestMismatch = errors.New("eventlog: event data does not match its digest")
	ErrBankNotInLog       = errors.New("eventlog: bank not present in log")
)

// Reason classifies a parse failure.
type Reason int

// Parse failure reasons.
const (
	ReasonTruncated Reason = iota + 1
	ReasonMalformedHeader
	ReasonBadSize
	ReasonUnsupportedAlg
	ReasonDigestSize
	ReasonTrailingGarbage
	ReasonBadPCR
	ReasonEmpty
	ReasonBadDigestCount
)

func (r Reason) String() string {
	switch r {
	case ReasonTruncated:
		return "truncated"
	case ReasonMalformedHeader:
		return "malformed header"
	case ReasonBadSize:
		return "bad size"
	case ReasonUnsupportedAlg:
		return "unsupported algorithm"
	case ReasonDigestSize:
		return "digest size mismatch"
	case ReasonTrailingGarbage:
		return "trailing garbage"
	case ReasonBadPCR:
		return "bad pcr index"
	case ReasonEmpty:
		return "empty log"
	case ReasonBadDigestCount:
		return "bad digest count"
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// ParseError reports where and why a log could not be parsed.
type ParseError struct {
	Reason Reason
	// Offset is the byte offset in the raw log of the field that failed.
	Offset int
	// Event is the sequence number of the event being parsed (0 = the first
	// record in the file, including the Spec ID header), or -1.
	Event int
	Err   error
}

func (e *ParseError) Error() string {
	msg := fmt.Sprintf("eventlog: parse: %s at offset %d", e.Reason, e.Offset)
	if e.Event >= 0 {
		msg += fmt.Sprintf(" (record %d)", e.Event)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *ParseError) Unwrap() error { return e.Err }

// Is makes every ParseError match ErrMalformed, truncation match ErrTruncated
// and an unknown algorithm match ErrUnsupportedAlg.
func (e *ParseError) Is(target error) bool {
	switch target {
	case ErrMalformed:
		return true
	case ErrTruncated:
		return e.Reason == ReasonTruncated
	case ErrUnsupportedAlg:
		return e.Reason == ReasonUnsupportedAlg
	}
	return false
}

// ReplayError reports PCRs whose replayed value differs from the supplied
// value. It matches ErrReplayMismatch.
type ReplayError struct {
	Bank HashAlg
	// Mismatched lists the PCR indexes that did not replay, ascending.
	Mismatched []uint32
	// Want holds the supplied values and Got the replayed values of the
	// mismatched PCRs.
	Want, Got map[uint32][]byte
}

func (e *ReplayError) Error() string {
	parts := make([]string, 0, len(e.Mismatched))
	for _, p := range e.Mismatched {
		parts = append(parts, fmt.Sprintf("pcr %d: quoted %s, log replays to %s", p,
			hex.EncodeToString(e.Want[p]), hex.EncodeToString(e.Got[p])))
	}
	return fmt.Sprintf("eventlog: %s replay mismatch on PCR %s (%s)", e.Bank,
		joinPCRs(e.Mismatched), strings.Join(parts, "; "))
}

// Is makes ReplayError match ErrReplayMismatch.
func (e *ReplayError) Is(target error) bool { return target == ErrReplayMismatch }

// DataError reports an event whose data must hash to its digest but does not.
// It matches ErrDataDigestMismatch.
type DataError struct {
	Seq    int
	Offset int
	PCR    uint32
	Type   EventType
	Bank   HashAlg
}

func (e *DataError) Error() string {
	return fmt.Sprintf("eventlog: event %d (%s, pcr %d, offset %d): %s digest is not the hash of the event data",
		e.Seq, e.Type, e.PCR, e.Offset, e.Bank)
}

// Is makes DataError match ErrDataDigestMismatch.
func (e *DataError) Is(target error) bool { return target == ErrDataDigestMismatch }

func joinPCRs(p []uint32) string {
	s := append([]uint32(nil), p...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, ",")
}
