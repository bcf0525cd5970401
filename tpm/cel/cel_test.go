package cel

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/pulse-attest/pulse/tpm/eventlog"
)

const runtimePCR = 14

func sampleContents() []Content {
	return []Content{
		&AgentBinary{Path: "/usr/local/bin/pulse-agent", SHA256: sha256.Sum256([]byte("agent v1")), Size: 31337},
		&EBPFProgram{Name: "pulse_shield", ProgramType: "XDP", AttachPoint: "eth0",
			InsnSHA256: sha256.Sum256([]byte("insns")), Tag: [8]byte{1, 2, 3, 4, 5, 6, 7, 8},
			ObjectSHA256: bytes.Repeat([]byte{0xAB}, 32), KernelRelease: "6.12.0-pulse"},
		&EBPFProgram{Name: "foreign", ProgramType: "TracePoint", AttachPoint: "syscalls/sys_enter_bpf",
			InsnSHA256: sha256.Sum256([]byte("other")), KernelRelease: "6.12.0-pulse"},
		&FortressState{Active: false, Mechanism: "bpf-lsm", Reason: "lockdown=integrity refuses BPF-LSM (EPERM)"},
		&Generic{Name: "config", Data: []byte("interval=10s")},
		&Generic{Name: "empty"},
	}
}

func sampleRecords(t testing.TB, banks ...eventlog.HashAlg) []Record {
	t.Helper()
	var out []Record
	for i, c := range sampleContents() {
		r, err := NewRecord(uint64(100+i), runtimePCR, c, banks...)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	recs := sampleRecords(t, eventlog.AlgSHA256, eventlog.AlgSHA1)
	raw, err := Encode(recs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, recs) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, recs)
	}
	again, _ := Encode(got)
	if !bytes.Equal(again, raw) {
		t.Fatal("re-encoding is not byte-identical")
	}
	if recs[0].Digests[0].Alg != eventlog.AlgSHA1 {
		t.Error("digests not sorted by algorithm")
	}
}

func TestContentDigestIsHashOfContentTLV(t *testing.T) {
	c := sampleContents()[0]
	enc, err := EncodeContent(c)
	if err != nil {
		t.Fatal(err)
	}
	if enc[0] != ContentTypePulse || binary.BigEndian.Uint32(enc[1:]) != uint32(len(enc)-5) {
		t.Fatalf("content TLV header % x", enc[:5])
	}
	r := Record{Content: c}
	d, _ := r.ContentDigest(eventlog.AlgSHA256)
	want := sha256.Sum256(enc)
	if !bytes.Equal(d, want[:]) {
		t.Error("sha256 digest is not SHA-256 of the content TLV")
	}
	d1, _ := r.ContentDigest(eventlog.AlgSHA1)
	want1 := sha1.Sum(enc)
	if !bytes.Equal(d1, want1[:]) {
		t.Error("sha1 digest")
	}
	// Every field matters.
	seen := map[string]bool{}
	for _, c := range sampleContents() {
		d, _ := Record{Content: c}.ContentDigest(eventlog.AlgSHA256)
		if seen[string(d)] {
			t.Errorf("two contents share a digest")
		}
		seen[string(d)] = true
	}
}

func TestReplay(t *testing.T) {
	recs := sampleRecords(t)
	initial := bytes.Repeat([]byte{0x11}, 32) // what the firmware left there
	got, err := Replay(recs, runtimePCR, initial)
	if err != nil {
		t.Fatal(err)
	}
	cur := bytes.Clone(initial)
	for _, r := range recs {
		h := sha256.New()
		h.Write(cur)
		h.Write(r.Digests[0].Value)
		cur = h.Sum(nil)
	}
	if !bytes.Equal(got, cur) {
		t.Fatal("replay differs from a hand-computed extend chain")
	}
	if !bytes.Equal(initial, bytes.Repeat([]byte{0x11}, 32)) {
		t.Fatal("Replay modified initial")
	}
	if _, err := Replay(recs, runtimePCR, make([]byte, 20)); !errors.Is(err, ErrMissingBank) {
		t.Errorf("sha1 replay of sha256-only records: %v", err)
	}
	if _, err := Replay(recs, runtimePCR, make([]byte, 7)); !errors.Is(err, eventlog.ErrUnsupportedAlg) {
		t.Errorf("7-byte initial: %v", err)
	}
	other, _ := Replay(recs, 15, initial)
	if !bytes.Equal(other, initial) {
		t.Error("records for PCR 14 changed PCR 15")
	}
}

func TestVerifyRecords(t *testing.T) {
	initial := make([]byte, 32)
	good := func() []Record {
		// Decode a fresh copy so cases can mutate freely.
		raw, _ := Encode(sampleRecords(t))
		r, err := Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	quoted, _ := Replay(good(), runtimePCR, initial)
	if err := VerifyRecords(good(), runtimePCR, initial, quoted); err != nil {
		t.Fatalf("good log: %v", err)
	}
	// Incremental: verify the second half from the value after the first.
	recs := good()
	mid, _ := Replay(recs[:3], runtimePCR, initial)
	if err := VerifyRecords(recs[3:], runtimePCR, mid, quoted); err != nil {
		t.Fatalf("incremental segment: %v", err)
	}

	cases := []struct {
		name   string
		mutate func([]Record) ([]Record, []byte)
		want   error
		recnum uint64
	}{
		{"content changed, digest kept", func(r []Record) ([]Record, []byte) {
			r[0].Content.(*AgentBinary).Path = "/tmp/evil"
			return r, quoted
		}, ErrContentDigest, 100},
		{"program digest changed, content kept", func(r []Record) ([]Record, []byte) {
			r[1].Content.(*EBPFProgram).InsnSHA256[0] ^= 1
			return r, quoted
		}, ErrContentDigest, 101},
		{"content and digest changed consistently", func(r []Record) ([]Record, []byte) {
			c := r[3].Content.(*FortressState)
			c.Active = true
			nr, _ := NewRecord(r[3].RecNum, r[3].PCR, c)
			r[3] = nr
			return r, quoted
		}, ErrReplayMismatch, 0},
		{"record dropped from the middle", func(r []Record) ([]Record, []byte) {
			return append(r[:2:2], r[3:]...), quoted
		}, ErrSequence, 103},
		{"last record dropped", func(r []Record) ([]Record, []byte) {
			return r[:len(r)-1], quoted
		}, ErrReplayMismatch, 0},
		{"records reordered", func(r []Record) ([]Record, []byte) {
			r[1], r[2] = r[2], r[1]
			return r, quoted
		}, ErrSequence, 102},
		{"record for another PCR", func(r []Record) ([]Record, []byte) {
			r[2].PCR = 16
			return r, quoted
		}, ErrWrongPCR, 102},
		{"quoted value differs", func(r []Record) ([]Record, []byte) {
			q := bytes.Clone(quoted)
			q[0] ^= 1
			return r, q
		}, ErrReplayMismatch, 0},
		{"no digests", func(r []Record) ([]Record, []byte) {
			r[4].Digests = nil
			return r, quoted
		}, ErrContentDigest, 104},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, q := c.mutate(good())
			err := VerifyRecords(r, runtimePCR, initial, q)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			for _, other := range []error{ErrContentDigest, ErrReplayMismatch, ErrSequence, ErrWrongPCR} {
				if other != c.want && errors.Is(err, other) {
					t.Fatalf("err %v also matches %v", err, other)
				}
			}
			var re *RecordError
			if c.recnum != 0 && (!errors.As(err, &re) || re.RecNum != c.recnum) {
				t.Fatalf("err = %v, want record %d named", err, c.recnum)
			}
			var pe *ReplayError
			if c.want == ErrReplayMismatch && (!errors.As(err, &pe) || pe.PCR != runtimePCR) {
				t.Fatalf("err = %v, want ReplayError for PCR %d", err, runtimePCR)
			}
		})
	}
}

func TestLatest(t *testing.T) {
	recs := sampleRecords(t)
	upd, _ := NewRecord(200, runtimePCR, &AgentBinary{Path: "/usr/local/bin/pulse-agent", SHA256: sha256.Sum256([]byte("agent v2"))})
	s := Latest(append(recs, upd))
	if s.Agent == nil || s.Agent.SHA256 != sha256.Sum256([]byte("agent v2")) {
		t.Errorf("agent %+v", s.Agent)
	}
	if len(s.Programs) != 2 || s.Programs["pulse_shield"] == nil || s.Fortress == nil || s.Fortress.Active {
		t.Errorf("state %+v", s)
	}
}

func TestEncodeInvalid(t *testing.T) {
	bad := []Record{
		{RecNum: 1, Content: nil, Digests: []eventlog.Digest{{Alg: eventlog.AlgSHA256, Value: make([]byte, 32)}}},
		{RecNum: 1, Content: &Generic{Name: "x"}},
		{RecNum: 1, Content: &Generic{Name: "x"}, Digests: []eventlog.Digest{{Alg: eventlog.AlgSHA256, Value: make([]byte, 31)}}},
		{RecNum: 1, Content: &AgentBinary{Path: "\xff\xfe"}, Digests: []eventlog.Digest{{Alg: eventlog.AlgSHA256, Value: make([]byte, 32)}}},
		{RecNum: 1, Content: &EBPFProgram{ObjectSHA256: []byte{1}}, Digests: []eventlog.Digest{{Alg: eventlog.AlgSHA256, Value: make([]byte, 32)}}},
		{RecNum: 1, Content: &Generic{}, Digests: []eventlog.Digest{{Alg: eventlog.AlgSHA256, Value: make([]byte, 32)}, {Alg: eventlog.AlgSHA256, Value: make([]byte, 32)}}},
	}
	for i, r := range bad {
		if _, err := Encode([]Record{r}); !errors.Is(err, ErrInvalid) {
			t.Errorf("case %d: err = %v, want ErrInvalid", i, err)
		}
	}
}

func TestDecodeTruncation(t *testing.T) {
	recs := sampleRecords(t)
	raw, _ := Encode(recs)
	boundary := map[int]bool{0: true}
	off := 0
	for _, r := range recs {
		b, _ := r.Append(nil)
		off += len(b)
		boundary[off] = true
	}
	for n := 0; n < len(raw); n++ {
		got, err := Decode(raw[:n])
		if boundary[n] {
			if err != nil {
				t.Fatalf("cut at record boundary %d: %v", n, err)
			}
			continue
		}
		if !errors.Is(err, ErrTruncated) || got != nil {
			t.Fatalf("cut at %d: err = %v, want ErrTruncated", n, err)
		}
	}
}

// rec builds a raw record from TLV parts for malformed-input tests.
func tlvBytes(typ uint8, v []byte) []byte {
	var e encoder
	e.tlv(typ, v)
	return e.b
}

func TestDecodeMalformed(t *testing.T) {
	good, _ := NewRecord(7, runtimePCR, &Generic{Name: "n", Data: []byte{1}})
	content, _ := EncodeContent(good.Content)
	recnum := tlvBytes(TypeRecNum, binary.BigEndian.AppendUint64(nil, 7))
	pcr := tlvBytes(TypePCR, binary.BigEndian.AppendUint32(nil, runtimePCR))
	digests := tlvBytes(TypeDigests, tlvBytes(uint8(eventlog.AlgSHA256), good.Digests[0].Value))
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	pulse := func(fields ...[]byte) []byte { return tlvBytes(ContentTypePulse, cat(fields...)) }
	kind := func(k byte) []byte { return tlvBytes(0, []byte{k}) }

	if _, err := Decode(cat(recnum, pcr, digests, content)); err != nil {
		t.Fatalf("hand-built good record: %v", err)
	}
	cases := []struct {
		name   string
		raw    []byte
		reason DecodeReason
	}{
		{"pcr before recnum", cat(pcr, recnum, digests, content), ReasonUnexpectedType},
		{"nv index", cat(recnum, tlvBytes(TypeNVIndex, []byte{0, 0, 0, 1}), digests, content), ReasonUnexpectedType},
		{"short recnum", cat(tlvBytes(TypeRecNum, []byte{7}), pcr, digests, content), ReasonBadLength},
		{"short pcr", cat(recnum, tlvBytes(TypePCR, []byte{14}), digests, content), ReasonBadLength},
		{"no digests", cat(recnum, pcr, tlvBytes(TypeDigests, nil), content), ReasonBadDigest},
		{"short digest", cat(recnum, pcr, tlvBytes(TypeDigests, tlvBytes(11, make([]byte, 31))), content), ReasonBadDigest},
		{"unknown alg", cat(recnum, pcr, tlvBytes(TypeDigests, tlvBytes(0x12, make([]byte, 32))), content), ReasonBadDigest},
		{"descending algs", cat(recnum, pcr, tlvBytes(TypeDigests, cat(tlvBytes(11, make([]byte, 32)), tlvBytes(4, make([]byte, 20)))), content), ReasonBadDigest},
		{"ima content", cat(recnum, pcr, digests, tlvBytes(7, []byte("x"))), ReasonUnknownContent},
		{"unknown kind", cat(recnum, pcr, digests, pulse(kind(9))), ReasonUnknownContent},
		{"missing kind", cat(recnum, pcr, digests, pulse(tlvBytes(1, []byte("n")))), ReasonBadField},
		{"missing field", cat(recnum, pcr, digests, pulse(kind(4), tlvBytes(1, []byte("n")))), ReasonTruncated},
		{"extra field", cat(recnum, pcr, digests, pulse(kind(4), tlvBytes(1, []byte("n")), tlvBytes(2, nil), tlvBytes(3, nil))), ReasonBadField},
		{"fields out of order", cat(recnum, pcr, digests, pulse(kind(4), tlvBytes(2, nil), tlvBytes(1, []byte("n")))), ReasonBadField},
		{"not utf-8", cat(recnum, pcr, digests, pulse(kind(4), tlvBytes(1, []byte{0xff}), tlvBytes(2, nil))), ReasonBadField},
		{"bool out of range", cat(recnum, pcr, digests, pulse(kind(3), tlvBytes(1, []byte{2}), tlvBytes(2, nil), tlvBytes(3, nil))), ReasonBadField},
		{"huge length", cat(recnum, pcr, []byte{TypeDigests, 0xff, 0xff, 0xff, 0xff}), ReasonTruncated},
	}
	for _, c := range cases {
		_, err := Decode(c.raw)
		var de *DecodeError
		if !errors.As(err, &de) || de.Reason != c.reason || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.reason)
		}
	}
	_, err := Decode(cat(recnum, pcr, digests, tlvBytes(7, nil)))
	if !errors.Is(err, ErrUnknownContent) {
		t.Errorf("ErrUnknownContent not matched: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, banks := range [][]eventlog.HashAlg{nil, {eventlog.AlgSHA1, eventlog.AlgSHA256, eventlog.AlgSHA384}} {
		raw, _ := Encode(sampleRecords(f, banks...))
		f.Add(raw)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		recs, err := Decode(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Canonical: what decodes re-encodes to the same bytes.
		again, err := Encode(recs)
		if err != nil {
			t.Fatalf("decoded records do not encode: %v", err)
		}
		if !bytes.Equal(again, raw) {
			t.Fatal("decoded log re-encodes differently")
		}
		_ = VerifyRecords(recs, runtimePCR, make([]byte, 32), make([]byte, 32))
	})
}

func BenchmarkDecodeVerify(b *testing.B) {
	recs := sampleRecords(b)
	raw, _ := Encode(recs)
	quoted, _ := Replay(recs, runtimePCR, make([]byte, 32))
	initial := make([]byte, 32)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := Decode(raw)
		if err != nil {
			b.Fatal(err)
		}
		if err := VerifyRecords(r, runtimePCR, initial, quoted); err != nil {
			b.Fatal(err)
		}
	}
}
