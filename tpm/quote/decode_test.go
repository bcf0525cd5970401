package quote

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"reflect"
	"sort"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// The reference implementations below are this package's verification path
// as it was before the hand-written decoders (go-tpm's reflective
// tpm2.Unmarshal). The differential tests hold the new path to them.

// refDecodeSignature is the previous decodeSignature.
func refDecodeSignature(b []byte) (sig *tpm2.TPMTSignature, err error) {
	defer func() {
		if r := recover(); r != nil {
			sig, err = nil, fmt.Errorf("decoder panic: %v", r)
		}
	}()
	sig, err = tpm2.Unmarshal[tpm2.TPMTSignature](b)
	if err != nil {
		return nil, err
	}
	var n int
	switch sig.SigAlg {
	case tpm2.TPMAlgECDSA:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return nil, err
		}
		n = 2 + 2 + 2 + len(s.SignatureR.Buffer) + 2 + len(s.SignatureS.Buffer)
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		var s *tpm2.TPMSSignatureRSA
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			s, err = sig.Signature.RSASSA()
		} else {
			s, err = sig.Signature.RSAPSS()
		}
		if err != nil {
			return nil, err
		}
		n = 2 + 2 + 2 + len(s.Sig.Buffer)
	default:
		return nil, fmt.Errorf("signature algorithm 0x%04x", uint16(sig.SigAlg))
	}
	if n != len(b) {
		return nil, fmt.Errorf("%d bytes given, signature is %d bytes", len(b), n)
	}
	return sig, nil
}

// refVerifySignature is the previous (*AK).verifySignature.
func refVerifySignature(a *AK, attest, signature []byte) error {
	sig, err := refDecodeSignature(signature)
	if err != nil {
		return fail(ReasonMalformedSignature, err, "decode TPMT_SIGNATURE")
	}
	if sig.SigAlg != a.scheme {
		return fail(ReasonMalformedSignature, nil, "scheme")
	}
	h, _ := algHash(a.hash)
	switch a.scheme {
	case tpm2.TPMAlgECDSA:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return fail(ReasonMalformedSignature, err, "ECDSA signature")
		}
		if s.Hash != a.hash {
			return fail(ReasonMalformedSignature, nil, "hash")
		}
		d := h.New()
		d.Write(attest)
		r := new(big.Int).SetBytes(s.SignatureR.Buffer)
		ss := new(big.Int).SetBytes(s.SignatureS.Buffer)
		if !ecdsa.Verify(a.key.(*ecdsa.PublicKey), d.Sum(nil), r, ss) {
			return fail(ReasonSignature, nil, "ECDSA")
		}
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		var s *tpm2.TPMSSignatureRSA
		if a.scheme == tpm2.TPMAlgRSASSA {
			s, err = sig.Signature.RSASSA()
		} else {
			s, err = sig.Signature.RSAPSS()
		}
		if err != nil {
			return fail(ReasonMalformedSignature, err, "RSA signature")
		}
		if s.Hash != a.hash {
			return fail(ReasonMalformedSignature, nil, "hash")
		}
		d := h.New()
		d.Write(attest)
		pk := a.key.(*rsa.PublicKey)
		if a.scheme == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(pk, h, d.Sum(nil), s.Sig.Buffer)
		} else {
			err = rsa.VerifyPSS(pk, h, d.Sum(nil), s.Sig.Buffer, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: h})
		}
		if err != nil {
			return fail(ReasonSignature, err, "RSA")
		}
	}
	return nil
}

// refVerifyAttest is the previous (*AK).verify after the signature check;
// multi selects VerifyBanks' behaviour, otherwise banks[0] holds Verify's
// single bank.
func refVerifyAttest(a *AK, attest, qualifyingData []byte, single map[uint32][]byte, banks map[uint16]map[uint32][]byte, multi bool) (*Result, error) {
	if len(attest) < 4 {
		return nil, fail(ReasonMalformedAttest, nil, "%d bytes", len(attest))
	}
	if m := binary.BigEndian.Uint32(attest); m != uint32(tpm2.TPMGeneratedValue) {
		return nil, fail(ReasonMagic, nil, "magic 0x%08x", m)
	}
	at, err := unmarshal[tpm2.TPMSAttest](attest)
	if err != nil {
		return nil, fail(ReasonMalformedAttest, err, "decode TPMS_ATTEST")
	}
	if at.Type != tpm2.TPMSTAttestQuote {
		return nil, fail(ReasonNotQuote, nil, "attestation type 0x%04x", uint16(at.Type))
	}
	q, err := at.Attested.Quote()
	if err != nil {
		return nil, fail(ReasonMalformedAttest, err, "quote info")
	}
	if len(at.ExtraData.Buffer) != len(qualifyingData) || !bytes.Equal(at.ExtraData.Buffer, qualifyingData) {
		return nil, fail(ReasonQualifyingData, nil, "")
	}
	h, _ := algHash(a.hash)
	res := &Result{
		PCRDigest:       bytes.Clone(q.PCRDigest.Buffer),
		ExtraData:       bytes.Clone(at.ExtraData.Buffer),
		QualifiedSigner: bytes.Clone(at.QualifiedSigner.Buffer),
		Clock: ClockInfo{Clock: at.ClockInfo.Clock, ResetCount: at.ClockInfo.ResetCount,
			RestartCount: at.ClockInfo.RestartCount, Safe: at.ClockInfo.Safe},
		FirmwareVersion: at.FirmwareVersion,
		Banks:           map[uint16]map[uint32][]byte{},
		HashAlg:         h,
	}
	for _, s := range q.PCRSelect.PCRSelections {
		ps := PCRSelection{Alg: uint16(s.Hash)}
		for i, b := range s.PCRSelect {
			for bit := 0; bit < 8; bit++ {
				if b&(1<<bit) != 0 {
					ps.PCRs = append(ps.PCRs, uint32(i*8+bit))
				}
			}
		}
		res.Selection = append(res.Selection, ps)
	}
	vals := banks
	if !multi {
		var bank uint16
		n := 0
		for _, s := range res.Selection {
			if len(s.PCRs) > 0 && (n == 0 || s.Alg != bank) {
				bank = s.Alg
				n++
			}
		}
		if n > 1 {
			return nil, fail(ReasonPCRMissing, nil, "quote selects %d banks; use VerifyBanks", n)
		}
		vals = map[uint16]map[uint32][]byte{bank: single}
	}
	d := h.New()
	var missing []uint32
	for _, s := range res.Selection {
		if len(s.PCRs) == 0 {
			continue
		}
		size := pcrBankSize(tpm2.TPMAlgID(s.Alg))
		if size == 0 {
			return nil, fail(ReasonMalformedAttest, nil, "PCR bank 0x%04x", s.Alg)
		}
		bank := vals[s.Alg]
		out := res.Banks[s.Alg]
		if out == nil {
			out = map[uint32][]byte{}
			res.Banks[s.Alg] = out
		}
		for _, p := range s.PCRs {
			v, ok := bank[p]
			if !ok {
				missing = append(missing, p)
				continue
			}
			if len(v) != size {
				return nil, fail(ReasonPCRDigest, nil, "length")
			}
			d.Write(v)
			out[p] = bytes.Clone(v)
		}
	}
	if len(missing) > 0 {
		sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
		e := fail(ReasonPCRMissing, nil, "PCRs %v", missing)
		e.PCRs = missing
		return nil, e
	}
	if !bytes.Equal(d.Sum(nil), q.PCRDigest.Buffer) {
		return nil, fail(ReasonPCRDigest, nil, "")
	}
	for _, s := range res.Selection {
		if len(s.PCRs) > 0 {
			res.PCRs = res.Banks[s.Alg]
			break
		}
	}
	if res.PCRs == nil {
		res.PCRs = map[uint32][]byte{}
	}
	return res, nil
}

// goTPMAttest is go-tpm's plain tpm2.Unmarshal of a TPMS_ATTEST (no
// canonical-length check), with its panics turned into errors.
func goTPMAttest(b []byte) (at *tpm2.TPMSAttest, err error) {
	defer func() {
		if r := recover(); r != nil {
			at, err = nil, fmt.Errorf("decoder panic: %v", r)
		}
	}()
	return tpm2.Unmarshal[tpm2.TPMSAttest](b)
}

func goTPMSignature(b []byte) (s *tpm2.TPMTSignature, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("decoder panic: %v", r)
		}
	}()
	return tpm2.Unmarshal[tpm2.TPMTSignature](b)
}

// attestOutcome classifies one differential comparison, for the counts the
// tests log.
type attestOutcome int

const (
	bothAccept attestOutcome = iota
	bothReject
	// stricter: go-tpm's tpm2.Unmarshal accepts, the new decoder rejects
	// (trailing bytes, a truncated size field read as 0, safe not 0 or 1:
	// all of them non-canonical encodings the previous code rejected by
	// re-marshalling).
	stricter
	// otherType: a well-formed header of a non-quote attestation, which
	// decodeAttest leaves to go-tpm.
	otherType
)

// checkAttest compares decodeAttest with go-tpm on b and fails t on any
// disagreement.
func checkAttest(t testing.TB, b []byte) attestOutcome {
	t.Helper()
	got, err := decodeAttest(b)
	raw, rawErr := goTPMAttest(b)
	canon, canonErr := unmarshal[tpm2.TPMSAttest](b)
	var te *attestTypeError
	if errors.As(err, &te) {
		// The header decoded; go-tpm must agree on it, and on the type.
		if len(b) < 6 || binary.BigEndian.Uint16(b[4:]) != te.Type || te.Type == uint16(tpm2.TPMSTAttestQuote) {
			t.Fatalf("type error %v for % x", err, b)
		}
		if rawErr == nil && raw.Type != tpm2.TPMISTAttest(te.Type) {
			t.Fatalf("go-tpm type 0x%04x, decoder 0x%04x", uint16(raw.Type), te.Type)
		}
		return otherType
	}
	if rawErr != nil && err == nil {
		t.Fatalf("go-tpm rejects (%v), decoder accepts % x", rawErr, b)
	}
	if (err == nil) != (canonErr == nil) {
		t.Fatalf("decoder err %v, go-tpm canonical err %v, for % x", err, canonErr, b)
	}
	if err != nil {
		if rawErr == nil {
			return stricter
		}
		return bothReject
	}
	q, qerr := canon.Attested.Quote()
	if qerr != nil {
		t.Fatalf("go-tpm quote info: %v", qerr)
	}
	if got.Magic != uint32(canon.Magic) || got.Type != uint16(canon.Type) ||
		!bytes.Equal(got.QualifiedSigner, canon.QualifiedSigner.Buffer) ||
		!bytes.Equal(got.ExtraData, canon.ExtraData.Buffer) ||
		got.Clock != (ClockInfo{canon.ClockInfo.Clock, canon.ClockInfo.ResetCount, canon.ClockInfo.RestartCount, canon.ClockInfo.Safe}) ||
		got.FirmwareVersion != canon.FirmwareVersion ||
		!bytes.Equal(got.PCRDigest, q.PCRDigest.Buffer) ||
		got.SelectionCount != len(q.PCRSelect.PCRSelections) {
		t.Fatalf("fields differ for % x:\n%+v\n%+v", b, got, canon)
	}
	// Empty buffers are non-nil, as go-tpm's are.
	if got.ExtraData == nil || got.QualifiedSigner == nil || got.PCRDigest == nil {
		t.Fatal("nil buffer")
	}
	sel := got.Selections
	for i, want := range q.PCRSelect.PCRSelections {
		alg, bm, rest := nextSelection(sel)
		sel = rest
		if alg != uint16(want.Hash) || !bytes.Equal(bm, want.PCRSelect) {
			t.Fatalf("selection %d: 0x%04x % x, go-tpm 0x%04x % x", i, alg, bm, uint16(want.Hash), want.PCRSelect)
		}
	}
	if len(sel) != 0 {
		t.Fatalf("%d selection bytes left", len(sel))
	}
	return bothAccept
}

// checkSignature compares decodeSignature with the previous decoder and
// go-tpm on b.
func checkSignature(t testing.TB, b []byte) attestOutcome {
	t.Helper()
	got, err := decodeSignature(b)
	ref, refErr := refDecodeSignature(b)
	_, rawErr := goTPMSignature(b)
	if rawErr != nil && err == nil {
		t.Fatalf("go-tpm rejects (%v), decoder accepts % x", rawErr, b)
	}
	if (err == nil) != (refErr == nil) {
		t.Fatalf("decoder err %v, previous decoder err %v, for % x", err, refErr, b)
	}
	if err != nil {
		if rawErr == nil {
			return stricter
		}
		return bothReject
	}
	if got.Alg != ref.SigAlg {
		t.Fatalf("alg 0x%04x, go-tpm 0x%04x", uint16(got.Alg), uint16(ref.SigAlg))
	}
	switch got.Alg {
	case tpm2.TPMAlgECDSA:
		s, _ := ref.Signature.ECDSA()
		if got.Hash != s.Hash || !bytes.Equal(got.R, s.SignatureR.Buffer) || !bytes.Equal(got.S, s.SignatureS.Buffer) ||
			got.R == nil || got.S == nil || got.Sig != nil {
			t.Fatalf("ECDSA fields differ for % x: %+v", b, got)
		}
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		var s *tpm2.TPMSSignatureRSA
		if got.Alg == tpm2.TPMAlgRSASSA {
			s, _ = ref.Signature.RSASSA()
		} else {
			s, _ = ref.Signature.RSAPSS()
		}
		if got.Hash != s.Hash || !bytes.Equal(got.Sig, s.Sig.Buffer) || got.Sig == nil || got.R != nil || got.S != nil {
			t.Fatalf("RSA fields differ for % x: %+v", b, got)
		}
	default:
		t.Fatalf("accepted algorithm 0x%04x", uint16(got.Alg))
	}
	return bothAccept
}

// checkVerifyAttest compares the post-signature verification with the
// previous implementation for a single-bank and a multi-bank call.
func checkVerifyAttest(t testing.TB, a *AK, attest, qd []byte, pcrs map[uint32][]byte, banks map[uint16]map[uint32][]byte) {
	t.Helper()
	for _, multi := range []bool{false, true} {
		src := pcrSource{single: pcrs}
		if multi {
			src = pcrSource{banks: banks, multi: true}
		}
		got, err := a.verifyAttest(attest, qd, src)
		want, wantErr := refVerifyAttest(a, attest, qd, pcrs, banks, multi)
		if ReasonOf(err) != ReasonOf(wantErr) || (err == nil) != (wantErr == nil) {
			t.Fatalf("multi=%v: error %v, previously %v, for % x", multi, err, wantErr, attest)
		}
		if err != nil {
			var e, we *Error
			errors.As(err, &e)
			errors.As(wantErr, &we)
			if !reflect.DeepEqual(e.PCRs, we.PCRs) {
				t.Fatalf("error PCRs %v, previously %v", e.PCRs, we.PCRs)
			}
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("multi=%v: result\n%+v\npreviously\n%+v", multi, got, want)
		}
	}
}

func mustParseAK(t testing.TB, akPub []byte) *AK {
	a, err := ParseAK(akPub)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// attestSeeds are well-formed TPMS_ATTESTs of the kinds the package and its
// tests produce, and a few other attestation types.
func attestSeeds(t testing.TB) [][]byte {
	pcrs := testPCRs()
	var out [][]byte
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		k := ecKey(t, c)
		for _, s := range []PCRSelection{sel, {Alg: 0x0B, PCRs: []uint32{16, 0, 7}}, {Alg: 0x0B}, {Alg: 0x0B, PCRs: []uint32{23}}} {
			for _, ed := range [][]byte{nonce, nil, bytes.Repeat([]byte{7}, 64)} {
				a, _, err := SignQuote(k, pcrs, s, ed, ClockInfo{Clock: 1 << 40, ResetCount: 9, RestartCount: 2, Safe: len(ed) > 0})
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, a)
			}
		}
	}
	out = append(out, tpm2.Marshal(attestStruct(t, crypto.SHA256, pcrs)), multiBankAttest(pcrs))
	base := attestStruct(t, crypto.SHA256, pcrs)
	base.Type = tpm2.TPMSTAttestTime
	base.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestTime, &tpm2.TPMSTimeAttestInfo{})
	out = append(out, tpm2.Marshal(base))
	base.Type = tpm2.TPMSTAttestCertify
	base.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{
		Name: tpm2.TPM2BName{Buffer: []byte{0, 0x0b, 1}}, QualifiedName: tpm2.TPM2BName{Buffer: []byte{0, 0x0b, 2}}})
	out = append(out, tpm2.Marshal(base))
	return out
}

// multiBankAttest is a quote over SHA-1 PCRs 0 and 7 and SHA-256 PCR 0.
func multiBankAttest(sha256v map[uint32][]byte) []byte {
	sha1 := sha1Bank()
	d := sha256.New()
	d.Write(sha1[0])
	d.Write(sha1[7])
	d.Write(sha256v[0])
	return tpm2.Marshal(tpm2.TPMSAttest{Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		ExtraData: tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
				{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{0x81, 0, 0}},
				{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0x01, 0, 0}},
			}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: d.Sum(nil)},
		})})
}

func sha1Bank() map[uint32][]byte {
	return map[uint32][]byte{0: bytes.Repeat([]byte{1}, 20), 7: bytes.Repeat([]byte{7}, 20)}
}

func ecdsaSig(hashAlg tpm2.TPMAlgID, r, s []byte) []byte {
	return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash: hashAlg, SignatureR: tpm2.TPM2BECCParameter{Buffer: r}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s}})})
}

func rsaSig(scheme, hashAlg tpm2.TPMAlgID, sig []byte) []byte {
	return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: scheme,
		Signature: tpm2.NewTPMUSignature(scheme, &tpm2.TPMSSignatureRSA{Hash: hashAlg, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: sig}})})
}

// signatureSeeds are TPMT_SIGNATUREs of every scheme the signers produce,
// and of schemes an AK does not use.
func signatureSeeds(t testing.TB, attest []byte) [][]byte {
	var out [][]byte
	for _, s := range allSigners(t) {
		out = append(out, s.sign(t, attest))
	}
	out = append(out,
		ecdsaSig(tpm2.TPMAlgSHA256, []byte{1}, []byte{0, 0, 2}),
		ecdsaSig(tpm2.TPMAlgSHA256, nil, nil),
		tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgHMAC,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgHMAC, &tpm2.TPMTHA{HashAlg: tpm2.TPMAlgSHA256, Digest: make([]byte, 32)})}),
		tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDAA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDAA, &tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256})}),
		[]byte{0, 0x10},
	)
	return out
}

// mutate applies one to three random edits to a copy of b, biased towards
// the length and count fields a decoder must check.
func mutate(r *mrand.Rand, b []byte) []byte {
	b = bytes.Clone(b)
	for n := 1 + r.IntN(3); n > 0; n-- {
		switch op := r.IntN(9); {
		case op == 0 && len(b) > 0:
			b[r.IntN(len(b))] = byte(r.Uint32())
		case op == 1 && len(b) > 0:
			b[r.IntN(len(b))] ^= 1 << r.IntN(8)
		case op == 2:
			b = b[:r.IntN(len(b)+1)]
		case op == 3:
			for k := 1 + r.IntN(3); k > 0; k-- {
				b = append(b, byte(r.Uint32()))
			}
		case op == 4:
			i := r.IntN(len(b) + 1)
			b = append(b[:i], append([]byte{byte(r.Uint32())}, b[i:]...)...)
		case op == 5 && len(b) > 0:
			i := r.IntN(len(b))
			b = append(b[:i], b[i+1:]...)
		case op == 6 && len(b) >= 2:
			vals := []uint16{0, 1, 2, 0x20, 0x1000, 0x1001, 0xffff, uint16(len(b)), uint16(len(b) - 1)}
			binary.BigEndian.PutUint16(b[r.IntN(len(b)-1):], vals[r.IntN(len(vals))])
		case op == 7 && len(b) >= 4:
			vals := []uint32{0, 1, 2, 3, 4096, 4097, 0xffffffff}
			binary.BigEndian.PutUint32(b[r.IntN(len(b)-3):], vals[r.IntN(len(vals))])
		case op == 8 && len(b) > 0:
			// Small values where a size or TPMI_YES_NO byte may be.
			b[r.IntN(len(b))] = byte(r.IntN(4))
		}
	}
	return b
}

func TestDecodeAttestDifferential(t *testing.T) {
	seeds := attestSeeds(t)
	pcrs := testPCRs()
	banks := map[uint16]map[uint32][]byte{0x04: sha1Bank(), 0x0B: pcrs}
	aks := []*AK{mustParseAK(t, ecSigner(t, elliptic.P256()).akPub), mustParseAK(t, ecSigner(t, elliptic.P384()).akPub)}
	counts := map[attestOutcome]int{}
	r := mrand.New(mrand.NewPCG(1, 2))
	perSeed := 1000
	if testing.Short() {
		perSeed = 200
	}
	for i, s := range seeds {
		if o := checkAttest(t, s); o != bothAccept && o != otherType {
			t.Fatalf("seed %d: outcome %d", i, o)
		}
		for _, a := range aks {
			checkVerifyAttest(t, a, s, nonce, pcrs, banks)
		}
		for range perSeed {
			m := mutate(r, s)
			counts[checkAttest(t, m)]++
			a := aks[r.IntN(len(aks))]
			qd := nonce
			if len(m) >= 8 {
				qd = nil // some mutants carry an empty extraData
			}
			if at, err := decodeAttest(m); err == nil {
				qd = at.ExtraData
			}
			checkVerifyAttest(t, a, m, qd, pcrs, banks)
		}
	}
	t.Logf("mutants: %d both accept, %d both reject, %d only go-tpm's plain Unmarshal accepts (non-canonical), %d other attestation types",
		counts[bothAccept], counts[bothReject], counts[stricter], counts[otherType])
	if counts[bothAccept] == 0 || counts[bothReject] == 0 {
		t.Error("mutations never reached one of the outcomes")
	}
}

func TestDecodeSignatureDifferential(t *testing.T) {
	attest := tpm2.Marshal(attestStruct(t, crypto.SHA256, testPCRs()))
	counts := map[attestOutcome]int{}
	r := mrand.New(mrand.NewPCG(3, 4))
	for _, s := range signatureSeeds(t, attest) {
		checkSignature(t, s)
		for range 5000 {
			counts[checkSignature(t, mutate(r, s))]++
		}
	}
	t.Logf("mutants: %d both accept, %d both reject, %d only go-tpm's plain Unmarshal accepts (trailing bytes)",
		counts[bothAccept], counts[bothReject], counts[stricter])
	if counts[bothAccept] == 0 || counts[bothReject] == 0 {
		t.Error("mutations never reached one of the outcomes")
	}
}

// TestVerifySignatureDifferential holds the signature check, with its
// DER encoding of r and s, to the previous big.Int one over mutated
// signatures of every signer.
func TestVerifySignatureDifferential(t *testing.T) {
	attest := tpm2.Marshal(attestStruct(t, crypto.SHA256, testPCRs()))
	r := mrand.New(mrand.NewPCG(5, 6))
	for _, s := range allSigners(t) {
		a := mustParseAK(t, s.akPub)
		good := s.sign(t, attest)
		cases := [][]byte{good}
		if a.scheme == tpm2.TPMAlgECDSA {
			es, _ := decodeSignature(good)
			pad := func(b []byte, n int) []byte { return append(make([]byte, n), b...) }
			cases = append(cases,
				ecdsaSig(es.Hash, pad(es.R, 1), es.S),
				ecdsaSig(es.Hash, pad(es.R, 40), pad(es.S, 300)),
				ecdsaSig(es.Hash, es.R[1:], es.S),
				ecdsaSig(es.Hash, nil, es.S),
				ecdsaSig(es.Hash, []byte{0, 0}, es.S),
				ecdsaSig(es.Hash, append([]byte{1}, es.R...), es.S),
				ecdsaSig(es.Hash, bytes.Repeat([]byte{0xff}, len(es.R)), es.S),
				ecdsaSig(es.Hash, es.S, es.R),
			)
		}
		for range 300 {
			cases = append(cases, mutate(r, good))
		}
		for i, sig := range cases {
			err, want := a.verifySignature(attest, sig), refVerifySignature(a, attest, sig)
			if ReasonOf(err) != ReasonOf(want) {
				t.Fatalf("%s case %d: %v, previously %v", s.name, i, err, want)
			}
			if i == 0 && err != nil {
				t.Fatalf("%s: good signature: %v", s.name, err)
			}
		}
	}
}

// attestBuilder writes TPMS_ATTEST fields for the malformed-input tables.
type attestBuilder struct{ b []byte }

func (w *attestBuilder) u8(v uint8) *attestBuilder { w.b = append(w.b, v); return w }
func (w *attestBuilder) u16(v uint16) *attestBuilder {
	w.b = binary.BigEndian.AppendUint16(w.b, v)
	return w
}
func (w *attestBuilder) u32(v uint32) *attestBuilder {
	w.b = binary.BigEndian.AppendUint32(w.b, v)
	return w
}
func (w *attestBuilder) u64(v uint64) *attestBuilder {
	w.b = binary.BigEndian.AppendUint64(w.b, v)
	return w
}
func (w *attestBuilder) raw(v ...byte) *attestBuilder { w.b = append(w.b, v...); return w }
func (w *attestBuilder) b2(v []byte) *attestBuilder   { return w.u16(uint16(len(v))).raw(v...) }

// header writes magic, type, qualifiedSigner, extraData (the nonce),
// clockInfo with the given safe byte, and firmwareVersion.
func (w *attestBuilder) header(typ uint16, safe byte) *attestBuilder {
	return w.u32(uint32(tpm2.TPMGeneratedValue)).u16(typ).b2([]byte{0, 0x0b, 1}).b2(nonce).
		u64(5).u32(1).u32(2).u8(safe).u64(0x2021)
}

const stQuote = uint16(tpm2.TPMSTAttestQuote)

// quoteBody writes a TPMS_QUOTE_INFO selecting SHA-256 PCR 0 with digest d.
func (w *attestBuilder) quoteBody(d []byte) *attestBuilder {
	return w.u32(1).u16(0x0b).u8(3).raw(1, 0, 0).b2(d)
}

func TestDecodeAttestMalformed(t *testing.T) {
	pcrs := testPCRs()
	d := sha256.Sum256(pcrs[0])
	good := func() *attestBuilder { return new(attestBuilder).header(stQuote, 1).quoteBody(d[:]) }
	hdr := func() *attestBuilder { return new(attestBuilder).header(stQuote, 1) }
	emptyDigest := sha256.Sum256(nil)
	cases := []struct {
		name   string
		attest []byte
		reason Reason // 0: verifies
	}{
		{"good", good().b, 0},
		{"empty selection list", hdr().u32(0).b2(emptyDigest[:]).b, 0},
		{"selection of no PCRs", hdr().u32(1).u16(0x0b).u8(0).b2(emptyDigest[:]).b, 0},
		{"empty", nil, ReasonMalformedAttest},
		{"magic cut", []byte{0xff, 0x54, 0x43}, ReasonMalformedAttest},
		{"bad magic", new(attestBuilder).u32(0xff544348).u16(stQuote).b, ReasonMagic},
		{"magic only", new(attestBuilder).u32(uint32(tpm2.TPMGeneratedValue)).b, ReasonMalformedAttest},
		{"type cut", new(attestBuilder).u32(uint32(tpm2.TPMGeneratedValue)).u8(0x80).b, ReasonMalformedAttest},
		{"qualifiedSigner size cut", new(attestBuilder).u32(uint32(tpm2.TPMGeneratedValue)).u16(stQuote).u8(0).b, ReasonMalformedAttest},
		{"qualifiedSigner beyond end", new(attestBuilder).u32(uint32(tpm2.TPMGeneratedValue)).u16(stQuote).u16(10).raw(1, 2).b, ReasonMalformedAttest},
		{"qualifiedSigner over 4096 bytes", new(attestBuilder).u32(uint32(tpm2.TPMGeneratedValue)).u16(stQuote).b2(make([]byte, 4097)).
			b2(nonce).u64(5).u32(1).u32(2).u8(1).u64(0).quoteBody(d[:]).b, ReasonMalformedAttest},
		{"extraData beyond end", new(attestBuilder).u32(uint32(tpm2.TPMGeneratedValue)).u16(stQuote).b2(nil).u16(33).raw(nonce...).b, ReasonMalformedAttest},
		{"clock cut", new(attestBuilder).u32(uint32(tpm2.TPMGeneratedValue)).u16(stQuote).b2(nil).b2(nonce).u32(0).b, ReasonMalformedAttest},
		{"safe missing", new(attestBuilder).u32(uint32(tpm2.TPMGeneratedValue)).u16(stQuote).b2(nil).b2(nonce).u64(1).u32(1).u32(1).b, ReasonMalformedAttest},
		{"safe is 2", new(attestBuilder).header(stQuote, 2).quoteBody(d[:]).b, ReasonMalformedAttest},
		{"safe is 0xff", new(attestBuilder).header(stQuote, 0xff).quoteBody(d[:]).b, ReasonMalformedAttest},
		{"firmwareVersion cut", new(attestBuilder).u32(uint32(tpm2.TPMGeneratedValue)).u16(stQuote).b2(nil).b2(nonce).u64(1).u32(1).u32(1).u8(0).u32(0).b, ReasonMalformedAttest},
		{"quote info missing", hdr().b, ReasonMalformedAttest},
		{"selection count cut", hdr().u16(0).b, ReasonMalformedAttest},
		{"selection count over 4096", hdr().u32(4097).raw(bytes.Repeat([]byte{0, 0x0b, 0}, 4097)...).b2(emptyDigest[:]).b, ReasonMalformedAttest},
		{"selection count beyond entries", hdr().u32(2).u16(0x0b).u8(3).raw(1, 0, 0).b2(d[:]).b, ReasonMalformedAttest},
		{"selection hash cut", hdr().u32(1).u8(0).b, ReasonMalformedAttest},
		{"sizeofSelect missing", hdr().u32(1).u16(0x0b).b, ReasonMalformedAttest},
		{"bitmap beyond end", hdr().u32(1).u16(0x0b).u8(200).raw(1, 0, 0).b, ReasonMalformedAttest},
		{"pcrDigest missing", hdr().u32(1).u16(0x0b).u8(3).raw(1, 0, 0).b, ReasonMalformedAttest},
		{"pcrDigest size cut", hdr().u32(1).u16(0x0b).u8(3).raw(1, 0, 0).u8(0).b, ReasonMalformedAttest},
		{"pcrDigest beyond end", hdr().u32(1).u16(0x0b).u8(3).raw(1, 0, 0).u16(33).raw(d[:]...).b, ReasonMalformedAttest},
		{"pcrDigest over 4096 bytes", hdr().quoteBody(make([]byte, 4097)).b, ReasonMalformedAttest},
		{"trailing byte", good().u8(0).b, ReasonMalformedAttest},
		{"unknown attestation type", new(attestBuilder).header(0x1234, 1).quoteBody(d[:]).b, ReasonMalformedAttest},
		{"time attestation", new(attestBuilder).header(uint16(tpm2.TPMSTAttestTime), 1).u64(1).u64(2).u32(3).u32(4).u8(1).u64(9).b, ReasonNotQuote},
		{"time attestation cut", new(attestBuilder).header(uint16(tpm2.TPMSTAttestTime), 1).u64(1).b, ReasonMalformedAttest},
		{"unknown PCR bank", hdr().u32(1).u16(0x0099).u8(3).raw(1, 0, 0).b2(d[:]).b, ReasonMalformedAttest},
		{"quoted digest differs", hdr().quoteBody(emptyDigest[:]).b, ReasonPCRDigest},
		{"PCR not supplied", hdr().u32(1).u16(0x0b).u8(4).raw(0, 0, 0, 1).b2(d[:]).b, ReasonPCRMissing},
	}
	s := ecSigner(t, elliptic.P256())
	a := mustParseAK(t, s.akPub)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if len(c.attest) >= 4 {
				checkAttest(t, c.attest)
			}
			checkVerifyAttest(t, a, c.attest, nonce, pcrs, map[uint16]map[uint32][]byte{0x0b: pcrs})
			_, err := Verify(s.akPub, c.attest, s.sign(t, c.attest), nonce, pcrs)
			if c.reason == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			expectReason(t, err, c.reason)
		})
	}
}

func TestDecodeSignatureMalformed(t *testing.T) {
	attest := tpm2.Marshal(attestStruct(t, crypto.SHA256, testPCRs()))
	ec, rs := ecSigner(t, elliptic.P256()), rsaSigner(t, tpm2.TPMAlgRSASSA)
	ecGood, rsGood := ec.sign(t, attest), rs.sign(t, attest)
	es, _ := decodeSignature(ecGood)
	r32, s32 := es.R, es.S
	w := func() *attestBuilder { return new(attestBuilder) }
	ecdsaAlg, rsassa := uint16(tpm2.TPMAlgECDSA), uint16(tpm2.TPMAlgRSASSA)
	cases := []struct {
		name   string
		signer signer
		sig    []byte
		reason Reason // 0: verifies
	}{
		{"ecdsa good", ec, ecGood, 0},
		{"rsassa good", rs, rsGood, 0},
		{"ecdsa r with leading zeros", ec, ecdsaSig(tpm2.TPMAlgSHA256, append(make([]byte, 8), r32...), s32), 0},
		{"empty", ec, nil, ReasonMalformedSignature},
		{"sigAlg cut", ec, []byte{0}, ReasonMalformedSignature},
		{"sigAlg only", ec, w().u16(ecdsaAlg).b, ReasonMalformedSignature},
		{"null", ec, w().u16(uint16(tpm2.TPMAlgNull)).b, ReasonMalformedSignature},
		{"unknown algorithm", ec, w().u16(0x7777).u16(0x0b).b2(r32).b2(s32).b, ReasonMalformedSignature},
		{"hmac", ec, w().u16(uint16(tpm2.TPMAlgHMAC)).u16(0x0b).raw(make([]byte, 32)...).b, ReasonMalformedSignature},
		{"ecdaa", ec, w().u16(uint16(tpm2.TPMAlgECDAA)).u16(0x0b).b2(r32).b2(s32).b, ReasonMalformedSignature},
		{"ecdsa hash cut", ec, w().u16(ecdsaAlg).u8(0).b, ReasonMalformedSignature},
		{"ecdsa r size cut", ec, w().u16(ecdsaAlg).u16(0x0b).u8(0).b, ReasonMalformedSignature},
		{"ecdsa r beyond end", ec, w().u16(ecdsaAlg).u16(0x0b).u16(33).raw(r32...).b, ReasonMalformedSignature},
		{"ecdsa s missing", ec, w().u16(ecdsaAlg).u16(0x0b).b2(r32).b, ReasonMalformedSignature},
		{"ecdsa s size cut", ec, w().u16(ecdsaAlg).u16(0x0b).b2(r32).u8(0).b, ReasonMalformedSignature},
		{"ecdsa s beyond end", ec, w().u16(ecdsaAlg).u16(0x0b).b2(r32).u16(40).raw(s32...).b, ReasonMalformedSignature},
		{"ecdsa r over 4096 bytes", ec, w().u16(ecdsaAlg).u16(0x0b).b2(append(make([]byte, 4097-32), r32...)).b2(s32).b, ReasonMalformedSignature},
		{"ecdsa trailing byte", ec, append(bytes.Clone(ecGood), 0), ReasonMalformedSignature},
		{"ecdsa hash differs from AK", ec, ecdsaSig(tpm2.TPMAlgSHA384, r32, s32), ReasonMalformedSignature},
		{"ecdsa to an RSA AK", rs, ecGood, ReasonMalformedSignature},
		{"rsassa to an ECDSA AK", ec, rsGood, ReasonMalformedSignature},
		{"rsapss to an RSASSA AK", rs, rsaSig(tpm2.TPMAlgRSAPSS, tpm2.TPMAlgSHA256, make([]byte, 256)), ReasonMalformedSignature},
		{"rsassa hash cut", rs, w().u16(rsassa).u8(0).b, ReasonMalformedSignature},
		{"rsassa sig missing", rs, w().u16(rsassa).u16(0x0b).b, ReasonMalformedSignature},
		{"rsassa sig beyond end", rs, w().u16(rsassa).u16(0x0b).u16(257).raw(make([]byte, 256)...).b, ReasonMalformedSignature},
		{"rsassa sig over 4096 bytes", rs, rsaSig(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA256, make([]byte, 4097)), ReasonMalformedSignature},
		{"rsassa trailing byte", rs, append(bytes.Clone(rsGood), 0), ReasonMalformedSignature},
		{"ecdsa r zero", ec, ecdsaSig(tpm2.TPMAlgSHA256, nil, s32), ReasonSignature},
		{"ecdsa r above the order", ec, ecdsaSig(tpm2.TPMAlgSHA256, append([]byte{1}, r32...), s32), ReasonSignature},
		{"ecdsa s all ones", ec, ecdsaSig(tpm2.TPMAlgSHA256, r32, bytes.Repeat([]byte{0xff}, 32)), ReasonSignature},
		{"rsassa sig zero", rs, rsaSig(tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA256, make([]byte, 256)), ReasonSignature},
	}
	pcrs := testPCRs()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkSignature(t, c.sig)
			a := mustParseAK(t, c.signer.akPub)
			if got, want := ReasonOf(a.verifySignature(attest, c.sig)), ReasonOf(refVerifySignature(a, attest, c.sig)); got != want {
				t.Fatalf("reason %v, previously %v", got, want)
			}
			_, err := Verify(c.signer.akPub, attest, c.sig, nonce, pcrs)
			if c.reason == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			expectReason(t, err, c.reason)
		})
	}
}

// TestResultOwnsItsBytes checks that the result shares no memory with the
// caller's input and that its slices cannot overwrite one another.
func TestResultOwnsItsBytes(t *testing.T) {
	k := ecKey(t, elliptic.P256())
	ak, _ := SoftwareAK(&k.PublicKey)
	pcrs := testPCRs()
	attest, sig, err := SignQuote(k, pcrs, sel, nonce, ClockInfo{Clock: 1})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Verify(ak, attest, sig, nonce, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	want := *res
	want.PCRDigest, want.ExtraData = bytes.Clone(res.PCRDigest), bytes.Clone(res.ExtraData)
	pcr0 := bytes.Clone(res.PCRs[0])
	for i := range attest {
		attest[i] = 0
	}
	for _, v := range pcrs {
		v[0] ^= 0xff
	}
	_ = append(res.PCRDigest, 0xee)
	_ = append(res.ExtraData, 0xee)
	_ = append(res.PCRs[0], 0xee)
	_ = append(res.Selection[0].PCRs, 99)
	if !bytes.Equal(res.PCRDigest, want.PCRDigest) || !bytes.Equal(res.ExtraData, want.ExtraData) ||
		!bytes.Equal(res.PCRs[0], pcr0) || len(res.QualifiedSigner) != 34 || res.QualifiedSigner[0] != 0 {
		t.Fatal("result changed with the caller's buffers or through an append")
	}
	if !bytes.Equal(res.PCRs[1][:1], []byte{1}) {
		t.Fatal("PCR 1 overwritten")
	}
}

func FuzzDecodeAttest(f *testing.F) {
	for _, s := range attestSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add(new(attestBuilder).header(stQuote, 2).u32(0).b2(nil).b)
	pcrs := testPCRs()
	banks := map[uint16]map[uint32][]byte{0x04: sha1Bank(), 0x0B: pcrs}
	a := mustParseAK(f, ecSigner(f, elliptic.P256()).akPub)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAttest(t, b)
		qd := nonce
		if at, err := decodeAttest(b); err == nil {
			qd = at.ExtraData
		}
		checkVerifyAttest(t, a, b, qd, pcrs, banks)
	})
}

func FuzzDecodeSignature(f *testing.F) {
	attest := tpm2.Marshal(attestStruct(f, crypto.SHA256, testPCRs()))
	for _, s := range signatureSeeds(f, attest) {
		f.Add(s)
	}
	f.Add([]byte{})
	ec := ecSigner(f, elliptic.P256())
	ecAK := mustParseAK(f, ec.akPub)
	rsAK := mustParseAK(f, rsaSigner(f, tpm2.TPMAlgRSASSA).akPub)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkSignature(t, b)
		for _, a := range []*AK{ecAK, rsAK} {
			if got, want := ReasonOf(a.verifySignature(attest, b)), ReasonOf(refVerifySignature(a, attest, b)); got != want {
				t.Fatalf("reason %v, previously %v", got, want)
			}
		}
	})
}

// BenchmarkDecode is the two decoders alone (the previous go-tpm path took
// about 50 µs and hundreds of allocations for the attestation).
func BenchmarkDecode(b *testing.B) {
	k := ecKey(b, elliptic.P256())
	attest, sig, err := SignQuote(k, testPCRs(), sel, nonce, ClockInfo{Clock: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("attest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeAttest(attest); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("signature", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeSignature(sig); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("attest-gotpm", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := unmarshal[tpm2.TPMSAttest](attest); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("signature-gotpm", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := refDecodeSignature(sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}
