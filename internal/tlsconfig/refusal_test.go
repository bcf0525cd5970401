package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
)

// observedHandshake runs one server handshake on an observed loopback
// connection against a client that dials with clientCfg (or, when raw is
// set, writes raw and closes), and returns the server's refusal (Cause ""
// when the handshake succeeded).
func observedHandshake(t *testing.T, serverCfg, clientCfg *tls.Config, raw []byte) Refusal {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out := make(chan Refusal, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			out <- Refusal{Cause: "accept failed", Err: err}
			return
		}
		defer c.Close()
		oc := Observe(c)
		sc := tls.Server(oc, serverCfg)
		if err := sc.Handshake(); err != nil {
			out <- oc.Refusal(err)
			return
		}
		_, _ = sc.Write([]byte("ok"))
		out <- Refusal{}
	}()
	if raw != nil {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(raw)
		c.Close()
		return <-out
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), clientCfg)
	if err == nil {
		// A TLS 1.3 client learns of a refused certificate on its first read.
		_, _ = io.ReadFull(c, make([]byte, 2))
		c.Close()
	}
	return <-out
}

func TestRefusalCauses(t *testing.T) {
	e := newEnv(t)
	other, err := pki.NewCA("other ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vCert, vKey, _ := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	agentCert, agentKey, _ := e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "edge-1"})
	revCert, revKey, revoked := e.issue(e.ca, "revoked", pki.Request{Role: pki.RoleAgent, ID: "edge-2"})
	opCert, opKey, _ := e.issue(e.ca, "operator", pki.Request{Role: pki.RoleOperator, ID: "alice"})
	foreignCert, foreignKey, _ := e.issue(other, "foreign", pki.Request{Role: pki.RoleAgent, ID: "intruder"})
	agentURI, _ := url.Parse("pulse://agent/edge-old")
	expCert, expKey := e.rawCert(e.ca, "expired", &x509.Certificate{
		SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "edge-old"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{agentURI},
	})
	noIDCert, noIDKey := e.rawCert(e.ca, "noid", &x509.Certificate{
		SerialNumber: big.NewInt(78), Subject: pkix.Name{CommonName: "no identity"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	revokedSet := NewRevocationSet([]RevocationEntry{{RevokeSerial, SerialKey(revoked.Cert)}})
	server, _ := mustServer(t, ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: e.path("ca.pem"),
		RequireRole: pki.RoleAgent, QuietRefusals: true,
		CheckPeer: func(leaf *x509.Certificate, _ pki.Identity) error { return revokedSet.Check(leaf) }})

	// Plain crypto/tls clients: they present what they are given, so the
	// server's view is what is tested.
	client := func(certFile, keyFile string, mod func(*tls.Config)) *tls.Config {
		c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: e.ca.Pool(), ServerName: "localhost"}
		if certFile != "" {
			kp, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			// Sent whatever CAs the server names (crypto/tls would send
			// nothing from c.Certificates that the server does not trust).
			c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
		}
		if mod != nil {
			mod(c)
		}
		return c
	}
	tls12 := func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12 }

	tests := []struct {
		name        string
		client      *tls.Config
		raw         []byte
		want        Cause
		wantSubject string
	}{
		{name: "agent accepted", client: client(agentCert, agentKey, nil)},
		{name: "no certificate", client: client("", "", nil), want: CauseNoCertificate},
		{name: "foreign ca", client: client(foreignCert, foreignKey, nil), want: CauseUnknownAuthority, wantSubject: "CN=intruder"},
		{name: "verifier's own certificate", client: client(vCert, vKey, nil), want: CauseWrongRole, wantSubject: "CN=v1"},
		{name: "operator certificate", client: client(opCert, opKey, nil), want: CauseWrongRole, wantSubject: "CN=alice"},
		{name: "expired certificate", client: client(expCert, expKey, nil), want: CauseExpired, wantSubject: "CN=edge-old"},
		{name: "revoked certificate", client: client(revCert, revKey, nil), want: CauseRevoked, wantSubject: "CN=edge-2"},
		{name: "no pulse identity", client: client(noIDCert, noIDKey, nil), want: CauseBadCertificate, wantSubject: "CN=no identity"},
		{name: "tls 1.2 only client", client: client(agentCert, agentKey, tls12), want: CauseBadVersion},
		{name: "tls 1.2 client without certificate", client: client("", "", tls12), want: CauseBadVersion},
		{name: "not tls", raw: []byte("GET / HTTP/1.1\r\n\r\n"), want: CauseHandshakeFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := observedHandshake(t, server, tc.client, tc.raw)
			if r.Cause != tc.want {
				t.Fatalf("cause %q (%v), want %q", r.Cause, r.Err, tc.want)
			}
			if tc.want == "" {
				return
			}
			if h, _, err := net.SplitHostPort(r.Remote); err != nil || h != "127.0.0.1" {
				t.Errorf("remote %q", r.Remote)
			}
			if tc.wantSubject != "" && !strings.HasPrefix(r.Subject, tc.wantSubject) {
				t.Errorf("subject %q, want %q", r.Subject, tc.wantSubject)
			}
		})
	}
}

func TestClassifyError(t *testing.T) {
	tests := []struct {
		err  error
		want Cause
	}{
		{nil, ""},
		{ErrNoPeerCertificate, CauseNoCertificate},
		{&RoleError{Want: pki.RoleAgent, Got: pki.Identity{Role: pki.RoleVerifier, ID: "v1"}}, CauseWrongRole},
		{&RevokedError{Kind: RevokeAgent, Value: "a"}, CauseRevoked},
		{ErrCertExpired, CauseExpired},
		{x509.CertificateInvalidError{Reason: x509.Expired}, CauseExpired},
		{x509.UnknownAuthorityError{}, CauseUnknownAuthority},
		{x509.CertificateInvalidError{Reason: x509.IncompatibleUsage}, CauseWrongRole},
		{x509.CertificateInvalidError{Reason: x509.NotAuthorizedToSign}, CauseBadCertificate},
		{pki.ErrNoIdentity, CauseBadCertificate},
		{io.EOF, CauseHandshakeFailed},
		{errors.New("anything"), CauseHandshakeFailed},
	}
	for _, tc := range tests {
		if got := ClassifyError(tc.err); got != tc.want {
			t.Errorf("ClassifyError(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
	for _, c := range Causes() {
		if want := c != CauseMalformedRequest && c != CauseHandshakeFailed; c.Probe() != want {
			t.Errorf("%s.Probe() = %v", c, !want)
		}
	}
}
