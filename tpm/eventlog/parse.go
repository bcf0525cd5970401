package eventlog

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Format is the on-disk layout of a firmware event log.
type Format int

// Log formats.
const (
	// FormatSHA1Legacy is the TPM 1.2-style log: every record is a
	// TCG_PCClientPCREvent with one SHA-1 digest.
	FormatSHA1Legacy Format = 1
	// FormatCryptoAgile is the TPM 2.0 log: a SHA-1-format Spec ID header
	// ("Spec ID Event03") followed by TCG_PCR_EVENT2 records carrying one
	// digest per algorithm the header lists.
	FormatCryptoAgile Format = 2
)

func (f Format) String() string {
	switch f {
	case FormatSHA1Legacy:
		return "sha1-legacy"
	case FormatCryptoAgile:
		return "crypto-agile"
	}
	return fmt.Sprintf("format(%d)", int(f))
}

// Limits on hostile input. The verifier accepts firmware logs of up to 4 MiB
// from any device, so parsing, replaying and verifying must cost time
// linear in the log's size with small constants; these bounds keep them so
// while staying far above every real log (docs/performance.md, "Worst-case
// firmware log", gives the measured worst case).
const (
	// MaxEventDataSize bounds one event's data. The largest real events are
	// Secure Boot databases: dbx is 12 KiB in the fixtures and UEFI
	// variable stores rarely allow more than 64 KiB per variable. A larger
	// size field is treated as corrupt (ReasonBadSize) rather than as a
	// truncated log.
	MaxEventDataSize = 1 << 20
	// MaxEvents bounds the records of a log, EV_NO_ACTION records included
	// but not the Spec ID header. The fixtures have 25 to 106; GRUB
	// measuring every command of a long grub.cfg reaches a few hundred.
	MaxEvents = 16384
	// MaxAlgorithms bounds the Spec ID header's algorithm list. A TPM has a
	// handful of PCR banks (SHA-1, SHA-256, SHA-384, SHA-512, SM3; the TCG
	// algorithm registry defines eight hash algorithms in all); the fixtures
	// list at most three. Every event carries one digest per listed
	// algorithm, so this also bounds the work per event.
	MaxAlgorithms = 16
)

// maxPCR is the highest PCR index accepted in a log.
const maxPCR = 31

// Event is one measured record of the log.
type Event struct {
	// Seq is the record's position in the file, counting from 0 and
	// including the Spec ID header and EV_NO_ACTION records.
	Seq int
	// Offset is the byte offset of the record in the raw log.
	Offset  int
	PCR     uint32
	Type    EventType
	Digests []Digest
	Data    []byte
	// DataVerified is true when Data is bound by the event's digest in the
	// verified bank: the hash of Data equals the digest. Verify sets it in
	// Verified.Events; Parse hashes no event data, so it is false in
	// Log.Events (use DataBound there). Data of events where it is false is
	// a description only and is not evidence.
	DataVerified bool
}

// Digest returns the event's digest in the given bank, or nil.
func (e *Event) Digest(alg HashAlg) []byte {
	for _, d := range e.Digests {
		if d.Alg == alg {
			return d.Value
		}
	}
	return nil
}

// SpecID is the content of the crypto-agile log's header event.
type SpecID struct {
	PlatformClass uint32
	VersionMajor  uint8
	VersionMinor  uint8
	Errata        uint8
	UintnSize     uint8
	// DigestSizes lists the algorithms the log carries, in header order.
	DigestSizes []AlgSize
	VendorInfo  []byte
}

// AlgSize is one entry of the Spec ID header's algorithm list.
type AlgSize struct {
	Alg  HashAlg
	Size uint16
}

// Log is a parsed firmware event log.
type Log struct {
	Format Format
	// Algs are the banks the log carries (the Spec ID header's list; SHA-1
	// for legacy logs).
	Algs []HashAlg
	// Events are the records that were extended into PCRs, in log order.
	// The Spec ID header and EV_NO_ACTION records are not included.
	Events []Event
	// NoAction holds the EV_NO_ACTION records other than the Spec ID header
	// (StartupLocality, SP800-155 reference events...). They are not
	// extended and are not evidence.
	NoAction []Event
	// StartupLocality is the locality from which the TPM was started, from
	// the EV_NO_ACTION "StartupLocality" record, or 0 when there is none.
	StartupLocality uint8
	// SpecID is the crypto-agile header, nil for legacy logs.
	SpecID *SpecID

	// pcr0Seen and localitySeen make the StartupLocality checks O(1).
	pcr0Seen, localitySeen bool
}

// Banks returns the hash algorithms of the PCR banks the log carries.
func (l *Log) Banks() []HashAlg { return append([]HashAlg(nil), l.Algs...) }

var (
	specIDSignature03  = []byte("Spec ID Event03\x00")
	specIDPrefix       = []byte("Spec ID Event")
	startupLocalitySig = []byte("StartupLocality\x00")
)

type reader struct {
	b   []byte
	off int
	seq int
	// slab is where events' digest lists are cut from: one allocation per
	// many digests rather than one per event. Slabs grow from 64 digests
	// to maxSlab, so a short log holds little unused room.
	slab []Digest
}

const (
	minSlab = 64
	maxSlab = 4096
)

// digests returns an empty list with room for n digests.
func (r *reader) digests(n int) []Digest {
	if n > cap(r.slab)-len(r.slab) {
		r.slab = make([]Digest, 0, max(n, min(maxSlab, max(minSlab, 2*cap(r.slab)))))
	}
	start := len(r.slab)
	r.slab = r.slab[:start+n]
	return r.slab[start : start : start+n]
}

func (r *reader) remaining() int { return len(r.b) - r.off }

func (r *reader) fail(reason Reason, off int, format string, args ...any) *ParseError {
	var err error
	if format != "" {
		err = fmt.Errorf(format, args...)
	}
	return &ParseError{Reason: reason, Offset: off, Event: r.seq, Err: err}
}

func (r *reader) u32(what string) (uint32, error) {
	if r.remaining() < 4 {
		return 0, r.fail(ReasonTruncated, r.off, "reading %s", what)
	}
	v := binary.LittleEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v, nil
}

func (r *reader) u16(what string) (uint16, error) {
	if r.remaining() < 2 {
		return 0, r.fail(ReasonTruncated, r.off, "reading %s", what)
	}
	v := binary.LittleEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v, nil
}

func (r *reader) bytes(n int, what string) ([]byte, error) {
	if n < 0 || r.remaining() < n {
		return nil, r.fail(ReasonTruncated, r.off, "reading %s (%d bytes, %d left)", what, n, r.remaining())
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v, nil
}

// eventData reads the eventSize field and the data that follows.
func (r *reader) eventData() ([]byte, error) {
	sizeOff := r.off
	n, err := r.u32("event size")
	if err != nil {
		return nil, err
	}
	if n > MaxEventDataSize {
		return nil, r.fail(ReasonBadSize, sizeOff, "event size %d exceeds limit %d", n, MaxEventDataSize)
	}
	if int(n) > r.remaining() {
		return nil, r.fail(ReasonTruncated, sizeOff, "event size %d but %d bytes left", n, r.remaining())
	}
	return r.bytes(int(n), "event data")
}

// Parse parses a TCG PC Client firmware event log (the bytes of
// /sys/kernel/security/tpm0/binary_bios_measurements) in either the legacy
// SHA-1 or the crypto-agile format. It checks structure only: whether the
// log matches a TPM is decided by Replay/Verify, and whether its events are
// where the PC Client Platform Firmware Profile puts them by CheckStructure
// (which Verify applies). It hashes no event data. Bytes after the last
// record, zero padding included, are an error (ErrTrailingBytes), so one
// log has one encoding and one digest. The returned Log does not alias raw.
//
// Parse takes time linear in len(raw): see MaxEvents, MaxAlgorithms and
// MaxEventDataSize.
func Parse(raw []byte) (*Log, error) {
	if len(raw) == 0 {
		return nil, &ParseError{Reason: ReasonEmpty, Event: -1, Err: fmt.Errorf("no bytes")}
	}
	buf := bytes.Clone(raw)
	r := &reader{b: buf}

	// The first record is always in the SHA-1 format.
	first, err := r.legacyEvent()
	if err != nil {
		return nil, err
	}
	l := &Log{}
	var algs algTable
	if first.Type == EvNoAction && first.PCR == 0 && bytes.HasPrefix(first.Data, specIDSignature03) {
		spec, err := parseSpecID(first.Data, first.Offset+32)
		if err != nil {
			return nil, err
		}
		l.Format = FormatCryptoAgile
		l.SpecID = spec
		for _, as := range spec.DigestSizes {
			l.Algs = append(l.Algs, as.Alg)
		}
		algs = newAlgTable(spec.DigestSizes)
	} else {
		l.Format = FormatSHA1Legacy
		l.Algs = []HashAlg{AlgSHA1}
		if !(first.Type == EvNoAction && bytes.HasPrefix(first.Data, specIDPrefix)) {
			if err := l.add(first); err != nil {
				return nil, err
			}
		}
	}
	r.seq++
	for r.remaining() > 0 {
		if err := r.trailing(l.Format); err != nil {
			return nil, err
		}
		if len(l.Events)+len(l.NoAction) >= MaxEvents {
			return nil, r.fail(ReasonLimit, r.off, "more than %d records", MaxEvents)
		}
		var ev Event
		if l.Format == FormatCryptoAgile {
			ev, err = r.agileEvent(&algs)
		} else {
			ev, err = r.legacyEvent()
		}
		if err != nil {
			return nil, err
		}
		if err := l.add(ev); err != nil {
			return nil, err
		}
		r.seq++
	}
	return l, nil
}

// trailing rejects what follows the last record when it starts with a zero
// record header (PCR 0, type 0 and no digest, or a zero SHA-1 digest in a
// legacy log): firmware and tools pad logs with zeros, and a padded copy
// must not be accepted as another log with another digest. Other bytes are
// parsed as a record and fail as one (truncated, bad size...). The check
// reads a fixed number of bytes, so the parse stays linear.
func (r *reader) trailing(f Format) error {
	hdr := 12 // pcr, type, digest count
	if f == FormatSHA1Legacy {
		hdr = 28 // pcr, type, SHA-1 digest
	}
	rest := r.b[r.off:]
	if len(rest) < hdr || !allZero(rest[:hdr]) {
		return nil
	}
	return r.fail(ReasonTrailingGarbage, r.off, "%d bytes after the last record start with a zero record header (padding)", len(rest))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (r *reader) header() (off int, pcr uint32, typ EventType, err error) {
	off = r.off
	if pcr, err = r.u32("pcr index"); err != nil {
		return
	}
	if pcr > maxPCR {
		err = r.fail(ReasonBadPCR, off, "pcr index %d", pcr)
		return
	}
	var t uint32
	if t, err = r.u32("event type"); err != nil {
		return
	}
	typ = EventType(t)
	return
}

func (r *reader) legacyEvent() (Event, error) {
	off, pcr, typ, err := r.header()
	if err != nil {
		return Event{}, err
	}
	d, err := r.bytes(20, "sha1 digest")
	if err != nil {
		return Event{}, err
	}
	data, err := r.eventData()
	if err != nil {
		return Event{}, err
	}
	ds := append(r.digests(1), Digest{Alg: AlgSHA1, Value: d})
	return Event{Seq: r.seq, Offset: off, PCR: pcr, Type: typ, Digests: ds, Data: data}, nil
}

// algTable is the Spec ID header's algorithm list, indexed for the digest
// loop of every record: at most MaxAlgorithms entries, so a lookup is a
// short scan and duplicates are found with a bit mask.
type algTable struct {
	algs  []HashAlg
	sizes []int
}

func newAlgTable(ds []AlgSize) algTable {
	t := algTable{algs: make([]HashAlg, len(ds)), sizes: make([]int, len(ds))}
	for i, as := range ds {
		t.algs[i], t.sizes[i] = as.Alg, int(as.Size)
	}
	return t
}

func (t *algTable) index(a HashAlg) int {
	for i, x := range t.algs {
		if x == a {
			return i
		}
	}
	return -1
}

func (r *reader) agileEvent(t *algTable) (Event, error) {
	off, pcr, typ, err := r.header()
	if err != nil {
		return Event{}, err
	}
	countOff := r.off
	count, err := r.u32("digest count")
	if err != nil {
		return Event{}, err
	}
	if count == 0 && typ != EvNoAction {
		return Event{}, r.fail(ReasonBadDigestCount, countOff, "no digests")
	}
	if count > uint32(len(t.algs)) {
		return Event{}, r.fail(ReasonBadDigestCount, countOff, "%d digests but the header lists %d algorithms", count, len(t.algs))
	}
	ds := r.digests(int(count))
	var seen uint32 // bit i: the header's algorithm i was seen (MaxAlgorithms <= 32)
	for i := uint32(0); i < count; i++ {
		algOff := r.off
		a, err := r.u16("digest algorithm")
		if err != nil {
			return Event{}, err
		}
		alg := HashAlg(a)
		idx := t.index(alg)
		if idx < 0 {
			return Event{}, r.fail(ReasonUnsupportedAlg, algOff, "digest algorithm %s not listed in the Spec ID header", alg)
		}
		if seen&(1<<idx) != 0 {
			return Event{}, r.fail(ReasonBadDigestCount, algOff, "two %s digests", alg)
		}
		seen |= 1 << idx
		v, err := r.bytes(t.sizes[idx], "digest") // no per-digest formatting: this loop runs for every digest of the log
		if err != nil {
			return Event{}, err
		}
		ds = append(ds, Digest{Alg: alg, Value: v})
	}
	data, err := r.eventData()
	if err != nil {
		return Event{}, err
	}
	return Event{Seq: r.seq, Offset: off, PCR: pcr, Type: typ, Digests: ds, Data: data}, nil
}

func parseSpecID(data []byte, base int) (*SpecID, error) {
	bad := func(off int, format string, args ...any) error {
		return &ParseError{Reason: ReasonMalformedHeader, Offset: base + off, Event: 0, Err: fmt.Errorf(format, args...)}
	}
	const fixed = 16 + 4 + 4 + 4
	if len(data) < fixed {
		return nil, bad(0, "spec id event is %d bytes", len(data))
	}
	s := &SpecID{
		PlatformClass: binary.LittleEndian.Uint32(data[16:]),
		VersionMinor:  data[20],
		VersionMajor:  data[21],
		Errata:        data[22],
		UintnSize:     data[23],
	}
	n := binary.LittleEndian.Uint32(data[24:])
	off := fixed
	if n == 0 || uint64(n)*4 > uint64(len(data)-off) {
		return nil, bad(24, "%d algorithms in a %d-byte header", n, len(data))
	}
	if n > MaxAlgorithms {
		return nil, &ParseError{Reason: ReasonLimit, Offset: base + 24, Event: 0,
			Err: fmt.Errorf("%d algorithms listed, at most %d accepted", n, MaxAlgorithms)}
	}
	s.DigestSizes = make([]AlgSize, 0, n)
	for i := uint32(0); i < n; i++ {
		alg := HashAlg(binary.LittleEndian.Uint16(data[off:]))
		size := binary.LittleEndian.Uint16(data[off+2:])
		for _, prev := range s.DigestSizes { // n <= MaxAlgorithms
			if prev.Alg == alg {
				return nil, bad(off, "algorithm %s listed twice", alg)
			}
		}
		if want := alg.Size(); want != 0 && int(size) != want {
			return nil, &ParseError{Reason: ReasonDigestSize, Offset: base + off + 2, Event: 0,
				Err: fmt.Errorf("header gives %s digests %d bytes, want %d", alg, size, want)}
		}
		if size == 0 || size > 128 {
			return nil, bad(off+2, "digest size %d for %s", size, alg)
		}
		s.DigestSizes = append(s.DigestSizes, AlgSize{Alg: alg, Size: size})
		off += 4
	}
	if off >= len(data) {
		return nil, bad(off, "missing vendor info size")
	}
	vn := int(data[off])
	off++
	if off+vn != len(data) {
		return nil, bad(off-1, "vendor info size %d but %d bytes follow", vn, len(data)-off)
	}
	s.VendorInfo = data[off:]
	return s, nil
}

// add files a parsed record under Events or NoAction.
func (l *Log) add(ev Event) error {
	if ev.Type == EvNoAction {
		if isStartupLocality(ev) {
			if l.pcr0Seen {
				return &ParseError{Reason: ReasonMalformedHeader, Offset: ev.Offset, Event: ev.Seq,
					Err: fmt.Errorf("StartupLocality record after a PCR 0 measurement")}
			}
			if l.localitySeen {
				return &ParseError{Reason: ReasonMalformedHeader, Offset: ev.Offset, Event: ev.Seq,
					Err: fmt.Errorf("second StartupLocality record")}
			}
			l.localitySeen = true
			l.StartupLocality = ev.Data[len(startupLocalitySig)]
		}
		l.NoAction = append(l.NoAction, ev)
		return nil
	}
	if ev.PCR == 0 {
		l.pcr0Seen = true
	}
	l.Events = append(l.Events, ev)
	return nil
}

func isStartupLocality(ev Event) bool {
	return ev.Type == EvNoAction && ev.PCR == 0 && len(ev.Data) == len(startupLocalitySig)+1 &&
		bytes.HasPrefix(ev.Data, startupLocalitySig)
}
