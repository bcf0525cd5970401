package pki

import (
	"crypto/x509"
	"encoding/asn1"
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

// ParseIdentity parses the text of one pulse:// URI. It must be exactly the
// canonical form pulse://<role>/<id>, byte for byte: lowercase scheme and
// role, the ID in [A-Za-z0-9._-], and nothing else (no user info, port,
// query, fragment, empty query or fragment marker, trailing slash, extra
// path segment or percent-encoding). Non-canonical text is refused, never
// normalised, so two relying parties cannot read one certificate differently.
func ParseIdentity(s string) (Identity, error) {
	scheme, _, ok := strings.Cut(s, ":")
	if !ok || !strings.EqualFold(scheme, URIScheme) {
		return Identity{}, fmt.Errorf("not a %s:// uri: %w", URIScheme, ErrNoIdentity)
	}
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, fmt.Errorf("uri %q does not parse: %w", printableID(s), ErrBadID)
	}
	ident, err := parseIdentityURL(u)
	if err != nil {
		return Identity{}, err
	}
	// url.Parse lowercases the scheme and drops an empty fragment ("#"), so
	// the parsed URL alone cannot tell those apart: compare the text.
	if s != ident.String() {
		return Identity{}, fmt.Errorf("uri %q is not in canonical form %q: %w", printableID(s), ident.String(), ErrBadID)
	}
	return ident, nil
}

// ParseIdentityURI parses one already-parsed pulse:// URI. It must be
// exactly pulse://<role>/<id> with nothing else (no user info, port, query,
// fragment, extra path segments or percent-encoding). A parsed URL has lost
// some of its spelling (an uppercase scheme, an empty fragment): parse the
// original text with ParseIdentity when you have it, as IdentityFromCert
// does.
func ParseIdentityURI(u *url.URL) (Identity, error) {
	if u == nil {
		return Identity{}, fmt.Errorf("not a %s:// uri: %w", URIScheme, ErrNoIdentity)
	}
	return ParseIdentity(u.String())
}

func parseIdentityURL(u *url.URL) (Identity, error) {
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
	return Identity{Role: role, ID: id}, nil
}

// oidSubjectAltName is the subjectAltName extension.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// rawURIs returns the uniformResourceIdentifier names of cert's
// subjectAltName extension exactly as the certificate spells them. ok is
// false when cert has no parsed extensions (a template, not a certificate
// read from DER); the caller then falls back to cert.URIs.
func rawURIs(cert *x509.Certificate) (uris []string, ok bool, err error) {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &seq)
		if err != nil || len(rest) != 0 || !seq.IsCompound || seq.Tag != asn1.TagSequence || seq.Class != asn1.ClassUniversal {
			return nil, true, fmt.Errorf("subject alternative name extension is malformed: %w", ErrNoIdentity)
		}
		for b := seq.Bytes; len(b) > 0; {
			var v asn1.RawValue
			if b, err = asn1.Unmarshal(b, &v); err != nil {
				return nil, true, fmt.Errorf("subject alternative name extension is malformed: %w", ErrNoIdentity)
			}
			if v.Class == asn1.ClassContextSpecific && v.Tag == 6 { // uniformResourceIdentifier [6] IA5String
				uris = append(uris, string(v.Bytes))
			}
		}
		return uris, true, nil
	}
	if len(cert.Extensions) > 0 || len(cert.Raw) > 0 {
		return nil, true, nil // a real certificate without a SAN extension
	}
	return nil, false, nil
}

// IdentityFromCert extracts the single pulse:// URI SAN of cert. URIs with
// other schemes (e.g. spiffe://) are ignored; the Subject CN is never read.
// The URI is read as the certificate spells it (not as url.Parse
// re-spells it), so PULSE://agent/x or pulse://agent/x# is refused.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("nil certificate: %w", ErrNoIdentity)
	}
	raw, ok, err := rawURIs(cert)
	if err != nil {
		return Identity{}, fmt.Errorf("certificate serial %s: %w", cert.SerialNumber, err)
	}
	if !ok {
		for _, u := range cert.URIs {
			if u != nil {
				raw = append(raw, u.String())
			}
		}
	}
	var found []string
	for _, s := range raw {
		if scheme, _, ok := strings.Cut(s, ":"); ok && strings.EqualFold(scheme, URIScheme) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("certificate serial %s: %w", cert.SerialNumber, ErrNoIdentity)
	case 1:
	default:
		return Identity{}, fmt.Errorf("certificate serial %s has %d pulse uris: %w", cert.SerialNumber, len(found), ErrMultipleIdentities)
	}
	ident, err := ParseIdentity(found[0])
	if err != nil {
		return Identity{}, fmt.Errorf("certificate serial %s: %w", cert.SerialNumber, err)
	}
	return ident, nil
}
