// Package quote verifies TPM 2.0 quotes (TPM2_Quote output) without a TPM:
// it takes the marshalled AK public area, TPMS_ATTEST and TPMT_SIGNATURE and
// returns what the TPM attested, or a typed error (see Reason).
//
// Verify checks, in order: the AK is a well-formed RSA or ECC restricted
// signing key; the signature uses the AK's scheme and verifies over the
// attestation bytes; the attestation carries TPM_GENERATED_VALUE (a
// restricted key only signs data the TPM produced itself, so an attest that
// lacks the magic was not signed by a TPM); it is a quote; its extraData is
// the caller's qualifying data; and the supplied PCR values hash to the
// quoted PCR digest. Only Result.PCRs (the quoted values) are evidence.
package quote

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"math/big"
	"sort"

	// Hashes a TPM may name.
	_ "crypto/sha256"
	_ "crypto/sha512"

	"github.com/google/go-tpm/tpm2"
)

// PCRSelection is one bank's selected PCRs in a quote.
type PCRSelection struct {
	// Alg is the bank's TPM_ALG_ID (0x000B = SHA-256).
	Alg  uint16
	PCRs []uint32
}

// ClockInfo is the TPMS_CLOCK_INFO of an attestation.
type ClockInfo struct {
	// Clock is milliseconds the TPM has been powered since its last Clear.
	Clock        uint64
	ResetCount   uint32
	RestartCount uint32
	// Safe is false when the TPM may have reported a larger Clock before.
	Safe bool
}

// Result is what a verified quote attests.
type Result struct {
	Selection       []PCRSelection
	PCRDigest       []byte
	ExtraData       []byte
	QualifiedSigner []byte
	Clock           ClockInfo
	FirmwareVersion uint64
	// PCRs holds the supplied values of the quoted PCRs of the quoted bank
	// (Verify) — the only PCR values the quote vouches for.
	PCRs map[uint32][]byte
	// Banks holds the quoted values per bank (TPM_ALG_ID → PCR → value).
	Banks map[uint16]map[uint32][]byte
	// HashAlg is the hash of the signature scheme (also the PCR digest's).
	HashAlg crypto.Hash
}

// AK is a parsed and checked attestation key. Parse it once (ParseAK) and
// reuse it to verify many quotes.
type AK struct {
	public []byte
	pub    *tpm2.TPMTPublic
	key    crypto.PublicKey
	scheme tpm2.TPMAlgID // RSASSA, RSAPSS or ECDSA
	hash   tpm2.TPMAlgID
}

// unmarshal decodes a TPM structure, turning a panic of the decoder into an
// error, and requires the bytes to be exactly the canonical encoding.
func unmarshal[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte) (v *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("decoder panic: %v", r)
		}
	}()
	v, err = tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, err
	}
	if re := tpm2.Marshal(*v); !bytes.Equal(re, b) {
		return nil, fmt.Errorf("%d bytes given, canonical encoding is %d bytes", len(b), len(re))
	}
	return v, nil
}

// decodeSignature decodes a TPMT_SIGNATURE and requires it to fill b
// exactly; the length is checked by arithmetic rather than by re-encoding.
func decodeSignature(b []byte) (sig *tpm2.TPMTSignature, err error) {
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

func algHash(a tpm2.TPMAlgID) (crypto.Hash, bool) {
	switch a {
	case tpm2.TPMAlgSHA256:
		return crypto.SHA256, true
	case tpm2.TPMAlgSHA384:
		return crypto.SHA384, true
	case tpm2.TPMAlgSHA512:
		return crypto.SHA512, true
	}
	return 0, false
}

// pcrBankSize is the digest size of a PCR bank (SHA-1 banks may be quoted
// even though a SHA-1 signature scheme is not accepted).
func pcrBankSize(a tpm2.TPMAlgID) int {
	if a == tpm2.TPMAlgSHA1 {
		return 20
	}
	if h, ok := algHash(a); ok {
		return h.Size()
	}
	return 0
}

func parseAK(akPublic []byte) (*AK, error) {
	pub, err := unmarshal[tpm2.TPMTPublic](akPublic)
	if err != nil {
		return nil, fail(ReasonMalformedAK, err, "decode TPMT_PUBLIC")
	}
	if _, ok := algHash(pub.NameAlg); !ok {
		return nil, fail(ReasonUnsupportedKey, nil, "name algorithm 0x%04x", uint16(pub.NameAlg))
	}
	a := &AK{pub: pub, public: bytes.Clone(akPublic)}
	switch pub.Type {
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, fail(ReasonMalformedAK, err, "ECC parameters")
		}
		var curve elliptic.Curve
		switch parms.CurveID {
		case tpm2.TPMECCNistP256:
			curve = elliptic.P256()
		case tpm2.TPMECCNistP384:
			curve = elliptic.P384()
		default:
			return nil, fail(ReasonUnsupportedKey, nil, "ECC curve 0x%04x", uint16(parms.CurveID))
		}
		if parms.Scheme.Scheme != tpm2.TPMAlgECDSA {
			return nil, fail(ReasonUnsupportedKey, nil, "ECC signing scheme 0x%04x (want ECDSA)", uint16(parms.Scheme.Scheme))
		}
		s, err := parms.Scheme.Details.ECDSA()
		if err != nil {
			return nil, fail(ReasonMalformedAK, err, "ECDSA scheme")
		}
		a.scheme, a.hash = tpm2.TPMAlgECDSA, s.HashAlg
		pt, err := pub.Unique.ECC()
		if err != nil {
			return nil, fail(ReasonMalformedAK, err, "ECC point")
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(pt.X.Buffer) > size || len(pt.Y.Buffer) > size {
			return nil, fail(ReasonMalformedAK, nil, "ECC coordinates longer than %d bytes", size)
		}
		enc := make([]byte, 1+2*size)
		enc[0] = 4
		copy(enc[1+size-len(pt.X.Buffer):], pt.X.Buffer)
		copy(enc[1+2*size-len(pt.Y.Buffer):], pt.Y.Buffer)
		k, err := ecdsa.ParseUncompressedPublicKey(curve, enc)
		if err != nil {
			return nil, fail(ReasonMalformedAK, err, "ECC point")
		}
		a.key = k
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, fail(ReasonMalformedAK, err, "RSA parameters")
		}
		switch parms.Scheme.Scheme {
		case tpm2.TPMAlgRSASSA:
			s, err := parms.Scheme.Details.RSASSA()
			if err != nil {
				return nil, fail(ReasonMalformedAK, err, "RSASSA scheme")
			}
			a.hash = s.HashAlg
		case tpm2.TPMAlgRSAPSS:
			s, err := parms.Scheme.Details.RSAPSS()
			if err != nil {
				return nil, fail(ReasonMalformedAK, err, "RSAPSS scheme")
			}
			a.hash = s.HashAlg
		default:
			return nil, fail(ReasonUnsupportedKey, nil, "RSA signing scheme 0x%04x (want RSASSA or RSAPSS)", uint16(parms.Scheme.Scheme))
		}
		a.scheme = parms.Scheme.Scheme
		if parms.KeyBits < 2048 || parms.KeyBits > 8192 {
			return nil, fail(ReasonUnsupportedKey, nil, "RSA key of %d bits", parms.KeyBits)
		}
		n, err := pub.Unique.RSA()
		if err != nil {
			return nil, fail(ReasonMalformedAK, err, "RSA modulus")
		}
		mod := new(big.Int).SetBytes(n.Buffer)
		if mod.BitLen() != int(parms.KeyBits) || mod.Bit(0) == 0 {
			return nil, fail(ReasonMalformedAK, nil, "RSA modulus of %d bits for a %d-bit key", mod.BitLen(), parms.KeyBits)
		}
		e := int(parms.Exponent)
		if e == 0 {
			e = 65537
		}
		if e < 3 || e&1 == 0 || parms.Exponent > 1<<31-1 {
			return nil, fail(ReasonMalformedAK, nil, "RSA exponent %d", parms.Exponent)
		}
		a.key = &rsa.PublicKey{N: mod, E: e}
	default:
		return nil, fail(ReasonUnsupportedKey, nil, "key type 0x%04x", uint16(pub.Type))
	}
	if _, ok := algHash(a.hash); !ok {
		return nil, fail(ReasonUnsupportedKey, nil, "signature hash 0x%04x", uint16(a.hash))
	}
	attrs := pub.ObjectAttributes
	if !attrs.Restricted || !attrs.SignEncrypt || attrs.Decrypt {
		return nil, fail(ReasonAKNotRestricted, nil, "restricted=%v sign=%v decrypt=%v",
			attrs.Restricted, attrs.SignEncrypt, attrs.Decrypt)
	}
	return a, nil
}

// ParseAK decodes and checks a marshalled TPMT_PUBLIC of an attestation key
// (see ParseAKPublic).
func ParseAK(akPublic []byte) (*AK, error) { return parseAK(akPublic) }

// PublicKey returns the AK's *ecdsa.PublicKey or *rsa.PublicKey.
func (a *AK) PublicKey() crypto.PublicKey { return a.key }

// Name returns the AK's TPM Name (see AKName).
func (a *AK) Name() []byte {
	n, _ := AKName(a.public)
	return n
}

// Verify is the package-level Verify with an already parsed AK.
func (a *AK) Verify(attest, signature, qualifyingData []byte, pcrs map[uint32][]byte) (*Result, error) {
	return a.verify(attest, signature, qualifyingData, singleBank(pcrs))
}

// VerifyBanks is the package-level VerifyBanks with an already parsed AK.
func (a *AK) VerifyBanks(attest, signature, qualifyingData []byte, pcrs map[uint16]map[uint32][]byte) (*Result, error) {
	return a.verify(attest, signature, qualifyingData, func([]PCRSelection) (map[uint16]map[uint32][]byte, error) {
		return pcrs, nil
	})
}

// ParseAKPublic decodes a marshalled TPMT_PUBLIC of an attestation key and
// returns its *ecdsa.PublicKey or *rsa.PublicKey. It applies the same checks
// as Verify (restricted signing key, supported curve/scheme/size).
func ParseAKPublic(akPublic []byte) (crypto.PublicKey, error) {
	a, err := parseAK(akPublic)
	if err != nil {
		return nil, err
	}
	return a.key, nil
}

// AKName returns the TPM Name of a key: its nameAlg (2 bytes, big-endian)
// followed by the nameAlg hash of the marshalled TPMT_PUBLIC.
func AKName(akPublic []byte) ([]byte, error) {
	pub, err := unmarshal[tpm2.TPMTPublic](akPublic)
	if err != nil {
		return nil, fail(ReasonMalformedAK, err, "decode TPMT_PUBLIC")
	}
	h, ok := algHash(pub.NameAlg)
	if !ok {
		return nil, fail(ReasonUnsupportedKey, nil, "name algorithm 0x%04x", uint16(pub.NameAlg))
	}
	name := make([]byte, 2, 2+h.Size())
	binary.BigEndian.PutUint16(name, uint16(pub.NameAlg))
	hh := h.New()
	hh.Write(akPublic)
	return hh.Sum(name), nil
}

func (a *AK) verifySignature(attest, signature []byte) error {
	sig, err := decodeSignature(signature)
	if err != nil {
		return fail(ReasonMalformedSignature, err, "decode TPMT_SIGNATURE")
	}
	if sig.SigAlg != a.scheme {
		return fail(ReasonMalformedSignature, nil, "signature scheme 0x%04x, AK scheme 0x%04x", uint16(sig.SigAlg), uint16(a.scheme))
	}
	h, _ := algHash(a.hash)
	switch a.scheme {
	case tpm2.TPMAlgECDSA:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return fail(ReasonMalformedSignature, err, "ECDSA signature")
		}
		if s.Hash != a.hash {
			return fail(ReasonMalformedSignature, nil, "signature hash 0x%04x, AK scheme hash 0x%04x", uint16(s.Hash), uint16(a.hash))
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
			return fail(ReasonMalformedSignature, nil, "signature hash 0x%04x, AK scheme hash 0x%04x", uint16(s.Hash), uint16(a.hash))
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

// Verify verifies a TPM2_Quote: akPublic is the AK's marshalled TPMT_PUBLIC,
// attest the marshalled TPMS_ATTEST (the quoted bytes), signature the
// marshalled TPMT_SIGNATURE, qualifyingData the expected extraData (the
// nonce or payload hash) and pcrs the values of the quoted bank. Failures
// are *Error values matching the Err... sentinels.
func Verify(akPublic, attest, signature, qualifyingData []byte, pcrs map[uint32][]byte) (*Result, error) {
	a, err := parseAK(akPublic)
	if err != nil {
		return nil, err
	}
	return a.Verify(attest, signature, qualifyingData, pcrs)
}

func singleBank(pcrs map[uint32][]byte) func([]PCRSelection) (map[uint16]map[uint32][]byte, error) {
	return func(sel []PCRSelection) (map[uint16]map[uint32][]byte, error) {
		var bank uint16
		n := 0
		for _, s := range sel {
			if len(s.PCRs) > 0 && (n == 0 || s.Alg != bank) {
				bank = s.Alg
				n++
			}
		}
		if n > 1 {
			return nil, fail(ReasonPCRMissing, nil, "quote selects %d banks; use VerifyBanks", n)
		}
		return map[uint16]map[uint32][]byte{bank: pcrs}, nil
	}
}

// VerifyBanks is Verify for a quote over several banks: pcrs maps a bank's
// TPM_ALG_ID to its PCR values.
func VerifyBanks(akPublic, attest, signature, qualifyingData []byte, pcrs map[uint16]map[uint32][]byte) (*Result, error) {
	a, err := parseAK(akPublic)
	if err != nil {
		return nil, err
	}
	return a.VerifyBanks(attest, signature, qualifyingData, pcrs)
}

func (a *AK) verify(attest, signature, qualifyingData []byte,
	values func([]PCRSelection) (map[uint16]map[uint32][]byte, error)) (*Result, error) {
	if err := a.verifySignature(attest, signature); err != nil {
		return nil, err
	}
	// The signature is good: from here on the bytes come from the TPM (or
	// from whoever holds a key we were told is a TPM AK).
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
	if len(at.ExtraData.Buffer) != len(qualifyingData) ||
		subtle.ConstantTimeCompare(at.ExtraData.Buffer, qualifyingData) != 1 {
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
	vals, err := values(res.Selection)
	if err != nil {
		return nil, err
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
				return nil, fail(ReasonPCRDigest, nil, "PCR %d value is %d bytes, bank 0x%04x has %d", p, len(v), s.Alg, size)
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
	if got := d.Sum(nil); subtle.ConstantTimeCompare(got, q.PCRDigest.Buffer) != 1 {
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
