package eventlog

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"math/big"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// worstLogSize is the largest firmware log the verifier accepts
// (verifier.MaxFirmwareLogBytes).
const worstLogSize = 4 << 20

var (
	bank4      = []AlgSize{{AlgSHA1, 20}, {AlgSHA256, 32}, {AlgSHA384, 48}, {AlgSHA512, 64}}
	sha256Only = []AlgSize{{AlgSHA256, 32}}
)

// maxAlgs lists MaxAlgorithms algorithms: the four replayable banks and
// unknown ones with digests of size unknownSize.
func maxAlgs(unknownSize uint16) []AlgSize {
	out := append([]AlgSize(nil), bank4...)
	for i := 0; len(out) < MaxAlgorithms; i++ {
		out = append(out, AlgSize{HashAlg(0x0100 + i), unknownSize})
	}
	return out
}

// skeleton appends what a log needs to pass CheckStructure, with preOS's
// events in PCR 7 before its separator (the Secure Boot variables when nil).
func (b *logBuilder) skeleton(preOS func(b *logBuilder)) *logBuilder {
	b.event(7, EvEFIVariableDriverConfig, uefiVariable(GUIDGlobalVariable, "SecureBoot", []byte{1}))
	if preOS != nil {
		preOS(b)
	} else {
		b.event(7, EvEFIVariableDriverConfig, uefiVariable(GUIDGlobalVariable, "PK", nil))
		b.event(7, EvEFIVariableDriverConfig, uefiVariable(GUIDGlobalVariable, "KEK", nil))
		b.event(7, EvEFIVariableDriverConfig, uefiVariable(GUIDImageSecurityDatabase, "db", nil))
		b.event(7, EvEFIVariableDriverConfig, uefiVariable(GUIDImageSecurityDatabase, "dbx", nil))
	}
	for pcr := uint32(0); pcr < 8; pcr++ {
		b.event(pcr, EvSeparator, separator(0))
	}
	return b
}

// fill appends events of want bytes of data (made by mk) until the log is
// limit bytes long or holds MaxEvents records; the last event takes what is
// left, up to MaxEventDataSize.
func (b *logBuilder) fill(limit, want int, mk func(i, size int) (uint32, EventType, []byte, digester)) *logBuilder {
	for i := 0; b.records < MaxEvents; i++ {
		rem := limit - len(b.buf) - b.overhead()
		if rem < 0 {
			break
		}
		size := want
		if rem < want || rem-want < b.overhead() || b.records == MaxEvents-1 {
			size = min(rem, MaxEventDataSize)
		}
		pcr, typ, data, dig := mk(i, size)
		if len(data) != size {
			panic("fill: wrong data size")
		}
		b.eventWith(pcr, typ, data, dig)
	}
	return b
}

// variableOfSize is a UEFI_VARIABLE_DATA of exactly size bytes (at least 36)
// named name (padded with NULs when the name cannot fit), whose data varies
// with i.
func variableOfSize(guid GUID, name string, i, size int) []byte {
	if 32+2*len(name)+4 > size {
		name = ""
	}
	data := make([]byte, size-32-2*len(name))
	if len(data) >= 4 {
		binary.LittleEndian.PutUint32(data, uint32(i))
	}
	return uefiVariable(guid, name, data)
}

// digestOfVariableData is EDK2's digest of a boot variable: the hash of its
// VariableData only. It makes matching read the data twice.
func digestOfVariableData(alg HashAlg, size int, data []byte) []byte {
	off, _ := variableDataOffset(data)
	return hashOf(alg, size, data[off:])
}

func wrongDigest(alg HashAlg, size int, data []byte) []byte {
	d := hashOf(alg, size, data)
	d[0] ^= 1
	return d
}

// bigCert returns distinct self-signed certificates of close to size bytes,
// made costly to decode: a subject of many small RDNs.
func bigCerts(n, size int) [][]byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	mk := func(serial int, ous int) []byte {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(serial + 1)),
			Subject:      pkix.Name{CommonName: "worst case", OrganizationalUnit: strings.Split(strings.Repeat("u,", ous), ",")[:ous]},
			NotBefore:    time.Unix(0, 0), NotAfter: time.Unix(1<<31, 0),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		return der
	}
	ous := 1
	for len(mk(0, ous*2)) < size {
		ous *= 2
	}
	for step := ous / 2; step > 0; step /= 2 {
		if len(mk(0, ous+step)) <= size {
			ous += step
		}
	}
	out := make([][]byte, n)
	for i := range out {
		out[i] = mk(i, ous)
	}
	return out
}

// worstShape is one candidate for the most expensive firmware log the
// verifier can be sent: every one is at most worstLogSize bytes, parses,
// and verifies against its own replay (which root on a device can make its
// TPM report by extending the PCRs), so the whole path runs.
type worstShape struct {
	name  string
	build func() []byte
}

var worstShapes = []worstShape{
	// MaxAlgorithms banks with 128-byte unknown digests: the most digest
	// bytes per record.
	{"max-algorithms", func() []byte {
		return newAgileLog(maxAlgs(128)...).skeleton(nil).fill(worstLogSize, 0, func(i, size int) (uint32, EventType, []byte, digester) {
			return 8, EvIPL, make([]byte, size), hashOf
		}).bytes()
	}},
	// MaxEvents records of MaxAlgorithms digests, 1-byte unknown ones: the
	// most digests in a log.
	{"max-algorithms-max-events", func() []byte {
		return newAgileLog(maxAlgs(1)...).skeleton(nil).fill(worstLogSize, 0, func(i, size int) (uint32, EventType, []byte, digester) {
			return []uint32{0, 1, 2, 3, 4, 5, 6, 8, 9}[i%9], EvEFIBootServicesApplication, make([]byte, size), hashOf
		}).bytes()
	}},
	// MaxEvents tiny PCR 7 authorities after the separator, each decoded
	// and hashed by the Secure Boot derivation, then megabyte events.
	{"tiny-authorities", func() []byte {
		b := newAgileLog(sha256Only...).skeleton(nil)
		for i := 0; b.records < MaxEvents-4; i++ {
			b.event(7, EvEFIVariableAuthority, variableOfSize(GUIDImageSecurityDatabase, "db", i, 40))
		}
		return b.fill(worstLogSize, MaxEventDataSize, func(i, size int) (uint32, EventType, []byte, digester) {
			return 7, EvEFIVariableAuthority, variableOfSize(GUIDImageSecurityDatabase, "db", i, size), hashOf
		}).bytes()
	}},
	// MaxEvents minimal records, then the rest in megabyte boot variables
	// hashed twice.
	{"tiny-events-then-large", func() []byte {
		b := newAgileLog(sha256Only...).skeleton(nil)
		for b.records < MaxEvents-4 {
			b.event([]uint32{0, 1, 2, 3, 4, 5, 6, 8, 9}[b.records%9], EvEFIBootServicesDriver, nil)
		}
		return b.fill(worstLogSize, MaxEventDataSize, func(i, size int) (uint32, EventType, []byte, digester) {
			return 1, EvEFIVariableBoot, variableOfSize(GUIDGlobalVariable, "Boot0000", i, size), digestOfVariableData
		}).bytes()
	}},
	// Megabyte boot variables in all four banks whose digests cover only
	// their VariableData: two reads of the data per bank.
	{"large-variables-4-banks", func() []byte {
		return newAgileLog(bank4...).skeleton(nil).fill(worstLogSize, MaxEventDataSize, func(i, size int) (uint32, EventType, []byte, digester) {
			return 1, EvEFIVariableBoot, variableOfSize(GUIDGlobalVariable, "Boot0000", i, size), digestOfVariableData
		}).bytes()
	}},
	// Megabyte authority events (PCR 7, after the separator) in four banks,
	// bound, so hashed and decoded for the derivation.
	{"large-authorities-4-banks", func() []byte {
		return newAgileLog(bank4...).skeleton(nil).fill(worstLogSize, MaxEventDataSize, func(i, size int) (uint32, EventType, []byte, digester) {
			return 7, EvEFIVariableAuthority, variableOfSize(GUIDImageSecurityDatabase, "db", i, size), hashOf
		}).bytes()
	}},
	// Megabyte strings ending in two NULs with digests that match nothing:
	// three candidate hashes each.
	{"large-strings", func() []byte {
		return newAgileLog(bank4...).skeleton(nil).fill(worstLogSize, MaxEventDataSize, func(i, size int) (uint32, EventType, []byte, digester) {
			return 8, EvIPL, make([]byte, size), wrongDigest
		}).bytes()
	}},
	// Secure Boot databases of the smallest signature entries (16 bytes):
	// the most entries to decode, and long variable names.
	{"secure-boot-databases", func() []byte {
		const dbSize = MaxEventDataSize - 64
		list := make([]byte, 28, dbSize)
		list = append(list, make([]byte, (dbSize-28)/16*16)...)
		binary.LittleEndian.PutUint32(list[16:], uint32(len(list)))
		binary.LittleEndian.PutUint32(list[24:], 16)
		b := newAgileLog(sha256Only...).skeleton(func(b *logBuilder) {
			for _, v := range []struct {
				g GUID
				n string
			}{{GUIDGlobalVariable, "PK"}, {GUIDGlobalVariable, "KEK"}, {GUIDImageSecurityDatabase, "db"}} {
				b.event(7, EvEFIVariableDriverConfig, uefiVariable(v.g, v.n, list))
			}
			long := strings.Repeat("x", (worstLogSize-len(b.buf))/2-4096)
			b.event(7, EvEFIVariableDriverConfig, uefiVariable(guidOther, long, nil))
		})
		return b.bytes()
	}},
	// PCR 7 Secure Boot configuration with megabyte names: a mode variable
	// padded with NULs, then names that differ from one only at their end.
	{"pcr7-long-names", func() []byte {
		pad := strings.Repeat("\x00", MaxEventDataSize/2-1024)
		b := newAgileLog(sha256Only...)
		b.event(7, EvEFIVariableDriverConfig, uefiVariable(GUIDGlobalVariable, "SecureBoot"+pad, []byte{1}))
		b.event(7, EvEFIVariableDriverConfig, uefiVariable(GUIDGlobalVariable, "AuditMode"+pad, []byte{0}))
		for i := 0; i < 2; i++ {
			b.event(7, EvEFIVariableDriverConfig, uefiVariable(GUIDGlobalVariable, "SetupMode"+pad+"x", []byte{1}))
		}
		for pcr := uint32(0); pcr < 8; pcr++ {
			b.event(pcr, EvSeparator, separator(0))
		}
		return b.fill(worstLogSize, MaxEventDataSize, func(i, size int) (uint32, EventType, []byte, digester) {
			return 8, EvIPL, make([]byte, size), wrongDigest
		}).bytes()
	}},
	// PCR 7 authorities holding distinct 16 KiB certificates, each costly
	// to decode.
	{"authority-certificates", func() []byte {
		certs := bigCerts(maxDescribedCerts*2, maxDescribedCertSize)
		b := newAgileLog(sha256Only...).skeleton(nil)
		for i := 0; len(b.buf)+b.overhead()+maxDescribedCertSize+64 < worstLogSize; i++ {
			data := append(append([]byte(nil), guidOther[:]...), certs[i%len(certs)]...)
			binary.LittleEndian.PutUint32(data, uint32(i)) // distinct owners
			b.event(7, EvEFIVariableAuthority, uefiVariable(GUIDImageSecurityDatabase, "db", data))
		}
		return b.bytes()
	}},
}

var (
	worstOnce sync.Once
	worstLogs [][]byte
)

func buildWorstLogs() [][]byte {
	worstOnce.Do(func() {
		for _, s := range worstShapes {
			worstLogs = append(worstLogs, s.build())
		}
	})
	return worstLogs
}

// verifyAsVerifier does what verifier/fwcache.go does with a firmware log
// it has not seen: parse, verify against the quoted PCRs 0-9, replay.
func verifyAsVerifier(raw []byte, pcrs map[uint32][]byte) (*Verified, error) {
	l, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	v, err := l.Verify(AlgSHA256, pcrs)
	if err != nil {
		return nil, err
	}
	if _, err := l.Replay(AlgSHA256); err != nil {
		return nil, err
	}
	return v, nil
}

// quotedOf is what a TPM extended with the log reports for PCRs 0-9.
func quotedOf(tb testing.TB, raw []byte) map[uint32][]byte {
	tb.Helper()
	l, err := Parse(raw)
	if err != nil {
		tb.Fatal(err)
	}
	r, err := l.Replay(AlgSHA256)
	if err != nil {
		tb.Fatal(err)
	}
	pcrs := map[uint32][]byte{}
	for p := uint32(0); p <= 9; p++ {
		if v, ok := r[p]; ok {
			pcrs[p] = v
		}
	}
	return pcrs
}

// TestWorstCaseLogs checks that every benchmark shape is what it claims:
// within the verifier's size limit, nearly filling it, and accepted, so the
// benchmark measures the whole successful path rather than an early error.
func TestWorstCaseLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 40 MiB of logs")
	}
	for i, raw := range buildWorstLogs() {
		s := worstShapes[i]
		if len(raw) > worstLogSize || len(raw) < worstLogSize-64<<10 {
			t.Errorf("%s: %d bytes", s.name, len(raw))
		}
		v, err := verifyAsVerifier(raw, quotedOf(t, raw))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !v.SecureBoot.Known || !v.SecureBoot.Enabled {
			t.Errorf("%s: secure boot %+v", s.name, v.SecureBoot)
		}
		t.Logf("%s: %d bytes, %d events", s.name, len(raw), len(v.Log.Events))
	}
}

// BenchmarkWorstCaseLog measures what one hostile 4 MiB firmware log costs
// the verifier (docs/performance.md, "Worst-case firmware log"). Besides
// wall time per log it reports cpu-ms/op, the process's CPU time (user and
// system, garbage collection included) per log, which other jobs on a
// shared machine disturb less.
func BenchmarkWorstCaseLog(b *testing.B) {
	for i, raw := range buildWorstLogs() {
		pcrs := quotedOf(b, raw)
		b.Run(worstShapes[i].name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				if _, err := verifyAsVerifier(raw, pcrs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkWorstCaseLogOffline is what pulsectl eventlog replay costs on the
// same logs: Parse, then Log.SecureBoot, which also checks every PCR 7
// digest in every bank and describes authority certificates.
func BenchmarkWorstCaseLogOffline(b *testing.B) {
	for i, raw := range buildWorstLogs() {
		b.Run(worstShapes[i].name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			cpu0 := cpuTime()
			for b.Loop() {
				l, err := Parse(raw)
				if err != nil {
					b.Fatal(err)
				}
				if sb := l.SecureBoot(); !sb.Known {
					b.Fatal("secure boot state unknown")
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		})
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
