package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit log closed")

// Writer appends records to one audit log file. It is safe for concurrent
// use; records are written whole, one write each, in the order Append
// acquires the writer, and each is fsynced before Append returns. The file is
// held with an exclusive flock so a second writer (another verifier process
// on the same path) is refused instead of forking the chain.
type Writer struct {
	log  hclog.Logger
	path string
	now  func() time.Time

	// sem serialises appends; a channel so a waiting Append can give up
	// when its context ends.
	sem chan struct{}

	// Guarded by sem.
	f        *os.File
	size     int64
	lastSeq  uint64
	lastHash string
	prevLine string // SHA-256 of the last line: the next record's prev
	failed   error  // sticky: the file is in an unknown state
	closed   bool
}

// Open opens or creates the audit log at path for appending. An existing
// log is resumed after its last record, once the tail (the last record, its
// link to the record before it, and the final newline) checks out; a broken
// tail is refused with an error wrapping a *BrokenError, because appending
// to it would bury the damage. Open does not re-verify the whole file: use
// Verify (pulsectl audit verify) for that.
func Open(path string, logger hclog.Logger) (*Writer, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	log := logger.Named("audit")
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("open audit log %s: another writer holds it", path)
		}
		return nil, fmt.Errorf("lock audit log %s: %w", path, err)
	}
	w := &Writer{log: log, path: path, now: time.Now, sem: make(chan struct{}, 1), f: f, prevLine: GenesisPrev}
	if err := w.resume(); err != nil {
		f.Close()
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	if created {
		if err := syncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, fmt.Errorf("open audit log %s: %w", path, err)
		}
	}
	log.Info("audit log open", "path", path, "records", w.lastSeq, "last_hash", w.lastHash, "created", created)
	return w, nil
}

// resume reads the tail of the file and sets the chain state after it.
func (w *Writer) resume() error {
	st, err := w.f.Stat()
	if err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("not a regular file")
	}
	w.size = st.Size()
	if w.size == 0 {
		return nil
	}
	// The last two lines fit in this window (each is at most MaxLineSize
	// bytes plus a newline), plus one byte to see the newline before them.
	window := min(w.size, 2*(MaxLineSize+1)+1)
	tail := make([]byte, window)
	if _, err := w.f.ReadAt(tail, w.size-window); err != nil {
		return fmt.Errorf("read tail: %w", err)
	}
	atStart := window == w.size
	lines, err := countLines(w.f, w.size-window)
	if err != nil {
		return err
	}
	lines += bytes.Count(tail, []byte{'\n'})

	if tail[len(tail)-1] != '\n' {
		return &BrokenError{Line: lines + 1, Reason: ReasonTruncated,
			Detail: "the file ends inside a record (no newline); move the file aside and start a new log"}
	}
	body := tail[:len(tail)-1]
	last, rest, lastWhole := cutLastLine(body, atStart)
	if !lastWhole {
		return &BrokenError{Line: lines, Reason: ReasonMalformed, Detail: fmt.Sprintf("last line longer than %d bytes", MaxLineSize)}
	}
	lw, err := checkLine(last, lines)
	if err != nil {
		return err
	}
	wantPrev, wantSeq := GenesisPrev, uint64(1)
	if len(rest) > 0 || !atStart {
		if len(rest) == 0 || rest[len(rest)-1] != '\n' {
			return &BrokenError{Seq: lw.Seq, Line: lines, Reason: ReasonMalformed, Detail: "cannot find the record before the last"}
		}
		prev, _, prevWhole := cutLastLine(rest[:len(rest)-1], atStart)
		if !prevWhole {
			return &BrokenError{Line: lines - 1, Reason: ReasonMalformed, Detail: fmt.Sprintf("line longer than %d bytes", MaxLineSize)}
		}
		pw, err := checkLine(prev, lines-1)
		if err != nil {
			return err
		}
		wantPrev, wantSeq = lineHash(prev), pw.Seq+1
	}
	if lw.Seq != wantSeq {
		return &BrokenError{Seq: lw.Seq, Line: lines, Reason: ReasonSeqGap, Detail: fmt.Sprintf("want seq %d", wantSeq)}
	}
	if lw.Prev != wantPrev {
		return &BrokenError{Seq: lw.Seq, Line: lines, Reason: ReasonPrevMismatch, Detail: fmt.Sprintf("prev %s, previous line hashes to %s", lw.Prev, wantPrev)}
	}
	w.lastSeq, w.lastHash, w.prevLine = lw.Seq, lw.Hash, lineHash(last)
	return nil
}

// cutLastLine splits b (which has no trailing newline) into its last line
// and everything before it, newline included. whole is false when no
// newline precedes the line and b does not start at the beginning of the
// file, i.e. the line may continue before the window.
func cutLastLine(b []byte, atStart bool) (last, rest []byte, whole bool) {
	i := bytes.LastIndexByte(b, '\n')
	if i < 0 {
		return b, nil, atStart
	}
	return b[i+1:], b[:i+1], true
}

// checkLine parses a line and checks its own hash and canonical spelling.
func checkLine(line []byte, lineNo int) (*wireRecord, error) {
	w, err := parseLine(line)
	if err != nil {
		return nil, &BrokenError{Line: lineNo, Reason: ReasonMalformed, Detail: err.Error()}
	}
	if got := w.contentHash(); got != w.Hash {
		return nil, &BrokenError{Seq: w.Seq, Line: lineNo, Reason: ReasonHashMismatch, Detail: fmt.Sprintf("content hashes to %s, record says %q", got, w.Hash)}
	}
	if string(w.encode(nil, true)) != string(line) {
		return nil, &BrokenError{Seq: w.Seq, Line: lineNo, Reason: ReasonMalformed, Detail: "line is not in the canonical encoding"}
	}
	return w, nil
}

// countLines counts newlines in the first n bytes of f.
func countLines(f *os.File, n int64) (int, error) {
	count := 0
	buf := make([]byte, 64<<10)
	r := io.NewSectionReader(f, 0, n)
	for {
		k, err := r.Read(buf)
		count += bytes.Count(buf[:k], []byte{'\n'})
		if errors.Is(err, io.EOF) {
			return count, nil
		}
		if err != nil {
			return 0, fmt.Errorf("count lines: %w", err)
		}
	}
}

// Append writes rec as the next record and returns it as written (Seq,
// Time, Prev, Hash filled in; strings made valid UTF-8; secret-looking data
// values redacted). A zero Time is set to now. Seq, Prev and Hash set by the
// caller are ignored. Kind must not be empty. Append returns once the record
// is fsynced; a write or sync failure leaves the writer refusing further
// appends (the file must be checked and the log reopened).
func (w *Writer) Append(ctx context.Context, rec Record) (Record, error) {
	if rec.Kind == "" {
		return Record{}, errors.New("audit append: empty kind")
	}
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return Record{}, fmt.Errorf("audit append: %w", ctx.Err())
	}
	defer func() { <-w.sem }()
	if w.closed {
		return Record{}, fmt.Errorf("audit append: %w", ErrClosed)
	}
	if w.failed != nil {
		return Record{}, fmt.Errorf("audit append: log unusable after an earlier failure: %w", w.failed)
	}
	if rec.Time.IsZero() {
		rec.Time = w.now()
	}
	rec.Seq = w.lastSeq + 1
	rec.Prev = w.prevLine
	wr := toWire(rec)
	wr.Hash = wr.contentHash()
	line := wr.encode(make([]byte, 0, 512), true)
	if len(line) > MaxLineSize {
		return Record{}, fmt.Errorf("audit append: record is %d bytes, limit %d", len(line), MaxLineSize)
	}
	lh := lineHash(line)
	line = append(line, '\n')
	if _, err := w.f.Write(line); err != nil {
		// Take a partial line back out so the chain stays appendable.
		if terr := w.f.Truncate(w.size); terr != nil {
			w.failed = fmt.Errorf("write: %w; truncate after partial write: %w", err, terr)
			w.log.Error("audit log write failed and could not be undone", "path", w.path, "error", w.failed)
		}
		return Record{}, fmt.Errorf("audit append: write: %w", err)
	}
	if err := w.f.Sync(); err != nil {
		w.failed = fmt.Errorf("fsync: %w", err)
		w.log.Error("audit log fsync failed", "path", w.path, "error", err)
		return Record{}, fmt.Errorf("audit append: %w", w.failed)
	}
	w.size += int64(len(line))
	w.lastSeq, w.lastHash, w.prevLine = wr.Seq, wr.Hash, lh
	out, _ := wr.record()
	out.Hash = wr.Hash
	return out, nil
}

// Head returns the last record's seq and hash (0 and "" for an empty log).
func (w *Writer) Head() (seq uint64, hash string) {
	w.sem <- struct{}{}
	defer func() { <-w.sem }()
	return w.lastSeq, w.lastHash
}

// Close syncs and closes the file and releases the lock. Further appends
// fail with ErrClosed. Close is idempotent.
func (w *Writer) Close() error {
	w.sem <- struct{}{}
	defer func() { <-w.sem }()
	if w.closed {
		return nil
	}
	w.closed = true
	serr := w.f.Sync()
	cerr := w.f.Close() // releases the flock
	if serr != nil {
		return fmt.Errorf("close audit log: sync: %w", serr)
	}
	if cerr != nil {
		return fmt.Errorf("close audit log: %w", cerr)
	}
	w.log.Debug("audit log closed", "path", w.path, "records", w.lastSeq)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
