package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/tlsconfig"
)

// MinTokenLength is the shortest bearer token New accepts (bytes).
const MinTokenLength = 16

// TokenPrincipal is the operator name recorded for actions authorised by the
// unnamed (legacy, single-line file) bearer token, directly or through a
// dashboard session made from it. Named tokens record TokenPrincipalPrefix
// followed by their name ("token:alice").
const TokenPrincipal = "token"

// TokenPrincipalPrefix starts the recorded name of a named token's actions.
// Operator IDs never contain ':', so these never collide with certificates.
const TokenPrincipalPrefix = TokenPrincipal + ":"

// TokenPrincipalName is the name recorded for actions of the token named
// name ("" is the unnamed token).
func TokenPrincipalName(name string) string {
	if name == "" {
		return TokenPrincipal
	}
	return TokenPrincipalPrefix + name
}

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
	// TokenPrincipalPrefix+name for a named token, or TokenPrincipal for
	// the unnamed one.
	Name   string `json:"principal"`
	Method string `json:"method"`
	// TokenName is the bearer token's name (tokens and sessions; empty
	// for the unnamed token and certificates).
	TokenName string `json:"token_name,omitempty"`
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

// tokenAuth checks the bearer tokens and the session cookies derived from
// them. Each token has a name, so actions are attributable to an operator;
// the name "" is the unnamed token of a single-line token file. Only each
// token's SHA-256 and an HMAC key derived from it are kept.
type tokenAuth struct {
	tokens []namedToken
	ttl    time.Duration
	now    func() time.Time
}

type namedToken struct {
	name       string
	sum        [sha256.Size]byte
	sessionKey []byte
}

// checkToken validates one token's form; the error never holds the token.
func checkToken(name, token string) error {
	label := "token"
	if name != "" {
		label = fmt.Sprintf("token %q", name)
	}
	if len(token) < MinTokenLength {
		return fmt.Errorf("admin: %s is %d bytes, want at least %d", label, len(token), MinTokenLength)
	}
	if strings.TrimSpace(token) != token || strings.ContainsAny(token, "\r\n\t ") {
		return fmt.Errorf("admin: %s contains whitespace", label)
	}
	return nil
}

// checkTokenName validates a token's name: an operator ID, never "token".
func checkTokenName(name string) error {
	if err := pki.ValidateID(name); err != nil {
		return fmt.Errorf("admin: token name: %w", err)
	}
	if name == TokenPrincipal {
		return fmt.Errorf("admin: token name %q is reserved for the unnamed token", name)
	}
	return nil
}

// newTokenAuth takes the unnamed token (may be empty) and the named ones
// (name → token). No tokens at all: nil (token authentication disabled).
func newTokenAuth(token string, named map[string]string, ttl time.Duration, now func() time.Time) (*tokenAuth, error) {
	all := map[string]string{}
	for name, tok := range named {
		if name == "" {
			if token != "" && tok != token {
				return nil, errors.New("admin: two unnamed tokens")
			}
			token = tok
			continue
		}
		if err := checkTokenName(name); err != nil {
			return nil, err
		}
		all[name] = tok
	}
	if token != "" {
		all[""] = token
	}
	if len(all) == 0 {
		return nil, nil
	}
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	a := &tokenAuth{ttl: ttl, now: now}
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	sort.Strings(names)
	bySum := map[[sha256.Size]byte]string{}
	for _, name := range names {
		tok := all[name]
		if err := checkToken(name, tok); err != nil {
			return nil, err
		}
		sum := sha256.Sum256([]byte(tok))
		if other, dup := bySum[sum]; dup {
			return nil, fmt.Errorf("admin: tokens %q and %q are the same: give each operator their own", TokenPrincipalName(other), TokenPrincipalName(name))
		}
		bySum[sum] = name
		mac := hmac.New(sha256.New, []byte(tok))
		mac.Write([]byte("pulse admin session key v1"))
		a.tokens = append(a.tokens, namedToken{name: name, sum: sum, sessionKey: mac.Sum(nil)})
	}
	return a, nil
}

// check compares a presented token with every configured one in constant
// time (over their SHA-256, so the length does not leak either; every
// token is compared, so which one matched does not leak) and returns the
// matching token's name.
func (a *tokenAuth) check(presented string) (name string, ok bool) {
	h := sha256.Sum256([]byte(presented))
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(h[:], t.sum[:]) == 1 {
			name, ok = t.name, true
		}
	}
	return name, ok
}

func (a *tokenAuth) token(name string) *namedToken {
	for i := range a.tokens {
		if a.tokens[i].name == name {
			return &a.tokens[i]
		}
	}
	return nil
}

// newSession returns a session cookie value for the token named name:
// "expiry.mac" for the unnamed token, "name:expiry.mac" for a named one.
// The MAC, keyed from the token, binds the expiry and the name to it, so
// changing a token ends its sessions and the cookie never holds the token.
func (a *tokenAuth) newSession(name string) (value string, expires time.Time) {
	expires = a.now().Add(a.ttl).Truncate(time.Second)
	exp := strconv.FormatInt(expires.Unix(), 10)
	value = exp + "." + a.token(name).sessionMAC(exp)
	if name != "" {
		value = name + ":" + value
	}
	return value, expires
}

func (t *namedToken) sessionMAC(exp string) string {
	mac := hmac.New(sha256.New, t.sessionKey)
	mac.Write([]byte("session\x00"))
	if t.name != "" {
		mac.Write([]byte(t.name))
		mac.Write([]byte{0})
	}
	mac.Write([]byte(exp))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// checkSession returns the name of the token a valid session was made
// from.
func (a *tokenAuth) checkSession(value string) (string, bool) {
	name, rest, named := strings.Cut(value, ":")
	if !named {
		name, rest = "", value
	}
	t := a.token(name)
	if t == nil {
		return "", false
	}
	exp, sig, ok := strings.Cut(rest, ".")
	if !ok || len(exp) > 20 {
		return "", false
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return "", false
	}
	want := t.sessionMAC(exp)
	if subtle.ConstantTimeCompare([]byte(sig), []byte(want)) != 1 {
		return "", false
	}
	return name, a.now().Before(time.Unix(secs, 0))
}

func (a *tokenAuth) sessionCookie(name string) *http.Cookie {
	v, exp := a.newSession(name)
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
		name, ok := h.tokens.check(strings.TrimSpace(tok))
		if !ok {
			return Principal{}, unauthorized("bad_token", "invalid token")
		}
		return Principal{Name: TokenPrincipalName(name), Method: MethodToken, TokenName: name}, nil
	}
	name, ok := h.tokens.checkSession(cookie.Value)
	if !ok {
		return Principal{}, unauthorized("bad_session", "session expired or invalid; open the dashboard with ?token= again")
	}
	return Principal{Name: TokenPrincipalName(name), Method: MethodSession, TokenName: name}, nil
}

// ReadTokenFile reads the admin bearer tokens from a file. Like ssh with
// private keys, it refuses a file that group or others may read or write.
// Errors never include the file's content.
//
// The file holds either one line, the unnamed token (recorded as "token":
// kept for existing deployments, not attributable to a person), or one
// "name:token" line per operator (names are operator IDs; blank lines and
// lines starting with '#' are skipped), recorded as "token:name". It
// returns name → token, the unnamed token under "".
func ReadTokenFile(path string) (map[string]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("admin token file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("admin token file %s has mode %04o: make it 0600 (readable by the verifier only)", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	return parseTokenFile(path, string(b))
}

func parseTokenFile(path, content string) (map[string]string, error) {
	hint := fmt.Sprintf("admin token file %s: want one token, or name:token lines, each token at least %d bytes without whitespace (e.g. openssl rand -hex 32)", path, MinTokenLength)
	var lines []string
	lineNos := []int{}
	for i, l := range strings.Split(content, "\n") {
		l = strings.TrimRight(l, "\r")
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			continue
		}
		lines = append(lines, l)
		lineNos = append(lineNos, i+1)
	}
	if len(lines) == 1 && !strings.Contains(lines[0], ":") {
		if checkToken("", lines[0]) != nil {
			return nil, errors.New(hint)
		}
		return map[string]string{"": lines[0]}, nil
	}
	if len(lines) == 0 {
		return nil, errors.New(hint)
	}
	out := map[string]string{}
	for i, l := range lines {
		name, tok, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("admin token file %s line %d: want name:token (a file of several tokens names each)", path, lineNos[i])
		}
		if err := checkTokenName(name); err != nil {
			return nil, fmt.Errorf("admin token file %s line %d: %w", path, lineNos[i], err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("admin token file %s line %d: token name %q given twice", path, lineNos[i], name)
		}
		if checkToken(name, tok) != nil {
			return nil, fmt.Errorf("admin token file %s line %d (%s): token must be at least %d bytes without whitespace", path, lineNos[i], name, MinTokenLength)
		}
		out[name] = tok
	}
	return out, nil
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
	// Refused handshakes are logged and counted by the listener (Listen),
	// whatever step refused them.
	cfg, r, err := tlsconfig.ServerConfig(tlsconfig.ServerOptions{
		CertFile: o.CertFile, KeyFile: o.KeyFile, Reloader: o.Reloader,
		ClientCAFile: o.OperatorCAFile, RequireRole: pki.RoleOperator, Logger: log,
		QuietRefusals: true,
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

// handshakeReason maps the cause of a refused handshake to its reason in
// pulse_admin_auth_failures_total; "" for a handshake that failed without
// an authentication decision (no TLS, the client went away), which is
// logged at debug and not counted.
func handshakeReason(c tlsconfig.Cause) string {
	switch c {
	case tlsconfig.CauseNoCertificate:
		return "no_credentials"
	case tlsconfig.CauseWrongRole:
		return "wrong_role"
	case tlsconfig.CauseBadVersion:
		return "bad_version"
	case tlsconfig.CauseUnknownAuthority, tlsconfig.CauseExpired, tlsconfig.CauseRevoked, tlsconfig.CauseBadCertificate:
		return "bad_certificate"
	}
	return ""
}

// handshakeLogBurst is how many refused handshakes of one reason are
// logged at warn per minute; the rest of the minute's go to debug.
const handshakeLogBurst = 5

// handshakeWatch counts and logs the listener's refused handshakes: its
// listener hands every connection to crypto/tls observed
// (tlsconfig.Observe), and its ConnState hook classifies the handshake of
// a connection that closes without completing it.
type handshakeWatch struct {
	count *prometheus.CounterVec // nil: not counted
	log   hclog.Logger
	now   func() time.Time

	mu  sync.Mutex
	win map[string]*logWindow
}

type logWindow struct {
	start         time.Time
	n, suppressed int
}

// newHandshakeWatch counts in h's pulse_admin_auth_failures_total when h
// is a handler from New with a Registry.
func newHandshakeWatch(h http.Handler, log hclog.Logger) *handshakeWatch {
	w := &handshakeWatch{log: log, now: time.Now, win: map[string]*logWindow{}}
	if hh, ok := h.(*handler); ok {
		w.count, w.now = hh.authFail, hh.now
	}
	return w
}

func (w *handshakeWatch) listener(l net.Listener) net.Listener { return observedListener{l} }

type observedListener struct{ net.Listener }

func (l observedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tlsconfig.Observe(c), nil
}

// connState is http.Server.ConnState.
func (w *handshakeWatch) connState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed {
		return
	}
	tc, ok := c.(*tls.Conn)
	if !ok || tc.ConnectionState().HandshakeComplete {
		return
	}
	oc, ok := tc.NetConn().(*tlsconfig.ObservedConn)
	if !ok {
		return
	}
	// The server has handshaken already: this returns the error the
	// handshake failed with (crypto/tls keeps it).
	if err := tc.Handshake(); err != nil {
		w.refused(oc.Refusal(err))
	}
}

func (w *handshakeWatch) refused(r tlsconfig.Refusal) {
	reason := handshakeReason(r.Cause)
	args := []any{"reason", reason, "cause", string(r.Cause), "remote_addr", r.Remote}
	if r.Subject != "" {
		args = append(args, "peer_subject", r.Subject, "peer_serial", r.Serial)
	}
	if r.Err != nil {
		args = append(args, "error", r.Err.Error())
	}
	if reason == "" {
		w.log.Debug("admin handshake failed", args...)
		return
	}
	if w.count != nil {
		w.count.WithLabelValues(reason).Inc()
	}
	now := w.now()
	w.mu.Lock()
	lw := w.win[reason]
	suppressed := 0
	if lw == nil || now.Sub(lw.start) >= time.Minute || now.Before(lw.start) {
		if lw != nil {
			suppressed = lw.suppressed
		}
		lw = &logWindow{start: now}
		w.win[reason] = lw
	}
	lw.n++
	warn := lw.n <= handshakeLogBurst
	if !warn {
		lw.suppressed++
	}
	w.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed_last_minute", suppressed)
	}
	if warn {
		w.log.Warn("admin handshake refused", args...)
	} else {
		w.log.Debug("admin handshake refused", args...)
	}
}
