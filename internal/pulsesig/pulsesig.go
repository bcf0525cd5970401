// Package pulsesig signs and verifies pulse payloads with the private key of
// the agent's mTLS certificate, so a pulse is bound to the key the TLS
// channel proved (docs/threat-model.md, pipeline step 2).
//
// The signed message is domain-separated:
//
//	message = "PULSE-v1-PAYLOAD-SIGNATURE\x00" || SHA-256(payload)
//
// (27 + 32 = 59 bytes). The prefix means a pulse signature can never be
// replayed as, or forged from, a signature the same key makes in another
// protocol: the TLS 1.3 CertificateVerify message starts with 64 spaces and
// its own context string, and a plain signature over SHA-256(payload) or over
// the payload itself does not verify here.
//
// Per key type:
//
//   - ECDSA P-256 / P-384: ASN.1 DER signature over SHA-256(message).
//   - Ed25519: pure Ed25519 over message.
//   - RSA (>= 2048 bits): RSASSA-PSS, SHA-256 over message, MGF1-SHA-256,
//     salt length 32 (= hash length).
//
// The package is pure: no I/O, no logging.
package pulsesig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
)

// Domain is the domain-separation prefix of every signed message.
const Domain = "PULSE-v1-PAYLOAD-SIGNATURE\x00"

// MinRSABits is the smallest RSA modulus accepted for signing or verifying.
const MinRSABits = 2048

// Typed reasons. Match with errors.Is.
var (
	// ErrBadSignature: the signature does not verify for this key and payload
	// (wrong key, altered payload, altered or truncated signature, signature
	// made over a different message).
	ErrBadSignature = errors.New("bad pulse signature")
	// ErrUnsupportedKey: the key type, curve or size is not one pulse
	// signatures use.
	ErrUnsupportedKey = errors.New("unsupported pulse signature key")
)

// Message returns the domain-separated message for payload.
func Message(payload []byte) []byte {
	sum := sha256.Sum256(payload)
	m := make([]byte, 0, len(Domain)+sha256.Size)
	m = append(m, Domain...)
	return append(m, sum[:]...)
}

func pssOptions() *rsa.PSSOptions {
	return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
}

// Sign signs payload with key, which may be any crypto.Signer (software key,
// TPM- or HSM-backed) whose public key is ECDSA P-256/P-384, Ed25519 or RSA.
func Sign(key crypto.Signer, payload []byte) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("sign: nil key: %w", ErrUnsupportedKey)
	}
	msg := Message(payload)
	var (
		sig []byte
		err error
	)
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		if err := checkCurve(pub); err != nil {
			return nil, fmt.Errorf("sign: %w", err)
		}
		digest := sha256.Sum256(msg)
		sig, err = key.Sign(rand.Reader, digest[:], crypto.SHA256)
	case ed25519.PublicKey:
		sig, err = key.Sign(rand.Reader, msg, crypto.Hash(0))
	case *rsa.PublicKey:
		if pub.N.BitLen() < MinRSABits {
			return nil, fmt.Errorf("sign: rsa key of %d bits (< %d): %w", pub.N.BitLen(), MinRSABits, ErrUnsupportedKey)
		}
		digest := sha256.Sum256(msg)
		sig, err = key.Sign(rand.Reader, digest[:], pssOptions())
	default:
		return nil, fmt.Errorf("sign: key type %T: %w", pub, ErrUnsupportedKey)
	}
	if err != nil {
		return nil, fmt.Errorf("sign pulse payload: %w", err)
	}
	return sig, nil
}

// Verify checks sig over payload with pub. It returns nil, or an error
// wrapping ErrBadSignature or ErrUnsupportedKey.
func Verify(pub crypto.PublicKey, payload, sig []byte) error {
	msg := Message(payload)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil {
			return fmt.Errorf("verify: nil ecdsa key: %w", ErrUnsupportedKey)
		}
		if err := checkCurve(k); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		digest := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(k, digest[:], sig) {
			return fmt.Errorf("verify: ecdsa %s: %w", k.Curve.Params().Name, ErrBadSignature)
		}
		return nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("verify: ed25519 key of %d bytes: %w", len(k), ErrUnsupportedKey)
		}
		if len(sig) != ed25519.SignatureSize || !ed25519.Verify(k, msg, sig) {
			return fmt.Errorf("verify: ed25519: %w", ErrBadSignature)
		}
		return nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return fmt.Errorf("verify: nil rsa key: %w", ErrUnsupportedKey)
		}
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("verify: rsa key of %d bits (< %d): %w", k.N.BitLen(), MinRSABits, ErrUnsupportedKey)
		}
		digest := sha256.Sum256(msg)
		if err := rsa.VerifyPSS(k, crypto.SHA256, digest[:], sig, pssOptions()); err != nil {
			return fmt.Errorf("verify: rsa-pss: %w", ErrBadSignature)
		}
		return nil
	case nil:
		return fmt.Errorf("verify: nil key: %w", ErrUnsupportedKey)
	default:
		return fmt.Errorf("verify: key type %T: %w", pub, ErrUnsupportedKey)
	}
}

func checkCurve(k *ecdsa.PublicKey) error {
	switch k.Curve {
	case elliptic.P256(), elliptic.P384():
		return nil
	case nil:
		return fmt.Errorf("ecdsa key without curve: %w", ErrUnsupportedKey)
	}
	return fmt.Errorf("ecdsa curve %s: %w", k.Curve.Params().Name, ErrUnsupportedKey)
}

// LeafKeyDigest is SHA-256 of the certificate's DER SubjectPublicKeyInfo.
// The pulse payload carries it so the verifier can check the payload names
// the key of the TLS peer certificate.
func LeafKeyDigest(cert *x509.Certificate) [sha256.Size]byte {
	return sha256.Sum256(cert.RawSubjectPublicKeyInfo)
}

// PublicKeyDigest is SHA-256 of pub's DER SubjectPublicKeyInfo; for a
// certificate's key it equals LeafKeyDigest of that certificate.
func PublicKeyDigest(pub crypto.PublicKey) ([sha256.Size]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("marshal public key: %w: %w", ErrUnsupportedKey, err)
	}
	return sha256.Sum256(der), nil
}
