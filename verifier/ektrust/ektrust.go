// Package ektrust decides whether an endorsement key may enroll: by a
// certificate chain to configured TPM-vendor roots, or by an allow-list of
// EK public-area digests. It is pure: it takes bytes and returns a decision
// with a typed reason for every refusal.
//
// Real EK certificates are awkward: the TCG profile puts the TPM
// manufacturer, model and version in a critical subjectAltName holding only
// a directoryName, which Go's x509 refuses as an unhandled critical
// extension; some vendors' certificates are not strict DER. This package
// checks that SAN itself before asking Go to verify the chain, and reports
// precisely what failed otherwise.
package ektrust

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// Typed refusals; match with errors.Is.
var (
	ErrMalformedEK        = errors.New("malformed EK public area")
	ErrMalformedCert      = errors.New("malformed EK certificate")
	ErrCertKeyMismatch    = errors.New("EK certificate does not certify this EK")
	ErrUntrustedChain     = errors.New("EK certificate does not chain to a trusted TPM vendor root")
	ErrBadSAN             = errors.New("EK certificate critical subjectAltName is not a TPM directoryName")
	ErrNotAllowed         = errors.New("EK is neither certified by a trusted root nor allow-listed")
	ErrNoTrustConfigured  = errors.New("no EK roots or allow-list configured")
	ErrUnhandledExtension = errors.New("EK certificate has an unhandled critical extension")
)

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// Trust is the verifier's EK trust configuration.
type Trust struct {
	roots         *x509.CertPool
	nRoots        int
	intermediates []*x509.Certificate
	allow         map[string]bool
}

// Decision says how an EK was accepted.
type Decision struct {
	// By is "certificate" or "allow-list".
	By string
	// EKSHA256 is the SHA-256 of the EK public area (TPMT_PUBLIC).
	EKSHA256 []byte
	// Subject of the EK certificate's issuer chain leaf, when by certificate.
	Issuer string
}

// Load reads PEM root/intermediate files (self-signed certificates become
// roots, the others intermediates) and hex EK digests.
func Load(rootFiles []string, allowSHA256 []string) (*Trust, error) {
	t := &Trust{roots: x509.NewCertPool(), allow: map[string]bool{}}
	for _, f := range rootFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("ektrust: read %s: %w", f, err)
		}
		n := 0
		for {
			var blk *pem.Block
			blk, data = pem.Decode(data)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("ektrust: parse certificate in %s: %w", f, err)
			}
			if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
				t.roots.AddCert(c)
				t.nRoots++
			} else {
				t.intermediates = append(t.intermediates, c)
			}
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("ektrust: %s holds no PEM certificate", f)
		}
	}
	for _, h := range allowSHA256 {
		t.allow[strings.ToLower(h)] = true
	}
	return t, nil
}

// EKPublicKey parses a marshalled TPMT_PUBLIC of an EK.
func EKPublicKey(ekPublic []byte) (crypto.PublicKey, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPublic)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedEK, err)
	}
	if !pub.ObjectAttributes.Restricted || !pub.ObjectAttributes.Decrypt || pub.ObjectAttributes.SignEncrypt {
		return nil, fmt.Errorf("%w: not a restricted decryption key", ErrMalformedEK)
	}
	k, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedEK, err)
	}
	return k, nil
}

// Check decides whether the EK (marshalled TPMT_PUBLIC) may enroll, given its
// certificate (DER, may be empty) and intermediates read from TPM NV.
func (t *Trust) Check(ekPublic, ekCert []byte, nvIntermediates [][]byte, now time.Time) (*Decision, error) {
	key, err := EKPublicKey(ekPublic)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(ekPublic)
	d := &Decision{EKSHA256: sum[:]}
	if t.allow[hex.EncodeToString(sum[:])] {
		d.By = "allow-list"
		return d, nil
	}
	if len(ekCert) == 0 {
		if len(t.allow) == 0 && !t.hasRoots() {
			return nil, ErrNoTrustConfigured
		}
		return nil, fmt.Errorf("%w: no EK certificate and digest %x is not allow-listed", ErrNotAllowed, sum)
	}
	if !t.hasRoots() {
		return nil, fmt.Errorf("%w: EK certificate present but no ek_roots configured", ErrNotAllowed)
	}
	cert, err := ParseEKCertificate(ekCert)
	if err != nil {
		return nil, err
	}
	if !samePublicKey(cert.PublicKey, key) {
		return nil, ErrCertKeyMismatch
	}
	inter := x509.NewCertPool()
	for _, c := range t.intermediates {
		inter.AddCert(c)
	}
	for i, der := range nvIntermediates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: intermediate %d from NV: %v", ErrMalformedCert, i, err)
		}
		inter.AddCert(c)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         t.roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUntrustedChain, err)
	}
	d.By = "certificate"
	if len(chains) > 0 && len(chains[0]) > 1 {
		d.Issuer = chains[0][1].Subject.String()
	}
	return d, nil
}

func (t *Trust) hasRoots() bool {
	return t.nRoots > 0
}

// ParseEKCertificate parses an EK certificate and accepts its critical SAN
// when it is the TCG form (directoryName only), so Go's chain verification
// does not refuse it as unhandled. Any other unhandled critical extension
// stays an error.
func ParseEKCertificate(der []byte) (*x509.Certificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedCert, err)
	}
	var remaining []asn1.ObjectIdentifier
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(oidSubjectAltName) {
			remaining = append(remaining, oid)
			continue
		}
		if err := checkTPMSAN(cert); err != nil {
			return nil, err
		}
	}
	if len(remaining) > 0 {
		return nil, fmt.Errorf("%w: %v", ErrUnhandledExtension, remaining)
	}
	cert.UnhandledCriticalExtensions = nil
	return cert, nil
}

// checkTPMSAN accepts a SAN made only of directoryName entries (tag [4]),
// the TCG EK credential profile's TPM manufacturer/model/version.
func checkTPMSAN(cert *x509.Certificate) error {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &seq)
		if err != nil || len(rest) != 0 || seq.Tag != asn1.TagSequence {
			return fmt.Errorf("%w: not a GeneralNames sequence", ErrBadSAN)
		}
		data := seq.Bytes
		n := 0
		for len(data) > 0 {
			var gn asn1.RawValue
			data, err = asn1.Unmarshal(data, &gn)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrBadSAN, err)
			}
			if gn.Class != asn1.ClassContextSpecific || gn.Tag != 4 {
				return fmt.Errorf("%w: general name tag %d", ErrBadSAN, gn.Tag)
			}
			n++
		}
		if n == 0 {
			return fmt.Errorf("%w: empty", ErrBadSAN)
		}
		return nil
	}
	return fmt.Errorf("%w: missing", ErrBadSAN)
}

func samePublicKey(certKey any, ek crypto.PublicKey) bool {
	switch k := ek.(type) {
	case *rsa.PublicKey:
		c, ok := certKey.(*rsa.PublicKey)
		return ok && c.Equal(k)
	case *ecdh.PublicKey:
		c, ok := certKey.(*ecdsa.PublicKey)
		if !ok {
			return false
		}
		ce, err := c.ECDH()
		return err == nil && ce.Equal(k)
	case *ecdsa.PublicKey:
		c, ok := certKey.(*ecdsa.PublicKey)
		return ok && c.Equal(k)
	}
	return false
}
