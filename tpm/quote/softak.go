package quote

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"sort"

	"github.com/google/go-tpm/tpm2"
)

// A software AK produces quotes in the TPM's wire format from a key held in
// memory. It exists for load generation and tests: anything it signs proves
// nothing about a machine, and a verifier must only accept AKs bound to a
// TPM's EK by credential activation.

func softwareScheme(curve elliptic.Curve) (tpm2.TPMECCCurve, tpm2.TPMAlgID, crypto.Hash, error) {
	switch curve {
	case elliptic.P256():
		return tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256, crypto.SHA256, nil
	case elliptic.P384():
		return tpm2.TPMECCNistP384, tpm2.TPMAlgSHA384, crypto.SHA384, nil
	}
	return 0, 0, 0, fmt.Errorf("quote: software AK: unsupported curve %v", curve.Params().Name)
}

// SoftwareAK returns the marshalled TPMT_PUBLIC of a restricted ECDSA signing
// key (P-256 with SHA-256, or P-384 with SHA-384) for pub, with the
// attributes a TPM-resident AK has.
func SoftwareAK(pub *ecdsa.PublicKey) ([]byte, error) {
	curveID, hashAlg, _, err := softwareScheme(pub.Curve)
	if err != nil {
		return nil, err
	}
	x, y, err := pointXY(pub)
	if err != nil {
		return nil, err
	}
	t := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			Restricted:          true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: hashAlg}),
			},
			CurveID: curveID,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x},
			Y: tpm2.TPM2BECCParameter{Buffer: y},
		}),
	}
	return tpm2.Marshal(t), nil
}

// pointXY returns the fixed-size big-endian coordinates of an ECDSA key.
func pointXY(pub *ecdsa.PublicKey) (x, y []byte, err error) {
	b, err := pub.Bytes()
	if err != nil {
		return nil, nil, fmt.Errorf("quote: software AK: %w", err)
	}
	n := (len(b) - 1) / 2
	return b[1 : 1+n], b[1+n:], nil
}

// PCRDigest computes a quote's PCR digest: the hash of the selected PCR
// values concatenated in ascending PCR order.
func PCRDigest(h crypto.Hash, pcrs map[uint32][]byte, sel PCRSelection) ([]byte, error) {
	idx := append([]uint32(nil), sel.PCRs...)
	sort.Slice(idx, func(i, j int) bool { return idx[i] < idx[j] })
	d := h.New()
	for i, p := range idx {
		if i > 0 && idx[i-1] == p {
			continue
		}
		v, ok := pcrs[p]
		if !ok {
			return nil, fmt.Errorf("quote: PCR %d selected but not supplied", p)
		}
		d.Write(v)
	}
	return d.Sum(nil), nil
}

func selectionBitmap(pcrs []uint32) ([]byte, error) {
	bm := make([]byte, 3) // TPMs select at least 24 PCRs
	for _, p := range pcrs {
		if p >= 8*255 {
			return nil, fmt.Errorf("quote: PCR index %d out of range", p)
		}
		for int(p/8) >= len(bm) {
			bm = append(bm, 0)
		}
		bm[p/8] |= 1 << (p % 8)
	}
	return bm, nil
}

// SignQuote produces a TPMS_ATTEST quote over the selected PCRs and its
// TPMT_SIGNATURE with a software AK (see SoftwareAK), in the exact wire
// format a TPM uses, so that Verify accepts it with SoftwareAK(&key.PublicKey).
func SignQuote(key *ecdsa.PrivateKey, pcrs map[uint32][]byte, sel PCRSelection, extraData []byte, clock ClockInfo) (attest, sig []byte, err error) {
	_, hashAlg, h, err := softwareScheme(key.Curve)
	if err != nil {
		return nil, nil, err
	}
	akPub, err := SoftwareAK(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	name, err := AKName(akPub)
	if err != nil {
		return nil, nil, err
	}
	// The signer as a TPM reports an owner-hierarchy primary.
	qn, err := OwnerPrimaryQualifiedName(name)
	if err != nil {
		return nil, nil, err
	}
	digest, err := PCRDigest(h, pcrs, sel)
	if err != nil {
		return nil, nil, err
	}
	bm, err := selectionBitmap(sel.PCRs)
	if err != nil {
		return nil, nil, err
	}
	at := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: qn},
		ExtraData:       tpm2.TPM2BData{Buffer: extraData},
		ClockInfo: tpm2.TPMSClockInfo{Clock: clock.Clock, ResetCount: clock.ResetCount,
			RestartCount: clock.RestartCount, Safe: clock.Safe},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
				{Hash: tpm2.TPMAlgID(sel.Alg), PCRSelect: bm},
			}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: digest},
		}),
	}
	attest = tpm2.Marshal(at)
	sig, err = signECDSA(key, hashAlg, h, attest)
	return attest, sig, err
}

// signECDSA signs data as a TPM does with an ECDSA key and returns the
// marshalled TPMT_SIGNATURE.
func signECDSA(key *ecdsa.PrivateKey, hashAlg tpm2.TPMAlgID, h crypto.Hash, data []byte) ([]byte, error) {
	d := h.New()
	d.Write(data)
	r, s, err := ecdsa.Sign(rand.Reader, key, d.Sum(nil))
	if err != nil {
		return nil, fmt.Errorf("quote: sign: %w", err)
	}
	size := (key.Curve.Params().BitSize + 7) / 8
	rb, sb := make([]byte, size), make([]byte, size)
	r.FillBytes(rb)
	s.FillBytes(sb)
	return tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       hashAlg,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: rb},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: sb},
		}),
	}), nil
}
