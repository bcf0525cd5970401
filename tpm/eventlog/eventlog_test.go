package eventlog

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pulse-attest/pulse/internal/testutil"
)

var fixtureNames = []string{
	"arch-linux-workstation",
	"debian-10",
	"glinux-alex",
	"rhel8-uefi",
	"ubuntu-2104-no-secure-boot",
}

// want describes what each fixture's description says about it.
var want = map[string]struct {
	format          Format
	startupLocality uint8
	sbKnown         bool
	sbEnabled       bool
}{
	"arch-linux-workstation":     {FormatCryptoAgile, 0, true, false},
	"debian-10":                  {FormatSHA1Legacy, 0, true, true},
	"glinux-alex":                {FormatCryptoAgile, 3, true, false},
	"rhel8-uefi":                 {FormatCryptoAgile, 0, true, true},
	"ubuntu-2104-no-secure-boot": {FormatCryptoAgile, 0, true, false},
}

func fixtures(t testing.TB) []testutil.Fixture {
	t.Helper()
	var out []testutil.Fixture
	for _, n := range fixtureNames {
		out = append(out, testutil.LoadFixture(t, n))
	}
	return out
}

// quoted converts a fixture bank to the map Verify takes.
func quoted(f testutil.Fixture, bank string) map[uint32][]byte {
	m := map[uint32][]byte{}
	for k, v := range f.PCRs[bank] {
		m[uint32(k)] = bytes.Clone(v)
	}
	return m
}

func bankOf(t testing.TB, name string) HashAlg {
	t.Helper()
	a, err := ParseHashAlg(name)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestFixtureReplay(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f.Name, func(t *testing.T) {
			l, err := Parse(f.Log)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			w := want[f.Name]
			if l.Format != w.format {
				t.Errorf("format %v, want %v", l.Format, w.format)
			}
			if l.StartupLocality != w.startupLocality {
				t.Errorf("StartupLocality %d, want %d", l.StartupLocality, w.startupLocality)
			}
			if len(f.PCRs) == 0 {
				t.Fatal("fixture lists no banks")
			}
			for bank := range f.PCRs {
				alg := bankOf(t, bank)
				got, err := l.Replay(alg)
				if err != nil {
					t.Fatalf("Replay(%s): %v", bank, err)
				}
				for idx, v := range f.PCRs[bank] {
					if !bytes.Equal(got[uint32(idx)], v) {
						t.Errorf("%s PCR %d = %x, want %x", bank, idx, got[uint32(idx)], v)
					}
				}
				// Every PCR the log extends is one the TPM reported.
				for idx := range got {
					if _, ok := f.PCRs[bank][int(idx)]; !ok {
						t.Errorf("%s: log extends PCR %d the fixture does not list", bank, idx)
					}
				}
			}
		})
	}
}

func TestFixtureVerify(t *testing.T) {
	for _, f := range fixtures(t) {
		for bank := range f.PCRs {
			t.Run(f.Name+"/"+bank, func(t *testing.T) {
				alg := bankOf(t, bank)
				v, err := Verify(f.Log, alg, quoted(f, bank))
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if len(v.Unverified) != 0 {
					t.Errorf("Unverified = %v, want none", v.Unverified)
				}
				if len(v.Events) != len(v.Log.Events) {
					t.Errorf("%d verified events, log has %d", len(v.Events), len(v.Log.Events))
				}
				w := want[f.Name]
				if v.SecureBoot.Known != w.sbKnown || v.SecureBoot.Enabled != w.sbEnabled {
					t.Errorf("SecureBoot known=%v enabled=%v, want %v/%v",
						v.SecureBoot.Known, v.SecureBoot.Enabled, w.sbKnown, w.sbEnabled)
				}
				for _, name := range []string{"PK", "KEK", "db", "dbx"} {
					if !v.SecureBoot.Measured(name) {
						t.Errorf("%s not measured", name)
					}
				}
				if v.StartupLocality != w.startupLocality {
					t.Errorf("StartupLocality %d", v.StartupLocality)
				}
				for _, ev := range v.Events {
					if ev.Type == EvSeparator && !ev.DataVerified {
						t.Errorf("separator %d not data-verified", ev.Seq)
					}
					if ev.Type == EvEFIBootServicesApplication && ev.DataVerified {
						t.Errorf("image load event %d claims verified data", ev.Seq)
					}
				}
			})
		}
	}
}

func TestGlinuxNegativeSerialCert(t *testing.T) {
	f := testutil.LoadFixture(t, "glinux-alex")
	v, err := Verify(f.Log, AlgSHA256, quoted(f, "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	pk := v.SecureBoot.Variable("PK")
	if pk == nil || len(pk.Entries) != 1 || pk.Entries[0].Cert() == nil {
		t.Fatalf("PK entries: %+v", pk)
	}
	c := pk.Entries[0].Cert()
	if c.Serial == "" || c.Serial[0] != '-' || c.Subject != "CN=LENOVO" || c.ParseError == "" {
		t.Errorf("PK cert = %+v, want the LENOVO cert with a negative serial that crypto/x509 rejects", c)
	}
}

func TestAuthorities(t *testing.T) {
	f := testutil.LoadFixture(t, "rhel8-uefi")
	v, err := Verify(f.Log, AlgSHA256, quoted(f, "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := Parse(f.Log)
	if err != nil {
		t.Fatal(err)
	}
	offline := l.SecureBoot()
	if len(v.SecureBoot.Authorities) != 2 || len(offline.Authorities) != 2 {
		t.Fatalf("%d verified and %d offline authorities, want 2", len(v.SecureBoot.Authorities), len(offline.Authorities))
	}
	var subjects []string
	for i, a := range offline.Authorities {
		va := v.SecureBoot.Authorities[i]
		if va.Cert != nil {
			t.Error("Verify described a certificate")
		}
		if !bytes.Equal(va.SHA256, a.SHA256) || va.Variable != a.Variable || va.Owner != a.Owner {
			t.Errorf("authority %d differs: %+v vs %+v", i, va, a)
		}
		// What Log.SecureBoot describes is what DescribeCert says.
		if c := DescribeCert(va.Data); (c == nil) != (a.Cert == nil) || (c != nil && c.Subject != a.Cert.Subject) {
			t.Errorf("authority %d: DescribeCert %+v, Log.SecureBoot %+v", i, c, a.Cert)
		}
		if a.Cert != nil {
			subjects = append(subjects, a.Variable+":"+a.Cert.Subject)
		}
	}
	if len(subjects) != 2 || !bytes.Contains([]byte(subjects[0]), []byte("Microsoft Corporation UEFI CA 2011")) {
		t.Errorf("authorities = %q", subjects)
	}
}

func TestPartialPCRs(t *testing.T) {
	f := testutil.LoadFixture(t, "rhel8-uefi")
	all := quoted(f, "sha256")
	only := map[uint32][]byte{0: all[0], 4: all[4], 9: make([]byte, 32)} // 9 is wrong but...
	delete(only, 9)
	only[15] = bytes.Repeat([]byte{0xAA}, 32) // not in the log: ignored
	v, err := Verify(f.Log, AlgSHA256, only)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range v.Events {
		if ev.PCR != 0 && ev.PCR != 4 {
			t.Fatalf("event of unsupplied PCR %d returned", ev.PCR)
		}
	}
	if v.SecureBoot.Known {
		t.Error("Secure Boot state known without PCR 7")
	}
	wantUnv := []uint32{1, 2, 3, 5, 6, 7, 8, 9, 14}
	if !equalU32(v.Unverified, wantUnv) {
		t.Errorf("Unverified = %v, want %v", v.Unverified, wantUnv)
	}
	if _, ok := v.PCRs[15]; ok {
		t.Error("PCR 15 reported as verified")
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPCRValueMismatch(t *testing.T) {
	for _, f := range fixtures(t) {
		for bank := range f.PCRs {
			alg := bankOf(t, bank)
			for idx := range f.PCRs[bank] {
				pcrs := quoted(f, bank)
				pcrs[uint32(idx)][len(pcrs[uint32(idx)])-1] ^= 0x01
				_, err := Verify(f.Log, alg, pcrs)
				var re *ReplayError
				if !errors.As(err, &re) || !errors.Is(err, ErrReplayMismatch) {
					t.Fatalf("%s %s PCR %d: err = %v, want ReplayError", f.Name, bank, idx, err)
				}
				if !equalU32(re.Mismatched, []uint32{uint32(idx)}) || re.Bank != alg {
					t.Errorf("%s %s PCR %d: mismatched %v bank %v", f.Name, bank, idx, re.Mismatched, re.Bank)
				}
			}
		}
	}
}

// digestOffset returns the offset of the event's digest in the given bank.
func digestOffset(t *testing.T, l *Log, ev Event, alg HashAlg) int {
	t.Helper()
	if l.Format == FormatSHA1Legacy {
		return ev.Offset + 8
	}
	off := ev.Offset + 12
	for _, d := range ev.Digests {
		off += 2
		if d.Alg == alg {
			return off
		}
		off += len(d.Value)
	}
	t.Fatalf("event %d has no %s digest", ev.Seq, alg)
	return 0
}

func sizeOffset(l *Log, ev Event) int {
	if l.Format == FormatSHA1Legacy {
		return ev.Offset + 28
	}
	off := ev.Offset + 12
	for _, d := range ev.Digests {
		off += 2 + len(d.Value)
	}
	return off
}

func flip(b []byte, off int, mask byte) []byte {
	c := bytes.Clone(b)
	c[off] ^= mask
	return c
}

func TestDigestFlipFailsReplay(t *testing.T) {
	for _, f := range fixtures(t) {
		l, err := Parse(f.Log)
		if err != nil {
			t.Fatal(err)
		}
		for bank := range f.PCRs {
			alg := bankOf(t, bank)
			for _, ev := range l.Events {
				off := digestOffset(t, l, ev, alg)
				bad := flip(f.Log, off+len(ev.Digest(alg))/2, 0x80)
				_, err := Verify(bad, alg, quoted(f, bank))
				var re *ReplayError
				if !errors.As(err, &re) {
					t.Fatalf("%s %s event %d: err = %v, want ReplayError", f.Name, bank, ev.Seq, err)
				}
				if !equalU32(re.Mismatched, []uint32{ev.PCR}) {
					t.Errorf("%s %s event %d: mismatched %v, want [%d]", f.Name, bank, ev.Seq, re.Mismatched, ev.PCR)
				}
			}
		}
	}
}

func TestBoundDataFlipFails(t *testing.T) {
	n := 0
	for _, f := range fixtures(t) {
		l, err := Parse(f.Log)
		if err != nil {
			t.Fatal(err)
		}
		for bank := range f.PCRs {
			alg := bankOf(t, bank)
			for _, ev := range l.Events {
				if ev.Type.binding() != bindStrict || len(ev.Data) == 0 {
					continue
				}
				n++
				off := sizeOffset(l, ev) + 4 + len(ev.Data) - 1
				_, err := Verify(flip(f.Log, off, 0x01), alg, quoted(f, bank))
				var de *DataError
				if !errors.As(err, &de) || !errors.Is(err, ErrDataDigestMismatch) {
					t.Fatalf("%s %s event %d (%s): err = %v, want DataError", f.Name, bank, ev.Seq, ev.Type, err)
				}
				if de.Seq != ev.Seq || de.PCR != ev.PCR || de.Type != ev.Type || de.Bank != alg {
					t.Errorf("%s: DataError %+v for event %d", f.Name, de, ev.Seq)
				}
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d bound events tested", n)
	}
}

func TestUnboundDataIsNotEvidence(t *testing.T) {
	// Changing an image load event's data (its load address) changes
	// nothing Verify checks: the data is not evidence, and DataVerified
	// says so.
	f := testutil.LoadFixture(t, "rhel8-uefi")
	l, _ := Parse(f.Log)
	for _, ev := range l.Events {
		if ev.Type != EvEFIBootServicesApplication {
			continue
		}
		bad := flip(f.Log, sizeOffset(l, ev)+4, 0x10)
		v, err := Verify(bad, AlgSHA256, quoted(f, "sha256"))
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		for _, e := range v.Events {
			if e.Seq == ev.Seq && e.DataVerified {
				t.Fatal("image load event data marked verified")
			}
		}
		return
	}
	t.Fatal("no EV_EFI_BOOT_SERVICES_APPLICATION event")
}

func TestLengthFieldCorruption(t *testing.T) {
	for _, f := range fixtures(t) {
		l, err := Parse(f.Log)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range l.Events {
			so := sizeOffset(l, ev)
			// High byte: an absurd size is a bad size, not a truncation.
			_, err := Parse(flip(f.Log, so+3, 0xFF))
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Reason != ReasonBadSize || pe.Offset != so || !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s event %d size high byte: err = %v, want bad size at %d", f.Name, ev.Seq, err, so)
			}
			// Low byte: the log desynchronises; it must not verify.
			for _, mask := range []byte{0x01, 0x04, 0x20} {
				bad := flip(f.Log, so, mask)
				bank := "sha1"
				if _, ok := f.PCRs["sha256"]; ok {
					bank = "sha256"
				}
				if _, err := Verify(bad, bankOf(t, bank), quoted(f, bank)); err == nil {
					t.Errorf("%s event %d: size ^ %#x still verifies", f.Name, ev.Seq, mask)
				}
			}
			if l.Format == FormatCryptoAgile {
				co := ev.Offset + 8
				_, err := Parse(flip(f.Log, co, 0x40))
				if !errors.As(err, &pe) || pe.Reason != ReasonBadDigestCount {
					t.Fatalf("%s event %d digest count: err = %v", f.Name, ev.Seq, err)
				}
				ao := ev.Offset + 12
				_, err = Parse(flip(f.Log, ao+1, 0x70))
				if !errors.As(err, &pe) || pe.Reason != ReasonUnsupportedAlg || !errors.Is(err, ErrUnsupportedAlg) {
					t.Fatalf("%s event %d digest alg: err = %v", f.Name, ev.Seq, err)
				}
			}
			_, err = Parse(flip(f.Log, ev.Offset+3, 0x10))
			if !errors.As(err, &pe) || pe.Reason != ReasonBadPCR || pe.Offset != ev.Offset {
				t.Fatalf("%s event %d pcr index: err = %v", f.Name, ev.Seq, err)
			}
		}
	}
}

func TestSpecIDHeaderCorruption(t *testing.T) {
	f := testutil.LoadFixture(t, "rhel8-uefi")
	// Spec ID data starts at 32; the algorithm list at 32+28.
	const algs = 32 + 28
	cases := []struct {
		name   string
		off    int
		mask   byte
		reason Reason
	}{
		{"sha1 size", algs + 2, 0x01, ReasonDigestSize},
		{"alg count", 32 + 24, 0x10, ReasonMalformedHeader},
		{"duplicate alg", algs + 4, 0x04 ^ 0x0B, ReasonMalformedHeader},
		{"header size", 28, 0x01, ReasonMalformedHeader},
	}
	for _, c := range cases {
		_, err := Parse(flip(f.Log, c.off, c.mask))
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Reason != c.reason {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.reason)
		}
	}
}

func TestTruncation(t *testing.T) {
	for _, f := range fixtures(t) {
		l, err := Parse(f.Log)
		if err != nil {
			t.Fatal(err)
		}
		boundary := map[int]bool{}
		for _, ev := range append(append([]Event(nil), l.Events...), l.NoAction...) {
			boundary[ev.Offset] = true
		}
		var offs []int
		for i := 0; i < len(f.Log); i++ {
			near := false
			for d := -3; d <= 3; d++ {
				if boundary[i+d] {
					near = true
				}
			}
			if i < 256 || near || i%11 == 0 {
				offs = append(offs, i)
			}
		}
		for _, n := range offs {
			if boundary[n] && n > 0 {
				// A cut between records is a valid, shorter log.
				if _, err := Parse(f.Log[:n]); err != nil {
					t.Errorf("%s: cut at record boundary %d: %v", f.Name, n, err)
				}
				continue
			}
			_, err := Parse(f.Log[:n])
			if n == 0 {
				var pe *ParseError
				if !errors.As(err, &pe) || pe.Reason != ReasonEmpty {
					t.Errorf("empty log: %v", err)
				}
				continue
			}
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("%s: cut at %d of %d: err = %v, want ErrTruncated", f.Name, n, len(f.Log), err)
			}
		}
	}
}

func TestPaddingAndTrailingGarbage(t *testing.T) {
	for _, f := range fixtures(t) {
		l, err := Parse(f.Log)
		if err != nil {
			t.Fatal(err)
		}
		hdr := 12
		if l.Format == FormatSHA1Legacy {
			hdr = 28
		}
		// A padded copy of a log is not another valid log with another
		// digest: zero padding of any length is refused.
		for _, n := range []int{1, 3, hdr - 1, hdr, hdr + 1, 64, 4096} {
			padded := append(bytes.Clone(f.Log), make([]byte, n)...)
			l, err := Parse(padded)
			if l != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s + %d zero bytes: log %v, err = %v", f.Name, n, l != nil, err)
			}
			var pe *ParseError
			if n >= hdr && (!errors.Is(err, ErrTrailingBytes) || !errors.As(err, &pe) ||
				pe.Reason != ReasonTrailingGarbage || pe.Offset != len(f.Log)) {
				t.Errorf("%s + %d zero bytes: err = %v, want ErrTrailingBytes at %d", f.Name, n, err, len(f.Log))
			}
			if n < hdr && !errors.Is(err, ErrTruncated) {
				t.Errorf("%s + %d zero bytes: err = %v, want ErrTruncated", f.Name, n, err)
			}
			if _, err := Verify(padded, AlgSHA1, quoted(f, "sha1")); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s + %d zero bytes verifies: %v", f.Name, n, err)
			}
		}
		garbage := append(bytes.Clone(f.Log), make([]byte, 40)...)
		garbage[len(garbage)-1] = 0x5A
		_, err = Parse(garbage)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Reason != ReasonTrailingGarbage || pe.Offset != len(f.Log) || !errors.Is(err, ErrTrailingBytes) {
			t.Errorf("%s garbage: err = %v", f.Name, err)
		}
	}
}

func TestBankErrors(t *testing.T) {
	f := testutil.LoadFixture(t, "debian-10")
	if _, err := Verify(f.Log, AlgSHA256, quoted(f, "sha1")); !errors.Is(err, ErrBankNotInLog) {
		t.Errorf("sha256 of a SHA-1 log: %v", err)
	}
	l, _ := Parse(f.Log)
	if _, err := l.Replay(AlgSM3); !errors.Is(err, ErrUnsupportedAlg) {
		t.Errorf("SM3 replay: %v", err)
	}
	if got := l.Banks(); len(got) != 1 || got[0] != AlgSHA1 {
		t.Errorf("Banks = %v", got)
	}
	r, _ := Parse(testutil.LoadFixture(t, "rhel8-uefi").Log)
	if got := r.Banks(); len(got) != 3 || got[0] != AlgSHA1 || got[1] != AlgSHA256 || got[2] != AlgSHA384 {
		t.Errorf("rhel8 Banks = %v", got)
	}
	if _, err := r.Replay(AlgSHA384); err != nil {
		t.Errorf("sha384 replay: %v", err)
	}
}

func TestStartupLocality(t *testing.T) {
	f := testutil.LoadFixture(t, "glinux-alex")
	l, err := Parse(f.Log)
	if err != nil {
		t.Fatal(err)
	}
	init := l.InitialPCR(AlgSHA256, 0)
	if init[31] != 3 || !allZero(init[:31]) {
		t.Errorf("initial PCR0 = %x", init)
	}
	// Dropping the locality (making it 0) must break PCR 0 and only PCR 0.
	idx := bytes.Index(f.Log, []byte("StartupLocality\x00"))
	bad := bytes.Clone(f.Log)
	bad[idx+16] = 0
	_, err = Verify(bad, AlgSHA256, quoted(f, "sha256"))
	var re *ReplayError
	if !errors.As(err, &re) || !equalU32(re.Mismatched, []uint32{0}) {
		t.Fatalf("err = %v, want replay mismatch on PCR 0", err)
	}
}

func TestStrings(t *testing.T) {
	for a, s := range map[HashAlg]string{AlgSHA1: "sha1", AlgSHA256: "sha256", AlgSHA384: "sha384", AlgSHA512: "sha512", 0x99: "alg(0x0099)"} {
		if a.String() != s {
			t.Errorf("%d: %q", a, a.String())
		}
	}
	for e, s := range map[EventType]string{EvSeparator: "EV_SEPARATOR", EvNoAction: "EV_NO_ACTION",
		EvEFIVariableDriverConfig: "EV_EFI_VARIABLE_DRIVER_CONFIG", EvEFIBootServicesApplication: "EV_EFI_BOOT_SERVICES_APPLICATION",
		EvPostCode: "EV_POST_CODE", 0x1234: "EV_UNKNOWN(0x00001234)"} {
		if e.String() != s {
			t.Errorf("%#x: %q", uint32(e), e.String())
		}
	}
	if GUIDGlobalVariable.String() != "8be4df61-93ca-11d2-aa0d-00e098032b8c" {
		t.Errorf("GUID %s", GUIDGlobalVariable)
	}
}

func TestReplayErrorMessage(t *testing.T) {
	e := &ReplayError{Bank: AlgSHA256, Mismatched: []uint32{7, 0}, Want: map[uint32][]byte{0: {1}, 7: {2}}, Got: map[uint32][]byte{0: {3}, 7: {4}}}
	if !bytes.Contains([]byte(e.Error()), []byte("PCR 0,7")) {
		t.Errorf("message %q", e.Error())
	}
}

func TestParseDoesNotAlias(t *testing.T) {
	f := testutil.LoadFixture(t, "rhel8-uefi")
	raw := bytes.Clone(f.Log)
	l, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := l.Replay(AlgSHA256)
	for i := range raw {
		raw[i] = 0
	}
	after, _ := l.Replay(AlgSHA256)
	if len(before) == 0 {
		t.Fatal("nothing replayed")
	}
	for k := range before {
		if !bytes.Equal(before[k], after[k]) {
			t.Fatalf("PCR %d changed after the input was overwritten", k)
		}
	}
}
