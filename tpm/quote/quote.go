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
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"math/big"
	"math/bits"
	"slices"

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
	return a.verify(attest, signature, qualifyingData, pcrSource{single: pcrs})
}

// VerifyBanks is the package-level VerifyBanks with an already parsed AK.
func (a *AK) VerifyBanks(attest, signature, qualifyingData []byte, pcrs map[uint16]map[uint32][]byte) (*Result, error) {
	return a.verify(attest, signature, qualifyingData, pcrSource{banks: pcrs, multi: true})
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
	if sig.Alg != a.scheme {
		return fail(ReasonMalformedSignature, nil, "signature scheme 0x%04x, AK scheme 0x%04x", uint16(sig.Alg), uint16(a.scheme))
	}
	if sig.Hash != a.hash {
		return fail(ReasonMalformedSignature, nil, "signature hash 0x%04x, AK scheme hash 0x%04x", uint16(sig.Hash), uint16(a.hash))
	}
	h, _ := algHash(a.hash)
	var buf [64]byte
	digest := sum(h, attest, &buf)
	switch a.scheme {
	case tpm2.TPMAlgECDSA:
		if !verifyECDSA(a.key.(*ecdsa.PublicKey), digest, sig.R, sig.S) {
			return fail(ReasonSignature, nil, "ECDSA")
		}
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		pk := a.key.(*rsa.PublicKey)
		if a.scheme == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(pk, h, digest, sig.Sig)
		} else {
			err = rsa.VerifyPSS(pk, h, digest, sig.Sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: h})
		}
		if err != nil {
			return fail(ReasonSignature, err, "RSA")
		}
	}
	return nil
}

// sum returns the h digest of data, computed into buf (h is one algHash
// names; 64 bytes hold any of them).
func sum(h crypto.Hash, data []byte, buf *[64]byte) []byte {
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(data)
		return buf[:copy(buf[:], d[:])]
	case crypto.SHA384:
		d := sha512.Sum384(data)
		return buf[:copy(buf[:], d[:])]
	case crypto.SHA512:
		d := sha512.Sum512(data)
		return buf[:copy(buf[:], d[:])]
	}
	d := h.New()
	d.Write(data)
	return d.Sum(nil)
}

// verifyECDSA is ecdsa.Verify with r and s given as the TPM's unsigned
// big-endian byte strings (leading zeros allowed): it builds the DER
// SEQUENCE { INTEGER r, INTEGER s } that ecdsa.Verify builds from big.Ints,
// without the big.Ints. A zero r or s fails, as in ecdsa.Verify; so does one
// with more bytes than the curve order (it cannot be below the order).
func verifyECDSA(pub *ecdsa.PublicKey, digest, r, s []byte) bool {
	r, s = trimZeros(r), trimZeros(s)
	size := (pub.Curve.Params().BitSize + 7) / 8
	if len(r) == 0 || len(s) == 0 || len(r) > size || len(s) > size {
		return false
	}
	if size > 60 {
		// The short DER length form below holds integers of up to 60
		// bytes (P-256 and P-384 need 32 and 48).
		return ecdsa.Verify(pub, digest, new(big.Int).SetBytes(r), new(big.Int).SetBytes(s))
	}
	var buf [128]byte
	der := append(buf[:0], 0x30, 0)
	der = appendASN1Uint(der, r)
	der = appendASN1Uint(der, s)
	der[1] = byte(len(der) - 2)
	return ecdsa.VerifyASN1(pub, digest, der)
}

func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// appendASN1Uint appends the DER INTEGER of v, a non-zero unsigned
// big-endian number without leading zeros of at most 126 bytes.
func appendASN1Uint(der, v []byte) []byte {
	if v[0]&0x80 != 0 {
		return append(append(der, 0x02, byte(len(v)+1), 0), v...)
	}
	return append(append(der, 0x02, byte(len(v))), v...)
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

// pcrSource is where verify finds the supplied PCR values: one bank's
// values (Verify, which refuses a quote over several banks) or values per
// bank (VerifyBanks).
type pcrSource struct {
	single map[uint32][]byte
	banks  map[uint16]map[uint32][]byte
	multi  bool
}

func (p pcrSource) bank(alg uint16) map[uint32][]byte {
	if p.multi {
		return p.banks[alg]
	}
	return p.single
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

func (a *AK) verify(attest, signature, qualifyingData []byte, values pcrSource) (*Result, error) {
	if err := a.verifySignature(attest, signature); err != nil {
		return nil, err
	}
	// The signature is good: from here on the bytes come from the TPM (or
	// from whoever holds a key we were told is a TPM AK).
	return a.verifyAttest(attest, qualifyingData, values)
}

// verifyAttest is verify after the signature check.
func (a *AK) verifyAttest(attest, qualifyingData []byte, values pcrSource) (*Result, error) {
	if len(attest) < 4 {
		return nil, fail(ReasonMalformedAttest, nil, "%d bytes", len(attest))
	}
	if m := binary.BigEndian.Uint32(attest); m != uint32(tpm2.TPMGeneratedValue) {
		return nil, fail(ReasonMagic, nil, "magic 0x%08x", m)
	}
	at, err := decodeAttest(attest)
	if te, ok := err.(*attestTypeError); ok {
		// Not a quote. Which error it is depends on whether the rest of
		// the structure is well formed; that is go-tpm's to say (this is
		// a failure path, so its cost does not matter).
		if _, err := unmarshal[tpm2.TPMSAttest](attest); err != nil {
			return nil, fail(ReasonMalformedAttest, err, "decode TPMS_ATTEST")
		}
		return nil, fail(ReasonNotQuote, nil, "attestation type 0x%04x", te.Type)
	}
	if err != nil {
		return nil, fail(ReasonMalformedAttest, err, "decode TPMS_ATTEST")
	}
	if len(at.ExtraData) != len(qualifyingData) ||
		subtle.ConstantTimeCompare(at.ExtraData, qualifyingData) != 1 {
		return nil, fail(ReasonQualifyingData, nil, "")
	}
	h, _ := algHash(a.hash)
	res := &Result{
		Clock:           at.Clock,
		FirmwareVersion: at.FirmwareVersion,
		Banks:           map[uint16]map[uint32][]byte{},
		HashAlg:         h,
	}
	if at.SelectionCount > 0 {
		// One allocation holds the PCR indices of all selections.
		total := 0
		sel := at.Selections
		for range at.SelectionCount {
			var bm []byte
			_, bm, sel = nextSelection(sel)
			for _, b := range bm {
				total += bits.OnesCount8(b)
			}
		}
		var idx []uint32
		if total > 0 {
			idx = make([]uint32, 0, total)
		}
		res.Selection = make([]PCRSelection, at.SelectionCount)
		sel = at.Selections
		for i := range res.Selection {
			alg, bm, rest := nextSelection(sel)
			sel = rest
			start := len(idx)
			for j, b := range bm {
				for ; b != 0; b &= b - 1 {
					idx = append(idx, uint32(j*8+bits.TrailingZeros8(b)))
				}
			}
			res.Selection[i].Alg = alg
			if len(idx) > start {
				res.Selection[i].PCRs = idx[start:len(idx):len(idx)]
			}
		}
	}
	if !values.multi {
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
	}
	// The quoted values are copied, in quote order, into one buffer, which
	// is both what the PCR digest is computed over and where the result's
	// values live. Size it for the values that will be copied.
	need := 0
	for _, s := range res.Selection {
		size := pcrBankSize(tpm2.TPMAlgID(s.Alg))
		if len(s.PCRs) == 0 || size == 0 {
			continue
		}
		bank := values.bank(s.Alg)
		for _, p := range s.PCRs {
			if v, ok := bank[p]; ok && len(v) == size {
				need += size
			}
		}
	}
	// One allocation holds the result's three byte fields and, after them,
	// the quoted values (full slice expressions keep them apart).
	nd, ne, nq := len(at.PCRDigest), len(at.ExtraData), len(at.QualifiedSigner)
	quoted := make([]byte, 0, nd+ne+nq+need)
	quoted = append(quoted, at.PCRDigest...)
	quoted = append(quoted, at.ExtraData...)
	quoted = append(quoted, at.QualifiedSigner...)
	res.PCRDigest = quoted[:nd:nd]
	res.ExtraData = quoted[nd : nd+ne : nd+ne]
	res.QualifiedSigner = quoted[nd+ne : nd+ne+nq : nd+ne+nq]
	quoted = quoted[nd+ne+nq:]
	var missing []uint32
	for _, s := range res.Selection {
		if len(s.PCRs) == 0 {
			continue
		}
		size := pcrBankSize(tpm2.TPMAlgID(s.Alg))
		if size == 0 {
			return nil, fail(ReasonMalformedAttest, nil, "PCR bank 0x%04x", s.Alg)
		}
		bank := values.bank(s.Alg)
		out := res.Banks[s.Alg]
		if out == nil {
			out = make(map[uint32][]byte, len(s.PCRs))
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
			start := len(quoted)
			quoted = append(quoted, v...)
			out[p] = quoted[start:len(quoted):len(quoted)]
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		e := fail(ReasonPCRMissing, nil, "PCRs %v", missing)
		e.PCRs = missing
		return nil, e
	}
	var buf [64]byte
	if got := sum(h, quoted, &buf); subtle.ConstantTimeCompare(got, at.PCRDigest) != 1 {
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
