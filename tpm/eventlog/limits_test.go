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

// TestDataMatch covers every accepted relation between digest and data, for
// small data (prefixes hashed separately) and large (one pass).
func TestDataMatch(t *testing.T) {
	for _, size := range []int{40, smallData, smallData + 1, 5000} {
		str := make([]byte, size)
		for i := range str {
			str[i] = 'a' + byte(i%26)
		}
		nul1 := append(str[:size-1:size-1], 0)
		nul2 := append(append([]byte(nil), str[:size-2]...), 0, 0)
		v := variableOfSize(GUIDGlobalVariable, "Boot0001", 7, size)
		off, _ := variableDataOffset(v)
		of := func(b []byte) digester {
			return func(alg HashAlg, n int, _ []byte) []byte { return hashOf(alg, n, b) }
		}
		cases := []struct {
			name string
			typ  EventType
			data []byte
			dig  digester
			want dataMatch
		}{
			{"strict whole", EvEFIAction, str, hashOf, matchFull},
			{"strict prefix", EvEFIAction, nul1, of(nul1[:size-1]), matchNone},
			{"string whole", EvIPL, str, hashOf, matchFull},
			{"string without NUL", EvIPL, nul1, of(nul1[:size-1]), matchFull},
			{"string without two NULs", EvIPL, nul2, of(nul2[:size-2]), matchFull},
			{"string without one of two NULs", EvIPL, nul2, of(nul2[:size-1]), matchFull},
			{"string prefix not NUL", EvIPL, str, of(str[:size-1]), matchNone},
			{"authority whole", EvEFIVariableAuthority, v, hashOf, matchFull},
			{"authority one byte short (shim)", EvEFIVariableAuthority, v, of(v[:len(v)-1]), matchPartial},
			{"authority variable data", EvEFIVariableAuthority, v, of(v[off:]), matchPartial},
			{"boot variable data (EDK2)", EvEFIVariableBoot, v, of(v[off:]), matchPartial},
			{"boot variable one byte short", EvEFIVariableBoot, v, of(v[:len(v)-1]), matchNone},
			{"image", EvEFIBootServicesApplication, str, hashOf, matchNone},
		}
		for _, c := range cases {
			b := newAgileLog(bank4...)
			l, err := Parse(b.eventWith(8, c.typ, c.data, c.dig).bytes())
			if err != nil {
				t.Fatal(err)
			}
			ev := &l.Events[0]
			for _, a := range bank4 {
				if got := newMatcher(a.Alg).match(ev); got != c.want {
					t.Errorf("%d bytes, %s, %s: match %d, want %d", size, c.name, a.Alg, got, c.want)
				}
			}
			if got := ev.DataBound(); got != (c.want == matchFull) {
				t.Errorf("%d bytes, %s: DataBound %v", size, c.name, got)
			}
		}
	}
}
