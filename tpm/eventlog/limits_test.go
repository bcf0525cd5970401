package eventlog

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

func TestSpecIDAlgorithmLimit(t *testing.T) {
	cases := []struct {
		name  string
		algs  []AlgSize
		limit bool
	}{
		{"sha256", sha256Only, false},
		{"four banks", bank4, false},
		{"MaxAlgorithms", maxAlgs(32), false},
		{"MaxAlgorithms+1", append(maxAlgs(32), AlgSize{0x0200, 32}), true},
		// The reviewed denial of service: ~65,000 algorithms made every
		// record's duplicate check quadratic (24 s of CPU for 4 MiB).
		{"65000 algorithms", func() []AlgSize {
			out := append([]AlgSize(nil), bank4...)
			for i := 0; len(out) < 65000; i++ {
				out = append(out, AlgSize{HashAlg(0x0100 + i), 1})
			}
			return out
		}(), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newAgileLog(c.algs...).skeleton(nil)
			for !c.limit && b.records < 200 {
				b.event(8, EvIPL, []byte("grub_cmd: linux /vmlinuz"))
			}
			raw := b.bytes()
			start := time.Now()
			l, err := Parse(raw)
			elapsed := time.Since(start)
			if !c.limit {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if len(l.Algs) != len(c.algs) {
					t.Fatalf("%d algorithms, want %d", len(l.Algs), len(c.algs))
				}
				if _, err := l.Verify(AlgSHA256, quotedOf(t, raw)); err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			var pe *ParseError
			if !errors.Is(err, ErrLimitExceeded) || !errors.Is(err, ErrMalformed) || !errors.As(err, &pe) ||
				pe.Reason != ReasonLimit || pe.Offset != 32+24 {
				t.Fatalf("err = %v, want ErrLimitExceeded at the algorithm count", err)
			}
			if elapsed > time.Second {
				t.Errorf("refusing took %v", elapsed)
			}
		})
	}
}

func TestEventCountLimit(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		b := newAgileLog(sha256Only...)
		if legacy {
			b = &logBuilder{legacy: true}
		}
		b.skeleton(nil)
		for b.records < MaxEvents {
			b.event(8, EvIPL, nil)
		}
		raw := b.bytes()
		if _, err := Parse(raw); err != nil {
			t.Fatalf("legacy=%v: %d records: %v", legacy, MaxEvents, err)
		}
		for _, typ := range []EventType{EvIPL, EvNoAction} {
			more := append(append([]byte(nil), raw...), b.record(8, typ, nil)...)
			_, err := Parse(more)
			var pe *ParseError
			if !errors.Is(err, ErrLimitExceeded) || !errors.As(err, &pe) || pe.Reason != ReasonLimit || pe.Offset != len(raw) {
				t.Errorf("legacy=%v: %d records (last %s): err = %v, want ErrLimitExceeded at %d", legacy, MaxEvents+1, typ, err, len(raw))
			}
		}
	}
}

func TestEventDataLimit(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		b := newAgileLog(sha256Only...)
		if legacy {
			b = &logBuilder{legacy: true}
		}
		b.skeleton(nil)
		base := len(b.bytes())
		b.event(8, EvIPL, make([]byte, MaxEventDataSize))
		if _, err := Parse(b.bytes()); err != nil {
			t.Fatalf("legacy=%v: MaxEventDataSize bytes of data: %v", legacy, err)
		}
		over := b.record(8, EvIPL, make([]byte, MaxEventDataSize+1))
		raw := append(append([]byte(nil), b.bytes()[:base]...), over...)
		_, err := Parse(raw)
		var pe *ParseError
		sizeOff := base + b.overhead() - 4
		if !errors.As(err, &pe) || pe.Reason != ReasonBadSize || pe.Offset != sizeOff || !errors.Is(err, ErrMalformed) {
			t.Errorf("legacy=%v: MaxEventDataSize+1: err = %v, want bad size at %d", legacy, err, sizeOff)
		}
	}
}

func TestDigestListErrors(t *testing.T) {
	b := newAgileLog(bank4...).skeleton(nil)
	good := b.record(8, EvIPL, []byte("x"))
	cases := []struct {
		name   string
		edit   func(r []byte)
		reason Reason
	}{
		// The second digest (sha256) relabelled sha1: two sha1 digests.
		{"duplicate algorithm", func(r []byte) { binary.LittleEndian.PutUint16(r[12+2+20:], uint16(AlgSHA1)) }, ReasonBadDigestCount},
		{"unlisted algorithm", func(r []byte) { binary.LittleEndian.PutUint16(r[12:], 0x0042) }, ReasonUnsupportedAlg},
		{"more digests than algorithms", func(r []byte) { binary.LittleEndian.PutUint32(r[8:], 5) }, ReasonBadDigestCount},
		{"no digests", func(r []byte) { binary.LittleEndian.PutUint32(r[8:], 0) }, ReasonBadDigestCount},
	}
	for _, c := range cases {
		r := append([]byte(nil), good...)
		c.edit(r)
		_, err := Parse(append(append([]byte(nil), b.bytes()...), r...))
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Reason != c.reason || pe.Event != b.records+1 {
			t.Errorf("%s: err = %v, want %v in record %d", c.name, err, c.reason, b.records+1)
		}
	}
}
