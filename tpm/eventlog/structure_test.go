package eventlog

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/pulse-attest/pulse/internal/testutil"
)

var guidOther = GUID{0x50, 0xab, 0x5d, 0x60, 0x46, 0xe0, 0x00, 0x43, 0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23}

// firstEvent returns the first event of pcr with type typ (and, when name is
// set, naming that UEFI variable).
func firstEvent(t testing.TB, l *Log, pcr uint32, typ EventType, name string) Event {
	t.Helper()
	for _, ev := range l.Events {
		if ev.PCR != pcr || ev.Type != typ {
			continue
		}
		if name != "" {
			if v, err := ParseUEFIVariable(ev.Data); err != nil || v.Name != name {
				continue
			}
		}
		return ev
	}
	t.Fatalf("no %s %q in pcr %d", typ, name, pcr)
	return Event{}
}

// mutation edits a fixture log the way firmware must not, or the way root
// on a booted device can (extend a PCR and append the event to the log).
type mutation struct {
	name string
	edit func(t testing.TB, l *Log, raw []byte) []byte
	// want is the StructureError sentinel, nil when the log stays valid.
	want error
	pcr  uint32
}

func appendEvent(pcr uint32, typ EventType, data []byte) func(testing.TB, *Log, []byte) []byte {
	return func(_ testing.TB, l *Log, raw []byte) []byte {
		return appendTo(l, raw).event(pcr, typ, data).bytes()
	}
}

// replaceEvent replaces the first event of pcr and typ (naming the variable
// name, when set) with the records rec returns for it; an empty result
// removes it.
func replaceEvent(pcr uint32, typ EventType, name string, rec func(b *logBuilder, old Event) []byte) func(testing.TB, *Log, []byte) []byte {
	return func(t testing.TB, l *Log, raw []byte) []byte {
		ev := firstEvent(t, l, pcr, typ, name)
		sp := spans(t, l, raw)[ev.Seq]
		return splice(raw, sp[0], sp[1], rec(appendTo(l, nil), ev))
	}
}

func remove(_ *logBuilder, _ Event) []byte { return nil }

func separator(v byte) []byte { return []byte{v, v, v, v} }

var secureBootOn = uefiVariable(GUIDGlobalVariable, "SecureBoot", []byte{1})

var mutations = []mutation{
	{"secure boot enabled after boot", appendEvent(7, EvEFIVariableDriverConfig, secureBootOn), ErrSecureBootAfterSeparator, 7},
	{"PK after separator", appendEvent(7, EvEFIVariableDriverConfig, uefiVariable(GUIDGlobalVariable, "PK", nil)), ErrSecureBootAfterSeparator, 7},
	{"KEK after separator", appendEvent(7, EvEFIVariableDriverConfig, uefiVariable(GUIDGlobalVariable, "KEK", []byte("k"))), ErrSecureBootAfterSeparator, 7},
	{"db after separator", appendEvent(7, EvEFIVariableDriverConfig, uefiVariable(GUIDImageSecurityDatabase, "db", []byte("db"))), ErrSecureBootAfterSeparator, 7},
	{"dbx after separator", appendEvent(7, EvEFIVariableDriverConfig, uefiVariable(GUIDImageSecurityDatabase, "dbx", nil)), ErrSecureBootAfterSeparator, 7},
	{"vendor config variable after separator", appendEvent(7, EvEFIVariableDriverConfig, uefiVariable(guidOther, "Setup", []byte{0})), ErrSecureBootAfterSeparator, 7},
	{"unparsable config after separator", appendEvent(7, EvEFIVariableDriverConfig, []byte("SecureBoot=1")), ErrSecureBootAfterSeparator, 7},
	{"EV_EFI_ACTION after pcr 7 separator", appendEvent(7, EvEFIAction, []byte("UEFI Debug Mode")), ErrEventAfterSeparator, 7},
	{"EV_IPL after pcr 7 separator", appendEvent(7, EvIPL, []byte("grub_cmd: set")), ErrEventAfterSeparator, 7},
	{"unknown type after pcr 7 separator", appendEvent(7, 0x1234, nil), ErrEventAfterSeparator, 7},
	{"authority after separator", appendEvent(7, EvEFIVariableAuthority, uefiVariable(guidOther, "MokList", []byte("cert"))), nil, 0},
	{"SPDM device authority after separator", appendEvent(7, EvEFISPDMDeviceAuthority, []byte("spdm")), nil, 0},
	{"events in other pcrs after separators", func(_ testing.TB, l *Log, raw []byte) []byte {
		return appendTo(l, raw).event(4, EvEFIBootServicesApplication, []byte("image")).
			event(5, EvEFIAction, []byte("Exit Boot Services Invocation")).event(8, EvIPL, []byte("grub_cmd: x")).
			event(14, EvIPL, []byte("MokList")).bytes()
	}, nil, 0},
	{"second pcr 7 separator", appendEvent(7, EvSeparator, separator(0)), ErrSeparatorRepeated, 7},
	{"second pcr 4 separator", appendEvent(4, EvSeparator, separator(0)), ErrSeparatorRepeated, 4},
	{"second pcr 0 separator", appendEvent(0, EvSeparator, separator(0)), ErrSeparatorRepeated, 0},
	{"second separator then secure boot", func(_ testing.TB, l *Log, raw []byte) []byte {
		return appendTo(l, raw).event(7, EvSeparator, separator(0)).event(7, EvEFIVariableDriverConfig, secureBootOn).bytes()
	}, ErrSeparatorRepeated, 7},
	{"pcr 0 separator missing", replaceEvent(0, EvSeparator, "", remove), ErrSeparatorMissing, 0},
	{"pcr 3 separator missing", replaceEvent(3, EvSeparator, "", remove), ErrSeparatorMissing, 3},
	{"pcr 7 separator missing", replaceEvent(7, EvSeparator, "", remove), ErrSeparatorMissing, 7},
	{"error separator 00000001", replaceEvent(2, EvSeparator, "", func(b *logBuilder, old Event) []byte {
		return b.record(old.PCR, EvSeparator, []byte{1, 0, 0, 0})
	}), ErrSeparatorValue, 2},
	{"error separator ffffffff", replaceEvent(5, EvSeparator, "", func(b *logBuilder, old Event) []byte {
		return b.record(old.PCR, EvSeparator, separator(0xff))
	}), ErrSeparatorValue, 5},
	{"separator of 8 bytes", replaceEvent(7, EvSeparator, "", func(b *logBuilder, old Event) []byte {
		return b.record(old.PCR, EvSeparator, make([]byte, 8))
	}), ErrSeparatorValue, 7},
	{"secure boot measured twice", replaceEvent(7, EvEFIVariableDriverConfig, "SecureBoot", func(b *logBuilder, old Event) []byte {
		return append(b.record(7, old.Type, old.Data), b.record(7, old.Type, secureBootOn)...)
	}), ErrSecureBootRepeated, 7},
	{"secure boot measured twice, NUL-terminated name", replaceEvent(7, EvEFIVariableDriverConfig, "SecureBoot", func(b *logBuilder, old Event) []byte {
		return append(b.record(7, old.Type, old.Data), b.record(7, old.Type, uefiVariable(GUIDGlobalVariable, "SecureBoot\x00", []byte{1}))...)
	}), ErrSecureBootRepeated, 7},
	{"SetupMode measured twice", replaceEvent(7, EvEFIVariableDriverConfig, "SecureBoot", func(b *logBuilder, old Event) []byte {
		sm := uefiVariable(GUIDGlobalVariable, "SetupMode", []byte{0})
		return append(append(b.record(7, old.Type, old.Data), b.record(7, old.Type, sm)...), b.record(7, old.Type, sm)...)
	}), ErrSecureBootRepeated, 7},
	{"SecureBoot of another vendor is not the mode variable", replaceEvent(7, EvEFIVariableDriverConfig, "SecureBoot", func(b *logBuilder, old Event) []byte {
		return append(b.record(7, old.Type, old.Data), b.record(7, old.Type, uefiVariable(guidOther, "SecureBoot", []byte{1}))...)
	}), nil, 0},
}

// pcrsOf returns the fixture's quoted values of bank with the PCRs the
// mutated log changes recomputed: the values a TPM would report after the
// same extensions.
func pcrsOf(t testing.TB, f testutil.Fixture, bank string, raw []byte) map[uint32][]byte {
	t.Helper()
	l, err := Parse(raw)
	if err != nil {
		t.Fatalf("mutated log does not parse: %v", err)
	}
	replayed, err := l.Replay(bankOf(t, bank))
	if err != nil {
		t.Fatal(err)
	}
	pcrs := quoted(f, bank)
	for p, v := range replayed {
		pcrs[p] = v
	}
	return pcrs
}

func TestStructureMutations(t *testing.T) {
	for _, f := range fixtures(t) {
		l, err := Parse(f.Log)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mutations {
			raw := m.edit(t, l, f.Log)
			ml, err := Parse(raw)
			if err != nil {
				t.Fatalf("%s/%s: mutated log does not parse: %v", f.Name, m.name, err)
			}
			for bank := range f.PCRs {
				t.Run(f.Name+"/"+m.name+"/"+bank, func(t *testing.T) {
					alg := bankOf(t, bank)
					pcrs := pcrsOf(t, f, bank, raw)
					// The log replays to the recomputed PCRs and its bound
					// data is genuine: only the structure rules can refuse it.
					if err := ml.CheckData(alg); err != nil {
						t.Fatalf("CheckData: %v", err)
					}
					// Both entry points: the package-level Verify, and Parse
					// then Log.Verify as the verifier's firmware-log cache
					// calls them.
					_, err1 := Verify(raw, alg, pcrs)
					_, err2 := ml.Verify(alg, pcrs)
					for _, err := range []error{err1, err2} {
						if m.want == nil {
							if err != nil {
								t.Fatalf("Verify: %v, want success", err)
							}
							continue
						}
						var se *StructureError
						if !errors.Is(err, m.want) || !errors.Is(err, ErrMalformed) || !errors.As(err, &se) {
							t.Fatalf("Verify: err = %v, want %v", err, m.want)
						}
						if errors.Is(err, ErrReplayMismatch) || errors.Is(err, ErrDataDigestMismatch) {
							t.Fatalf("structure error %v matches a replay sentinel", err)
						}
						if se.PCR != m.pcr {
							t.Errorf("StructureError on pcr %d, want %d: %v", se.PCR, m.pcr, err)
						}
						if se.Error() == "" {
							t.Error("empty message")
						}
					}
					if cerr := ml.CheckStructure(); !errors.Is(cerr, m.want) && (m.want != nil || cerr != nil) {
						t.Errorf("CheckStructure = %v, want %v", cerr, m.want)
					}
					// Whatever the mutation, Secure Boot never reads as
					// enabled on a device whose firmware measured it off.
					if sb := ml.SecureBoot(); sb.Enabled && !want[f.Name].sbEnabled {
						t.Errorf("Log.SecureBoot reads enabled")
					}
				})
			}
		}
	}
}

// TestSecureBootSpoofedAfterBoot is the reviewed exploit: on a device booted
// with Secure Boot off, root extends PCR 7 with a correctly hashed
// EV_EFI_VARIABLE_DRIVER_CONFIG event for SecureBoot=1 and appends it to the
// log it sends. The quote's PCR 7 is what the TPM then holds; the log
// replays to it; the verifier must still refuse it, and with a malformed-log
// error, not a replay error.
func TestSecureBootSpoofedAfterBoot(t *testing.T) {
	for _, name := range fixtureNames {
		if want[name].sbEnabled {
			continue
		}
		f := testutil.LoadFixture(t, name)
		for bank := range f.PCRs {
			t.Run(name+"/"+bank, func(t *testing.T) {
				alg := bankOf(t, bank)
				l, err := Parse(f.Log)
				if err != nil {
					t.Fatal(err)
				}
				spoofed := appendTo(l, f.Log).event(7, EvEFIVariableDriverConfig, secureBootOn).bytes()
				// What the TPM reports after root's TPM2_PCR_Extend.
				pcrs := quoted(f, bank)
				pcrs[7] = extend(alg, pcrs[7], hashOf(alg, alg.Size(), secureBootOn))

				sl, err := Parse(spoofed)
				if err != nil {
					t.Fatal(err)
				}
				replayed, err := sl.Replay(alg)
				if err != nil || !bytes.Equal(replayed[7], pcrs[7]) {
					t.Fatalf("spoofed log does not replay to the extended PCR 7: %v", err)
				}
				for _, verify := range []func() (*Verified, error){
					func() (*Verified, error) { return Verify(spoofed, alg, pcrs) },
					func() (*Verified, error) { return sl.Verify(alg, pcrs) },
				} {
					v, err := verify()
					var se *StructureError
					if v != nil || !errors.Is(err, ErrSecureBootAfterSeparator) || !errors.As(err, &se) {
						t.Fatalf("Verify = %v, %v; want ErrSecureBootAfterSeparator", v != nil, err)
					}
					sep := firstEvent(t, l, 7, EvSeparator, "")
					last := sl.Events[len(sl.Events)-1]
					if se.PCR != 7 || se.Seq != last.Seq || se.Variable != "SecureBoot" || se.Type != EvEFIVariableDriverConfig || se.Earlier != sep.Seq {
						t.Errorf("StructureError %+v", se)
					}
				}
				if sb := sl.SecureBoot(); sb.Known || sb.Enabled {
					t.Errorf("Log.SecureBoot of the spoofed log = %+v, want unknown", sb)
				}
				// The honest log still verifies, Secure Boot off.
				v, err := Verify(f.Log, alg, quoted(f, bank))
				if err != nil || !v.SecureBoot.Known || v.SecureBoot.Enabled {
					t.Fatalf("honest log: %v %+v", err, v)
				}
			})
		}
	}
}

func TestFixtureStructure(t *testing.T) {
	for _, f := range fixtures(t) {
		l, err := Parse(f.Log)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.CheckStructure(); err != nil {
			t.Errorf("%s: %v", f.Name, err)
		}
		// The offline derivation agrees with the verified one.
		sb := l.SecureBoot()
		w := want[f.Name]
		if sb.Known != w.sbKnown || sb.Enabled != w.sbEnabled || len(sb.Variables) != 5 {
			t.Errorf("%s: Log.SecureBoot known=%v enabled=%v, %d variables", f.Name, sb.Known, sb.Enabled, len(sb.Variables))
		}
	}
}

// TestSecureBootFromPreOSOnly: only the configuration before PCR 7's
// separator counts, and the authorities after it are still reported.
func TestSecureBootFromPreOSOnly(t *testing.T) {
	f := testutil.LoadFixture(t, "rhel8-uefi")
	v, err := Verify(f.Log, AlgSHA256, quoted(f, "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	sep := firstEvent(t, v.Log, 7, EvSeparator, "")
	var after int
	for _, ev := range v.Events {
		if ev.PCR == 7 && ev.Seq > sep.Seq && ev.Type == EvEFIVariableAuthority {
			after++
		}
	}
	if after == 0 || len(v.SecureBoot.Authorities) != after {
		t.Errorf("%d authorities, %d after the separator", len(v.SecureBoot.Authorities), after)
	}
}

func TestStructureErrorMessages(t *testing.T) {
	cases := []struct {
		err  *StructureError
		want string
	}{
		{&StructureError{Err: ErrSeparatorMissing, PCR: 3, Seq: -1, Earlier: -1}, "eventlog: pcr has no separator: pcr 3"},
		{&StructureError{Err: ErrSecureBootAfterSeparator, PCR: 7, Seq: 30, Offset: 9000, Type: EvEFIVariableDriverConfig, Variable: "SecureBoot", Earlier: 8},
			`eventlog: secure boot configuration measured after the pcr 7 separator: event 30 (EV_EFI_VARIABLE_DRIVER_CONFIG "SecureBoot", pcr 7, offset 9000), after event 8`},
		{&StructureError{Err: ErrSeparatorValue, PCR: 2, Seq: 4, Offset: 10, Type: EvSeparator, Earlier: -1},
			"eventlog: separator is not the normal separator value: event 4 (EV_SEPARATOR, pcr 2, offset 10)"},
	}
	for _, c := range cases {
		if got := c.err.Error(); got != c.want {
			t.Errorf("got %q\nwant %q", got, c.want)
		}
		if !errors.Is(c.err, ErrMalformed) || !errors.Is(c.err, c.err.Err) {
			t.Errorf("%v does not match its sentinels", c.err)
		}
	}
}

// TestConcurrentVerify: the verifier shares one parsed log between pulses
// (verifier/fwcache.go); Verify, Replay and SecureBoot must not write to it.
// Run with -race.
func TestConcurrentVerify(t *testing.T) {
	f := testutil.LoadFixture(t, "rhel8-uefi")
	l, err := Parse(f.Log)
	if err != nil {
		t.Fatal(err)
	}
	raw := appendTo(l, f.Log).event(7, EvEFIVariableDriverConfig, secureBootOn).bytes()
	spoofed, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	type input struct {
		alg             HashAlg
		honest, spoofed map[uint32][]byte
	}
	var inputs []input
	for _, bank := range []string{"sha1", "sha256"} {
		inputs = append(inputs, input{bankOf(t, bank), quoted(f, bank), pcrsOf(t, f, bank, raw)})
	}
	done := make(chan error, 16)
	for i := 0; i < cap(done); i++ {
		in := inputs[i%len(inputs)]
		go func() {
			if _, err := l.Verify(in.alg, in.honest); err != nil {
				done <- err
				return
			}
			if _, err := l.Replay(in.alg); err != nil {
				done <- err
				return
			}
			if sb := l.SecureBoot(); !sb.Enabled {
				done <- errors.New("secure boot not enabled")
				return
			}
			if _, err := spoofed.Verify(in.alg, in.spoofed); !errors.Is(err, ErrSecureBootAfterSeparator) {
				done <- fmt.Errorf("spoofed log: %v", err)
				return
			}
			done <- nil
		}()
	}
	for i := 0; i < cap(done); i++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
