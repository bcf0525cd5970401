package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// ErrBroken is matched (errors.Is) by every *BrokenError.
var ErrBroken = errors.New("audit chain broken")

// Reason says why a record breaks the chain.
type Reason string

// Reasons a record breaks the chain, in the order Verify checks them.
const (
	// ReasonTruncated: the file ends inside a record (no trailing newline).
	ReasonTruncated Reason = "truncated record"
	// ReasonMalformed: the line is not a record in its canonical encoding
	// (invalid JSON, unknown or missing fields, wrong types, a non-canonical
	// time, extra whitespace, over MaxLineSize).
	ReasonMalformed Reason = "malformed JSON"
	// ReasonHashMismatch: the hash field is not the hash of the content.
	ReasonHashMismatch Reason = "hash mismatch"
	// ReasonSeqGap: the seq is not one more than the previous record's.
	ReasonSeqGap Reason = "seq gap"
	// ReasonPrevMismatch: prev is not the hash of the previous line.
	ReasonPrevMismatch Reason = "prev link mismatch"
)

// BrokenError names the first record that breaks the chain.
type BrokenError struct {
	// Seq is the seq the record claims, or the seq expected at its position
	// when the record cannot be parsed.
	Seq uint64
	// Line is the 1-based line number in the file (0 when unknown).
	Line   int
	Reason Reason
	// Detail says more, for people (never match on it).
	Detail string
}

func (e *BrokenError) Error() string {
	s := fmt.Sprintf("audit record seq %d (line %d): %s", e.Seq, e.Line, e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap makes errors.Is(err, ErrBroken) hold.
func (e *BrokenError) Unwrap() error { return ErrBroken }

// Summary describes a verified chain.
type Summary struct {
	Records int
	// LastSeq and LastHash are the last record's seq and hash field (0 and
	// "" for an empty log).
	LastSeq  uint64
	LastHash string
	// LastLineHash is the SHA-256 of the last line: the prev the next
	// record must carry (GenesisPrev for an empty log).
	LastLineHash string
	// Resumed is the segment's first record when it is a chain_resumed
	// record that the scan took its starting seq and prev from (ScanSegment
	// of a segment after the first); nil otherwise.
	Resumed *Record
}

// Verify reads a whole audit log and re-derives every hash and link. It
// returns the number of intact records before the first broken one; on a
// broken record the error is a *BrokenError (errors.Is(err, ErrBroken)), on
// a read failure the reader's error, wrapped.
func Verify(r io.Reader) (n int, err error) {
	s, err := Scan(r, nil)
	return s.Records, err
}

// Scan verifies like Verify and calls fn, when not nil, with each record
// once that record and its link to the one before have verified. An error
// from fn stops the scan and is returned as is.
func Scan(r io.Reader, fn func(Record) error) (Summary, error) {
	return scan(r, false, fn)
}

// scan is Scan; with resumed set, a first line that is a chain_resumed
// record (KindChainResumed) starts the chain at its own seq and prev instead
// of at seq 1 and GenesisPrev. Whether that start matches the previous
// segment is VerifySegments' business.
func scan(r io.Reader, resumed bool, fn func(Record) error) (Summary, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	s := Summary{LastLineHash: GenesisPrev}
	buf := make([]byte, 0, 4096)
	for lineNo := 1; ; lineNo++ {
		line, complete, err := readLine(br, buf[:0])
		buf = line
		if err != nil {
			return s, fmt.Errorf("read audit log line %d: %w", lineNo, err)
		}
		if len(line) == 0 && !complete {
			return s, nil // clean end of file
		}
		want := s.LastSeq + 1
		broken := func(seq uint64, reason Reason, format string, args ...any) (Summary, error) {
			return s, &BrokenError{Seq: seq, Line: lineNo, Reason: reason, Detail: fmt.Sprintf(format, args...)}
		}
		if len(line) > MaxLineSize {
			return broken(want, ReasonMalformed, "line longer than %d bytes", MaxLineSize)
		}
		if !complete {
			return broken(want, ReasonTruncated, "file ends inside the record (no newline)")
		}
		w, err := parseLine(line)
		if err != nil {
			return broken(want, ReasonMalformed, "%v", err)
		}
		if got := w.contentHash(); got != w.Hash {
			return broken(w.Seq, ReasonHashMismatch, "content hashes to %s, record says %q", got, w.Hash)
		}
		if canon := w.encode(nil, true); string(canon) != string(line) {
			return broken(w.Seq, ReasonMalformed, "line is not in the canonical encoding")
		}
		if lineNo == 1 && resumed && w.Kind == KindChainResumed && w.Seq > 0 {
			rec, _ := w.record()
			s.Resumed = &rec
			s.LastSeq, s.LastLineHash, want = w.Seq-1, w.Prev, w.Seq
		}
		if w.Seq != want {
			return broken(w.Seq, ReasonSeqGap, "want seq %d after seq %d", want, s.LastSeq)
		}
		if w.Prev != s.LastLineHash {
			return broken(w.Seq, ReasonPrevMismatch, "prev %s, previous line hashes to %s", w.Prev, s.LastLineHash)
		}
		if fn != nil {
			rec, _ := w.record() // parseLine checked the time
			if err := fn(rec); err != nil {
				return s, err
			}
		}
		s.Records++
		s.LastSeq = w.Seq
		s.LastHash = w.Hash
		s.LastLineHash = lineHash(line)
	}
}

// readLine appends the next line, without its newline, to buf. complete is
// false when the input ended before a newline (a partial last line, or
// nothing at all at end of input). Lines longer than MaxLineSize are
// returned cut to MaxLineSize+1 bytes; the rest of the line is skipped.
func readLine(br *bufio.Reader, buf []byte) (line []byte, complete bool, err error) {
	skipping := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !skipping {
			if room := MaxLineSize + 1 - len(buf); len(chunk) > room {
				buf = append(buf, chunk[:room]...)
				skipping = true
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case err == nil:
			if !skipping {
				buf = buf[:len(buf)-1]
			}
			return buf, true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return buf, false, nil
		default:
			return buf, false, err
		}
	}
}
