// Package pki is a small certificate authority for demos and tests: it makes
// an ECDSA P-256 CA and issues agent, verifier and operator certificates
// whose principal is carried in a pulse:// URI SAN (see docs/identity.md).
// Real deployments bring their own PKI; they only need to follow the same
// identity convention, which IdentityFromCert reads.
//
// Everything here is pure (no logging); private keys are only ever written
// to files with mode 0600 and never formatted into errors.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// KeyType names the algorithm of an issued certificate's key.
type KeyType string

// Supported key types. RSA keys sign with RSA-PSS in TLS 1.3 and in pulse
// signatures; the certificate's key algorithm stays rsaEncryption.
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyEd25519   KeyType = "ed25519"
	KeyRSA3072   KeyType = "rsa-3072"
)

// KeyTypes lists every supported key type, default first.
var KeyTypes = []KeyType{KeyECDSAP256, KeyEd25519, KeyRSA3072}

// Validity defaults and the backdating applied to NotBefore to tolerate
// small clock differences between the issuer and relying parties.
const (
	DefaultCAValidity   = 5 * 365 * 24 * time.Hour
	DefaultLeafValidity = 90 * 24 * time.Hour
	Backdate            = 5 * time.Minute
)

// ErrBadRequest is wrapped by every Issue/NewCA input validation failure.
var ErrBadRequest = errors.New("invalid certificate request")

// DefaultVerifierDNSNames and DefaultVerifierIPs are the SANs of a verifier
// certificate issued without any DNS or IP names.
var (
	DefaultVerifierDNSNames = []string{"localhost"}
	DefaultVerifierIPs      = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
)

// CA is a certificate authority: its self-signed certificate and key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a self-signed ECDSA P-256 CA named name, valid for validity
// (DefaultCAValidity when zero). It can only sign end-entity certificates
// (path length 0).
func NewCA(name string, validity time.Duration) (*CA, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, fmt.Errorf("ca name is empty: %w", ErrBadRequest)
	}
	if validity < 0 {
		return nil, fmt.Errorf("ca validity %s is negative: %w", validity, ErrBadRequest)
	}
	if validity == 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Pulse"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new ca certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Pool returns a certificate pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return EncodeCertPEM(ca.Cert.Raw) }

// KeyPEM returns the CA private key as a PKCS#8 PEM block.
func (ca *CA) KeyPEM() ([]byte, error) { return EncodeKeyPEM(ca.Key) }

// Request describes a certificate to issue.
type Request struct {
	Role     Role
	ID       string
	DNSNames []string
	IPs      []net.IP
	KeyType  KeyType       // KeyECDSAP256 when empty
	Validity time.Duration // DefaultLeafValidity when zero; capped at the CA's NotAfter
}

// Issued is a freshly issued certificate and its key.
type Issued struct {
	Identity Identity
	Cert     *x509.Certificate
	Key      crypto.Signer
	CertPEM  []byte // the leaf only
	KeyPEM   []byte // PKCS#8
}

// Issue generates a key of req.KeyType and a certificate for it signed by ca.
// Agent and operator certificates are for TLS clients, verifier certificates
// for TLS servers (with DefaultVerifierDNSNames/IPs when none are given).
func Issue(ca *CA, req Request) (*Issued, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, fmt.Errorf("no ca: %w", ErrBadRequest)
	}
	ident := Identity{Role: req.Role, ID: req.ID}
	if err := ident.Validate(); err != nil {
		return nil, fmt.Errorf("issue: %w: %w", ErrBadRequest, err)
	}
	if req.Validity < 0 {
		return nil, fmt.Errorf("issue: validity %s is negative: %w", req.Validity, ErrBadRequest)
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultLeafValidity
	}
	for _, n := range req.DNSNames {
		if err := validateDNSName(n); err != nil {
			return nil, fmt.Errorf("issue: %w", err)
		}
	}
	for _, ip := range req.IPs {
		if ip == nil || (ip.To4() == nil && len(ip) != net.IPv6len) {
			return nil, fmt.Errorf("issue: ip %v: %w", ip, ErrBadRequest)
		}
	}

	key, err := GenerateKey(req.KeyType)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	notBefore := now.Add(-Backdate)
	if notBefore.Before(ca.Cert.NotBefore) {
		notBefore = ca.Cert.NotBefore
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("issue: ca expired at %s: %w", ca.Cert.NotAfter.UTC().Format(time.RFC3339), ErrBadRequest)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.ID, Organization: []string{"Pulse"}, OrganizationalUnit: []string{string(req.Role)}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{ident.URI()},
		DNSNames:              append([]string(nil), req.DNSNames...),
		IPAddresses:           append([]net.IP(nil), req.IPs...),
	}
	switch req.Role {
	case RoleAgent, RoleOperator:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case RoleVerifier:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		if len(tmpl.DNSNames) == 0 && len(tmpl.IPAddresses) == 0 {
			tmpl.DNSNames = append([]string(nil), DefaultVerifierDNSNames...)
			tmpl.IPAddresses = append([]net.IP(nil), DefaultVerifierIPs...)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue: parse new certificate: %w", err)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	return &Issued{Identity: ident, Cert: cert, Key: key, CertPEM: EncodeCertPEM(der), KeyPEM: keyPEM}, nil
}

// GenerateKey makes a new private key of type t (KeyECDSAP256 when empty).
func GenerateKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case "", KeyECDSAP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate ecdsa-p256 key: %w", err)
		}
		return k, nil
	case KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate ed25519 key: %w", err)
		}
		return k, nil
	case KeyRSA3072:
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			return nil, fmt.Errorf("generate rsa-3072 key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("key type %q (want one of %s): %w", t, keyTypeList(), ErrBadRequest)
}

// ParseKeyType validates a key type name ("" means the default).
func ParseKeyType(s string) (KeyType, error) {
	switch KeyType(s) {
	case "":
		return KeyECDSAP256, nil
	case KeyECDSAP256, KeyEd25519, KeyRSA3072:
		return KeyType(s), nil
	}
	return "", fmt.Errorf("key type %q (want one of %s): %w", s, keyTypeList(), ErrBadRequest)
}

func keyTypeList() string {
	s := make([]string, len(KeyTypes))
	for i, t := range KeyTypes {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

// validateDNSName accepts LDH labels (and a leading "*." wildcard).
func validateDNSName(n string) error {
	name := strings.TrimPrefix(n, "*.")
	if name == "" || len(n) > 253 {
		return fmt.Errorf("dns name %q: %w", n, ErrBadRequest)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("dns name %q: bad label %q: %w", n, label, ErrBadRequest)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("dns name %q: bad label %q: %w", n, label, ErrBadRequest)
			}
		}
	}
	return nil
}

// randomSerial returns a positive random 127-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
