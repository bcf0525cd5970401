// Package runtimelog keeps the agent's runtime log: the append-only file of
// CEL records (tpm/cel) measured into the runtime PCR during the current
// boot — the agent binary, its eBPF programs and Fortress state changes.
//
// # Ordering and crashes
//
// Append writes the record to the file and fsyncs it FIRST, then extends
// the PCR with the record's digests. So the log is never behind the PCR: a
// crash between the two leaves a log exactly one record ahead, which is
// recognisable — the PCR equals the replay of every record but the last.
// Before every append and every read for a pulse (and at Open) the log is
// reconciled with the PCR under an exclusive lock:
//
//   - replay(all records) == PCR: consistent.
//   - replay(all but the last) == PCR: the last record was never extended (a
//     crash between append and extend); it is dropped, so nothing the PCR
//     does not cover is ever sent. Such a record is never evidence: the
//     verifier only accepts records that replay to a quoted PCR value.
//   - the PCR holds its boot value (what the firmware log left there, or
//     zero) but the log has records: the TPM was reset (reboot); a fresh log
//     is started and the old one kept as PATH.prev.
//   - anything else — the PCR holds extensions no prefix of the log explains
//     — cannot come from a crash: something extended the PCR behind the
//     agent. The log is kept as is and the state is reported; the verifier
//     answers RUNTIME_LOG_REPLAY for the rest of this boot.
//
// A torn last record (a crash in the middle of the write, before fsync) was
// never extended either and is cut off.
//
// # Boots
//
// The log belongs to one boot. PATH.meta records the kernel boot ID
// (/proc/sys/kernel/random/boot_id), the PCR, and the PCR value the log's
// replay starts from (read when the log was started). A different boot ID,
// a different PCR or a TPM reset starts a fresh log.
//
// # Processes
//
// The launcher and the agent are different processes writing one log: all
// access is serialised by flock(2) on PATH.lock (plus a mutex within a
// process), and every operation re-reads the file, so each process sees the
// other's records.
package runtimelog

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// TPM is what the runtime log needs from a TPM; *tpm.TPM implements it.
type TPM interface {
	Extend(pcr uint32, digests map[uint16][]byte) error
	ReadPCRs(alg uint16, pcrs []uint32) (map[uint32][]byte, error)
	PCRBanks() ([]uint16, error)
}

var _ TPM = (*tpm.TPM)(nil)

// BootIDPath is where Linux publishes the current boot's random ID.
const BootIDPath = "/proc/sys/kernel/random/boot_id"

// SelfMeasuredMarker names the Generic record an agent appends right before
// the agent-binary record of a binary it measured itself after starting
// (it was not started through the launcher). Its data is the binary's
// SHA-256.
const SelfMeasuredMarker = cel.SelfMeasuredMarker

// Options configures Open.
type Options struct {
	// PCR is the runtime PCR.
	PCR uint32
	// TPM extends the PCR. nil: no TPM (mTLS-only) — records are logged but
	// nothing is extended or reconciled.
	TPM TPM
	// Initial is the SHA-256 value the firmware log left in the PCR, when
	// known: a PCR back at this value (or at zero) while the log has records
	// means the TPM was reset. nil: only zero counts.
	Initial []byte
	// BootID overrides the kernel boot ID (tests).
	BootID string
	Logger hclog.Logger

	// afterWrite, when set (tests), runs after a record is written and
	// synced and before the PCR is extended; an error returned stops the
	// append there, leaving the state a crash at that point leaves.
	afterWrite func() error
}

// meta is the content of PATH.meta.
type meta struct {
	BootID string `json:"boot_id"`
	PCR    uint32 `json:"pcr"`
	// Base is the hex SHA-256 PCR value the log's replay starts from.
	Base    string    `json:"base_sha256,omitempty"`
	Started time.Time `json:"started"`
}

// Log is an open runtime log.
type Log struct {
	path   string
	pcr    uint32
	tpm    TPM
	banks  []eventlog.HashAlg
	init   []byte
	bootID string
	log    hclog.Logger
	hook   func() error

	mu       sync.Mutex
	lockFile *os.File
	lastWarn string
}

// Open opens (creating it when needed) the runtime log at path for the
// current boot, starting a fresh one when the existing log belongs to
// another boot, and reconciles it with the PCR.
func Open(path string, opts Options) (*Log, error) {
	if opts.PCR >= tpm.NumPCRs {
		return nil, fmt.Errorf("runtime log: pcr %d out of range", opts.PCR)
	}
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	l := &Log{
		path:   path,
		pcr:    opts.PCR,
		tpm:    opts.TPM,
		init:   opts.Initial,
		bootID: opts.BootID,
		log:    logger.Named("runtimelog"),
		hook:   opts.afterWrite,
	}
	if l.bootID == "" {
		b, err := os.ReadFile(BootIDPath)
		if err != nil {
			return nil, fmt.Errorf("runtime log: read boot id: %w", err)
		}
		l.bootID = strings.TrimSpace(string(b))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("runtime log: %w", err)
	}
	if l.tpm != nil {
		banks, err := l.tpm.PCRBanks()
		if err != nil {
			return nil, fmt.Errorf("runtime log: %w", err)
		}
		// Extend every allocated bank Pulse can hash, so each bank of the
		// PCR stays explained by the log; SHA-256 is the one quoted.
		for _, b := range banks {
			if a := eventlog.HashAlg(b); a.Replayable() {
				l.banks = append(l.banks, a)
			}
		}
		if !slices.Contains(l.banks, eventlog.AlgSHA256) {
			return nil, fmt.Errorf("runtime log: the tpm has no sha256 pcr bank (banks %v)", banks)
		}
	} else {
		l.banks = []eventlog.HashAlg{eventlog.AlgSHA256}
	}
	lf, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("runtime log: %w", err)
	}
	l.lockFile = lf
	if err := l.locked(func() error {
		_, err := l.load(true)
		return err
	}); err != nil {
		lf.Close()
		return nil, err
	}
	return l, nil
}

// Path is the log file's path.
func (l *Log) Path() string { return l.path }

// PCR is the runtime PCR.
func (l *Log) PCR() uint32 { return l.pcr }

// Close releases the lock file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lockFile == nil {
		return nil
	}
	err := l.lockFile.Close()
	l.lockFile = nil
	return err
}

// locked runs f holding the in-process mutex and the exclusive flock.
func (l *Log) locked(f func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lockFile == nil {
		return errors.New("runtime log is closed")
	}
	fd := int(l.lockFile.Fd())
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("runtime log: lock: %w", err)
		}
	}
	defer syscall.Flock(fd, syscall.LOCK_UN) //nolint:errcheck // closing the fd would release it too
	return f()
}

// snapshot is the log as read and reconciled under the lock.
type snapshot struct {
	raw     []byte
	ends    []int // ends[i] is the byte offset after record i
	records []cel.Record
	meta    meta
	base    []byte
}

// load reads the log, starting a fresh one for a new boot, cutting a torn
// tail and, with a TPM, reconciling it with the PCR. Call with the lock.
func (l *Log) load(opening bool) (*snapshot, error) {
	m, err := l.readMeta()
	if err != nil {
		return nil, err
	}
	switch {
	case m == nil:
		return l.start("no runtime log yet")
	case m.BootID != l.bootID:
		return l.start(fmt.Sprintf("new boot (boot id %s, log was for %s)", l.bootID, m.BootID))
	case m.PCR != l.pcr:
		return l.start(fmt.Sprintf("runtime pcr changed from %d to %d", m.PCR, l.pcr))
	case l.tpm != nil && m.Base == "":
		return l.start("the log was started without a tpm")
	}
	s, err := l.read(*m)
	if err != nil {
		return nil, err
	}
	if l.tpm == nil {
		return s, nil
	}
	cur, err := l.readPCR()
	if err != nil {
		return nil, err
	}
	full, err := cel.Replay(s.records, l.pcr, s.base)
	if err != nil {
		return nil, fmt.Errorf("runtime log: replay: %w", err)
	}
	if bytes.Equal(full, cur) {
		l.lastWarn = ""
		return s, nil
	}
	n := len(s.records)
	if n > 0 {
		prefix, err := cel.Replay(s.records[:n-1], l.pcr, s.base)
		if err != nil {
			return nil, fmt.Errorf("runtime log: replay: %w", err)
		}
		if bytes.Equal(prefix, cur) {
			l.log.Warn("dropping the last runtime log record: it was written but never extended into the pcr (crash between append and extend)",
				"record", n-1, "kind", s.records[n-1].Content.Kind().String(), "pcr", l.pcr)
			start := 0
			if n > 1 {
				start = s.ends[n-2]
			}
			if err := l.truncate(int64(start)); err != nil {
				return nil, err
			}
			s.raw, s.ends, s.records = s.raw[:start], s.ends[:n-1], s.records[:n-1]
			return s, nil
		}
	}
	if l.isBootValue(cur) {
		reason := "the tpm was reset (the runtime pcr is back at its boot value)"
		if n == 0 {
			reason = "the runtime pcr is back at its boot value"
		}
		return l.start(reason)
	}
	// Something extended the PCR behind the agent's back.
	msg := fmt.Sprintf("pcr %s, log replays to %s", hex.EncodeToString(cur), hex.EncodeToString(full))
	if msg != l.lastWarn || opening {
		l.lastWarn = msg
		l.log.Error("runtime pcr does not match the runtime log: something other than pulse extended it; the verifier will refuse this boot's runtime log",
			"pcr", l.pcr, "pcr_value", hex.EncodeToString(cur), "log_replay", hex.EncodeToString(full), "records", n)
	}
	return s, nil
}

// isBootValue reports whether v is a value the PCR holds right after a boot.
func (l *Log) isBootValue(v []byte) bool {
	if l.init != nil && bytes.Equal(v, l.init) {
		return true
	}
	return bytes.Equal(v, make([]byte, len(v)))
}

func (l *Log) readPCR() ([]byte, error) {
	vals, err := l.tpm.ReadPCRs(tpm.AlgSHA256, []uint32{l.pcr})
	if err != nil {
		return nil, fmt.Errorf("runtime log: %w", err)
	}
	return vals[l.pcr], nil
}

func (l *Log) metaPath() string { return l.path + ".meta" }

func (l *Log) readMeta() (*meta, error) {
	b, err := os.ReadFile(l.metaPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("runtime log: %w", err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		l.log.Warn("runtime log metadata is unreadable; starting a new log", "path", l.metaPath(), "error", err)
		return nil, nil
	}
	return &m, nil
}

// start begins a fresh log: the old one (if any) is kept as PATH.prev and
// the PCR's current value is the base of the new log's replay.
func (l *Log) start(reason string) (*snapshot, error) {
	m := meta{BootID: l.bootID, PCR: l.pcr, Started: time.Now().UTC()}
	var base []byte
	if l.tpm != nil {
		cur, err := l.readPCR()
		if err != nil {
			return nil, err
		}
		base = cur
		m.Base = hex.EncodeToString(cur)
		if l.init != nil && !bytes.Equal(cur, l.init) {
			l.log.Warn("the runtime pcr already holds extensions the firmware log does not explain; the verifier's replay will not match",
				"pcr", l.pcr, "pcr_value", m.Base, "firmware_value", hex.EncodeToString(l.init))
		}
	}
	if _, err := os.Stat(l.path); err == nil {
		if err := os.Rename(l.path, l.path+".prev"); err != nil {
			return nil, fmt.Errorf("runtime log: keep previous log: %w", err)
		}
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("runtime log: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("runtime log: sync: %w", err)
	}
	f.Close()
	b, _ := json.Marshal(m)
	if err := writeSynced(l.metaPath(), b); err != nil {
		return nil, fmt.Errorf("runtime log: %w", err)
	}
	l.lastWarn = ""
	l.log.Info("started a new runtime log", "path", l.path, "reason", reason, "pcr", l.pcr)
	return &snapshot{meta: m, base: base}, nil
}

// read reads and decodes the log, cutting a torn last record.
func (l *Log) read(m meta) (*snapshot, error) {
	raw, err := os.ReadFile(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		raw, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("runtime log: %w", err)
	}
	s := &snapshot{meta: m}
	if l.tpm != nil {
		if s.base, err = hex.DecodeString(m.Base); err != nil || len(s.base) != sha256.Size {
			return nil, fmt.Errorf("runtime log: metadata base value %q is not a sha256 value", m.Base)
		}
	}
	ends, complete := splitRecords(raw)
	if complete < len(raw) {
		l.log.Warn("cutting a torn record off the runtime log (a write was interrupted before it was synced or extended)",
			"path", l.path, "bytes", len(raw)-complete)
		if err := l.truncate(int64(complete)); err != nil {
			return nil, err
		}
		raw = raw[:complete]
	}
	recs, err := cel.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("runtime log %s is corrupt: %w", l.path, err)
	}
	for i, r := range recs {
		if r.RecNum != uint64(i) || r.PCR != l.pcr {
			return nil, fmt.Errorf("runtime log %s is corrupt: record %d has number %d and pcr %d", l.path, i, r.RecNum, r.PCR)
		}
	}
	s.raw, s.ends, s.records = raw, ends, recs
	return s, nil
}

// splitRecords finds record boundaries (four TLVs each) and the length of
// the complete records at the front of raw.
func splitRecords(raw []byte) (ends []int, complete int) {
	off := 0
	for off < len(raw) {
		p := off
		for i := 0; i < 4; i++ {
			if len(raw)-p < 5 {
				return ends, off
			}
			n := int(binary.BigEndian.Uint32(raw[p+1:]))
			if n > len(raw)-p-5 {
				return ends, off
			}
			p += 5 + n
		}
		off = p
		ends = append(ends, off)
	}
	return ends, off
}

func (l *Log) truncate(size int64) error {
	f, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("runtime log: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("runtime log: truncate: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("runtime log: sync: %w", err)
	}
	return nil
}

// Append measures c: it writes the next record to the log and fsyncs it,
// then extends the PCR with the record's digests. It returns the record's
// number.
func (l *Log) Append(c cel.Content) (uint64, error) {
	nums, err := l.AppendAdjacent(c)
	if err != nil {
		return 0, err
	}
	return nums[0], nil
}

// AppendAdjacent appends each content in turn, as Append does, holding the
// lock across all of them: no other process's record can come between
// them, so a record that describes the next one (the launcher's
// configuration record, the self-measured marker) is always right before
// it. A failure stops there: the contents before it stay appended (as a
// crash at that point would leave them). It returns the record numbers.
func (l *Log) AppendAdjacent(cs ...cel.Content) ([]uint64, error) {
	var nums []uint64
	err := l.locked(func() error {
		for _, c := range cs {
			n, err := l.appendLocked(c)
			if err != nil {
				return err
			}
			nums = append(nums, n)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, c := range cs {
		l.log.Debug("appended runtime log record", "record", nums[i], "kind", c.Kind().String(), "pcr", l.pcr)
	}
	return nums, nil
}

// appendLocked appends one record. Call with the lock.
func (l *Log) appendLocked(c cel.Content) (uint64, error) {
	s, err := l.load(false)
	if err != nil {
		return 0, err
	}
	recnum := uint64(len(s.records))
	rec, err := cel.NewRecord(recnum, l.pcr, c, l.banks...)
	if err != nil {
		return 0, fmt.Errorf("runtime log: %w", err)
	}
	b, err := rec.Append(nil)
	if err != nil {
		return 0, fmt.Errorf("runtime log: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("runtime log: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(len(s.raw))); err != nil {
		return 0, fmt.Errorf("runtime log: write record %d: %w", recnum, err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("runtime log: sync record %d: %w", recnum, err)
	}
	if l.hook != nil {
		if err := l.hook(); err != nil {
			return 0, err
		}
	}
	if l.tpm == nil {
		return recnum, nil
	}
	digests := make(map[uint16][]byte, len(rec.Digests))
	for _, d := range rec.Digests {
		digests[uint16(d.Alg)] = d.Value
	}
	if err := l.tpm.Extend(l.pcr, digests); err != nil {
		// Leave the log as the PCR is: without this record.
		if terr := f.Truncate(int64(len(s.raw))); terr == nil {
			_ = f.Sync()
		}
		return 0, fmt.Errorf("runtime log: extend pcr %d with record %d: %w", l.pcr, recnum, err)
	}
	return recnum, nil
}

// AppendSelfMeasured appends the self-measurement marker and then the
// agent-binary record, adjacent (marker first, so a crash between the two
// never leaves a self-measured binary looking launcher-measured). It
// returns the agent-binary record's number.
func (l *Log) AppendSelfMeasured(b *cel.AgentBinary) (uint64, error) {
	nums, err := l.AppendAdjacent(&cel.Generic{Name: SelfMeasuredMarker, Data: bytes.Clone(b.SHA256[:])}, b)
	if err != nil {
		return 0, err
	}
	return nums[1], nil
}

// View is a consistent view of the log, valid inside the function given
// to (*Log).View.
type View struct {
	s *snapshot
}

// Count is the number of records.
func (v *View) Count() uint64 { return uint64(len(v.s.records)) }

// Records returns the CEL bytes of records [from, Count()).
func (v *View) Records(from uint64) ([]byte, error) {
	n := uint64(len(v.s.records))
	if from > n {
		return nil, fmt.Errorf("runtime log: records from %d, only %d exist", from, n)
	}
	if from == n {
		return nil, nil
	}
	start := 0
	if from > 0 {
		start = v.s.ends[from-1]
	}
	return bytes.Clone(v.s.raw[start:]), nil
}

// Decoded returns the decoded records.
func (v *View) Decoded() []cel.Record { return slices.Clone(v.s.records) }

// Started is when this log (this boot's, or the one started after a TPM
// reset) was begun: a different value means a different log.
func (v *View) Started() time.Time { return v.s.meta.Started }

// Base is the PCR value the log's replay starts from (nil without a TPM).
func (v *View) Base() []byte { return bytes.Clone(v.s.base) }

// Summary describes the latest measured state.
func (v *View) Summary() Summary { return summarize(v.s.records) }

// View reconciles the log with the PCR and runs f with the lock held: no
// record can be appended (by this or another process) until f returns, so
// the records f reads and a quote f takes describe the same PCR state.
func (l *Log) View(f func(v *View) error) error {
	return l.locked(func() error {
		s, err := l.load(false)
		if err != nil {
			return err
		}
		return f(&View{s: s})
	})
}

// Records returns the CEL bytes of records [from, ...) of this boot.
func (l *Log) Records(from uint64) ([]byte, error) {
	var out []byte
	err := l.View(func(v *View) error {
		var err error
		out, err = v.Records(from)
		return err
	})
	return out, err
}

// Count returns the number of records.
func (l *Log) Count() (uint64, error) {
	var n uint64
	err := l.View(func(v *View) error {
		n = v.Count()
		return nil
	})
	return n, err
}

// Summary is the latest state the log records.
type Summary struct {
	cel.State
	// AgentBinaryRecord is the number of the latest agent-binary record.
	AgentBinaryRecord uint64
	// SelfMeasured is true when that record follows a SelfMeasuredMarker
	// for the same digest: the agent measured itself after it started.
	SelfMeasured bool
	Count        uint64
}

// Latest returns the latest agent binary, eBPF programs and Fortress state.
func (l *Log) Latest() (Summary, error) {
	var s Summary
	err := l.View(func(v *View) error {
		s = v.Summary()
		return nil
	})
	return s, err
}

func summarize(recs []cel.Record) Summary {
	s := Summary{State: cel.Latest(recs), Count: uint64(len(recs))}
	for i, r := range recs {
		b, ok := r.Content.(*cel.AgentBinary)
		if !ok {
			continue
		}
		s.AgentBinaryRecord, s.SelfMeasured = r.RecNum, false
		if i > 0 {
			if g, ok := recs[i-1].Content.(*cel.Generic); ok && g.Name == SelfMeasuredMarker && bytes.Equal(g.Data, b.SHA256[:]) {
				s.SelfMeasured = true
			}
		}
	}
	return s
}

// FirmwareInitial returns the SHA-256 value a firmware event log leaves in
// pcr: the replay of its events for that PCR, or zero when it has none.
// The runtime log's replay starts there.
func FirmwareInitial(raw []byte, pcr uint32) ([]byte, error) {
	parsed, err := eventlog.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("firmware log: %w", err)
	}
	replayed, err := parsed.Replay(eventlog.AlgSHA256)
	if err != nil {
		return nil, fmt.Errorf("firmware log: %w", err)
	}
	if v, ok := replayed[pcr]; ok {
		return v, nil
	}
	return make([]byte, sha256.Size), nil
}

// writeSynced replaces path atomically and durably.
func writeSynced(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}
