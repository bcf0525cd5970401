package cel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// Sentinel errors for errors.Is.
var (
	// ErrMalformed matches every *DecodeError.
	ErrMalformed = errors.New("cel: malformed log")
	// ErrTruncated matches a DecodeError whose input ended inside a TLV.
	ErrTruncated = errors.New("cel: log truncated")
	// ErrUnknownContent matches a record whose content type or kind is not Pulse's.
	ErrUnknownContent = errors.New("cel: unknown content")
	// ErrInvalid reports a record that cannot be encoded.
	ErrInvalid = errors.New("cel: invalid record")
	// ErrContentDigest: a record's digest is not the digest of its content.
	ErrContentDigest = errors.New("cel: record digest does not match its content")
	// ErrReplayMismatch: the records do not replay to the quoted PCR value.
	ErrReplayMismatch = errors.New("cel: replay does not match PCR value")
	// ErrSequence: record numbers are not consecutive.
	ErrSequence = errors.New("cel: record numbers not consecutive")
	// ErrWrongPCR: a record extends a PCR other than the runtime PCR.
	ErrWrongPCR = errors.New("cel: record for another PCR")
	// ErrMissingBank: a record has no digest in the bank being replayed.
	ErrMissingBank = errors.New("cel: record lacks a digest in the replayed bank")
)

// DecodeReason classifies a decode failure.
type DecodeReason int

// Decode failure reasons.
const (
	ReasonTruncated DecodeReason = iota + 1
	ReasonUnexpectedType
	ReasonBadLength
	ReasonBadDigest
	ReasonUnknownContent
	ReasonBadField
)

func (r DecodeReason) String() string {
	switch r {
	case ReasonTruncated:
		return "truncated"
	case ReasonUnexpectedType:
		return "unexpected tlv type"
	case ReasonBadLength:
		return "bad length"
	case ReasonBadDigest:
		return "bad digest list"
	case ReasonUnknownContent:
		return "unknown content"
	case ReasonBadField:
		return "bad content field"
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// DecodeError reports where and why a log could not be decoded.
type DecodeError struct {
	Reason DecodeReason
	// Offset is the byte offset of the offending TLV in the input.
	Offset int
	// Record is the index of the record being decoded.
	Record int
	Err    error
}

func (e *DecodeError) Error() string {
	msg := fmt.Sprintf("cel: decode record %d: %s at offset %d", e.Record, e.Reason, e.Offset)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Is matches ErrMalformed always, ErrTruncated and ErrUnknownContent by reason.
func (e *DecodeError) Is(target error) bool {
	switch target {
	case ErrMalformed:
		return true
	case ErrTruncated:
		return e.Reason == ReasonTruncated
	case ErrUnknownContent:
		return e.Reason == ReasonUnknownContent
	}
	return false
}

type tlv struct {
	typ uint8
	off int
	val []byte
}

type decoder struct {
	b      []byte
	base   int // offset of b in the whole input
	off    int
	record int
}

func (d *decoder) fail(r DecodeReason, off int, format string, args ...any) *DecodeError {
	return &DecodeError{Reason: r, Offset: d.base + off, Record: d.record, Err: fmt.Errorf(format, args...)}
}

func (d *decoder) next() (tlv, error) {
	start := d.off
	if len(d.b)-d.off < 5 {
		return tlv{}, d.fail(ReasonTruncated, start, "tlv header needs 5 bytes, %d left", len(d.b)-d.off)
	}
	typ := d.b[d.off]
	n := binary.BigEndian.Uint32(d.b[d.off+1:])
	if uint64(n) > uint64(len(d.b)-d.off-5) {
		return tlv{}, d.fail(ReasonTruncated, start, "tlv type %d of %d bytes, %d left", typ, n, len(d.b)-d.off-5)
	}
	v := d.b[d.off+5 : d.off+5+int(n) : d.off+5+int(n)]
	d.off += 5 + int(n)
	return tlv{typ: typ, off: d.base + start, val: v}, nil
}

func (d *decoder) expect(typ uint8, what string) (tlv, error) {
	t, err := d.next()
	if err != nil {
		return t, err
	}
	if t.typ != typ {
		return t, &DecodeError{Reason: ReasonUnexpectedType, Offset: t.off, Record: d.record,
			Err: fmt.Errorf("want %s (type %d), got type %d", what, typ, t.typ)}
	}
	return t, nil
}

// Decode parses a sequence of records. It accepts only the canonical
// encoding (see the package documentation); errors are *DecodeError. The
// returned records do not alias raw.
func Decode(raw []byte) ([]Record, error) {
	buf := bytes.Clone(raw)
	d := &decoder{b: buf}
	var out []Record
	for d.off < len(d.b) {
		r, err := d.record1()
		if err != nil {
			return nil, err
		}
		out = append(out, r)
		d.record++
	}
	return out, nil
}

func (d *decoder) record1() (Record, error) {
	var r Record
	t, err := d.expect(TypeRecNum, "recnum")
	if err != nil {
		return r, err
	}
	if len(t.val) != 8 {
		return r, &DecodeError{Reason: ReasonBadLength, Offset: t.off, Record: d.record, Err: fmt.Errorf("recnum of %d bytes", len(t.val))}
	}
	r.RecNum = binary.BigEndian.Uint64(t.val)
	if t, err = d.next(); err != nil {
		return r, err
	}
	if t.typ == TypeNVIndex {
		return r, &DecodeError{Reason: ReasonUnexpectedType, Offset: t.off, Record: d.record, Err: errors.New("nv_index records are not used by Pulse")}
	}
	if t.typ != TypePCR {
		return r, &DecodeError{Reason: ReasonUnexpectedType, Offset: t.off, Record: d.record, Err: fmt.Errorf("want pcr (type 1), got type %d", t.typ)}
	}
	if len(t.val) != 4 {
		return r, &DecodeError{Reason: ReasonBadLength, Offset: t.off, Record: d.record, Err: fmt.Errorf("pcr of %d bytes", len(t.val))}
	}
	r.PCR = binary.BigEndian.Uint32(t.val)
	if t, err = d.expect(TypeDigests, "digests"); err != nil {
		return r, err
	}
	if r.Digests, err = d.digests(t); err != nil {
		return r, err
	}
	if t, err = d.next(); err != nil {
		return r, err
	}
	if t.typ != ContentTypePulse {
		return r, &DecodeError{Reason: ReasonUnknownContent, Offset: t.off, Record: d.record, Err: fmt.Errorf("content type %d", t.typ)}
	}
	if r.Content, err = d.content(t); err != nil {
		return r, err
	}
	return r, nil
}

func (d *decoder) digests(t tlv) ([]eventlog.Digest, error) {
	sub := &decoder{b: t.val, base: t.off + 5, record: d.record}
	var out []eventlog.Digest
	for sub.off < len(sub.b) {
		dt, err := sub.next()
		if err != nil {
			return nil, err
		}
		alg := eventlog.HashAlg(dt.typ)
		if !alg.Replayable() || len(dt.val) != alg.Size() {
			return nil, &DecodeError{Reason: ReasonBadDigest, Offset: dt.off, Record: d.record,
				Err: fmt.Errorf("%s digest of %d bytes", alg, len(dt.val))}
		}
		if len(out) > 0 && out[len(out)-1].Alg >= alg {
			return nil, &DecodeError{Reason: ReasonBadDigest, Offset: dt.off, Record: d.record,
				Err: errors.New("digests not in ascending algorithm order")}
		}
		out = append(out, eventlog.Digest{Alg: alg, Value: dt.val})
	}
	if len(out) == 0 {
		return nil, &DecodeError{Reason: ReasonBadDigest, Offset: t.off, Record: d.record, Err: errors.New("no digests")}
	}
	return out, nil
}

// fieldDecoder reads a content's fields in order.
type fieldDecoder struct {
	d    *decoder
	next uint8
}

func (f *fieldDecoder) field() (tlv, error) {
	f.next++
	return f.d.expectField(f.next)
}

func (d *decoder) expectField(typ uint8) (tlv, error) {
	t, err := d.next()
	if err != nil {
		return t, err
	}
	if t.typ != typ {
		return t, &DecodeError{Reason: ReasonBadField, Offset: t.off, Record: d.record,
			Err: fmt.Errorf("want field %d, got %d", typ, t.typ)}
	}
	return t, nil
}

func (f *fieldDecoder) bad(t tlv, format string, args ...any) error {
	return &DecodeError{Reason: ReasonBadField, Offset: t.off, Record: f.d.record, Err: fmt.Errorf(format, args...)}
}

func (f *fieldDecoder) str() (string, error) {
	t, err := f.field()
	if err != nil {
		return "", err
	}
	if !utf8.Valid(t.val) {
		return "", f.bad(t, "field %d is not UTF-8", t.typ)
	}
	return string(t.val), nil
}

func (f *fieldDecoder) fixed(n int) ([]byte, error) {
	t, err := f.field()
	if err != nil {
		return nil, err
	}
	if len(t.val) != n {
		return nil, f.bad(t, "field %d of %d bytes, want %d", t.typ, len(t.val), n)
	}
	return t.val, nil
}

func (f *fieldDecoder) u64() (uint64, error) {
	b, err := f.fixed(8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b), nil
}

func (d *decoder) content(t tlv) (Content, error) {
	sub := &decoder{b: t.val, base: t.off + 5, record: d.record}
	kt, err := sub.next()
	if err != nil {
		return nil, err
	}
	if kt.typ != 0 || len(kt.val) != 1 {
		return nil, &DecodeError{Reason: ReasonBadField, Offset: kt.off, Record: d.record, Err: errors.New("content does not start with a 1-byte kind")}
	}
	var c Content
	switch Kind(kt.val[0]) {
	case KindAgentBinary:
		c = &AgentBinary{}
	case KindEBPFProgram:
		c = &EBPFProgram{}
	case KindFortressState:
		c = &FortressState{}
	case KindGeneric:
		c = &Generic{}
	default:
		return nil, &DecodeError{Reason: ReasonUnknownContent, Offset: kt.off, Record: d.record, Err: fmt.Errorf("kind %d", kt.val[0])}
	}
	f := &fieldDecoder{d: sub}
	if err := c.decodeFields(f); err != nil {
		return nil, err
	}
	if sub.off != len(sub.b) {
		return nil, &DecodeError{Reason: ReasonBadField, Offset: sub.base + sub.off, Record: d.record, Err: errors.New("extra fields after the last one")}
	}
	return c, nil
}

func (c *AgentBinary) decodeFields(f *fieldDecoder) (err error) {
	if c.Path, err = f.str(); err != nil {
		return err
	}
	b, err := f.fixed(32)
	if err != nil {
		return err
	}
	copy(c.SHA256[:], b)
	c.Size, err = f.u64()
	return err
}

func (c *EBPFProgram) decodeFields(f *fieldDecoder) (err error) {
	if c.Name, err = f.str(); err != nil {
		return err
	}
	if c.ProgramType, err = f.str(); err != nil {
		return err
	}
	if c.AttachPoint, err = f.str(); err != nil {
		return err
	}
	b, err := f.fixed(32)
	if err != nil {
		return err
	}
	copy(c.InsnSHA256[:], b)
	if b, err = f.fixed(8); err != nil {
		return err
	}
	copy(c.Tag[:], b)
	t, err := f.field()
	if err != nil {
		return err
	}
	switch len(t.val) {
	case 0:
	case 32:
		c.ObjectSHA256 = t.val
	default:
		return f.bad(t, "object sha256 of %d bytes", len(t.val))
	}
	c.KernelRelease, err = f.str()
	return err
}

func (c *FortressState) decodeFields(f *fieldDecoder) (err error) {
	t, err := f.field()
	if err != nil {
		return err
	}
	if len(t.val) != 1 || t.val[0] > 1 {
		return f.bad(t, "active flag %x", t.val)
	}
	c.Active = t.val[0] == 1
	if c.Mechanism, err = f.str(); err != nil {
		return err
	}
	c.Reason, err = f.str()
	return err
}

func (c *Generic) decodeFields(f *fieldDecoder) (err error) {
	if c.Name, err = f.str(); err != nil {
		return err
	}
	t, err := f.field()
	if err != nil {
		return err
	}
	if len(t.val) > 0 {
		c.Data = t.val
	}
	return nil
}
