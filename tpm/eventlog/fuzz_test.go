package eventlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"unicode/utf16"

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
	// Logs the structure rules refuse, and a small crafted one.
	for _, n := range []string{"ubuntu-2104-no-secure-boot", "debian-10"} {
		fx := testutil.LoadFixture(f, n)
		l, err := Parse(fx.Log)
		if err != nil {
			f.Fatal(err)
		}
		for _, m := range mutations {
			f.Add(m.edit(f, l, fx.Log))
		}
		f.Add(append(bytes.Clone(fx.Log), make([]byte, 64)...))
	}
	f.Add(newAgileLog(maxAlgs(2)...).skeleton(nil).event(7, EvEFIVariableAuthority, uefiVariable(GUIDImageSecurityDatabase, "db", []byte{1})).bytes())
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

// FuzzParseUEFIVariable checks the one-pass name decoder against
// unicode/utf16, and the layout and mode-variable helpers against
// ParseUEFIVariable.
func FuzzParseUEFIVariable(f *testing.F) {
	f.Add(uefiVariable(GUIDGlobalVariable, "SecureBoot", []byte{1}))
	f.Add(uefiVariable(GUIDGlobalVariable, "SecureBoot\x00\x00", nil))
	f.Add(uefiVariable(GUIDImageSecurityDatabase, "db\U0001F512\xff", []byte("data")))
	f.Add(append(uefiVariable(GUIDGlobalVariable, "", nil)[:32], 0x00, 0xd8, 0x41, 0x00))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseUEFIVariable(b)
		off, ok := variableDataOffset(b)
		if (err == nil) != ok {
			t.Fatalf("ParseUEFIVariable err %v, variableDataOffset ok %v", err, ok)
		}
		if err != nil {
			return
		}
		if len(v.Data) != len(b)-off {
			t.Fatalf("data of %d bytes at %d in %d", len(v.Data), off, len(b))
		}
		u := make([]uint16, (off-32)/2)
		for i := range u {
			u[i] = binary.LittleEndian.Uint16(b[32+2*i:])
		}
		for len(u) > 0 && u[len(u)-1] == 0 {
			u = u[:len(u)-1]
		}
		if want := string(utf16.Decode(u)); v.Name != want {
			t.Fatalf("name %q, want %q", v.Name, want)
		}
		want := -1
		for i, name := range modeVariables {
			if v.VendorGUID == GUIDGlobalVariable && v.Name == name {
				want = i
			}
		}
		if got := modeVariable(b); got != want {
			t.Fatalf("modeVariable = %d for %s %q, want %d", got, v.VendorGUID, v.Name, want)
		}
	})
}

// FuzzParseSignatureList checks that entries stay inside the input and that
// the entry count matches the lists' sizes.
func FuzzParseSignatureList(f *testing.F) {
	for _, n := range []string{"rhel8-uefi", "glinux-alex"} {
		fx := testutil.LoadFixture(f, n)
		l, err := Parse(fx.Log)
		if err != nil {
			f.Fatal(err)
		}
		for _, v := range l.SecureBoot().Variables {
			f.Add(v.Data)
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ParseSignatureList(b)
		if err != nil {
			if entries != nil {
				t.Fatal("entries and error both returned")
			}
			return
		}
		total := 0
		for _, e := range entries {
			total += 16 + len(e.Data)
		}
		if total > len(b) {
			t.Fatalf("%d bytes of entries from %d bytes", total, len(b))
		}
		for _, e := range entries {
			_ = e.Cert()
		}
	})
}

// FuzzDescribeCert: certificates in authority events come from the log.
func FuzzDescribeCert(f *testing.F) {
	fx := testutil.LoadFixture(f, "rhel8-uefi")
	l, err := Parse(fx.Log)
	if err != nil {
		f.Fatal(err)
	}
	for _, a := range l.SecureBoot().Authorities {
		f.Add(a.Data)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		if c := DescribeCert(der); c != nil && len(c.SHA256) != 32 {
			t.Fatalf("CertInfo %+v", c)
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
