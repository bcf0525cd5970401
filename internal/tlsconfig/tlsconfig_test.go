package tlsconfig

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/pki"
	"github.com/pulse-attest/pulse/internal/pulsesig"
)

// env is a directory holding a CA, a verifier certificate and helpers to
// issue more, all as files, the way the daemons receive them.
type env struct {
	t   *testing.T
	dir string
	ca  *pki.CA
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ca, err := pki.NewCA("tlsconfig test ca", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: t.TempDir(), ca: ca}
	if err := ca.WriteFiles(e.path("ca.pem"), e.path("ca-key.pem"), false); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// issue writes a certificate and key for req to prefix.pem/prefix-key.pem.
func (e *env) issue(ca *pki.CA, prefix string, req pki.Request) (certFile, keyFile string, is *pki.Issued) {
	e.t.Helper()
	is, err := pki.Issue(ca, req)
	if err != nil {
		e.t.Fatal(err)
	}
	certFile, keyFile = e.path(prefix+".pem"), e.path(prefix+"-key.pem")
	if err := is.WriteFiles(certFile, keyFile, true); err != nil {
		e.t.Fatal(err)
	}
	return certFile, keyFile, is
}

// rawCert writes a certificate from an arbitrary template signed by ca.
func (e *env) rawCert(ca *pki.CA, prefix string, tmpl *x509.Certificate) (certFile, keyFile string) {
	e.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		e.t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		e.t.Fatal(err)
	}
	certFile, keyFile = e.path(prefix+".pem"), e.path(prefix+"-key.pem")
	if err := pki.WritePair(certFile, pki.EncodeCertPEM(der), keyFile, keyPEM, true); err != nil {
		e.t.Fatal(err)
	}
	return certFile, keyFile
}

type result struct {
	serverErr   error
	serverState tls.ConnectionState
	clientErr   error
	clientState tls.ConnectionState
}

// handshake runs one real TLS handshake over loopback TCP. The server writes
// "ok" after its handshake succeeds; the client reads it, which is where a
// TLS 1.3 client learns that the server refused its certificate.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var res result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			res.serverErr = err
			return
		}
		defer c.Close()
		sc := tls.Server(c, serverCfg)
		if err := sc.HandshakeContext(ctx); err != nil {
			res.serverErr = err
			return
		}
		res.serverState = sc.ConnectionState()
		_, res.serverErr = sc.Write([]byte("ok"))
	}()

	d := tls.Dialer{Config: clientCfg}
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		res.clientErr = err
	} else {
		cc := c.(*tls.Conn)
		res.clientState = cc.ConnectionState()
		_ = cc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2)
		if _, err := io.ReadFull(cc, buf); err != nil {
			res.clientErr = err
		} else if string(buf) != "ok" {
			res.clientErr = errors.New("unexpected server data")
		}
		cc.Close()
	}
	wg.Wait()
	return res
}

func mustServer(t *testing.T, opts ServerOptions) (*tls.Config, *Reloader) {
	t.Helper()
	cfg, r, err := ServerConfig(opts)
	if err != nil {
		t.Fatalf("ServerConfig: %v", err)
	}
	return cfg, r
}

func mustClient(t *testing.T, opts ClientOptions) (*tls.Config, *Reloader) {
	t.Helper()
	cfg, r, err := ClientConfig(opts)
	if err != nil {
		t.Fatalf("ClientConfig: %v", err)
	}
	return cfg, r
}

// alertOf returns the TLS alert the peer sent. crypto/tls reports a received
// alert as a *net.OpError with Op "remote error" around an unexported type
// whose text is the same as tls.AlertError's for the same code.
func alertOf(err error) (tls.AlertError, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return 0, false
	}
	for code := range 256 {
		if a := tls.AlertError(code); a.Error() == op.Err.Error() {
			return a, true
		}
	}
	return 0, false
}

// TLS alert codes (RFC 8446 §6).
const (
	alertBadCertificate  = tls.AlertError(42)
	alertUnknownCA       = tls.AlertError(48)
	alertProtocolVersion = tls.AlertError(70)
)

func TestHandshakes(t *testing.T) {
	e := newEnv(t)
	other, err := pki.NewCA("other ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vCert, vKey, _ := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	agentCert, agentKey, _ := e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "edge-1"})
	edCert, edKey, _ := e.issue(e.ca, "agent-ed", pki.Request{Role: pki.RoleAgent, ID: "edge-ed", KeyType: pki.KeyEd25519})
	rsaCert, rsaKey, _ := e.issue(e.ca, "agent-rsa", pki.Request{Role: pki.RoleAgent, ID: "edge-rsa", KeyType: pki.KeyRSA3072})
	opCert, opKey, _ := e.issue(e.ca, "operator", pki.Request{Role: pki.RoleOperator, ID: "alice"})
	foreignCert, foreignKey, _ := e.issue(other, "foreign", pki.Request{Role: pki.RoleAgent, ID: "edge-1"})
	foreignVCert, foreignVKey, _ := e.issue(other, "foreign-verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	// A client certificate from the right CA with a valid EKU but no pulse identity.
	noIDCert, noIDKey := e.rawCert(e.ca, "noid", &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "pulse://agent/edge-1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	agentURI, _ := url.Parse("pulse://agent/edge-1")
	opURI, _ := url.Parse("pulse://operator/alice")
	twoIDCert, twoIDKey := e.rawCert(e.ca, "twoid", &x509.Certificate{
		SerialNumber: big.NewInt(8), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{agentURI, opURI},
	})
	// A server certificate from the right CA with no pulse identity.
	noIDServerCert, noIDServerKey := e.rawCert(e.ca, "noid-server", &x509.Certificate{
		SerialNumber: big.NewInt(9), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"},
	})

	agentServer, _ := mustServer(t, ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: e.path("ca.pem"), RequireRole: pki.RoleAgent})
	anyRoleServer, _ := mustServer(t, ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: e.path("ca.pem")})
	noIDServer, _ := mustServer(t, ServerOptions{CertFile: noIDServerCert, KeyFile: noIDServerKey, ClientCAFile: e.path("ca.pem")})

	client := func(cert, key string, mod func(*tls.Config)) *tls.Config {
		cfg, _ := mustClient(t, ClientOptions{CertFile: cert, KeyFile: key, ServerCAFile: e.path("ca.pem"), ServerName: "localhost", RequireServerRole: pki.RoleVerifier})
		if mod != nil {
			mod(cfg)
		}
		return cfg
	}
	// A client with no certificate at all (plain crypto/tls config).
	noCertClient := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: e.ca.Pool(), ServerName: "localhost"}
	tls12Client := client(agentCert, agentKey, func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12 })

	tests := []struct {
		name       string
		server     *tls.Config
		client     *tls.Config
		wantID     pki.Identity
		serverWant func(error) bool
		clientWant func(error) bool
	}{
		{name: "agent ecdsa accepted", server: agentServer, client: client(agentCert, agentKey, nil), wantID: pki.Identity{Role: pki.RoleAgent, ID: "edge-1"}},
		{name: "agent ed25519 accepted", server: agentServer, client: client(edCert, edKey, nil), wantID: pki.Identity{Role: pki.RoleAgent, ID: "edge-ed"}},
		{name: "agent rsa-3072 accepted", server: agentServer, client: client(rsaCert, rsaKey, nil), wantID: pki.Identity{Role: pki.RoleAgent, ID: "edge-rsa"}},
		{name: "operator accepted where any role allowed", server: anyRoleServer, client: client(opCert, opKey, nil), wantID: pki.Identity{Role: pki.RoleOperator, ID: "alice"}},
		{
			name: "no client certificate", server: agentServer, client: noCertClient,
			// Refused by the identity check (typed, so it can be counted),
			// hence bad_certificate rather than certificate_required.
			serverWant: func(err error) bool { return errors.Is(err, ErrNoPeerCertificate) },
			clientWant: func(err error) bool { a, ok := alertOf(err); return ok && a == alertBadCertificate },
		},
		{
			name: "client certificate from another CA", server: agentServer, client: client(foreignCert, foreignKey, nil),
			serverWant: func(err error) bool { var u x509.UnknownAuthorityError; return errors.As(err, &u) },
			clientWant: func(err error) bool { a, ok := alertOf(err); return ok && a == alertUnknownCA },
		},
		{
			name: "tls 1.2 only client", server: agentServer, client: tls12Client,
			serverWant: func(err error) bool { return err != nil && !errors.Is(err, ErrWrongRole) },
			clientWant: func(err error) bool { a, ok := alertOf(err); return ok && a == alertProtocolVersion },
		},
		{
			name: "operator refused where agent required", server: agentServer, client: client(opCert, opKey, nil),
			serverWant: func(err error) bool {
				var re *RoleError
				return errors.Is(err, ErrWrongRole) && errors.As(err, &re) && re.Got == pki.Identity{Role: pki.RoleOperator, ID: "alice"} && re.Want == pki.RoleAgent
			},
			clientWant: func(err error) bool { a, ok := alertOf(err); return ok && a == alertBadCertificate },
		},
		{
			name: "verifier certificate refused as client (eku)", server: anyRoleServer, client: client(vCert, vKey, nil),
			serverWant: func(err error) bool {
				var ci x509.CertificateInvalidError
				return errors.As(err, &ci) && ci.Reason == x509.IncompatibleUsage
			},
			clientWant: func(err error) bool { return err != nil },
		},
		{
			name: "client certificate without identity (cn only)", server: anyRoleServer, client: client(noIDCert, noIDKey, nil),
			serverWant: func(err error) bool { return errors.Is(err, pki.ErrNoIdentity) },
			clientWant: func(err error) bool { a, ok := alertOf(err); return ok && a == alertBadCertificate },
		},
		{
			name: "client certificate with two identities", server: anyRoleServer, client: client(twoIDCert, twoIDKey, nil),
			serverWant: func(err error) bool { return errors.Is(err, pki.ErrMultipleIdentities) },
			clientWant: func(err error) bool { return err != nil },
		},
		{
			name: "server from another CA refused by client", server: func() *tls.Config {
				c, _ := mustServer(t, ServerOptions{CertFile: foreignVCert, KeyFile: foreignVKey, ClientCAFile: e.path("ca.pem")})
				return c
			}(), client: client(agentCert, agentKey, nil),
			serverWant: func(err error) bool { return err != nil },
			clientWant: func(err error) bool { var u x509.UnknownAuthorityError; return errors.As(err, &u) },
		},
		{
			name: "server without verifier identity refused by client", server: noIDServer, client: client(agentCert, agentKey, nil),
			serverWant: func(err error) bool { return err != nil },
			clientWant: func(err error) bool { return errors.Is(err, pki.ErrNoIdentity) },
		},
		{
			name: "server name mismatch refused by client", server: agentServer, client: client(agentCert, agentKey, func(c *tls.Config) { c.ServerName = "verifier.example.net" }),
			serverWant: func(err error) bool { return err != nil },
			clientWant: func(err error) bool { var h x509.HostnameError; return errors.As(err, &h) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := handshake(t, tc.server, tc.client)
			if tc.serverWant == nil {
				if res.serverErr != nil || res.clientErr != nil {
					t.Fatalf("handshake failed: server %v, client %v", res.serverErr, res.clientErr)
				}
				if res.serverState.Version != tls.VersionTLS13 {
					t.Errorf("version %x, want TLS 1.3", res.serverState.Version)
				}
				id, err := PeerIdentity(res.serverState)
				if err != nil || id != tc.wantID {
					t.Errorf("PeerIdentity = %+v, %v; want %+v", id, err, tc.wantID)
				}
				sid, err := PeerIdentity(res.clientState)
				if err != nil || sid != (pki.Identity{Role: pki.RoleVerifier, ID: "v1"}) {
					t.Errorf("client sees server identity %+v, %v", sid, err)
				}
				return
			}
			if !tc.serverWant(res.serverErr) {
				t.Errorf("server error = %v (%T)", res.serverErr, res.serverErr)
			}
			if !tc.clientWant(res.clientErr) {
				t.Errorf("client error = %v (%T)", res.clientErr, res.clientErr)
			}
			if res.serverErr == nil && res.clientErr == nil {
				t.Error("handshake succeeded")
			}
		})
	}
}

func TestPeerIdentityRefusesUnverified(t *testing.T) {
	e := newEnv(t)
	_, _, is := e.issue(e.ca, "a", pki.Request{Role: pki.RoleAgent, ID: "a"})
	if _, err := PeerIdentity(tls.ConnectionState{}); !errors.Is(err, ErrNoPeerCertificate) {
		t.Errorf("no certs: %v", err)
	}
	if _, err := PeerIdentity(tls.ConnectionState{PeerCertificates: []*x509.Certificate{is.Cert}}); !errors.Is(err, ErrUnverifiedPeer) {
		t.Errorf("unverified: %v", err)
	}
	id, err := PeerIdentity(tls.ConnectionState{PeerCertificates: []*x509.Certificate{is.Cert}, VerifiedChains: [][]*x509.Certificate{{is.Cert, e.ca.Cert}}})
	if err != nil || id.ID != "a" {
		t.Errorf("verified: %+v, %v", id, err)
	}
}

func TestConfigErrors(t *testing.T) {
	e := newEnv(t)
	vCert, vKey, _ := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	_, aKey, _ := e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "a"})
	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"server missing ca", func() error {
			_, _, err := ServerConfig(ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: e.path("nope.pem")})
			return err
		}, os.ErrNotExist},
		{"server bad role", func() error {
			_, _, err := ServerConfig(ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: e.path("ca.pem"), RequireRole: "admin"})
			return err
		}, pki.ErrBadRole},
		{"server key mismatch", func() error {
			_, _, err := ServerConfig(ServerOptions{CertFile: vCert, KeyFile: aKey, ClientCAFile: e.path("ca.pem")})
			return err
		}, pki.ErrKeyMismatch},
		{"server ca file is a key", func() error {
			_, _, err := ServerConfig(ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: vKey})
			return err
		}, pki.ErrNoPEM},
		{"client missing key", func() error {
			_, _, err := ClientConfig(ClientOptions{CertFile: vCert, KeyFile: e.path("nope.pem"), ServerCAFile: e.path("ca.pem")})
			return err
		}, os.ErrNotExist},
		{"client bad role", func() error {
			_, _, err := ClientConfig(ClientOptions{CertFile: vCert, KeyFile: vKey, ServerCAFile: e.path("ca.pem"), RequireServerRole: "x"})
			return err
		}, pki.ErrBadRole},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, _, err := ServerConfig(ServerOptions{CertFile: vCert, KeyFile: vKey}); err == nil {
		t.Error("server config without client CA accepted")
	}
	if _, _, err := ClientConfig(ClientOptions{CertFile: vCert, KeyFile: vKey}); err == nil {
		t.Error("client config without server CA accepted")
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(buf io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "tlsconfig", Output: buf, JSONFormat: true, Level: hclog.Debug})
}

func serialOf(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) == 0 {
		return ""
	}
	return cs.PeerCertificates[0].SerialNumber.String()
}

func TestServerReload(t *testing.T) {
	e := newEnv(t)
	var logs syncBuffer
	log := testLogger(&logs)
	vCert, vKey, v1 := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	aCert, aKey, _ := e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "a"})
	srv, r := mustServer(t, ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: e.path("ca.pem"), RequireRole: pki.RoleAgent, Logger: log})
	cli, _ := mustClient(t, ClientOptions{CertFile: aCert, KeyFile: aKey, ServerCAFile: e.path("ca.pem"), ServerName: "localhost"})

	check := func(want *pki.Issued) {
		t.Helper()
		res := handshake(t, srv, cli)
		if res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("handshake: server %v, client %v", res.serverErr, res.clientErr)
		}
		if got := serialOf(res.clientState); got != want.Cert.SerialNumber.String() {
			t.Fatalf("server presented serial %s, want %s", got, want.Cert.SerialNumber)
		}
		if cur, _ := r.Current(); !cur.Leaf.Equal(want.Cert) {
			t.Fatalf("Current() serial %s, want %s", cur.Leaf.SerialNumber, want.Cert.SerialNumber)
		}
	}
	check(v1)

	// Explicit Reload with unchanged files: nothing changes.
	changed := r.Changed()
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
		t.Fatal("Changed fired without a change")
	default:
	}

	// Explicit Reload picks up a new pair; the same tls.Config serves it.
	_, _, v2 := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire after a reload")
	}
	check(v2)

	// Polling picks up the next one.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, 20*time.Millisecond)
	changed = r.Changed()
	_, _, v3 := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1", KeyType: pki.KeyEd25519})
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("poll did not pick up the new certificate")
	}
	check(v3)
	cancel()

	// Invalid replacements are refused and v3 keeps serving.
	other, _ := pki.NewCA("other", time.Hour)
	expiredCert, expiredKey := e.rawCert(e.ca, "expired", &x509.Certificate{
		SerialNumber: big.NewInt(99), NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"localhost"},
	})
	futureCert, futureKey := e.rawCert(e.ca, "future", &x509.Certificate{
		SerialNumber: big.NewInt(100), NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"localhost"},
	})
	_, _, unrelated := e.issue(other, "unrelated", pki.Request{Role: pki.RoleVerifier, ID: "v9"})
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	goodCertPEM, goodKeyPEM := read(vCert), read(vKey)
	bad := []struct {
		name          string
		certPEM, key  []byte
		want          error
		removeKeyFile bool
	}{
		{name: "garbage certificate", certPEM: []byte("garbage"), key: goodKeyPEM, want: pki.ErrNoPEM},
		{name: "garbage key", certPEM: goodCertPEM, key: []byte("garbage"), want: pki.ErrNoPEM},
		{name: "key of another certificate", certPEM: unrelated.CertPEM, key: goodKeyPEM, want: pki.ErrKeyMismatch},
		{name: "expired certificate", certPEM: read(expiredCert), key: read(expiredKey), want: ErrCertExpired},
		{name: "not yet valid certificate", certPEM: read(futureCert), key: read(futureKey), want: ErrCertNotYetValid},
		{name: "key file removed", certPEM: goodCertPEM, removeKeyFile: true, want: os.ErrNotExist},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			if err := pki.WriteFileAtomic(vCert, b.certPEM, 0o644); err != nil {
				t.Fatal(err)
			}
			if b.removeKeyFile {
				if err := os.Remove(vKey); err != nil {
					t.Fatal(err)
				}
			} else if err := pki.WriteFileAtomic(vKey, b.key, 0o600); err != nil {
				t.Fatal(err)
			}
			err := r.Reload()
			if !errors.Is(err, b.want) {
				t.Fatalf("Reload = %v, want %v", err, b.want)
			}
			check(v3)
		})
	}
	// Restoring a good pair is picked up again.
	_, _, v4 := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	check(v4)

	out := logs.String()
	for _, want := range []string{`"cert_file"`, `"serial"`, `"previous_serial"`, `refused new certificate`, `"error"`} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
	for _, secret := range [][]byte{v1.KeyPEM, v2.KeyPEM, v4.KeyPEM, goodKeyPEM} {
		body := strings.Split(string(secret), "\n")[1]
		if strings.Contains(out, body) {
			t.Error("logs contain private key material")
		}
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Error("logs mention a PEM private key block")
	}
}

func TestPollLogsRefusalOnce(t *testing.T) {
	e := newEnv(t)
	var logs syncBuffer
	cert, key, is := e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "a"})
	r, err := NewReloader(cert, key, ReloaderOptions{Logger: testLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFileAtomic(cert, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := r.reload(false); !errors.Is(err, pki.ErrNoPEM) {
			t.Fatalf("reload = %v", err)
		}
	}
	if n := strings.Count(logs.String(), "refused new certificate"); n != 1 {
		t.Errorf("refusal logged %d times over 5 polls, want 1", n)
	}
	if cur, _ := r.Current(); !cur.Leaf.Equal(is.Cert) {
		t.Error("current pair replaced by garbage")
	}
}

func TestClientReloadAndSigner(t *testing.T) {
	e := newEnv(t)
	vCert, vKey, _ := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	aCert, aKey, a1 := e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "edge-1"})
	srv, _ := mustServer(t, ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: e.path("ca.pem"), RequireRole: pki.RoleAgent})
	// The agent refuses a replacement certificate naming a different agent.
	keepID := func(leaf *x509.Certificate) error {
		id, err := pki.IdentityFromCert(leaf)
		if err != nil {
			return err
		}
		if id != (pki.Identity{Role: pki.RoleAgent, ID: "edge-1"}) {
			return errors.New("certificate names " + id.String())
		}
		return nil
	}
	r, err := NewReloader(aCert, aKey, ReloaderOptions{Check: keepID})
	if err != nil {
		t.Fatal(err)
	}
	cli, _ := mustClient(t, ClientOptions{Reloader: r, ServerCAFile: e.path("ca.pem"), ServerName: "localhost", RequireServerRole: pki.RoleVerifier})

	signAndCheck := func(want *pki.Issued) {
		t.Helper()
		res := handshake(t, srv, cli)
		if res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("handshake: server %v, client %v", res.serverErr, res.clientErr)
		}
		peer := res.serverState.PeerCertificates[0]
		if !peer.Equal(want.Cert) {
			t.Fatalf("client presented serial %s, want %s", peer.SerialNumber, want.Cert.SerialNumber)
		}
		// The key Current returns signs pulses the TLS-proven certificate verifies.
		cert, signer := r.Current()
		payload := []byte("pulse payload")
		sig, err := pulsesig.Sign(signer, payload)
		if err != nil {
			t.Fatal(err)
		}
		if err := pulsesig.Verify(peer.PublicKey, payload, sig); err != nil {
			t.Fatalf("pulse signed with Current() does not verify against the TLS peer key: %v", err)
		}
		if pulsesig.LeafKeyDigest(cert.Leaf) != pulsesig.LeafKeyDigest(peer) {
			t.Fatal("leaf key digest differs from TLS peer's")
		}
	}
	signAndCheck(a1)

	_, _, a2 := e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "edge-1", KeyType: pki.KeyEd25519})
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	signAndCheck(a2)

	// A certificate for another agent ID is refused by Check.
	e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "edge-2"})
	if err := r.Reload(); !errors.Is(err, ErrCheckFailed) {
		t.Fatalf("Reload of another identity = %v, want ErrCheckFailed", err)
	}
	signAndCheck(a2)
}

func TestNewReloaderErrors(t *testing.T) {
	e := newEnv(t)
	cert, key, _ := e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "a"})
	if _, err := NewReloader("", key, ReloaderOptions{}); err == nil {
		t.Error("empty cert path accepted")
	}
	if _, err := NewReloader(cert, key, ReloaderOptions{Now: func() time.Time { return time.Now().Add(365 * 24 * time.Hour) }}); !errors.Is(err, ErrCertExpired) {
		t.Errorf("expired at start: %v", err)
	}
	refuse := errors.New("no")
	if _, err := NewReloader(cert, key, ReloaderOptions{Check: func(*x509.Certificate) error { return refuse }}); !errors.Is(err, ErrCheckFailed) || !errors.Is(err, refuse) {
		t.Errorf("check at start: %v", err)
	}
}

func TestNoSessionResumption(t *testing.T) {
	e := newEnv(t)
	vCert, vKey, _ := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	aCert, aKey, _ := e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "a"})
	srv, _ := mustServer(t, ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: e.path("ca.pem"), RequireRole: pki.RoleAgent})
	cli, _ := mustClient(t, ClientOptions{CertFile: aCert, KeyFile: aKey, ServerCAFile: e.path("ca.pem"), ServerName: "localhost"})
	// Even a client that asks to resume gets a full handshake.
	cli.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i := range 2 {
		res := handshake(t, srv, cli)
		if res.serverErr != nil || res.clientErr != nil {
			t.Fatalf("handshake %d: server %v, client %v", i, res.serverErr, res.clientErr)
		}
		if res.serverState.DidResume || res.clientState.DidResume {
			t.Fatalf("handshake %d resumed a session", i)
		}
	}
}
