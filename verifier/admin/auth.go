package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
)

// MinTokenLength is the shortest bearer token New accepts (bytes).
const MinTokenLength = 16

// TokenPrincipal is the operator name recorded for actions authorised by the
// bearer token (directly or through a dashboard session made from it).
const TokenPrincipal = "token"

// SessionCookie is the dashboard session cookie's name.
const SessionCookie = "pulse_admin_session"

// DefaultSessionTTL is how long a dashboard session lasts.
const DefaultSessionTTL = 12 * time.Hour

// Authentication methods reported in Principal.Method.
const (
	MethodCertificate = "certificate"
	MethodToken       = "token"
	MethodSession     = "session"
)

// Principal is an authenticated operator.
type Principal struct {
	// Name is recorded as "by" on actions: the operator certificate's ID,
	// or TokenPrincipal.
	Name   string `json:"principal"`
	Method string `json:"method"`
}

// authError is a refused request: status (401 or 403), a reason label for
// metrics and logs, and the message sent to the client (never containing
// the presented credential).
type authError struct {
	status int
	reason string
	msg    string
}

func (e *authError) Error() string { return e.msg }

func unauthorized(reason, msg string) *authError {
	return &authError{status: http.StatusUnauthorized, reason: reason, msg: msg}
}

func forbidden(reason, msg string) *authError {
	return &authError{status: http.StatusForbidden, reason: reason, msg: msg}
}

// tokenAuth checks the bearer token and the session cookies derived from it.
// Only the token's SHA-256 and an HMAC key derived from it are kept.
type tokenAuth struct {
	sum        [sha256.Size]byte
	sessionKey []byte
	ttl        time.Duration
	now        func() time.Time
}

func newTokenAuth(token string, ttl time.Duration, now func() time.Time) (*tokenAuth, error) {
	if token == "" {
		return nil, nil
	}
	if len(token) < MinTokenLength {
		return nil, fmt.Errorf("admin: token is %d bytes, want at least %d", len(token), MinTokenLength)
	}
	if strings.TrimSpace(token) != token || strings.ContainsAny(token, "\r\n\t ") {
		return nil, errors.New("admin: token contains whitespace")
	}
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("pulse admin session key v1"))
	return &tokenAuth{sum: sha256.Sum256([]byte(token)), sessionKey: mac.Sum(nil), ttl: ttl, now: now}, nil
}

// check compares a presented token with the configured one in constant time
// (over their SHA-256, so the length does not leak either).
func (a *tokenAuth) check(presented string) bool {
	h := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(h[:], a.sum[:]) == 1
}

// newSession returns a session cookie value "expiry.mac": the MAC binds the
// expiry to the token, so changing the token ends every session and the
// cookie never holds the token itself.
func (a *tokenAuth) newSession() (value string, expires time.Time) {
	expires = a.now().Add(a.ttl).Truncate(time.Second)
	exp := strconv.FormatInt(expires.Unix(), 10)
	return exp + "." + a.sessionMAC(exp), expires
}

func (a *tokenAuth) sessionMAC(exp string) string {
	mac := hmac.New(sha256.New, a.sessionKey)
	mac.Write([]byte("session\x00"))
	mac.Write([]byte(exp))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (a *tokenAuth) checkSession(value string) bool {
	exp, sig, ok := strings.Cut(value, ".")
	if !ok || len(exp) > 20 {
		return false
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return false
	}
	want := a.sessionMAC(exp)
	if subtle.ConstantTimeCompare([]byte(sig), []byte(want)) != 1 {
		return false
	}
	return a.now().Before(time.Unix(secs, 0))
}

func (a *tokenAuth) sessionCookie() *http.Cookie {
	v, exp := a.newSession()
	return &http.Cookie{Name: SessionCookie, Value: v, Path: "/", Expires: exp, MaxAge: int(a.ttl / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode}
}

// authenticate decides who sent r. A client certificate, when presented,
// decides alone (it must be a verified operator identity); otherwise the
// Authorization bearer token, otherwise the session cookie. Tokens are only
// accepted over TLS.
func (h *handler) authenticate(r *http.Request) (Principal, *authError) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		id, err := tlsconfig.PeerIdentity(*r.TLS)
		if err != nil {
			return Principal{}, forbidden("bad_certificate", "client certificate not accepted")
		}
		if id.Role != pki.RoleOperator {
			return Principal{}, forbidden("wrong_role", "client certificate is not an operator's")
		}
		if id.ID == TokenPrincipal {
			// The name is reserved for token-authorised actions in the audit trail.
			return Principal{}, forbidden("reserved_name", "operator certificates may not be named \"token\"")
		}
		return Principal{Name: id.ID, Method: MethodCertificate}, nil
	}
	authz := r.Header.Get("Authorization")
	cookie, _ := r.Cookie(SessionCookie)
	if authz == "" && cookie == nil {
		return Principal{}, unauthorized("no_credentials", "operator certificate or bearer token required")
	}
	if h.tokens == nil {
		return Principal{}, unauthorized("token_disabled", "token authentication is not enabled; use an operator certificate")
	}
	if r.TLS == nil {
		return Principal{}, unauthorized("plaintext", "tokens are only accepted over TLS")
	}
	if authz != "" {
		scheme, tok, ok := strings.Cut(authz, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return Principal{}, unauthorized("bad_scheme", "authorization must be \"Bearer <token>\"")
		}
		if !h.tokens.check(strings.TrimSpace(tok)) {
			return Principal{}, unauthorized("bad_token", "invalid token")
		}
		return Principal{Name: TokenPrincipal, Method: MethodToken}, nil
	}
	if !h.tokens.checkSession(cookie.Value) {
		return Principal{}, unauthorized("bad_session", "session expired or invalid; open the dashboard with ?token= again")
	}
	return Principal{Name: TokenPrincipal, Method: MethodSession}, nil
}

// ReadTokenFile reads the admin bearer token from a file (one line; a
// trailing newline is ignored). Like ssh with private keys, it refuses a
// file that group or others may read or write, and a token shorter than
// MinTokenLength. Errors never include the file's content.
func ReadTokenFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("admin token file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("admin token file %s has mode %04o: make it 0600 (readable by the verifier only)", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	tok := strings.TrimRight(string(b), "\r\n")
	if len(tok) < MinTokenLength || strings.ContainsAny(tok, "\r\n\t ") {
		return "", fmt.Errorf("admin token file %s: want one line of at least %d bytes without whitespace (e.g. openssl rand -hex 32)", path, MinTokenLength)
	}
	return tok, nil
}

// TLSOptions configures TLSConfig.
type TLSOptions struct {
	// CertFile and KeyFile are the listener's certificate and key (the
	// verifier's own pair is fine). Ignored when Reloader is set.
	CertFile, KeyFile string
	// Reloader supplies the certificate instead of CertFile/KeyFile.
	Reloader *tlsconfig.Reloader
	// OperatorCAFile holds the CAs operator certificates chain to. Empty
	// disables certificate authentication (a token is then required).
	OperatorCAFile string
	// AllowNoClientCert lets clients connect without a certificate, to
	// authenticate with the bearer token instead. Set it exactly when a
	// token is configured. Clients that do present a certificate must
	// still present a verified operator one, or the handshake fails.
	AllowNoClientCert bool
	// Logger; nil discards.
	Logger hclog.Logger
}

// TLSConfig returns the admin listener's TLS 1.3 configuration: operator
// client certificates are required (RequireAndVerifyClientCert, role
// operator) unless AllowNoClientCert, in which case they are verified when
// given. It returns the certificate Reloader (run its loop to pick up
// rotated files).
func TLSConfig(o TLSOptions) (*tls.Config, *tlsconfig.Reloader, error) {
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if o.OperatorCAFile == "" {
		if !o.AllowNoClientCert {
			return nil, nil, errors.New("admin: no operator ca and no token: nobody could authenticate")
		}
		r := o.Reloader
		if r == nil {
			var err error
			r, err = tlsconfig.NewReloader(o.CertFile, o.KeyFile, tlsconfig.ReloaderOptions{Logger: log})
			if err != nil {
				return nil, nil, fmt.Errorf("admin: %w", err)
			}
		}
		return &tls.Config{
			MinVersion:             tls.VersionTLS13,
			MaxVersion:             tls.VersionTLS13,
			GetCertificate:         r.GetCertificate,
			ClientAuth:             tls.NoClientCert,
			SessionTicketsDisabled: true,
		}, r, nil
	}
	cfg, r, err := tlsconfig.ServerConfig(tlsconfig.ServerOptions{
		CertFile: o.CertFile, KeyFile: o.KeyFile, Reloader: o.Reloader,
		ClientCAFile: o.OperatorCAFile, RequireRole: pki.RoleOperator, Logger: log,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("admin: %w", err)
	}
	if o.AllowNoClientCert {
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		verify := cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // the handler then requires the token
			}
			return verify(cs)
		}
	}
	return cfg, r, nil
}
