package eventlog

import (
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Sentinel errors for errors.Is. Every *ParseError and every
// *StructureError matches ErrMalformed; a ParseError whose Reason is
// ReasonTruncated also matches ErrTruncated, ReasonTrailingGarbage matches
// ErrTrailingBytes and ReasonLimit matches ErrLimitExceeded.
var (
	ErrMalformed          = errors.New("eventlog: malformed log")
	ErrTruncated          = errors.New("eventlog: log truncated")
	ErrUnsupportedAlg     = errors.New("eventlog: unsupported hash algorithm")
	ErrReplayMismatch     = errors.New("eventlog: replay does not match PCR values")
	ErrDataDigestMismatch = errors.New("eventlog: event data does not match its digest")
	ErrBankNotInLog       = errors.New("eventlog: bank not present in log")
	// ErrTrailingBytes: bytes (zero padding included) follow the last record.
	ErrTrailingBytes = errors.New("eventlog: bytes after the last record")
	// ErrLimitExceeded: the log is beyond a size limit no real firmware log
	// comes near (MaxAlgorithms, MaxEvents).
	ErrLimitExceeded = errors.New("eventlog: log exceeds a parser limit")
)

// Sentinel errors of *StructureError (see CheckStructure), each matched with
// errors.Is; every one also matches ErrMalformed.
var (
	// ErrSeparatorMissing: one of PCRs 0-7 has no EV_SEPARATOR.
	ErrSeparatorMissing = errors.New("eventlog: pcr has no separator")
	// ErrSeparatorRepeated: one of PCRs 0-7 has more than one EV_SEPARATOR.
	ErrSeparatorRepeated = errors.New("eventlog: pcr has a second separator")
	// ErrSeparatorValue: an EV_SEPARATOR of PCRs 0-7 does not carry the
	// normal value (four zero bytes): the firmware signalled an error
	// (00000001 or ffffffff) or the data is malformed.
	ErrSeparatorValue = errors.New("eventlog: separator is not the normal separator value")
	// ErrSecureBootAfterSeparator: a Secure Boot configuration measurement
	// (EV_EFI_VARIABLE_DRIVER_CONFIG: SecureBoot, PK, KEK, db, dbx...) in
	// PCR 7 after PCR 7's separator, i.e. after the pre-OS record closed.
	ErrSecureBootAfterSeparator = errors.New("eventlog: secure boot configuration measured after the pcr 7 separator")
	// ErrSecureBootRepeated: a Secure Boot mode variable (SecureBoot,
	// SetupMode, DeployedMode, AuditMode) measured twice in PCR 7.
	ErrSecureBootRepeated = errors.New("eventlog: secure boot mode variable measured twice")
	// ErrEventAfterSeparator: an event type the PC Client Platform Firmware
	// Profile does not place in PCR 7 after its separator (only
	// EV_EFI_VARIABLE_AUTHORITY and EV_EFI_SPDM_DEVICE_AUTHORITY are).
	ErrEventAfterSeparator = errors.New("eventlog: event type not allowed in pcr 7 after its separator")
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
	// ReasonLimit: more algorithms or records than MaxAlgorithms or
	// MaxEvents.
	ReasonLimit
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
	case ReasonLimit:
		return "limit exceeded"
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

// Is makes every ParseError match ErrMalformed, truncation match
// ErrTruncated, an unknown algorithm match ErrUnsupportedAlg, trailing bytes
// match ErrTrailingBytes and a limit match ErrLimitExceeded.
func (e *ParseError) Is(target error) bool {
	switch target {
	case ErrMalformed:
		return true
	case ErrTruncated:
		return e.Reason == ReasonTruncated
	case ErrUnsupportedAlg:
		return e.Reason == ReasonUnsupportedAlg
	case ErrTrailingBytes:
		return e.Reason == ReasonTrailingGarbage
	case ErrLimitExceeded:
		return e.Reason == ReasonLimit
	}
	return false
}

// StructureError reports a log that parses but whose events are not where
// the PC Client Platform Firmware Profile puts them (see CheckStructure).
// Err is the rule broken (ErrSeparatorMissing, ErrSecureBootAfterSeparator,
// ...), matched through Unwrap; every StructureError also matches
// ErrMalformed.
type StructureError struct {
	Err error
	PCR uint32
	// Seq, Offset and Type locate the offending event; Seq is -1 when the
	// problem is an event that is absent (a missing separator).
	Seq    int
	Offset int
	Type   EventType
	// Variable names the UEFI variable of the event, when it has one.
	Variable string
	// Earlier is the sequence number of the event the offending one
	// conflicts with (the PCR's separator, the first measurement of the
	// variable), or -1.
	Earlier int
}

func (e *StructureError) Error() string {
	if e.Seq < 0 {
		return fmt.Sprintf("%v: pcr %d", e.Err, e.PCR)
	}
	what := e.Type.String()
	if e.Variable != "" {
		what += " " + strconv.Quote(e.Variable)
	}
	msg := fmt.Sprintf("%v: event %d (%s, pcr %d, offset %d)", e.Err, e.Seq, what, e.PCR, e.Offset)
	if e.Earlier >= 0 {
		msg += fmt.Sprintf(", after event %d", e.Earlier)
	}
	return msg
}

func (e *StructureError) Unwrap() error { return e.Err }

// Is makes every StructureError match ErrMalformed.
func (e *StructureError) Is(target error) bool { return target == ErrMalformed }

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
