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
//
// A certificate that chains to a trusted root must also follow the TCG EK
// Credential Profile before it vouches for an EK: the EK extended key usage
// (tcg-kp-EKCertificate, 2.23.133.8.1) and a subjectAltName directoryName
// naming the TPM's manufacturer, model and version. Without them, any
// certificate the vendor CA issued for some other purpose (a platform
// certificate, a code-signing key) would pass as an EK certificate.
// Options.AllowNonconforming waives these two checks for vendors that omit
// them; Decision.Nonconformity then says what was waived.
package ektrust

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
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
	// ErrNoEKUsage: the certificate lacks the TCG EK extended key usage.
	ErrNoEKUsage = errors.New("EK certificate lacks the TCG EK extended key usage (2.23.133.8.1)")
	// ErrNoTPMSAN: the certificate has no subjectAltName naming the TPM
	// (manufacturer, model and version in a directoryName).
	ErrNoTPMSAN = errors.New("EK certificate lacks the TPM subjectAltName (manufacturer, model, version)")
)

var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	// OIDEKCertificate is tcg-kp-EKCertificate, the EK certificate's
	// extended key usage.
	OIDEKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	// TPM attributes of the subjectAltName directoryName.
	OIDTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	OIDTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	OIDTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
)

// Options adjust Check.
type Options struct {
	// AllowNonconforming accepts a certificate without the TCG EK extended
	// key usage or TPM subjectAltName (configuration:
	// enrollment.allow_nonconforming_ek). A malformed critical
	// subjectAltName is refused regardless.
	AllowNonconforming bool
}

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
	// Nonconformity is the TCG profile failure Options.AllowNonconforming
	// waived (ErrNoEKUsage, ErrNoTPMSAN, or both joined); nil when the
	// certificate conforms or the EK was allow-listed.
	Nonconformity error
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
// certificate (DER, may be empty) and intermediates read from TPM NV. A
// certificate must chain to a trusted root and follow the TCG EK profile
// (CheckProfile) unless o.AllowNonconforming.
func (t *Trust) Check(ekPublic, ekCert []byte, nvIntermediates [][]byte, now time.Time, o Options) (*Decision, error) {
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
	if err := CheckProfile(cert); err != nil {
		if !o.AllowNonconforming {
			return nil, err
		}
		d.Nonconformity = err
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

// checkTPMSAN accepts a critical SAN made only of directoryName entries
// (tag [4]), the TCG EK credential profile's TPM manufacturer/model/version.
// Whether those entries name a TPM is CheckProfile's question.
func checkTPMSAN(cert *x509.Certificate) error {
	ext, ok := findExtension(cert, oidSubjectAltName)
	if !ok {
		return fmt.Errorf("%w: missing", ErrBadSAN)
	}
	names, err := generalNames(ext.Value)
	if err != nil {
		return err
	}
	for _, gn := range names {
		if gn.Class != asn1.ClassContextSpecific || gn.Tag != 4 {
			return fmt.Errorf("%w: general name tag %d", ErrBadSAN, gn.Tag)
		}
	}
	return nil
}

// CheckProfile checks what the TCG EK Credential Profile requires of an EK
// certificate beyond its chain: the EK extended key usage (ErrNoEKUsage) and
// a subjectAltName directoryName carrying the TPM manufacturer, model and
// version attributes (ErrNoTPMSAN when absent, ErrBadSAN when malformed or
// non-critical under an empty subject). Every failure is reported, joined.
func CheckProfile(cert *x509.Certificate) error {
	var errs []error
	if !hasEKUsage(cert) {
		errs = append(errs, ErrNoEKUsage)
	}
	if err := checkTPMIdentity(cert); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func hasEKUsage(cert *x509.Certificate) bool {
	for _, oid := range cert.UnknownExtKeyUsage {
		if oid.Equal(OIDEKCertificate) {
			return true
		}
	}
	return false
}

// checkTPMIdentity finds the SAN directoryName naming the TPM.
func checkTPMIdentity(cert *x509.Certificate) error {
	ext, ok := findExtension(cert, oidSubjectAltName)
	if !ok {
		return fmt.Errorf("%w: no subjectAltName", ErrNoTPMSAN)
	}
	// RFC 5280 4.2.1.6 and the TCG profile: with an empty subject the SAN
	// is the certificate's only name and must be critical.
	if emptySubject(cert) && !ext.Critical {
		return fmt.Errorf("%w: empty subject with a non-critical subjectAltName", ErrBadSAN)
	}
	names, err := generalNames(ext.Value)
	if err != nil {
		return err
	}
	var missing []string
	for _, gn := range names {
		if gn.Class != asn1.ClassContextSpecific || gn.Tag != 4 {
			continue
		}
		var rdns pkix.RDNSequence
		// directoryName is [4] EXPLICIT Name: gn.Bytes is the Name.
		if rest, err := asn1.Unmarshal(gn.Bytes, &rdns); err != nil || len(rest) != 0 {
			return fmt.Errorf("%w: directoryName is not a Name", ErrBadSAN)
		}
		missing = missingTPMAttributes(rdns)
		if len(missing) == 0 {
			return nil
		}
	}
	if missing == nil {
		return fmt.Errorf("%w: no directoryName", ErrNoTPMSAN)
	}
	return fmt.Errorf("%w: directoryName lacks %s", ErrNoTPMSAN, strings.Join(missing, ", "))
}

// missingTPMAttributes names the TPM attributes rdns lacks or holds empty.
func missingTPMAttributes(rdns pkix.RDNSequence) []string {
	want := []struct {
		oid  asn1.ObjectIdentifier
		name string
	}{{OIDTPMManufacturer, "tpmManufacturer"}, {OIDTPMModel, "tpmModel"}, {OIDTPMVersion, "tpmVersion"}}
	var missing []string
	for _, w := range want {
		found := false
		for _, rdn := range rdns {
			for _, atv := range rdn {
				if v, ok := atv.Value.(string); ok && atv.Type.Equal(w.oid) && strings.TrimSpace(v) != "" {
					found = true
				}
			}
		}
		if !found {
			missing = append(missing, w.name)
		}
	}
	return missing
}

func findExtension(cert *x509.Certificate, oid asn1.ObjectIdentifier) (pkix.Extension, bool) {
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(oid) {
			return ext, true
		}
	}
	return pkix.Extension{}, false
}

// generalNames splits a GeneralNames SEQUENCE into its entries.
func generalNames(der []byte) ([]asn1.RawValue, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil || len(rest) != 0 || seq.Tag != asn1.TagSequence {
		return nil, fmt.Errorf("%w: not a GeneralNames sequence", ErrBadSAN)
	}
	var out []asn1.RawValue
	for data := seq.Bytes; len(data) > 0; {
		var gn asn1.RawValue
		data, err = asn1.Unmarshal(data, &gn)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadSAN, err)
		}
		out = append(out, gn)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadSAN)
	}
	return out, nil
}

func emptySubject(cert *x509.Certificate) bool {
	var rdns pkix.RDNSequence
	if _, err := asn1.Unmarshal(cert.RawSubject, &rdns); err != nil {
		return false
	}
	return len(rdns) == 0
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
