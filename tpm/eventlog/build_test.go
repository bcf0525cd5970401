package eventlog

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unicode/utf16"
)

// logBuilder writes firmware event logs for tests and benchmarks, in either
// format, with each event's digests computed as the hash of its data.
type logBuilder struct {
	legacy bool
	algs   []AlgSize
	buf    []byte
	// records counts the records appended by event and eventWith.
	records int
}

// newAgileLog starts a crypto-agile log whose Spec ID header lists algs.
func newAgileLog(algs ...AlgSize) *logBuilder {
	b := &logBuilder{algs: algs}
	var spec []byte
	spec = append(spec, specIDSignature03...)
	spec = binary.LittleEndian.AppendUint32(spec, 0) // platform class
	spec = append(spec, 0, 2, 0, 2)                  // version 2.0, errata 0, uintn 8 bytes
	spec = binary.LittleEndian.AppendUint32(spec, uint32(len(algs)))
	for _, a := range algs {
		spec = binary.LittleEndian.AppendUint16(spec, uint16(a.Alg))
		spec = binary.LittleEndian.AppendUint16(spec, a.Size)
	}
	spec = append(spec, 0) // no vendor info
	b.buf = binary.LittleEndian.AppendUint32(b.buf, 0)
	b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(EvNoAction))
	b.buf = append(b.buf, make([]byte, 20)...)
	b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(len(spec)))
	b.buf = append(b.buf, spec...)
	return b
}

// appendTo returns a builder that appends records to a copy of raw, in the
// format and with the banks of its parsed form l.
func appendTo(l *Log, raw []byte) *logBuilder {
	b := &logBuilder{legacy: l.Format == FormatSHA1Legacy, buf: bytes.Clone(raw)}
	if l.SpecID != nil {
		b.algs = l.SpecID.DigestSizes
	}
	return b
}

// digester computes an event's digest in one bank.
type digester func(alg HashAlg, size int, data []byte) []byte

// record encodes one event in the builder's format; its digests are the
// hash of data (zeros for banks that cannot be computed).
func (b *logBuilder) record(pcr uint32, typ EventType, data []byte) []byte {
	return b.recordWith(pcr, typ, data, hashOf)
}

func (b *logBuilder) recordWith(pcr uint32, typ EventType, data []byte, dig digester) []byte {
	r := make([]byte, 0, b.overhead()+len(data))
	r = binary.LittleEndian.AppendUint32(r, pcr)
	r = binary.LittleEndian.AppendUint32(r, uint32(typ))
	if b.legacy {
		r = append(r, dig(AlgSHA1, 20, data)...)
	} else {
		r = binary.LittleEndian.AppendUint32(r, uint32(len(b.algs)))
		for _, a := range b.algs {
			r = binary.LittleEndian.AppendUint16(r, uint16(a.Alg))
			r = append(r, dig(a.Alg, int(a.Size), data)...)
		}
	}
	r = binary.LittleEndian.AppendUint32(r, uint32(len(data)))
	return append(r, data...)
}

// overhead is the size of a record without its data.
func (b *logBuilder) overhead() int {
	if b.legacy {
		return 32
	}
	n := 16
	for _, a := range b.algs {
		n += 2 + int(a.Size)
	}
	return n
}

func (b *logBuilder) event(pcr uint32, typ EventType, data []byte) *logBuilder {
	return b.eventWith(pcr, typ, data, hashOf)
}

func (b *logBuilder) eventWith(pcr uint32, typ EventType, data []byte, dig digester) *logBuilder {
	b.buf = append(b.buf, b.recordWith(pcr, typ, data, dig)...)
	b.records++
	return b
}

func (b *logBuilder) bytes() []byte { return b.buf }

func hashOf(a HashAlg, size int, data []byte) []byte {
	if !a.Replayable() {
		return make([]byte, size)
	}
	h := a.Hash().New()
	h.Write(data)
	return h.Sum(nil)
}

// uefiVariable encodes a UEFI_VARIABLE_DATA.
func uefiVariable(guid GUID, name string, data []byte) []byte {
	u := utf16.Encode([]rune(name))
	out := append([]byte(nil), guid[:]...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(u)))
	out = binary.LittleEndian.AppendUint64(out, uint64(len(data)))
	for _, c := range u {
		out = binary.LittleEndian.AppendUint16(out, c)
	}
	return append(out, data...)
}

// spans returns the byte range of every record of the parsed log raw, by
// sequence number.
func spans(t testing.TB, l *Log, raw []byte) map[int][2]int {
	t.Helper()
	starts := map[int]int{}
	var offs []int
	for _, ev := range append(append([]Event(nil), l.Events...), l.NoAction...) {
		starts[ev.Seq] = ev.Offset
		offs = append(offs, ev.Offset)
	}
	out := map[int][2]int{}
	for seq, start := range starts {
		end := len(raw)
		for _, o := range offs {
			if o > start && o < end {
				end = o
			}
		}
		out[seq] = [2]int{start, end}
	}
	return out
}

// splice replaces raw[from:to] with rec.
func splice(raw []byte, from, to int, rec []byte) []byte {
	out := append([]byte(nil), raw[:from]...)
	out = append(out, rec...)
	return append(out, raw[to:]...)
}

// extend is the TPM's PCR extend in bank alg.
func extend(alg HashAlg, pcr, digest []byte) []byte {
	h := alg.Hash().New()
	h.Write(pcr)
	h.Write(digest)
	return h.Sum(nil)
}
