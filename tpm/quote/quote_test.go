package quote

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func testRSAKey(t testing.TB) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

func ecKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func akAttrs() tpm2.TPMAObject {
	return tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, Restricted: true, SignEncrypt: true}
}

// ecAKPublic builds an ECC AK public area with the given curve, scheme hash
// and attributes.
func ecAKPublic(pub *ecdsa.PublicKey, curve tpm2.TPMECCCurve, hashAlg tpm2.TPMAlgID, attrs tpm2.TPMAObject) []byte {
	x, y, err := pointXY(pub)
	if err != nil {
		panic(err)
	}
	return ecAKPublicXY(x, y, curve, hashAlg, attrs)
}

func ecAKPublicXY(x, y []byte, curve tpm2.TPMECCCurve, hashAlg tpm2.TPMAlgID, attrs tpm2.TPMAObject) []byte {
	return tpm2.Marshal(tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: hashAlg})},
			CurveID: curve,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}}),
	})
}

func rsaAKPublic(pub *rsa.PublicKey, scheme tpm2.TPMAlgID, attrs tpm2.TPMAObject) []byte {
	var details tpm2.TPMUAsymScheme
	if scheme == tpm2.TPMAlgRSASSA {
		details = tpm2.NewTPMUAsymScheme(scheme, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})
	} else {
		details = tpm2.NewTPMUAsymScheme(scheme, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: tpm2.TPMAlgSHA256})
	}
	return tpm2.Marshal(tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: scheme, Details: details},
			KeyBits:   tpm2.TPMKeyBits(pub.N.BitLen()),
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: pub.N.Bytes()}),
	})
}

// signer signs attestation bytes as a TPM would with one kind of key.
type signer struct {
	name  string
	akPub []byte
	sign  func(t testing.TB, attest []byte) []byte
}

func ecSigner(t testing.TB, c elliptic.Curve) signer {
	k := ecKey(t, c)
	ak, err := SoftwareAK(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	_, hashAlg, h, _ := softwareScheme(c)
	return signer{name: "ecdsa-" + c.Params().Name, akPub: ak, sign: func(t testing.TB, attest []byte) []byte {
		s, err := signECDSA(k, hashAlg, h, attest)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}}
}

func rsaSigner(t testing.TB, scheme tpm2.TPMAlgID) signer {
	k := testRSAKey(t)
	name := "rsassa"
	if scheme == tpm2.TPMAlgRSAPSS {
		name = "rsapss"
	}
	return signer{name: name, akPub: rsaAKPublic(&k.PublicKey, scheme, akAttrs()), sign: func(t testing.TB, attest []byte) []byte {
		d := sha256.Sum256(attest)
		var sig []byte
		var err error
		if scheme == tpm2.TPMAlgRSASSA {
			sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
		} else {
			sig, err = rsa.SignPSS(rand.Reader, k, crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		if err != nil {
			t.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: scheme,
			Signature: tpm2.NewTPMUSignature(scheme, &tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256,
				Sig: tpm2.TPM2BPublicKeyRSA{Buffer: sig}})})
	}}
}

func testPCRs() map[uint32][]byte {
	m := map[uint32][]byte{}
	for i := uint32(0); i < 24; i++ {
		v := make([]byte, 32)
		v[0] = byte(i)
		v[31] = 0xA5
		m[i] = v
	}
	return m
}

var (
	nonce = []byte("0123456789abcdef0123456789abcdef")
	sel   = PCRSelection{Alg: uint16(tpm2.TPMAlgSHA256), PCRs: []uint32{0, 1, 2, 3, 4, 5, 6, 7, 14}}
)

// attestStruct builds a quote TPMS_ATTEST over pcrs with the PCR digest
// computed with h.
func attestStruct(t testing.TB, h crypto.Hash, pcrs map[uint32][]byte) tpm2.TPMSAttest {
	d, err := PCRDigest(h, pcrs, sel)
	if err != nil {
		t.Fatal(err)
	}
	bm, _ := selectionBitmap(sel.PCRs)
	return tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: []byte{0, 0x0b, 1, 2, 3}},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: 123456, ResetCount: 3, RestartCount: 1, Safe: true},
		FirmwareVersion: 0x2021,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: bm}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: d},
		}),
	}
}

func allSigners(t testing.TB) []signer {
	return []signer{
		ecSigner(t, elliptic.P256()),
		ecSigner(t, elliptic.P384()),
		rsaSigner(t, tpm2.TPMAlgRSASSA),
		rsaSigner(t, tpm2.TPMAlgRSAPSS),
	}
}

func hashOf(t testing.TB, s signer) crypto.Hash {
	if s.name == "ecdsa-P-384" {
		return crypto.SHA384
	}
	return crypto.SHA256
}

func TestVerifyGood(t *testing.T) {
	for _, s := range allSigners(t) {
		t.Run(s.name, func(t *testing.T) {
			pcrs := testPCRs()
			attest := tpm2.Marshal(attestStruct(t, hashOf(t, s), pcrs))
			res, err := Verify(s.akPub, attest, s.sign(t, attest), nonce, pcrs)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if len(res.Selection) != 1 || res.Selection[0].Alg != sel.Alg || len(res.Selection[0].PCRs) != len(sel.PCRs) {
				t.Errorf("selection %+v", res.Selection)
			}
			if len(res.PCRs) != len(sel.PCRs) {
				t.Errorf("%d verified PCRs, want %d (unquoted ones must not appear)", len(res.PCRs), len(sel.PCRs))
			}
			if _, ok := res.PCRs[10]; ok {
				t.Error("unquoted PCR 10 in result")
			}
			if !bytes.Equal(res.ExtraData, nonce) || res.Clock != (ClockInfo{123456, 3, 1, true}) || res.FirmwareVersion != 0x2021 {
				t.Errorf("result %+v", res)
			}
			if !bytes.Equal(res.QualifiedSigner, []byte{0, 0x0b, 1, 2, 3}) {
				t.Errorf("qualified signer %x", res.QualifiedSigner)
			}
		})
	}
}

func expectReason(t *testing.T, err error, r Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", r)
	}
	if got := ReasonOf(err); got != r {
		t.Fatalf("reason %v (%v), want %v", got, err, r)
	}
	for rr, s := range sentinels {
		if errors.Is(err, s) != (rr == r) {
			t.Fatalf("errors.Is(%v, %v) = %v", err, s, !(rr == r))
		}
	}
}

func TestVerifyBad(t *testing.T) {
	for _, s := range allSigners(t) {
		h := hashOf(t, s)
		good := func() (tpm2.TPMSAttest, map[uint32][]byte) {
			p := testPCRs()
			return attestStruct(t, h, p), p
		}
		cases := []struct {
			name   string
			reason Reason
			run    func() error
		}{
			{"attest byte flipped after signing", ReasonSignature, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				sig := s.sign(t, b)
				b[len(b)-1] ^= 1
				_, err := Verify(s.akPub, b, sig, nonce, p)
				return err
			}},
			{"signed by another key", ReasonSignature, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				other := ecSigner(t, elliptic.P256())
				if s.name == "ecdsa-P-384" {
					other = ecSigner(t, elliptic.P384())
				}
				if s.name == "rsassa" || s.name == "rsapss" {
					k2, _ := rsa.GenerateKey(rand.Reader, 2048)
					d := sha256.Sum256(b)
					var sg []byte
					if s.name == "rsassa" {
						sg, _ = rsa.SignPKCS1v15(rand.Reader, k2, crypto.SHA256, d[:])
					} else {
						sg, _ = rsa.SignPSS(rand.Reader, k2, crypto.SHA256, d[:], nil)
					}
					scheme := tpm2.TPMAlgRSASSA
					if s.name == "rsapss" {
						scheme = tpm2.TPMAlgRSAPSS
					}
					sig := tpm2.Marshal(tpm2.TPMTSignature{SigAlg: scheme, Signature: tpm2.NewTPMUSignature(scheme,
						&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: sg}})})
					_, err := Verify(s.akPub, b, sig, nonce, p)
					return err
				}
				_, err := Verify(s.akPub, b, other.sign(t, b), nonce, p)
				return err
			}},
			{"bad magic", ReasonMagic, func() error {
				a, p := good()
				a.Magic = 0x11223344
				b := tpm2.Marshal(a)
				_, err := Verify(s.akPub, b, s.sign(t, b), nonce, p)
				return err
			}},
			{"not a quote", ReasonNotQuote, func() error {
				a, p := good()
				a.Type = tpm2.TPMSTAttestTime
				a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestTime, &tpm2.TPMSTimeAttestInfo{})
				b := tpm2.Marshal(a)
				_, err := Verify(s.akPub, b, s.sign(t, b), nonce, p)
				return err
			}},
			{"garbage after magic", ReasonMalformedAttest, func() error {
				b := []byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18, 0xff, 0xff}
				_, err := Verify(s.akPub, b, s.sign(t, b), nonce, testPCRs())
				return err
			}},
			{"trailing byte in attest", ReasonMalformedAttest, func() error {
				a, p := good()
				b := append(tpm2.Marshal(a), 0)
				_, err := Verify(s.akPub, b, s.sign(t, b), nonce, p)
				return err
			}},
			{"short attest", ReasonMalformedAttest, func() error {
				b := []byte{0xff, 0x54}
				_, err := Verify(s.akPub, b, s.sign(t, b), nonce, testPCRs())
				return err
			}},
			{"other nonce", ReasonQualifyingData, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				other := bytes.Clone(nonce)
				other[5] ^= 1
				_, err := Verify(s.akPub, b, s.sign(t, b), other, p)
				return err
			}},
			{"nonce prefix", ReasonQualifyingData, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				_, err := Verify(s.akPub, b, s.sign(t, b), nonce[:16], p)
				return err
			}},
			{"PCR missing", ReasonPCRMissing, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				delete(p, 7)
				_, err := Verify(s.akPub, b, s.sign(t, b), nonce, p)
				var qe *Error
				if errors.As(err, &qe) && (len(qe.PCRs) != 1 || qe.PCRs[0] != 7) {
					t.Errorf("missing PCRs %v, want [7]", qe.PCRs)
				}
				return err
			}},
			{"PCR value differs", ReasonPCRDigest, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				p[4][9] ^= 1
				_, err := Verify(s.akPub, b, s.sign(t, b), nonce, p)
				return err
			}},
			{"PCR value wrong length", ReasonPCRDigest, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				p[4] = p[4][:20]
				_, err := Verify(s.akPub, b, s.sign(t, b), nonce, p)
				return err
			}},
			{"garbage signature", ReasonMalformedSignature, func() error {
				a, p := good()
				_, err := Verify(s.akPub, tpm2.Marshal(a), []byte{0, 0x18, 1}, nonce, p)
				return err
			}},
			{"signature with trailing byte", ReasonMalformedSignature, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				_, err := Verify(s.akPub, b, append(s.sign(t, b), 0), nonce, p)
				return err
			}},
			{"signature scheme differs from AK", ReasonMalformedSignature, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				var sig []byte
				if s.name == "rsassa" || s.name == "rsapss" {
					sig = ecSigner(t, elliptic.P256()).sign(t, b)
				} else {
					sig = rsaSigner(t, tpm2.TPMAlgRSASSA).sign(t, b)
				}
				_, err := Verify(s.akPub, b, sig, nonce, p)
				return err
			}},
			{"malformed AK", ReasonMalformedAK, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				_, err := Verify(s.akPub[:len(s.akPub)-3], b, s.sign(t, b), nonce, p)
				return err
			}},
			{"AK with trailing byte", ReasonMalformedAK, func() error {
				a, p := good()
				b := tpm2.Marshal(a)
				_, err := Verify(append(bytes.Clone(s.akPub), 0), b, s.sign(t, b), nonce, p)
				return err
			}},
		}
		for _, c := range cases {
			t.Run(s.name+"/"+c.name, func(t *testing.T) { expectReason(t, c.run(), c.reason) })
		}
	}
}

func TestAKChecks(t *testing.T) {
	k := ecKey(t, elliptic.P256())
	pcrs := testPCRs()
	a := attestStruct(t, crypto.SHA256, pcrs)
	b := tpm2.Marshal(a)
	_, hashAlg, h, _ := softwareScheme(elliptic.P256())
	sig, _ := signECDSA(k, hashAlg, h, b)

	unrestricted := akAttrs()
	unrestricted.Restricted = false
	decrypt := akAttrs()
	decrypt.Decrypt = true
	nosign := akAttrs()
	nosign.SignEncrypt = false
	k521 := ecKey(t, elliptic.P521())
	offX, offY, _ := pointXY(&k.PublicKey)
	offX = bytes.Clone(offX)
	offX[len(offX)-1] ^= 1
	small, _ := rsa.GenerateKey(rand.Reader, 1024)

	cases := []struct {
		name   string
		ak     []byte
		reason Reason
	}{
		{"unrestricted", ecAKPublic(&k.PublicKey, tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256, unrestricted), ReasonAKNotRestricted},
		{"decrypt", ecAKPublic(&k.PublicKey, tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256, decrypt), ReasonAKNotRestricted},
		{"not signing", ecAKPublic(&k.PublicKey, tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256, nosign), ReasonAKNotRestricted},
		{"P-521", ecAKPublic(&k521.PublicKey, tpm2.TPMECCNistP521, tpm2.TPMAlgSHA256, akAttrs()), ReasonUnsupportedKey},
		{"SHA-1 scheme", ecAKPublic(&k.PublicKey, tpm2.TPMECCNistP256, tpm2.TPMAlgSHA1, akAttrs()), ReasonUnsupportedKey},
		{"point off curve", ecAKPublicXY(offX, offY, tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256, akAttrs()), ReasonMalformedAK},
		{"RSA-1024", rsaAKPublic(&small.PublicKey, tpm2.TPMAlgRSASSA, akAttrs()), ReasonUnsupportedKey},
		{"keyedhash", tpm2.Marshal(tpm2.TPMTPublic{Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: akAttrs(),
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull}}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: make([]byte, 32)})}), ReasonUnsupportedKey},
		{"empty", nil, ReasonMalformedAK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Verify(c.ak, b, sig, nonce, pcrs)
			expectReason(t, err, c.reason)
			if c.reason != ReasonMalformedAK {
				_, err = ParseAKPublic(c.ak)
				expectReason(t, err, c.reason)
			}
		})
	}
	// The unrestricted key really did sign: only the attribute check stops it.
	ok := ecAKPublic(&k.PublicKey, tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256, akAttrs())
	if _, err := Verify(ok, b, sig, nonce, pcrs); err != nil {
		t.Fatalf("restricted twin: %v", err)
	}
}

func TestAKNameAndParse(t *testing.T) {
	k := ecKey(t, elliptic.P256())
	ak, _ := SoftwareAK(&k.PublicKey)
	name, err := AKName(ak)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ak)
	if err != nil {
		t.Fatal(err)
	}
	want, err := tpm2.ObjectName(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(name, want.Buffer) {
		t.Errorf("AKName %x, go-tpm ObjectName %x", name, want.Buffer)
	}
	pk, err := ParseAKPublic(ak)
	if err != nil {
		t.Fatal(err)
	}
	if !k.PublicKey.Equal(pk) {
		t.Error("ParseAKPublic returned another key")
	}
	rk := testRSAKey(t)
	rpk, err := ParseAKPublic(rsaAKPublic(&rk.PublicKey, tpm2.TPMAlgRSAPSS, akAttrs()))
	if err != nil || !rk.PublicKey.Equal(rpk) {
		t.Errorf("RSA ParseAKPublic: %v", err)
	}
	if _, err := AKName([]byte{1, 2}); ReasonOf(err) != ReasonMalformedAK {
		t.Errorf("AKName of garbage: %v", err)
	}
}

func TestSignQuoteRoundTrip(t *testing.T) {
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		k := ecKey(t, c)
		ak, _ := SoftwareAK(&k.PublicKey)
		pcrs := testPCRs()
		s := PCRSelection{Alg: uint16(tpm2.TPMAlgSHA256), PCRs: []uint32{16, 0, 7}}
		clock := ClockInfo{Clock: 99, ResetCount: 2, RestartCount: 5, Safe: true}
		attest, sig, err := SignQuote(k, pcrs, s, nonce, clock)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Verify(ak, attest, sig, nonce, pcrs)
		if err != nil {
			t.Fatalf("%s: %v", c.Params().Name, err)
		}
		if res.Clock != clock || len(res.PCRs) != 3 || res.Selection[0].PCRs[2] != 16 {
			t.Errorf("result %+v", res)
		}
		name, _ := AKName(ak)
		if qn, err := OwnerPrimaryQualifiedName(name); err != nil || !bytes.Equal(res.QualifiedSigner, qn) {
			t.Errorf("qualified signer is not the AK's as an owner primary: %v", err)
		}
		pcrs[16][0] ^= 1
		_, err = Verify(ak, attest, sig, nonce, pcrs)
		expectReason(t, err, ReasonPCRDigest)
	}
	if _, _, err := SignQuote(ecKey(t, elliptic.P256()), map[uint32][]byte{}, PCRSelection{Alg: 0x0B, PCRs: []uint32{1}}, nil, ClockInfo{}); err == nil {
		t.Error("SignQuote without the selected PCR value succeeded")
	}
}

func TestVerifyBanks(t *testing.T) {
	k := ecKey(t, elliptic.P256())
	ak, _ := SoftwareAK(&k.PublicKey)
	sha1 := map[uint32][]byte{0: bytes.Repeat([]byte{1}, 20), 7: bytes.Repeat([]byte{7}, 20)}
	sha256v := testPCRs()
	d := sha256.New()
	d.Write(sha1[0])
	d.Write(sha1[7])
	d.Write(sha256v[0])
	a := tpm2.TPMSAttest{Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		ExtraData: tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
				{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0x81, 0, 0}},
				{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0x01, 0, 0}},
			}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: d.Sum(nil)},
		})}
	b := tpm2.Marshal(a)
	sig, _ := signECDSA(k, tpm2.TPMAlgSHA256, crypto.SHA256, b)
	res, err := VerifyBanks(ak, b, sig, nonce, map[uint16]map[uint32][]byte{0x04: sha1, 0x0B: sha256v})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Banks[0x04]) != 2 || len(res.Banks[0x0B]) != 1 {
		t.Errorf("banks %v", res.Banks)
	}
	_, err = Verify(ak, b, sig, nonce, sha256v)
	expectReason(t, err, ReasonPCRMissing)
}

func FuzzVerify(f *testing.F) {
	k := ecKey(f, elliptic.P256())
	ak, _ := SoftwareAK(&k.PublicKey)
	pcrs := testPCRs()
	attest, sig, err := SignQuote(k, pcrs, sel, nonce, ClockInfo{Clock: 1})
	if err != nil {
		f.Fatal(err)
	}
	rk := testRSAKey(f)
	f.Add(ak, attest, sig, nonce)
	f.Add(rsaAKPublic(&rk.PublicKey, tpm2.TPMAlgRSASSA, akAttrs()), attest, sig, nonce)
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, akPub, attest, sig, qd []byte) {
		res, err := Verify(akPub, attest, sig, qd, pcrs)
		if err != nil {
			if ReasonOf(err) == 0 {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if !bytes.Equal(res.ExtraData, qd) {
			t.Fatal("verified with other qualifying data")
		}
		_, _ = AKName(akPub)
	})
}

func BenchmarkVerify(b *testing.B) {
	k := ecKey(b, elliptic.P256())
	ak, _ := SoftwareAK(&k.PublicKey)
	pcrs := testPCRs()
	attest, sig, err := SignQuote(k, pcrs, sel, nonce, ClockInfo{Clock: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(ak, attest, sig, nonce, pcrs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyRSA(b *testing.B) {
	s := rsaSigner(b, tpm2.TPMAlgRSASSA)
	pcrs := testPCRs()
	attest := tpm2.Marshal(attestStruct(b, crypto.SHA256, pcrs))
	sig := s.sign(b, attest)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(s.akPub, attest, sig, nonce, pcrs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAKVerify is quote verification with the AK parsed once, as a
// verifier that caches enrolled AKs does.
func BenchmarkAKVerify(b *testing.B) {
	k := ecKey(b, elliptic.P256())
	akPub, _ := SoftwareAK(&k.PublicKey)
	ak, err := ParseAK(akPub)
	if err != nil {
		b.Fatal(err)
	}
	pcrs := testPCRs()
	attest, sig, err := SignQuote(k, pcrs, sel, nonce, ClockInfo{Clock: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ak.Verify(attest, sig, nonce, pcrs); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParsedAKMatchesPackageVerify(t *testing.T) {
	k := ecKey(t, elliptic.P256())
	akPub, _ := SoftwareAK(&k.PublicKey)
	ak, err := ParseAK(akPub)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := AKName(akPub)
	if !bytes.Equal(ak.Name(), want) || !k.PublicKey.Equal(ak.PublicKey()) {
		t.Error("AK accessors disagree with AKName/SoftwareAK")
	}
	pcrs := testPCRs()
	attest, sig, _ := SignQuote(k, pcrs, sel, nonce, ClockInfo{})
	if _, err := ak.Verify(attest, sig, nonce, pcrs); err != nil {
		t.Fatal(err)
	}
	_, err = ak.Verify(attest, sig, []byte("other"), pcrs)
	expectReason(t, err, ReasonQualifyingData)
}
