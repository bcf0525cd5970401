package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// PEM block types.
const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// File modes for written certificates and keys.
const (
	CertFileMode os.FileMode = 0o644
	KeyFileMode  os.FileMode = 0o600
)

// ErrNoPEM is returned when a file or buffer holds no PEM block of the
// expected type.
var ErrNoPEM = errors.New("no pem block of the expected type")

// EncodeCertPEM wraps a DER certificate in a CERTIFICATE block.
func EncodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}

// EncodeKeyPEM marshals key as PKCS#8 in a PRIVATE KEY block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParseCertificatesPEM returns every CERTIFICATE block in data, in order
// (leaf first for a chain file). Other block types are skipped.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != pemCertificate {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("certificates: %w", ErrNoPEM)
	}
	return certs, nil
}

// ParsePrivateKeyPEM parses the first private key block in data: PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
// Encrypted keys are not supported. Errors never include key material.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("private key: %w", ErrNoPEM)
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case pemPrivateKey:
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("private key: encrypted keys are not supported")
		default:
			continue
		}
		if err != nil {
			// The x509 parse errors describe structure, not key bytes.
			return nil, fmt.Errorf("parse %s block: %w", b.Type, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", key)
		}
		return s, nil
	}
}

// ReadCertificates reads a PEM file of one or more certificates.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// ReadCertPool reads a PEM file of trusted CA certificates into a pool.
func ReadCertPool(path string) (*x509.CertPool, error) {
	certs, err := ReadCertificates(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// ReadPrivateKey reads a PEM private key file.
func ReadPrivateKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	k, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadCA reads a CA written by CA.WriteFiles (or any CA certificate and
// matching key) and checks that the key matches and the certificate is a CA.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certs, err := ReadCertificates(certFile)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	key, err := ReadPrivateKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("load ca: %s is not a ca certificate", certFile)
	}
	if !PublicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("load ca: %s does not match %s: %w", keyFile, certFile, ErrKeyMismatch)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ErrKeyMismatch: a private key does not belong to the certificate.
var ErrKeyMismatch = errors.New("private key does not match certificate")

// PublicKeysEqual reports whether two public keys are the same key.
func PublicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// WriteFiles writes the CA certificate (0644) and key (0600).
func (ca *CA) WriteFiles(certFile, keyFile string, overwrite bool) error {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	return WritePair(certFile, ca.CertPEM(), keyFile, keyPEM, overwrite)
}

// WriteFiles writes the issued certificate (0644) and key (0600).
func (i *Issued) WriteFiles(certFile, keyFile string, overwrite bool) error {
	return WritePair(certFile, i.CertPEM, keyFile, i.KeyPEM, overwrite)
}

// WritePair writes a certificate and its key, each atomically (temporary
// file in the same directory, fsync, rename), the key first. Without
// overwrite it refuses, before writing anything, if either file exists.
func WritePair(certFile string, certPEM []byte, keyFile string, keyPEM []byte, overwrite bool) error {
	if certFile == keyFile {
		return fmt.Errorf("certificate and key paths are both %s", certFile)
	}
	if !overwrite {
		for _, p := range []string{certFile, keyFile} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("write %s: %w", p, os.ErrExist)
			} else if !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("stat %s: %w", p, err)
			}
		}
	}
	if err := WriteFileAtomic(keyFile, keyPEM, KeyFileMode); err != nil {
		return err
	}
	return WriteFileAtomic(certFile, certPEM, CertFileMode)
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory that is synced and renamed over path, so a reader (such as the
// tlsconfig reloader) never sees a half-written file. The temporary file is
// created with perm from the start, so a key is never briefly world-readable.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp uses 0600; widen only when asked (certificates).
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := bytes.NewReader(data).WriteTo(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	return nil
}
