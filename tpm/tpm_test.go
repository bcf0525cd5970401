package tpm_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/tpm"
	"github.com/pulse-attest/pulse/tpm/quote"
)

var pcrs0to7 = []uint32{0, 1, 2, 3, 4, 5, 6, 7}

func openSwtpm(t testing.TB, bootLog string) *tpm.TPM {
	t.Helper()
	sw := simtest.Start(t, bootLog)
	tp, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

func nonce(t testing.TB) []byte {
	t.Helper()
	n := make([]byte, 32)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAKPersistsAcrossReopen(t *testing.T) {
	sw := simtest.Start(t, "")
	first, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ak1, err := first.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !ak1.Created {
		t.Fatal("first AK call on a fresh TPM did not create the key")
	}
	if ak1.Handle() != tpm.DefaultAKHandle {
		t.Fatalf("handle 0x%08x", ak1.Handle())
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second, err := sw.Open(simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	ak2, err := second.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ak2.Created {
		t.Fatal("AK created again after reopen")
	}
	if !bytes.Equal(ak1.Public(), ak2.Public()) || !bytes.Equal(ak1.Name(), ak2.Name()) {
		t.Fatal("AK public area or name changed across reopen")
	}
	pk, ok := ak2.PublicKey().(*ecdsa.PublicKey)
	if !ok || pk.Curve != elliptic.P256() || !pk.Equal(ak1.PublicKey()) {
		t.Fatalf("AK public key %T is not the same P-256 key", ak2.PublicKey())
	}
	// The verifier's view of the AK agrees with the TPM's.
	name, err := quote.AKName(ak2.Public())
	if err != nil || !bytes.Equal(name, ak2.Name()) {
		t.Fatalf("quote.AKName = %x, %v; TPM says %x", name, err, ak2.Name())
	}
	parsed, err := quote.ParseAKPublic(ak2.Public())
	if err != nil || !pk.Equal(parsed) {
		t.Fatalf("quote.ParseAKPublic: %v", err)
	}

	// A configurable handle: another handle gets its own persisted copy.
	ak3, err := second.AK(tpm.AKOptions{Handle: 0x81020077})
	if err != nil {
		t.Fatal(err)
	}
	if ak3.Handle() != 0x81020077 || !ak3.Created {
		t.Fatalf("custom handle: 0x%08x created %v", ak3.Handle(), ak3.Created)
	}
}

// TestAKRefusesForeignKey points the AK at the handle where swtpm_setup
// persisted the RSA EK: AK must report the mismatch and leave the EK alone.
func TestAKRefusesForeignKey(t *testing.T) {
	tp := openSwtpm(t, "")
	before, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	if before.Handle != 0x81010001 {
		t.Fatalf("swtpm EK not persisted at 0x81010001 (handle 0x%08x)", before.Handle)
	}
	_, err = tp.AK(tpm.AKOptions{Handle: 0x81010001})
	if !errors.Is(err, tpm.ErrAKTemplateMismatch) {
		t.Fatalf("AK at the EK's handle: %v, want ErrAKTemplateMismatch", err)
	}
	after, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	if after.Handle != 0x81010001 || !bytes.Equal(before.PublicBlob, after.PublicBlob) {
		t.Fatal("EK changed after the refused AK call")
	}
	for _, h := range []uint32{0x80000001, 0x81800000, 0x01c00002} {
		if _, err := tp.AK(tpm.AKOptions{Handle: h}); err == nil {
			t.Errorf("AK accepted handle 0x%08x", h)
		}
	}
}

// TestQuoteVerify quotes a booted TPM and checks quote.Verify from both
// sides: the good quote passes, and each tampering fails with its own reason.
func TestQuoteVerify(t *testing.T) {
	fx := testutil.LoadFixture(t, "rhel8-uefi")
	tp := openSwtpm(t, "rhel8-uefi")
	ak, err := tp.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := nonce(t)
	attest, sig, err := tp.Quote(ak, pcrs0to7, n)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := tp.ReadPCRs(tpm.AlgSHA256, pcrs0to7)
	if err != nil {
		t.Fatal(err)
	}
	res, err := quote.Verify(ak.Public(), attest, sig, n, pcrs)
	if err != nil {
		t.Fatalf("good quote: %v", err)
	}
	if !bytes.Equal(res.ExtraData, n) {
		t.Fatalf("extra data %x", res.ExtraData)
	}
	for i, want := range fx.PCRs["sha256"] {
		if i <= 7 && !bytes.Equal(res.PCRs[uint32(i)], want) {
			t.Errorf("quoted pcr %d = %x, fixture %x", i, res.PCRs[uint32(i)], want)
		}
	}

	t.Run("other qualifying data", func(t *testing.T) {
		_, err := quote.Verify(ak.Public(), attest, sig, nonce(t), pcrs)
		if !errors.Is(err, quote.ErrQualifyingData) {
			t.Fatalf("got %v, want ErrQualifyingData", err)
		}
	})
	t.Run("another AK", func(t *testing.T) {
		// A TPM with other seeds has another AK.
		other := simtest.StartFresh(t, "")
		otp, err := other.Open(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer otp.Close()
		oak, err := otp.AK(tpm.AKOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(oak.Public(), ak.Public()) {
			t.Fatal("fresh TPM produced the same AK")
		}
		_, err = quote.Verify(oak.Public(), attest, sig, n, pcrs)
		if !errors.Is(err, quote.ErrSignature) {
			t.Fatalf("got %v, want ErrSignature", err)
		}
	})
	t.Run("pcrs changed after the quote", func(t *testing.T) {
		if err := tp.Extend(7, map[uint16][]byte{
			tpm.AlgSHA256: bytes.Repeat([]byte{0x42}, 32),
			tpm.AlgSHA1:   bytes.Repeat([]byte{0x42}, 20),
		}); err != nil {
			t.Fatal(err)
		}
		now, err := tp.ReadPCRs(tpm.AlgSHA256, pcrs0to7)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(now[7], pcrs[7]) {
			t.Fatal("extend did not change pcr 7")
		}
		_, err = quote.Verify(ak.Public(), attest, sig, n, now)
		if !errors.Is(err, quote.ErrPCRDigest) {
			t.Fatalf("got %v, want ErrPCRDigest", err)
		}
		// A fresh quote over the new values verifies again.
		n2 := nonce(t)
		a2, s2, err := tp.Quote(ak, pcrs0to7, n2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := quote.Verify(ak.Public(), a2, s2, n2, now); err != nil {
			t.Fatalf("fresh quote: %v", err)
		}
	})
}

func TestQuoteArgs(t *testing.T) {
	tp := openSwtpm(t, "")
	ak, err := tp.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tp.Quote(ak, nil, nonce(t)); err == nil {
		t.Error("quote of no pcrs accepted")
	}
	if _, _, err := tp.Quote(ak, []uint32{24}, nonce(t)); err == nil {
		t.Error("quote of pcr 24 accepted")
	}
	if _, _, err := tp.Quote(ak, pcrs0to7, make([]byte, 65)); err == nil {
		t.Error("65-byte qualifying data accepted")
	}
	if _, _, err := tp.Quote(nil, pcrs0to7, nonce(t)); err == nil {
		t.Error("nil AK accepted")
	}
	// The SHA-1 bank can be quoted too.
	n := nonce(t)
	a, s, err := tp.QuoteBank(ak, tpm.AlgSHA1, pcrs0to7, n)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := tp.ReadPCRs(tpm.AlgSHA1, pcrs0to7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := quote.Verify(ak.Public(), a, s, n, vals); err != nil {
		t.Fatalf("sha1 bank quote: %v", err)
	}
}

func TestReadPCRsAndExtend(t *testing.T) {
	tp := openSwtpm(t, "")
	banks, err := tp.PCRBanks()
	if err != nil {
		t.Fatal(err)
	}
	if len(banks) != 2 || banks[0] != tpm.AlgSHA1 || banks[1] != tpm.AlgSHA256 {
		t.Fatalf("banks %v, want [sha1 sha256]", banks)
	}
	all := make([]uint32, tpm.NumPCRs)
	for i := range all {
		all[i] = uint32(i)
	}
	// More than 8 PCRs in one call (the TPM returns 8 per TPM2_PCR_Read).
	vals, err := tp.ReadPCRs(tpm.AlgSHA256, all)
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != tpm.NumPCRs {
		t.Fatalf("read %d pcrs, want %d", len(vals), tpm.NumPCRs)
	}
	// PCRs 17-22 are initialised to all ones on a PC client TPM, the rest to
	// zeros: check the values landed at the right index.
	for i := range all {
		want := bytes.Repeat([]byte{0}, 32)
		if i >= 17 && i <= 22 {
			want = bytes.Repeat([]byte{0xff}, 32)
		}
		if !bytes.Equal(vals[uint32(i)], want) {
			t.Errorf("pcr %d = %x, want %x", i, vals[uint32(i)], want)
		}
	}

	d256 := sha256.Sum256([]byte("pulse"))
	d1 := sha1.Sum([]byte("pulse"))
	if err := tp.Extend(16, map[uint16][]byte{tpm.AlgSHA256: d256[:], tpm.AlgSHA1: d1[:]}); err != nil {
		t.Fatal(err)
	}
	want256 := sha256.Sum256(append(make([]byte, 32), d256[:]...))
	want1 := sha1.Sum(append(make([]byte, 20), d1[:]...))
	got256, err := tp.ReadPCRs(tpm.AlgSHA256, []uint32{16})
	if err != nil {
		t.Fatal(err)
	}
	got1, err := tp.ReadPCRs(tpm.AlgSHA1, []uint32{16})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got256[16], want256[:]) || !bytes.Equal(got1[16], want1[:]) {
		t.Fatalf("pcr 16 after extend: sha256 %x sha1 %x", got256[16], got1[16])
	}

	for name, ds := range map[string]map[uint16][]byte{
		"wrong size":  {tpm.AlgSHA256: d1[:]},
		"unknown alg": {0x0099: d256[:]},
		"none":        {},
	} {
		if err := tp.Extend(16, ds); err == nil {
			t.Errorf("extend with %s digests accepted", name)
		}
	}
	if err := tp.Extend(24, map[uint16][]byte{tpm.AlgSHA256: d256[:]}); err == nil {
		t.Error("extend of pcr 24 accepted")
	}
	if _, err := tp.ReadPCRs(tpm.AlgSHA384, []uint32{0}); err == nil {
		t.Error("read of the unallocated sha384 bank succeeded")
	}
}

// TestEK reads the swtpm EK and its certificate from the local CA, and
// checks the certificate is for that key and chains to the CA root once its
// critical SAN (which Go's x509 does not handle) is accounted for.
func TestEK(t *testing.T) {
	sw := simtest.Start(t, "")
	tp, err := sw.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ek, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, ok := ek.Public.(*rsa.PublicKey)
	if !ok || rsaPub.N.BitLen() != 2048 {
		t.Fatalf("EK public %T", ek.Public)
	}
	if ek.Certificate == nil || ek.CertificateIndex != 0x01c00002 {
		t.Fatalf("no EK certificate (index 0x%08x)", ek.CertificateIndex)
	}
	cert, err := x509.ParseCertificate(ek.Certificate)
	if err != nil {
		t.Fatalf("parse EK certificate: %v", err)
	}
	if !rsaPub.Equal(cert.PublicKey) {
		t.Fatal("EK certificate is for another key")
	}
	if len(cert.UnhandledCriticalExtensions) == 0 {
		t.Log("note: swtpm's EK certificate no longer has an unhandled critical extension")
	}
	cert.UnhandledCriticalExtensions = nil
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for pool, path := range map[*x509.CertPool]string{roots: sw.LocalCACert(), inter: sw.IssuerCert()} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		pool.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("EK certificate does not chain to the local CA: %v", err)
	}

	// The template-created EK is the persisted one (same key either way).
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.PublicBlob)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := tpm2.Pub(*pub); err != nil || !rsaPub.Equal(k) {
		t.Fatalf("PublicBlob does not hold the EK key: %v", err)
	}

	// The ECC P-256 EK: created from the template; swtpm has no low-range
	// ECC certificate (its ECC EK certificate is for a P-384 key).
	eccEK, err := tp.EKOfType(tpm.EKECCP256)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := eccEK.Public.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("ECC EK public %T", eccEK.Public)
	}
	again, err := tp.EKOfType(tpm.EKECCP256)
	if err != nil || !bytes.Equal(again.PublicBlob, eccEK.PublicBlob) {
		t.Fatalf("ECC EK not stable: %v", err)
	}
}

// TestNoHandleLeaks runs many quotes and the other operations, then checks
// no transient object or session is left in swtpm (which has no resource
// manager), and that Open flushes handles a dead process leaked.
func TestNoHandleLeaks(t *testing.T) {
	sw := simtest.Start(t, "")
	tp, err := sw.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ak, err := tp.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Far more quotes than swtpm's 3 transient object slots.
	for i := 0; i < 100; i++ {
		if _, _, err := tp.Quote(ak, pcrs0to7, nonce(t)); err != nil {
			t.Fatalf("quote %d: %v", i, err)
		}
	}
	for i := 0; i < 5; i++ {
		if _, err := tp.EKOfType(tpm.EKECCP256); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := tp.TransientHandles(); err != nil || n != 0 {
		t.Fatalf("%d transient handles left (%v)", n, err)
	}

	// Leak two transient objects with a raw connection, as a crashed
	// process would, then reopen: Open flushes them.
	raw, err := linuxudstpm.Open(sw.ServerSocket())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := (tpm2.CreatePrimary{
			PrimaryHandle: tpm2.TPMRHOwner,
			InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
		}).Execute(raw); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	if n, err := tp.TransientHandles(); err != nil || n != 2 {
		t.Fatalf("leaked %d handles (%v), want 2", n, err)
	}
	tp2, err := sw.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tp2.Close()
	if n, err := tp2.TransientHandles(); err != nil || n != 0 {
		t.Fatalf("after open %d transient handles left (%v)", n, err)
	}
}

// TestConcurrentUse quotes, reads and extends from several goroutines: the
// TPM serialises commands, and every quote still verifies.
func TestConcurrentUse(t *testing.T) {
	tp := openSwtpm(t, "")
	ak, err := tp.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func() {
			for i := 0; i < 10; i++ {
				n := make([]byte, 32)
				n[0], n[1] = byte(g), byte(i)
				a, s, err := tp.Quote(ak, []uint32{0, 1, 2}, n)
				if err != nil {
					errs <- err
					return
				}
				if _, err := quote.ParseAKPublic(ak.Public()); err != nil {
					errs <- err
					return
				}
				if _, err := tp.ReadPCRs(tpm.AlgSHA256, []uint32{23}); err != nil {
					errs <- err
					return
				}
				// PCRs 0-2 are not extended here, so each quote verifies
				// against the current values.
				vals, err := tp.ReadPCRs(tpm.AlgSHA256, []uint32{0, 1, 2})
				if err != nil {
					errs <- err
					return
				}
				if _, err := quote.Verify(ak.Public(), a, s, n, vals); err != nil {
					errs <- err
					return
				}
				if err := tp.Extend(23, map[uint16][]byte{tpm.AlgSHA256: n, tpm.AlgSHA1: n[:20]}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n, err := tp.TransientHandles(); err != nil || n != 0 {
		t.Fatalf("%d transient handles left (%v)", n, err)
	}
}

// TestSim runs the AK and quote path on the in-process simulator.
func TestSim(t *testing.T) {
	if !tpm.SimAvailable {
		testutil.Unavailable(t, "in-process simulator not compiled in (test builds only: cgo and -tags pulse_sim)")
	}
	tp, err := tpm.Open("sim", simtest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if tp.Spec() != "sim" {
		t.Fatalf("spec %q", tp.Spec())
	}
	if _, err := tpm.Open("sim", nil); !errors.Is(err, tpm.ErrSimBusy) {
		t.Fatalf("second sim open: %v, want ErrSimBusy", err)
	}
	ak, err := tp.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := nonce(t)
	attest, sig, err := tp.Quote(ak, pcrs0to7, n)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := tp.ReadPCRs(tpm.AlgSHA256, pcrs0to7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := quote.Verify(ak.Public(), attest, sig, n, pcrs); err != nil {
		t.Fatalf("sim quote: %v", err)
	}
	if _, err := quote.Verify(ak.Public(), attest, sig, nonce(t), pcrs); !errors.Is(err, quote.ErrQualifyingData) {
		t.Fatalf("sim quote with other nonce: %v", err)
	}
	// A simulated reboot keeps the persisted AK and zeroes the PCRs.
	if err := tp.Extend(0, map[uint16][]byte{tpm.AlgSHA256: make([]byte, 32)}); err != nil {
		t.Fatal(err)
	}
	if err := tp.ResetSim(); err != nil {
		t.Fatal(err)
	}
	ak2, err := tp.AK(tpm.AKOptions{})
	if err != nil || ak2.Created || !bytes.Equal(ak2.Public(), ak.Public()) {
		t.Fatalf("AK after sim reset: created %v, err %v", ak2 != nil && ak2.Created, err)
	}
	p0, err := tp.ReadPCRs(tpm.AlgSHA256, []uint32{0})
	if err != nil || !bytes.Equal(p0[0], make([]byte, 32)) {
		t.Fatalf("pcr 0 after reset %x, %v", p0[0], err)
	}
	if n, err := tp.TransientHandles(); err != nil || n != 0 {
		t.Fatalf("%d transient handles left (%v)", n, err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	// Closed: the next open is a fresh simulator with a new AK; a seeded
	// one is reproducible.
	fresh, err := tpm.Open("sim:7", nil)
	if err != nil {
		t.Fatal(err)
	}
	fak, err := fresh.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !fak.Created || bytes.Equal(fak.Public(), ak.Public()) {
		t.Fatal("fresh simulator kept the previous AK")
	}
	fresh.Close()
	seeded, err := tpm.Open("sim:7", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer seeded.Close()
	sak, err := seeded.AK(tpm.AKOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sak.Public(), fak.Public()) {
		t.Fatal("sim:7 gave different AKs on two opens")
	}
}

func BenchmarkQuoteSwtpm(b *testing.B) {
	tp := openSwtpm(b, "")
	benchQuote(b, tp)
}

func BenchmarkQuoteSim(b *testing.B) {
	if !tpm.SimAvailable {
		testutil.Unavailable(b, "in-process simulator not compiled in (test builds only: cgo and -tags pulse_sim)")
	}
	tp, err := tpm.Open("sim", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	benchQuote(b, tp)
}

func benchQuote(b *testing.B, tp *tpm.TPM) {
	ak, err := tp.AK(tpm.AKOptions{})
	if err != nil {
		b.Fatal(err)
	}
	n := nonce(b)
	for b.Loop() {
		if _, _, err := tp.Quote(ak, pcrs0to7, n); err != nil {
			b.Fatal(err)
		}
	}
}
