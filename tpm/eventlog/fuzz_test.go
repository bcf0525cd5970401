package eventlog

import (
	"errors"
	"testing"

	"github.com/pulse-attest/pulse/internal/testutil"
)

func FuzzParse(f *testing.F) {
	for _, n := range fixtureNames {
		fx := testutil.LoadFixture(f, n)
		f.Add(fx.Log)
		f.Add(fx.Log[:len(fx.Log)/3])
		f.Add(fx.Log[:min(len(fx.Log), 700)])
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		l, err := Parse(raw)
		if err != nil {
			if l != nil {
				t.Fatal("log and error both returned")
			}
			return
		}
		total := 0
		for _, ev := range append(append([]Event(nil), l.Events...), l.NoAction...) {
			if ev.Offset < 0 || ev.Offset >= len(raw) {
				t.Fatalf("event offset %d outside %d bytes", ev.Offset, len(raw))
			}
			total += len(ev.Data)
		}
		if total > len(raw) {
			t.Fatalf("%d bytes of event data from %d bytes of input", total, len(raw))
		}
		for _, alg := range l.Banks() {
			pcrs, err := l.Replay(alg)
			if err != nil {
				continue
			}
			v, err := l.Verify(alg, pcrs)
			var se *StructureError
			switch {
			case err == nil:
				if sb := l.SecureBoot(); v.SecureBoot.Known && (!sb.Known || sb.Enabled != v.SecureBoot.Enabled) && len(l.Algs) == 1 {
					t.Fatalf("Verify says Secure Boot %v, Log.SecureBoot %+v", v.SecureBoot.Enabled, sb)
				}
			case errors.As(err, &se):
				if !errors.Is(err, ErrMalformed) || l.CheckStructure() == nil {
					t.Fatalf("structure error %v not from CheckStructure", err)
				}
				if sb := l.SecureBoot(); sb.Known {
					t.Fatal("Secure Boot state derived from a log that breaks CheckStructure")
				}
			case !isDataErr(err):
				t.Fatalf("log does not verify against its own replay: %v", err)
			}
		}
	})
}

func isDataErr(err error) bool {
	_, ok := err.(*DataError)
	return ok
}

func BenchmarkVerify(b *testing.B) {
	for _, n := range fixtureNames {
		fx := testutil.LoadFixture(b, n)
		bank := "sha256"
		if _, ok := fx.PCRs[bank]; !ok {
			bank = "sha1"
		}
		alg, _ := ParseHashAlg(bank)
		pcrs := quoted(fx, bank)
		b.Run(n, func(b *testing.B) {
			b.SetBytes(int64(len(fx.Log)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Verify(fx.Log, alg, pcrs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
