// Package credential is the verifier's side of TPM credential activation
// (TPM 2.0 Part 1, "Credential Protection"): it seals a secret to an
// endorsement key so that only the TPM holding that EK can recover it, and
// only through TPM2_ActivateCredential on a loaded key whose name is the one
// the secret was made for. The verifier uses it at enrollment to learn that
// an AK lives in the same TPM as the EK it was shown. It is pure: no device.
package credential

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// MaxSecretSize is the largest secret Make accepts: the credential travels
// as a TPM2B_DIGEST, which the TPM bounds by the EK name algorithm's digest
// size (SHA-256 for the default EK templates).
const MaxSecretSize = 32

// Errors Make returns (wrapped) for bad input.
var (
	ErrUnsupportedKey = errors.New("unsupported endorsement key")
	ErrBadName        = errors.New("bad ak name")
	ErrBadSecret      = errors.New("bad secret")
)

// Make seals secret to the endorsement key ekPub (RSA 2048 or ECC P-256,
// with the TCG default EK template's AES-128-CFB / SHA-256 parameters) for
// the key named akName (its TPM name: algorithm ID || digest). It returns
// the marshalled TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET, size prefixes
// included, as tpm.(*TPM).ActivateCredential takes them.
func Make(ekPub crypto.PublicKey, akName []byte, secret []byte) (credBlob, encSecret []byte, err error) {
	ekTemplate, err := defaultEKPublic(ekPub)
	if err != nil {
		return nil, nil, err
	}
	return seal(rand.Reader, ekTemplate, akName, secret)
}

// MakeForPublic is Make for an EK given as its marshalled TPMT_PUBLIC, for
// endorsement keys whose template is not a TCG default one (the template's
// name algorithm and symmetric parameters are used).
func MakeForPublic(ekPublic []byte, akName []byte, secret []byte) (credBlob, encSecret []byte, err error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPublic)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: parse ek public area: %v", ErrUnsupportedKey, err)
	}
	return seal(rand.Reader, pub, akName, secret)
}

func seal(rnd io.Reader, ek *tpm2.TPMTPublic, akName, secret []byte) ([]byte, []byte, error) {
	if err := checkName(akName); err != nil {
		return nil, nil, err
	}
	if len(secret) == 0 || len(secret) > MaxSecretSize {
		return nil, nil, fmt.Errorf("%w: %d bytes, want 1-%d", ErrBadSecret, len(secret), MaxSecretSize)
	}
	key, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	idObject, seed, err := tpm2.CreateCredential(rnd, key, akName, secret)
	if err != nil {
		return nil, nil, fmt.Errorf("make credential: %w", err)
	}
	return sized(idObject), sized(seed), nil
}

// checkName insists on a TPM object name with a known name algorithm and a
// digest of its size, so a verifier cannot seal to a malformed name by
// mistake (the TPM would never match it).
func checkName(name []byte) error {
	if len(name) < 2 {
		return fmt.Errorf("%w: %d bytes", ErrBadName, len(name))
	}
	alg := tpm2.TPMAlgID(binary.BigEndian.Uint16(name))
	h, err := alg.Hash()
	if err != nil {
		return fmt.Errorf("%w: name algorithm 0x%04x: %v", ErrBadName, uint16(alg), err)
	}
	if len(name) != 2+h.Size() {
		return fmt.Errorf("%w: %d bytes, want %d for name algorithm 0x%04x", ErrBadName, len(name), 2+h.Size(), uint16(alg))
	}
	return nil
}

// defaultEKPublic builds the public area of an EK from its key, assuming the
// TCG default low-range template (L-1 RSA 2048 or L-2 ECC P-256).
func defaultEKPublic(pub crypto.PublicKey) (*tpm2.TPMTPublic, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() != 2048 {
			return nil, fmt.Errorf("%w: rsa %d bits, the default ek template is rsa 2048", ErrUnsupportedKey, k.N.BitLen())
		}
		if k.E != 65537 {
			return nil, fmt.Errorf("%w: rsa exponent %d, the default ek template uses 65537", ErrUnsupportedKey, k.E)
		}
		t := tpm2.RSAEKTemplate
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, 256))})
		return &t, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ecc curve %s, the default ek template is p-256", ErrUnsupportedKey, k.Curve.Params().Name)
		}
		pt, err := k.Bytes()
		if err != nil || len(pt) != 65 {
			return nil, fmt.Errorf("%w: invalid p-256 point", ErrUnsupportedKey)
		}
		t := tpm2.ECCEKTemplate
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: pt[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: pt[33:]},
		})
		return &t, nil
	case nil:
		return nil, fmt.Errorf("%w: nil key", ErrUnsupportedKey)
	}
	return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, pub)
}

// sized prefixes b with its 16-bit big-endian length (a TPM2B).
func sized(b []byte) []byte {
	out := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
	return append(out, b...)
}
