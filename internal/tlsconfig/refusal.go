package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"

	"github.com/pulse-attest/pulse/internal/pki"
)

// Cause is why a server refused a client: a label value from a closed set
// (metrics and logs), never a string the client chose.
type Cause string

// Refusal causes.
const (
	// CauseNoCertificate: the client presented no certificate.
	CauseNoCertificate Cause = "no_certificate"
	// CauseUnknownAuthority: the certificate does not chain to a trusted CA.
	CauseUnknownAuthority Cause = "unknown_authority"
	// CauseWrongRole: a certificate of another role: another role's
	// pulse:// identity, or another role's extended key usage (e.g. the
	// verifier's own certificate on the agent port).
	CauseWrongRole Cause = "wrong_role"
	// CauseExpired: the certificate is outside its validity period
	// (expired or not yet valid).
	CauseExpired Cause = "expired"
	// CauseRevoked: the certificate, its key or its agent ID is revoked.
	CauseRevoked Cause = "revoked"
	// CauseBadVersion: the client offered no TLS 1.3.
	CauseBadVersion Cause = "bad_version"
	// CauseBadCertificate: any other certificate refusal, e.g. a verified
	// certificate without exactly one valid pulse:// identity.
	CauseBadCertificate Cause = "bad_certificate"
	// CauseMalformedRequest: a request that does not decode.
	CauseMalformedRequest Cause = "malformed_request"
	// CauseHandshakeFailed: any other handshake failure: not TLS, the
	// client closed the connection or refused the server's certificate,
	// the handshake timed out.
	CauseHandshakeFailed Cause = "handshake_failed"
)

// Causes lists every cause, for metrics that report each one from the start.
func Causes() []Cause {
	return []Cause{CauseNoCertificate, CauseUnknownAuthority, CauseWrongRole, CauseExpired, CauseRevoked,
		CauseBadVersion, CauseBadCertificate, CauseMalformedRequest, CauseHandshakeFailed}
}

// Probe reports whether a refusal for this cause is a deliberate attempt
// at the handshake (a client spoke TLS and was refused), as opposed to a
// request problem or a connection that never got that far (port checks
// and load balancer health checks end as CauseHandshakeFailed).
func (c Cause) Probe() bool {
	switch c {
	case CauseMalformedRequest, CauseHandshakeFailed, "":
		return false
	}
	return true
}

// Refusal is one refused handshake or request.
type Refusal struct {
	Cause Cause
	// Remote is the client's address (host:port).
	Remote string
	// Subject and Serial describe the client's leaf certificate, when it
	// presented one.
	Subject, Serial string
	// Err is the error the handshake or request failed with.
	Err error
}

// ClassifyError maps an error of a refused handshake (or of the identity
// check that ran in it) to its cause. It does not know what the client
// offered: use ObservedConn.Refusal for the bad_version cause.
func ClassifyError(err error) Cause {
	var (
		re  *RoleError
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		cie x509.CertificateInvalidError
	)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNoPeerCertificate):
		return CauseNoCertificate
	case errors.As(err, &re):
		return CauseWrongRole
	case errors.Is(err, ErrRevoked):
		return CauseRevoked
	case errors.Is(err, ErrCertExpired), errors.Is(err, ErrCertNotYetValid):
		return CauseExpired
	case errors.As(err, &uae):
		return CauseUnknownAuthority
	case errors.As(err, &cie):
		switch cie.Reason {
		case x509.Expired:
			return CauseExpired
		case x509.IncompatibleUsage:
			// Each role has its own extended key usage (docs/identity.md):
			// a verifier's server-only certificate presented as a client
			// is the wrong role, refused before its identity is read.
			return CauseWrongRole
		}
		return CauseBadCertificate
	case errors.As(err, &cve), errors.Is(err, ErrUnverifiedPeer), errors.Is(err, ErrCheckFailed),
		errors.Is(err, pki.ErrNoIdentity), errors.Is(err, pki.ErrMultipleIdentities),
		errors.Is(err, pki.ErrBadID), errors.Is(err, pki.ErrBadRole):
		return CauseBadCertificate
	}
	return CauseHandshakeFailed
}

// ObservedConn wraps a connection a server handshakes on (Observe), so a
// refused handshake can be classified with what the client offered: the
// configs of ServerConfig note the ClientHello and the presented leaf on
// it. Pass it to tls.Server (or to a gRPC TransportCredentials'
// ServerHandshake) in place of the raw connection.
type ObservedConn struct {
	net.Conn

	mu      sync.Mutex
	hello   bool
	noTLS13 bool
	leaf    *x509.Certificate
}

// Observe wraps c.
func Observe(c net.Conn) *ObservedConn { return &ObservedConn{Conn: c} }

func (c *ObservedConn) noteHello(h *tls.ClientHelloInfo) {
	tls13 := false
	for _, v := range h.SupportedVersions {
		if v == tls.VersionTLS13 {
			tls13 = true
		}
	}
	c.mu.Lock()
	c.hello, c.noTLS13 = true, !tls13
	c.mu.Unlock()
}

func (c *ObservedConn) noteLeaf(leaf *x509.Certificate) {
	c.mu.Lock()
	c.leaf = leaf
	c.mu.Unlock()
}

// Refusal describes the handshake on c that failed with err.
func (c *ObservedConn) Refusal(err error) Refusal {
	r := Refusal{Cause: ClassifyError(err), Err: err}
	if a := c.RemoteAddr(); a != nil {
		r.Remote = a.String()
	}
	c.mu.Lock()
	noTLS13, leaf := c.noTLS13, c.leaf
	c.mu.Unlock()
	if noTLS13 {
		r.Cause = CauseBadVersion
	}
	var cve *tls.CertificateVerificationError
	if leaf == nil && errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0 {
		leaf = cve.UnverifiedCertificates[0]
	}
	if leaf != nil {
		r.Subject = leaf.Subject.String()
		if leaf.SerialNumber != nil {
			r.Serial = leaf.SerialNumber.String()
		}
	}
	return r
}

// observe adapts a per-handshake config (see ServerConfig) to an
// ObservedConn: it notes the hello and the leaf the identity check sees.
func observe(c *tls.Config, hello *tls.ClientHelloInfo) {
	oc, ok := hello.Conn.(*ObservedConn)
	if !ok {
		return
	}
	oc.noteHello(hello)
	if verify := c.VerifyConnection; verify != nil {
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				oc.noteLeaf(cs.PeerCertificates[0])
			}
			return verify(cs)
		}
	}
}
