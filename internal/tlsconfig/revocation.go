package tlsconfig

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
)

// Revocation kinds: what a revocation entry names.
const (
	// RevokeSerial names a certificate by serial number (lowercase hex,
	// no leading zeros). Pulse's CA uses random 127-bit serials, so a
	// serial names one certificate whatever CA issued it.
	RevokeSerial = "serial"
	// RevokeSPKI names a key: the lowercase hex SHA-256 of the leaf's DER
	// SubjectPublicKeyInfo (pulsesig.LeafKeyDigest), so every certificate
	// for that key is refused.
	RevokeSPKI = "spki"
	// RevokeAgent names an agent ID: every certificate naming it is refused.
	RevokeAgent = "agent"
)

// RevocationKinds lists the kinds in the order they are checked.
var RevocationKinds = []string{RevokeSerial, RevokeSPKI, RevokeAgent}

var (
	// ErrRevoked: the peer certificate, its key or its agent ID is on the
	// revocation list. Returned as a *RevokedError.
	ErrRevoked = errors.New("certificate is revoked")
	// ErrBadRevocation: a revocation entry's kind or value is malformed.
	ErrBadRevocation = errors.New("invalid revocation entry")
)

// RevokedError says which entry refused a certificate; it matches
// ErrRevoked with errors.Is.
type RevokedError struct {
	Kind, Value string
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("certificate is revoked (%s %s)", e.Kind, e.Value)
}

// Unwrap makes errors.Is(err, ErrRevoked) true.
func (e *RevokedError) Unwrap() error { return ErrRevoked }

// ParseRevocation checks a revocation entry and returns its value in the
// canonical form the checks compare:
//
//   - serial: decimal digits (as Pulse logs print serials), or hex with a
//     0x prefix or colon-separated bytes (as openssl prints them); stored as
//     lowercase hex without leading zeros.
//   - spki: 64 hex digits, optionally prefixed "sha256:"; stored lowercase.
//   - agent: an agent ID ([A-Za-z0-9._-]{1,128}, case-sensitive).
func ParseRevocation(kind, value string) (string, error) {
	v := strings.TrimSpace(value)
	switch kind {
	case RevokeSerial:
		n, ok := parseSerial(v)
		if !ok {
			return "", fmt.Errorf("serial %q: want decimal digits, 0x-prefixed hex or colon-separated hex: %w", short(v), ErrBadRevocation)
		}
		return n.Text(16), nil
	case RevokeSPKI:
		d := strings.ToLower(strings.TrimPrefix(strings.ToLower(v), "sha256:"))
		if b, err := hex.DecodeString(d); err != nil || len(b) != sha256.Size {
			return "", fmt.Errorf("spki %q: want the SHA-256 of the SubjectPublicKeyInfo as 64 hex digits: %w", short(v), ErrBadRevocation)
		}
		return d, nil
	case RevokeAgent:
		if err := pki.ValidateID(v); err != nil {
			return "", fmt.Errorf("agent: %w: %w", ErrBadRevocation, err)
		}
		return v, nil
	}
	return "", fmt.Errorf("kind %q: want serial, spki or agent: %w", short(kind), ErrBadRevocation)
}

func parseSerial(v string) (*big.Int, bool) {
	if v == "" || len(v) > 200 {
		return nil, false
	}
	base := 10
	switch {
	case strings.HasPrefix(v, "0x") || strings.HasPrefix(v, "0X"):
		v, base = v[2:], 16
	case strings.Contains(v, ":"):
		for _, b := range strings.Split(v, ":") {
			if len(b) != 2 {
				return nil, false
			}
		}
		v, base = strings.ReplaceAll(v, ":", ""), 16
	}
	if v == "" || strings.ContainsAny(v, "+-_ ") {
		return nil, false
	}
	n, ok := new(big.Int).SetString(v, base)
	return n, ok
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// SerialKey is the canonical serial value of a certificate.
func SerialKey(c *x509.Certificate) string {
	if c.SerialNumber == nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

// SPKIKey is the canonical spki value of a certificate.
func SPKIKey(c *x509.Certificate) string {
	d := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(d[:])
}

// RevocationEntry is one canonical (kind, value) pair.
type RevocationEntry struct{ Kind, Value string }

// RevocationSet is an immutable set of revocation entries.
type RevocationSet struct {
	m map[RevocationEntry]struct{}
}

// NewRevocationSet builds a set from canonical entries (ParseRevocation).
func NewRevocationSet(entries []RevocationEntry) *RevocationSet {
	s := &RevocationSet{m: make(map[RevocationEntry]struct{}, len(entries))}
	for _, e := range entries {
		s.m[e] = struct{}{}
	}
	return s
}

// Len is the number of entries.
func (s *RevocationSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.m)
}

// Check returns a *RevokedError when leaf's serial, key or agent identity
// is in the set, and nil otherwise (also for a nil set).
func (s *RevocationSet) Check(leaf *x509.Certificate) error {
	if s == nil || len(s.m) == 0 || leaf == nil {
		return nil
	}
	keys := []RevocationEntry{{RevokeSerial, SerialKey(leaf)}, {RevokeSPKI, SPKIKey(leaf)}}
	if id, err := pki.IdentityFromCert(leaf); err == nil && id.Role == pki.RoleAgent {
		keys = append(keys, RevocationEntry{RevokeAgent, id.ID})
	}
	for _, k := range keys {
		if _, ok := s.m[k]; ok {
			return &RevokedError{Kind: k.Kind, Value: k.Value}
		}
	}
	return nil
}

// CheckValidity returns an error wrapping ErrCertNotYetValid or
// ErrCertExpired when now is outside c's validity period.
func CheckValidity(c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("certificate serial %s valid from %s: %w", c.SerialNumber, c.NotBefore.UTC().Format(time.RFC3339), ErrCertNotYetValid)
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("certificate serial %s expired at %s: %w", c.SerialNumber, c.NotAfter.UTC().Format(time.RFC3339), ErrCertExpired)
	}
	return nil
}
