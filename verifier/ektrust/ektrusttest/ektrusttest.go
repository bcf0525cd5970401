// Package ektrusttest issues EK certificates for tests: a TPM vendor CA of
// the test's own that certifies a real EK public area (from swtpm) with the
// TCG EK Credential Profile's extensions, or without some of them, so a test
// can show each profile check refusing its own case.
package ektrusttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/verifier/ektrust"
)

// Vendor is a test TPM vendor: a CA whose root certificate is in RootFile
// (PEM), ready for enrollment.ek_roots.
type Vendor struct {
	CA       *pki.CA
	RootFile string
}

// NewVendor creates a vendor CA and writes its root to the test's temporary
// directory.
func NewVendor(t testing.TB) *Vendor {
	t.Helper()
	ca, err := pki.NewCA("Pulse test TPM vendor", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "ek-vendor-root.pem")
	if err := os.WriteFile(root, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Vendor{CA: ca, RootFile: root}
}

// SAN says what subjectAltName an issued certificate carries.
type SAN int

const (
	// SANTPM is the profile's: a critical directoryName with the TPM
	// manufacturer, model and version.
	SANTPM SAN = iota
	// SANNone omits the subjectAltName.
	SANNone
	// SANDNS carries a non-critical dNSName and no directoryName.
	SANDNS
	// SANNoModel is SANTPM without the TPM model attribute.
	SANNoModel
	// SANTPMNonCritical is SANTPM marked non-critical.
	SANTPMNonCritical
	// SANCriticalOtherName is a critical subjectAltName holding the TPM
	// directoryName and an otherName, which no one here can interpret.
	SANCriticalOtherName
)

// Profile describes the certificate to issue; the zero value conforms to
// the TCG EK Credential Profile (EK extended key usage, critical TPM SAN,
// empty subject).
type Profile struct {
	// NoEKUsage omits the EK extended key usage; ExtKeyUsage, when set,
	// replaces it.
	NoEKUsage   bool
	ExtKeyUsage []x509.ExtKeyUsage
	SAN         SAN
	// Subject, when set, is the certificate's common name.
	Subject string
	// NegativeSerial gives the certificate a negative serial number, as
	// some real vendors' certificates have (crypto/x509 parses them only
	// under GODEBUG x509negativeserial=1, which the binaries set).
	NegativeSerial bool
}

// Issue certifies the EK public area (marshalled TPMT_PUBLIC) and returns
// the DER certificate.
func (v *Vendor) Issue(t testing.TB, ekPublic []byte, p Profile) []byte {
	t.Helper()
	key, err := ektrust.EKPublicKey(ekPublic)
	if err != nil {
		t.Fatal(err)
	}
	switch key.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		t.Fatalf("ektrusttest: EK key %T is not supported", key)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		ExtKeyUsage:           p.ExtKeyUsage,
	}
	if p.Subject != "" {
		tmpl.Subject = pkix.Name{CommonName: p.Subject}
	}
	if !p.NoEKUsage && len(p.ExtKeyUsage) == 0 {
		tmpl.UnknownExtKeyUsage = []asn1.ObjectIdentifier{ektrust.OIDEKCertificate}
	}
	if ext, ok := sanExtension(t, p.SAN); ok {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, v.CA.Cert, key, v.CA.Key)
	if err != nil {
		t.Fatal(err)
	}
	if p.NegativeSerial {
		der = v.withSerial(t, der, big.NewInt(-0x1234567890))
	}
	return der
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

func sanExtension(t testing.TB, kind SAN) (pkix.Extension, bool) {
	t.Helper()
	attrs := pkix.RDNSequence{
		{{Type: ektrust.OIDTPMManufacturer, Value: "id:50554C53"}},
		{{Type: ektrust.OIDTPMModel, Value: "pulse-test"}},
		{{Type: ektrust.OIDTPMVersion, Value: "id:00020000"}},
	}
	var gn asn1.RawValue
	critical := true
	switch kind {
	case SANNone:
		return pkix.Extension{}, false
	case SANDNS:
		gn = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("tpm.example")}
		critical = false
	case SANCriticalOtherName:
		name, err := asn1.Marshal(attrs)
		if err != nil {
			t.Fatal(err)
		}
		typeID, err := asn1.Marshal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1})
		if err != nil {
			t.Fatal(err)
		}
		val, err := asn1.Marshal([]asn1.RawValue{
			{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name},
			{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: typeID},
		})
		if err != nil {
			t.Fatal(err)
		}
		return pkix.Extension{Id: oidSubjectAltName, Critical: true, Value: val}, true
	case SANNoModel:
		attrs = append(attrs[:1], attrs[2])
		fallthrough
	default:
		name, err := asn1.Marshal(attrs)
		if err != nil {
			t.Fatal(err)
		}
		gn = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}
		critical = kind != SANTPMNonCritical
	}
	val, err := asn1.Marshal([]asn1.RawValue{gn})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSubjectAltName, Critical: critical, Value: val}, true
}

// withSerial re-signs der with another serial number, which
// x509.CreateCertificate refuses when negative.
func (v *Vendor) withSerial(t testing.TB, der []byte, serial *big.Int) []byte {
	t.Helper()
	var cert struct {
		TBS    asn1.RawValue
		SigAlg pkix.AlgorithmIdentifier
		Sig    asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &cert); err != nil {
		t.Fatal(err)
	}
	var fields []asn1.RawValue
	for rest := cert.TBS.Bytes; len(rest) > 0; {
		var f asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &f); err != nil {
			t.Fatal(err)
		}
		fields = append(fields, f)
	}
	// fields[0] is the [0] version, fields[1] the serial number.
	s, err := asn1.Marshal(serial)
	if err != nil {
		t.Fatal(err)
	}
	fields[1] = asn1.RawValue{FullBytes: s}
	var body []byte
	for _, f := range fields {
		body = append(body, f.FullBytes...)
	}
	tbs, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: body})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tbs)
	sig, err := v.CA.Key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	cert.TBS = asn1.RawValue{FullBytes: tbs}
	cert.Sig = asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}
	out, err := asn1.Marshal(cert)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
