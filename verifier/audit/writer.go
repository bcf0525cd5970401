package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit log closed")

// ErrLocked is returned (wrapped) by Open when another writer holds the log.
var ErrLocked = errors.New("another writer holds the audit log")

// Writer appends records to one audit log. It is safe for concurrent use;
// records are written whole, one write each, in the order Append acquires
// the writer, and each is fsynced before Append returns. The log's first
// file (the configured path, segment 0) is held with an exclusive flock
// for the writer's lifetime, whichever segment it appends to, so a second
// writer (another verifier process on the same path) is refused instead of
// forking the chain. Close releases the lock; so does the process's exit.
type Writer struct {
	log  hclog.Logger
	path string
	now  func() time.Time

	// lock holds the flock; f is the segment appended to (lock itself
	// while that is segment 0).
	lock *os.File

	// recovery is set when Open resumed the chain in a new segment.
	recovery *Recovery

	// sem serialises appends; a channel so a waiting Append can give up
	// when its context ends.
	sem chan struct{}

	// Guarded by sem.
	f        *os.File
	seg      int
	size     int64
	lastSeq  uint64
	lastHash string
	prevLine string // SHA-256 of the last line: the next record's prev
	failed   error  // sticky: the file is in an unknown state
	closed   bool
}

// Open opens or creates the audit log at path for appending. It appends to
// the log's last segment (see SegmentPath): path itself, or the highest
// path.N of path.1, path.2, ... that exist without a gap.
//
// An intact segment is resumed after its last record once its tail (the
// last record, its link to the record before it, and the final newline)
// checks out; Open does not re-verify the whole file (VerifySegments and
// pulsectl audit verify do). A segment whose tail fails that check is left
// untouched: Open scans it for its last good record and starts the next
// segment with a chain_resumed record anchored to that record (seq and
// prev continue from it; the data names the damage), and Recovery reports
// it. Open fails only when it cannot do that (or read, lock or create the
// files).
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
			return nil, fmt.Errorf("open audit log %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock audit log %s: %w", path, err)
	}
	w := &Writer{log: log, path: path, now: time.Now, sem: make(chan struct{}, 1), lock: f, f: f, prevLine: GenesisPrev}
	fail := func(err error) (*Writer, error) {
		w.closeFiles()
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	if w.seg, err = lastSegment(path); err != nil {
		return fail(err)
	}
	for w.seg > 0 {
		seg := SegmentPath(path, w.seg)
		sf, err := os.OpenFile(seg, os.O_RDWR|os.O_APPEND, 0)
		if err != nil {
			return fail(err)
		}
		st, err := sf.Stat()
		if err != nil || st.Size() > 0 || !st.Mode().IsRegular() {
			w.f = sf
			break
		}
		// An empty segment is what a crash while starting it leaves
		// behind (before its chain_resumed record): nothing to keep.
		// Remove it and look at the segment before again.
		sf.Close()
		if err := os.Remove(seg); err != nil {
			return fail(fmt.Errorf("remove empty segment: %w", err))
		}
		log.Warn("removed an empty audit log segment", "path", seg)
		w.seg--
	}
	var be *BrokenError
	if err := w.resume(); errors.As(err, &be) {
		if err := w.recoverChain(be); err != nil {
			return fail(err)
		}
	} else if err != nil {
		return fail(err)
	}
	if created {
		if err := syncDir(filepath.Dir(path)); err != nil {
			return fail(err)
		}
	}
	log.Info("audit log open", "path", path, "segment", SegmentPath(path, w.seg), "last_seq", w.lastSeq, "last_hash", w.lastHash, "created", created)
	return w, nil
}

// Recovery reports the damage Open found and the segment it resumed the
// chain in; nil when the log was intact.
func (w *Writer) Recovery() *Recovery { return w.recovery }

// maxDetail bounds the damage detail copied into a chain_resumed record.
const maxDetail = 512

// recoverChain handles a tail that failed the check: it scans the active
// segment whole for its last good record and, unless the scan finds the
// segment intact after all (the tail check sees no further back than two
// records, so it refuses a later segment's lone chain_resumed record),
// starts the next segment anchored to that record.
func (w *Writer) recoverChain(tailErr *BrokenError) error {
	damaged := SegmentPath(w.path, w.seg)
	sum, err := scan(io.NewSectionReader(w.f, 0, w.size), w.seg > 0, nil)
	if err == nil {
		w.lastSeq, w.lastHash, w.prevLine = sum.LastSeq, sum.LastHash, sum.LastLineHash
		return nil
	}
	var be *BrokenError
	if !errors.As(err, &be) {
		return fmt.Errorf("scan damaged segment: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(w.f, 0, w.size)); err != nil {
		return fmt.Errorf("hash damaged segment: %w", err)
	}
	damagedSize := w.size
	next := SegmentPath(w.path, w.seg+1)
	nf, err := os.OpenFile(next, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("start new segment: %w", err)
	}
	if w.f != w.lock {
		w.f.Close()
	}
	w.f, w.seg, w.size = nf, w.seg+1, 0
	w.lastSeq, w.lastHash, w.prevLine = sum.LastSeq, sum.LastHash, sum.LastLineHash
	detail := be.Detail
	if len(detail) > maxDetail {
		detail = detail[:maxDetail] + "..."
	}
	rec, err := w.Append(context.Background(), Record{Kind: KindChainResumed, Severity: 1, Data: map[string]string{
		ResumedDataSegment:      filepath.Base(damaged),
		ResumedDataSize:         strconv.FormatInt(damagedSize, 10),
		ResumedDataSHA256:       hex.EncodeToString(h.Sum(nil)),
		ResumedDataLastSeq:      strconv.FormatUint(sum.LastSeq, 10),
		ResumedDataLastHash:     sum.LastHash,
		ResumedDataBrokenLine:   strconv.Itoa(be.Line),
		ResumedDataBrokenSeq:    strconv.FormatUint(be.Seq, 10),
		ResumedDataBrokenReason: string(be.Reason),
		ResumedDataBrokenDetail: detail,
	}})
	if err != nil {
		return fmt.Errorf("start new segment %s: %w", next, err)
	}
	if err := syncDir(filepath.Dir(next)); err != nil {
		return err
	}
	w.recovery = &Recovery{Log: w.path, Damaged: damaged, Broken: be, LastGoodSeq: sum.LastSeq, LastGoodHash: sum.LastHash, Segment: next, Resumed: rec}
	w.log.Error("audit log damaged: kept as it is, chain resumed in a new segment", "damaged", damaged, "tail", tailErr.Error(),
		"first_broken", be.Error(), "last_good_seq", sum.LastSeq, "last_good_hash", sum.LastHash, "segment", next, "resumed_seq", rec.Seq, "resumed_hash", rec.Hash)
	return nil
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

// Close syncs and closes the file and releases the lock, so another
// writer (a restarted verifier) can open the log at once. Further appends
// fail with ErrClosed. Close is idempotent.
func (w *Writer) Close() error {
	w.sem <- struct{}{}
	defer func() { <-w.sem }()
	if w.closed {
		return nil
	}
	w.closed = true
	serr := w.f.Sync()
	cerr := w.closeFiles()
	if serr != nil {
		return fmt.Errorf("close audit log: sync: %w", serr)
	}
	if cerr != nil {
		return fmt.Errorf("close audit log: %w", cerr)
	}
	w.log.Debug("audit log closed", "path", w.path, "records", w.lastSeq)
	return nil
}

// closeFiles closes the active segment and then the lock file, which
// releases the flock.
func (w *Writer) closeFiles() error {
	var err error
	if w.f != w.lock {
		err = w.f.Close()
	}
	return errors.Join(err, w.lock.Close())
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
