package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// URIScheme is the scheme of the URI SAN that names a Pulse principal.
const URIScheme = "pulse"

// MaxIDLength is the longest agent ID, verifier name or operator name.
const MaxIDLength = 128

// Role is the kind of principal a certificate names.
type Role string

// The three roles. Their string form is the host part of the identity URI.
const (
	RoleAgent    Role = "agent"
	RoleVerifier Role = "verifier"
	RoleOperator Role = "operator"
)

// Roles lists every valid role.
var Roles = []Role{RoleAgent, RoleVerifier, RoleOperator}

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool {
	switch r {
	case RoleAgent, RoleVerifier, RoleOperator:
		return true
	}
	return false
}

// ParseRole turns "agent", "verifier" or "operator" into a Role.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("role %q: %w", s, ErrBadRole)
	}
	return r, nil
}

// Typed reasons for IdentityFromCert and ValidateID failures. Match with errors.Is.
var (
	// ErrNoIdentity: the certificate carries no pulse:// URI SAN.
	ErrNoIdentity = errors.New("certificate carries no pulse identity")
	// ErrMultipleIdentities: the certificate carries more than one pulse:// URI SAN.
	ErrMultipleIdentities = errors.New("certificate carries more than one pulse identity")
	// ErrBadID: the ID is empty, too long, uses characters outside
	// [A-Za-z0-9._-], is "." or "..", or the URI is not in canonical form.
	ErrBadID = errors.New("invalid pulse identity id")
	// ErrBadRole: the role is not agent, verifier or operator.
	ErrBadRole = errors.New("invalid pulse identity role")
)

// Identity is the principal a certificate names: a role and an ID.
type Identity struct {
	Role Role
	ID   string
}

// URI returns the identity's URI SAN, e.g. pulse://agent/edge-042.
func (i Identity) URI() *url.URL {
	return &url.URL{Scheme: URIScheme, Host: string(i.Role), Path: "/" + i.ID}
}

// String returns the URI form.
func (i Identity) String() string { return i.URI().String() }

// Validate checks the role and the ID.
func (i Identity) Validate() error {
	if !i.Role.Valid() {
		return fmt.Errorf("role %q: %w", i.Role, ErrBadRole)
	}
	return ValidateID(i.ID)
}

// ValidateID checks an ID against [A-Za-z0-9._-]{1,128}, excluding "." and
// ".." (which URI path handling would treat as dot segments).
func ValidateID(id string) error {
	if len(id) == 0 {
		return fmt.Errorf("empty id: %w", ErrBadID)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("id of %d bytes exceeds %d: %w", len(id), MaxIDLength, ErrBadID)
	}
	if id == "." || id == ".." {
		return fmt.Errorf("id %q: %w", id, ErrBadID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("id %q: byte 0x%02x at offset %d not in [A-Za-z0-9._-]: %w", printableID(id), c, i, ErrBadID)
		}
	}
	return nil
}

// printableID shortens an untrusted ID for error messages (%q escapes it).
func printableID(id string) string {
	if len(id) > 64 {
		return id[:64] + "..."
	}
	return id
}

// ParseIdentityURI parses one pulse:// URI. It must be exactly
// pulse://<role>/<id> with nothing else (no user info, port, query, fragment,
// extra path segments or percent-encoding).
func ParseIdentityURI(u *url.URL) (Identity, error) {
	if u == nil || !strings.EqualFold(u.Scheme, URIScheme) {
		return Identity{}, fmt.Errorf("not a %s:// uri: %w", URIScheme, ErrNoIdentity)
	}
	role := Role(u.Host)
	if !role.Valid() {
		return Identity{}, fmt.Errorf("uri %q: role %q: %w", u.Redacted(), u.Host, ErrBadRole)
	}
	id := strings.TrimPrefix(u.Path, "/")
	if err := ValidateID(id); err != nil {
		return Identity{}, fmt.Errorf("uri %q: %w", u.Redacted(), err)
	}
	ident := Identity{Role: role, ID: id}
	// Anything beyond the canonical form (query, fragment, port, user info,
	// escaped characters, opaque form) makes the URI ambiguous: refuse it.
	if u.String() != ident.String() {
		return Identity{}, fmt.Errorf("uri %q is not in canonical form %q: %w", u.Redacted(), ident.String(), ErrBadID)
	}
	return ident, nil
}

// IdentityFromCert extracts the single pulse:// URI SAN of cert. URIs with
// other schemes (e.g. spiffe://) are ignored; the Subject CN is never read.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("nil certificate: %w", ErrNoIdentity)
	}
	var found []*url.URL
	for _, u := range cert.URIs {
		if u != nil && strings.EqualFold(u.Scheme, URIScheme) {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("certificate serial %s: %w", cert.SerialNumber, ErrNoIdentity)
	case 1:
	default:
		return Identity{}, fmt.Errorf("certificate serial %s has %d pulse uris: %w", cert.SerialNumber, len(found), ErrMultipleIdentities)
	}
	ident, err := ParseIdentityURI(found[0])
	if err != nil {
		return Identity{}, fmt.Errorf("certificate serial %s: %w", cert.SerialNumber, err)
	}
	return ident, nil
}
