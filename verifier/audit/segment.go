package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Segments. A damaged audit log is never repaired, truncated or renamed:
// the writer leaves it exactly as it found it and continues the chain in a
// new file next to it. The configured path is segment 0; segment N (N >= 1)
// is the path with ".N" appended (audit.log, audit.log.1, audit.log.2, ...).
// The segments in use are segment 0 and every following one that exists
// without a gap; the writer appends to the last.
//
// The first record of every segment after the first is a chain_resumed
// record (KindChainResumed). Its seq and prev continue the chain from the
// last good record of the segment before it (the last record of the intact
// prefix that Scan verifies), so the records written after the damage link
// to the records before it; its data names the damage (ResumedData* keys).
// VerifySegments checks each segment and each such anchor.

// KindChainResumed is the kind of the record that starts a new segment after
// the previous segment's tail failed verification at Open. Its severity is 1.
const KindChainResumed = "chain_resumed"

// Data keys of a chain_resumed record.
const (
	// ResumedDataSegment: the damaged segment's file name (no directory).
	ResumedDataSegment = "damaged_segment"
	// ResumedDataSize, ResumedDataSHA256: the damaged segment's size in
	// bytes and the hex SHA-256 of its content when the chain resumed; a
	// later change to the kept file shows against them.
	ResumedDataSize   = "damaged_size"
	ResumedDataSHA256 = "damaged_sha256"
	// ResumedDataLastSeq, ResumedDataLastHash: the last good record's seq
	// and hash field ("0" and "" when no record of the segment verified).
	ResumedDataLastSeq  = "last_good_seq"
	ResumedDataLastHash = "last_good_hash"
	// ResumedDataBroken*: the first broken record (BrokenError's fields).
	ResumedDataBrokenLine   = "broken_line"
	ResumedDataBrokenSeq    = "broken_seq"
	ResumedDataBrokenReason = "broken_reason"
	ResumedDataBrokenDetail = "broken_detail"
)

// SegmentPath is the file of segment n of the log at base.
func SegmentPath(base string, n int) string {
	if n == 0 {
		return base
	}
	return base + "." + strconv.Itoa(n)
}

// lastSegment is the highest n such that segments 1..n all exist (0 when
// base.1 does not).
func lastSegment(base string) (int, error) {
	n := 0
	for {
		_, err := os.Lstat(SegmentPath(base, n+1))
		if errors.Is(err, os.ErrNotExist) {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("audit segment %d: %w", n+1, err)
		}
		n++
	}
}

// Recovery describes the damage Open found and how the chain went on. The
// verifier raises the audit_chain_broken alert from it.
type Recovery struct {
	// Log is the log's path (segment 0), what VerifySegments takes.
	Log string
	// Damaged is the path of the segment whose tail failed verification;
	// it is left as it was.
	Damaged string
	// Broken is the first broken record of the damaged segment.
	Broken *BrokenError
	// LastGoodSeq and LastGoodHash name the last record that verified
	// (0 and "" when none did).
	LastGoodSeq  uint64
	LastGoodHash string
	// Segment is the path of the new segment, and Resumed its first
	// record (kind chain_resumed) as written.
	Segment string
	Resumed Record
}

// ErrAnchorMismatch is matched (errors.Is) by every *AnchorError.
var ErrAnchorMismatch = errors.New("audit segment anchor mismatch")

// AnchorError says why a segment's chain_resumed record does not match the
// segment before it.
type AnchorError struct {
	Segment int
	Detail  string
}

func (e *AnchorError) Error() string {
	return fmt.Sprintf("audit segment %d: chain_resumed anchor: %s", e.Segment, e.Detail)
}

// Unwrap makes errors.Is(err, ErrAnchorMismatch) hold.
func (e *AnchorError) Unwrap() error { return ErrAnchorMismatch }

// SegmentResult is the verification of one segment.
type SegmentResult struct {
	N    int
	Path string
	// Summary covers the segment's intact records (its prefix up to the
	// first broken record).
	Summary Summary
	// Broken is the segment's first broken record, nil when it verified
	// whole.
	Broken *BrokenError
	// Anchor is set when the segment (after the first) does not start with
	// a chain_resumed record matching the segment before it.
	Anchor *AnchorError
}

// VerifySegments verifies every segment of the log at base (segment 0, then
// base.1, base.2, ... while they exist) and the chain_resumed anchor at the
// start of each segment after the first, calling fn, when not nil, with
// each record that verified. Damage inside a segment is reported in its
// result, not as an error; the error is a read failure or fn's error. The
// chain is whole when every result has neither Broken nor Anchor set.
func VerifySegments(base string, fn func(seg int, r Record) error) ([]SegmentResult, error) {
	last, err := lastSegment(base)
	if err != nil {
		return nil, err
	}
	var out []SegmentResult
	for n := 0; n <= last; n++ {
		res, err := verifySegment(base, n, fn)
		if err != nil {
			return out, err
		}
		if n > 0 {
			res.Anchor = checkAnchor(n, out[n-1], res.Summary.Resumed)
		}
		out = append(out, res)
	}
	return out, nil
}

func verifySegment(base string, n int, fn func(int, Record) error) (SegmentResult, error) {
	res := SegmentResult{N: n, Path: SegmentPath(base, n)}
	f, err := os.Open(res.Path)
	if err != nil {
		return res, fmt.Errorf("audit segment %d: %w", n, err)
	}
	defer f.Close()
	var cb func(Record) error
	if fn != nil {
		cb = func(r Record) error { return fn(n, r) }
	}
	res.Summary, err = scan(f, n > 0, cb)
	if errors.As(err, &res.Broken) {
		err = nil
	}
	return res, err
}

// checkAnchor checks that resumed (the first record of segment n, nil when
// it is not a chain_resumed record) continues the chain from the last good
// record of prev and names prev's damage as it still is.
func checkAnchor(n int, prev SegmentResult, resumed *Record) *AnchorError {
	fail := func(format string, args ...any) *AnchorError {
		return &AnchorError{Segment: n, Detail: fmt.Sprintf(format, args...)}
	}
	if resumed == nil {
		return fail("the segment does not start with a %s record", KindChainResumed)
	}
	ps := prev.Summary
	if resumed.Seq != ps.LastSeq+1 || resumed.Prev != ps.LastLineHash {
		return fail("record seq %d prev %s does not follow segment %d's last good record (seq %d, line hash %s)",
			resumed.Seq, resumed.Prev, prev.N, ps.LastSeq, ps.LastLineHash)
	}
	if got := resumed.Data[ResumedDataLastHash]; got != ps.LastHash {
		return fail("names last good hash %q, segment %d's is %q", got, prev.N, ps.LastHash)
	}
	if prev.Broken == nil {
		return fail("segment %d verifies whole, yet the chain was resumed after damage in it", prev.N)
	}
	if got, want := resumed.Data[ResumedDataBrokenLine], strconv.Itoa(prev.Broken.Line); got != want {
		return fail("names the first broken line %s of segment %d, it is line %s now", got, prev.N, want)
	}
	size, sum, err := fileDigest(prev.Path)
	if err != nil {
		return fail("%v", err)
	}
	if resumed.Data[ResumedDataSize] != strconv.FormatInt(size, 10) || resumed.Data[ResumedDataSHA256] != sum {
		return fail("segment %d changed after the chain resumed (recorded %s bytes sha256 %s, now %d bytes sha256 %s)",
			prev.N, resumed.Data[ResumedDataSize], resumed.Data[ResumedDataSHA256], size, sum)
	}
	return nil
}

func fileDigest(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
