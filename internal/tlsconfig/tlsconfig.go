// Package tlsconfig builds Pulse's TLS 1.3-only mutual-TLS configurations.
//
// Servers require and verify a client certificate against a dedicated client
// CA pool, then refuse any peer whose certificate does not carry the expected
// pulse:// role identity (see internal/pki and docs/identity.md). The local
// certificate and key come from a Reloader, so rotating them on disk takes
// effect on the next handshake without a restart.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/pki"
)

// Typed reasons a peer is refused after chain verification. Identity parsing
// failures wrap pki.ErrNoIdentity, pki.ErrMultipleIdentities, pki.ErrBadID
// or pki.ErrBadRole.
var (
	// ErrNoPeerCertificate: the peer presented no certificate.
	ErrNoPeerCertificate = errors.New("peer presented no certificate")
	// ErrUnverifiedPeer: the peer certificate was not verified against a
	// trusted pool (PeerIdentity refuses to name an unverified peer).
	ErrUnverifiedPeer = errors.New("peer certificate chain was not verified")
	// ErrWrongRole: the peer's identity has a different role than required.
	ErrWrongRole = errors.New("peer identity has the wrong role")
)

// RoleError is returned when a peer's identity has the wrong role; it
// matches ErrWrongRole with errors.Is.
type RoleError struct {
	Want pki.Role
	Got  pki.Identity
}

func (e *RoleError) Error() string {
	return fmt.Sprintf("peer identity %s is not a %s", e.Got, e.Want)
}

// Unwrap makes errors.Is(err, ErrWrongRole) true.
func (e *RoleError) Unwrap() error { return ErrWrongRole }

// PeerIdentity returns the identity of the verified peer of a connection
// (for gRPC: credentials.TLSInfo.State). It refuses peers whose chain was
// not verified.
func PeerIdentity(cs tls.ConnectionState) (pki.Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return pki.Identity{}, ErrNoPeerCertificate
	}
	if len(cs.VerifiedChains) == 0 {
		return pki.Identity{}, ErrUnverifiedPeer
	}
	id, err := pki.IdentityFromCert(cs.PeerCertificates[0])
	if err != nil {
		return pki.Identity{}, fmt.Errorf("peer certificate: %w", err)
	}
	return id, nil
}

// checkPeer returns a VerifyConnection function requiring a valid identity
// and, if want is set, that role, then extra (when set).
func checkPeer(want pki.Role, log hclog.Logger, side string, extra func(*x509.Certificate, pki.Identity) error) func(tls.ConnectionState) error {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return func(cs tls.ConnectionState) error {
		id, err := PeerIdentity(cs)
		if err == nil && want != "" && id.Role != want {
			err = &RoleError{Want: want, Got: id}
		}
		if err == nil && extra != nil {
			err = extra(cs.PeerCertificates[0], id)
		}
		if err != nil {
			args := []any{"peer", side, "error", err.Error()}
			if want != "" {
				args = append(args, "want_role", string(want))
			}
			if len(cs.PeerCertificates) > 0 {
				args = append(args, "peer_serial", cs.PeerCertificates[0].SerialNumber.String())
			}
			log.Warn("refused peer identity", args...)
			return err
		}
		return nil
	}
}

// ServerOptions configures ServerConfig.
type ServerOptions struct {
	// CertFile and KeyFile are the server's own certificate (chain) and key.
	// Ignored when Reloader is set.
	CertFile, KeyFile string
	// Reloader supplies the server's certificate instead of CertFile/KeyFile.
	Reloader *Reloader
	// ClientCAFile holds the CA certificates client certificates must chain
	// to. Required unless ClientCAs is set. It is re-read by the Reloader's
	// Run loop (and Reload) when its content changes; every handshake uses
	// the pool current at that moment.
	ClientCAFile string
	// ClientCAs supplies the client CA pool instead of ClientCAFile (to
	// share one pool between configs). It is watched by the Reloader too.
	ClientCAs *CAPool
	// Now is the clock certificates are checked against at the handshake
	// (tls.Config.Time); time.Now when nil.
	Now func() time.Time
	// CheckPeer, when set, runs after the identity and role checks at every
	// handshake with the verified leaf and its identity; an error refuses
	// the connection (e.g. the leaf is revoked: *RevokedError).
	CheckPeer func(leaf *x509.Certificate, id pki.Identity) error
	// NextProtos are the ALPN protocols offered; default h2 and http/1.1
	// (gRPC and the admin HTTPS server both accept this default).
	NextProtos []string
	// RequireRole is the role every client must have. Empty accepts any role
	// but still requires exactly one valid pulse:// identity.
	RequireRole pki.Role
	// Logger; nil discards.
	Logger hclog.Logger
	// QuietRefusals leaves refused identity checks unlogged here: the
	// caller classifies and logs every refused handshake itself (Observe,
	// ObservedConn.Refusal), rate-limited.
	QuietRefusals bool
}

// ServerConfig returns a TLS 1.3-only server configuration that requires a
// verified client certificate with the required role identity, and the
// Reloader serving its own certificate (start its Run loop to poll).
func ServerConfig(opts ServerOptions) (*tls.Config, *Reloader, error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if opts.RequireRole != "" && !opts.RequireRole.Valid() {
		return nil, nil, fmt.Errorf("tlsconfig: require role %q: %w", opts.RequireRole, pki.ErrBadRole)
	}
	pool := opts.ClientCAs
	if pool == nil {
		if opts.ClientCAFile == "" {
			return nil, nil, errors.New("tlsconfig: client ca file is required")
		}
		var err error
		if pool, err = NewCAPool(opts.ClientCAFile, log); err != nil {
			return nil, nil, fmt.Errorf("tlsconfig: client ca: %w", err)
		}
	}
	r := opts.Reloader
	if r == nil {
		var err error
		r, err = NewReloader(opts.CertFile, opts.KeyFile, ReloaderOptions{Logger: log, Now: opts.Now})
		if err != nil {
			return nil, nil, err
		}
	}
	r.WatchCA(pool)
	refusalLog := log
	if opts.QuietRefusals {
		refusalLog = nil
	}
	protos := opts.NextProtos
	if len(protos) == 0 {
		protos = []string{"h2", "http/1.1"}
	}
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		GetCertificate:   r.GetCertificate,
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        pool.Pool(),
		VerifyConnection: checkPeer(opts.RequireRole, refusalLog, "client", opts.CheckPeer),
		Time:             opts.Now,
		NextProtos:       append([]string(nil), protos...),
		// No resumption: every connection is a full handshake in which the
		// client proves possession of the key of the certificate it presents
		// now, so the peer certificate always names the key pulses are signed
		// with and is checked against the current time and CA pool.
		SessionTicketsDisabled: true,
	}
	// Every handshake runs on a copy of cfg (as the caller left it, e.g.
	// with ClientAuth relaxed) holding the client CA pool current at that
	// moment. Servers that copy cfg (gRPC, net/http) keep this hook, and
	// NextProtos is set here so the copy negotiates what they expect.
	//
	// A required client certificate is required by the identity check
	// (VerifyConnection, which crypto/tls runs in every server handshake,
	// with or without a certificate) rather than by crypto/tls itself, so
	// its absence is refused with the typed ErrNoPeerCertificate like
	// every other identity refusal; a certificate that is given is
	// verified against the pool all the same.
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := cfg.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = pool.Pool()
		if verify := c.VerifyConnection; c.ClientAuth == tls.RequireAndVerifyClientCert && verify != nil {
			c.ClientAuth = tls.VerifyClientCertIfGiven
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				err := verify(cs)
				if err == nil && len(cs.PeerCertificates) == 0 {
					err = ErrNoPeerCertificate
				}
				return err
			}
		}
		observe(c, hello)
		return c, nil
	}
	return cfg, r, nil
}

// ClientOptions configures ClientConfig.
type ClientOptions struct {
	// CertFile and KeyFile are the client's certificate (chain) and key.
	// Ignored when Reloader is set.
	CertFile, KeyFile string
	// Reloader supplies the client certificate instead of CertFile/KeyFile.
	Reloader *Reloader
	// ServerCAFile holds the CA certificates the server must chain to. Required.
	ServerCAFile string
	// ServerName is checked against the server certificate's DNS/IP SANs.
	// When empty, crypto/tls (and gRPC) use the host being dialled.
	ServerName string
	// RequireServerRole, when set, also requires the server certificate to
	// carry exactly one pulse:// identity of this role (normally
	// pki.RoleVerifier). Empty skips the identity check, for servers whose
	// certificates come from a PKI that does not add pulse:// URIs.
	RequireServerRole pki.Role
	// Logger; nil discards.
	Logger hclog.Logger
}

// ClientConfig returns a TLS 1.3-only client configuration presenting the
// Reloader's current certificate and verifying the server against
// ServerCAFile, and the Reloader (start its Run loop to poll).
func ClientConfig(opts ClientOptions) (*tls.Config, *Reloader, error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if opts.RequireServerRole != "" && !opts.RequireServerRole.Valid() {
		return nil, nil, fmt.Errorf("tlsconfig: require server role %q: %w", opts.RequireServerRole, pki.ErrBadRole)
	}
	if opts.ServerCAFile == "" {
		return nil, nil, errors.New("tlsconfig: server ca file is required")
	}
	pool, err := pki.ReadCertPool(opts.ServerCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsconfig: server ca: %w", err)
	}
	r := opts.Reloader
	if r == nil {
		r, err = NewReloader(opts.CertFile, opts.KeyFile, ReloaderOptions{Logger: log})
		if err != nil {
			return nil, nil, err
		}
	}
	cfg := &tls.Config{
		MinVersion:           tls.VersionTLS13,
		MaxVersion:           tls.VersionTLS13,
		GetClientCertificate: r.GetClientCertificate,
		RootCAs:              pool,
		ServerName:           opts.ServerName,
		// ClientSessionCache stays nil: no resumption (see ServerConfig).
	}
	if opts.RequireServerRole != "" {
		cfg.VerifyConnection = checkPeer(opts.RequireServerRole, log, "server", nil)
	}
	return cfg, r, nil
}
