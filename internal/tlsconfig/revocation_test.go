package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
)

func TestParseRevocation(t *testing.T) {
	digest := strings.Repeat("aB", 32)
	tests := []struct {
		kind, value string
		want        string
		wantErr     bool
	}{
		{kind: RevokeSerial, value: "31", want: "1f"},
		{kind: RevokeSerial, value: " 0x1F ", want: "1f"},
		{kind: RevokeSerial, value: "0x001f", want: "1f"},
		{kind: RevokeSerial, value: "00:1F", want: "1f"},
		{kind: RevokeSerial, value: "1f", wantErr: true}, // hex needs 0x or colons
		{kind: RevokeSerial, value: "-5", wantErr: true},
		{kind: RevokeSerial, value: "0x", wantErr: true},
		{kind: RevokeSerial, value: "1:2", wantErr: true},
		{kind: RevokeSerial, value: "", wantErr: true},
		{kind: RevokeSPKI, value: digest, want: strings.ToLower(digest)},
		{kind: RevokeSPKI, value: "SHA256:" + digest, want: strings.ToLower(digest)},
		{kind: RevokeSPKI, value: digest[:62], wantErr: true},
		{kind: RevokeSPKI, value: digest + "00", wantErr: true},
		{kind: RevokeSPKI, value: strings.Repeat("zz", 32), wantErr: true},
		{kind: RevokeAgent, value: "edge-1", want: "edge-1"},
		{kind: RevokeAgent, value: "Edge-1", want: "Edge-1"},
		{kind: RevokeAgent, value: "edge/1", wantErr: true},
		{kind: RevokeAgent, value: "..", wantErr: true},
		{kind: "operator", value: "alice", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.kind+" "+tc.value, func(t *testing.T) {
			got, err := ParseRevocation(tc.kind, tc.value)
			if tc.wantErr {
				if !errors.Is(err, ErrBadRevocation) {
					t.Fatalf("ParseRevocation = %q, %v; want ErrBadRevocation", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseRevocation = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestRevocationSetCheck: each kind of entry refuses exactly the
// certificates it names.
func TestRevocationSetCheck(t *testing.T) {
	e := newEnv(t)
	_, _, a := e.issue(e.ca, "a", pki.Request{Role: pki.RoleAgent, ID: "edge-1"})
	_, _, b := e.issue(e.ca, "b", pki.Request{Role: pki.RoleAgent, ID: "edge-2"})
	_, _, op := e.issue(e.ca, "op", pki.Request{Role: pki.RoleOperator, ID: "edge-1"})
	ca, cb, cop := a.Cert, b.Cert, op.Cert
	tests := []struct {
		name    string
		entries []RevocationEntry
		cert    *x509.Certificate
		want    *RevokedError
	}{
		{"empty list", nil, ca, nil},
		{"serial revoked", []RevocationEntry{{RevokeSerial, SerialKey(ca)}}, ca, &RevokedError{RevokeSerial, SerialKey(ca)}},
		{"other serial", []RevocationEntry{{RevokeSerial, SerialKey(ca)}}, cb, nil},
		{"key revoked", []RevocationEntry{{RevokeSPKI, SPKIKey(cb)}}, cb, &RevokedError{RevokeSPKI, SPKIKey(cb)}},
		{"other key", []RevocationEntry{{RevokeSPKI, SPKIKey(cb)}}, ca, nil},
		{"agent revoked", []RevocationEntry{{RevokeAgent, "edge-1"}}, ca, &RevokedError{RevokeAgent, "edge-1"}},
		{"other agent", []RevocationEntry{{RevokeAgent, "edge-1"}}, cb, nil},
		{"agent entry does not name an operator of the same name", []RevocationEntry{{RevokeAgent, "edge-1"}}, cop, nil},
		{"serial text of another kind", []RevocationEntry{{RevokeAgent, SerialKey(ca)}}, ca, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := NewRevocationSet(tc.entries).Check(tc.cert)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			var re *RevokedError
			if !errors.Is(err, ErrRevoked) || !errors.As(err, &re) || *re != *tc.want {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
		})
	}
	var nilSet *RevocationSet
	if err := nilSet.Check(ca); err != nil || nilSet.Len() != 0 {
		t.Fatalf("nil set: %v", err)
	}
}

func TestCheckValidity(t *testing.T) {
	c := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Unix(1000, 0), NotAfter: time.Unix(2000, 0)}
	tests := []struct {
		at   int64
		want error
	}{
		{999, ErrCertNotYetValid},
		{1000, nil},
		{2000, nil},
		{2001, ErrCertExpired},
	}
	for _, tc := range tests {
		err := CheckValidity(c, time.Unix(tc.at, 0))
		if (tc.want == nil && err != nil) || !errors.Is(err, tc.want) {
			t.Errorf("at %d: %v, want %v", tc.at, err, tc.want)
		}
	}
}

// TestServerChecksOverHandshake: over a real handshake, the server refuses
// a peer CheckPeer refuses (a revoked certificate) and one outside its
// validity period by the server's clock, and accepts it otherwise.
func TestServerChecksOverHandshake(t *testing.T) {
	e := newEnv(t)
	vCert, vKey, _ := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	aCert, aKey, a := e.issue(e.ca, "agent", pki.Request{Role: pki.RoleAgent, ID: "edge-1"})
	var revoked *RevocationSet
	clock := time.Now()
	srv, _ := mustServer(t, ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: e.path("ca.pem"), RequireRole: pki.RoleAgent,
		Now:       func() time.Time { return clock },
		CheckPeer: func(leaf *x509.Certificate, _ pki.Identity) error { return revoked.Check(leaf) },
	})
	client, _ := mustClient(t, ClientOptions{CertFile: aCert, KeyFile: aKey, ServerCAFile: e.path("ca.pem"), ServerName: "localhost"})

	steps := []struct {
		name    string
		set     *RevocationSet
		clock   time.Time
		wantErr error
	}{
		{"valid", nil, time.Now(), nil},
		{"revoked by serial", NewRevocationSet([]RevocationEntry{{RevokeSerial, SerialKey(a.Cert)}}), time.Now(), ErrRevoked},
		{"revoked by agent", NewRevocationSet([]RevocationEntry{{RevokeAgent, "edge-1"}}), time.Now(), ErrRevoked},
		{"entry removed", NewRevocationSet(nil), time.Now(), nil},
		{"expired by the server's clock", nil, a.Cert.NotAfter.Add(time.Second), errCertificateInvalid},
		{"not yet valid by the server's clock", nil, a.Cert.NotBefore.Add(-time.Second), errCertificateInvalid},
	}
	for _, st := range steps {
		revoked, clock = st.set, st.clock
		res := handshake(t, srv, client.Clone())
		switch {
		case st.wantErr == nil && res.serverErr != nil:
			t.Fatalf("%s: server refused: %v", st.name, res.serverErr)
		case st.wantErr == errCertificateInvalid:
			var ci x509.CertificateInvalidError
			if !errors.As(res.serverErr, &ci) || ci.Reason != x509.Expired {
				t.Fatalf("%s: server error %v, want an expired certificate", st.name, res.serverErr)
			}
		case st.wantErr != nil && !errors.Is(res.serverErr, st.wantErr):
			t.Fatalf("%s: server error %v, want %v", st.name, res.serverErr, st.wantErr)
		}
		if st.wantErr != nil && res.clientErr == nil {
			t.Fatalf("%s: client saw no refusal", st.name)
		}
	}
}

// errCertificateInvalid marks steps refused by crypto/tls's own validity check.
var errCertificateInvalid = errors.New("certificate invalid")

// TestClientCAReload: the client CA file is re-read by the server's
// Reloader: a client of a CA added to the file is accepted after the
// reload, one of a CA removed from it is refused, and a broken file keeps
// the pool in use.
func TestClientCAReload(t *testing.T) {
	e := newEnv(t)
	next, err := pki.NewCA("next ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vCert, vKey, _ := e.issue(e.ca, "verifier", pki.Request{Role: pki.RoleVerifier, ID: "v1"})
	oldCert, oldKey, _ := e.issue(e.ca, "agent-old", pki.Request{Role: pki.RoleAgent, ID: "edge-1"})
	newCert, newKey, _ := e.issue(next, "agent-new", pki.Request{Role: pki.RoleAgent, ID: "edge-1"})
	caFile := e.path("client-ca.pem")
	write := func(pem []byte) {
		t.Helper()
		if err := os.WriteFile(caFile, pem, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(e.ca.CertPEM())
	srv, r := mustServer(t, ServerOptions{CertFile: vCert, KeyFile: vKey, ClientCAFile: caFile, RequireRole: pki.RoleAgent})
	// Servers copy their config (gRPC, net/http): the copy must follow too.
	srv = srv.Clone()
	client := func(cert, key string) *tls.Config {
		cfg, _ := mustClient(t, ClientOptions{CertFile: cert, KeyFile: key, ServerCAFile: e.path("ca.pem"), ServerName: "localhost"})
		return cfg
	}
	oldClient, newClient := client(oldCert, oldKey), client(newCert, newKey)
	accepted := func(c *tls.Config) bool {
		res := handshake(t, srv, c.Clone())
		return res.serverErr == nil && res.clientErr == nil
	}

	steps := []struct {
		name      string
		file      []byte
		reloadErr bool
		old, new  bool
	}{
		{"initial pool", nil, false, true, false},
		{"both CAs", append(e.ca.CertPEM(), next.CertPEM()...), false, true, true},
		{"old CA removed", next.CertPEM(), false, false, true},
		{"broken file keeps the pool", []byte("not pem"), true, false, true},
		{"empty file keeps the pool", []byte{}, true, false, true},
	}
	for _, st := range steps {
		if st.file != nil {
			write(st.file)
			if err := r.Reload(); (err != nil) != st.reloadErr {
				t.Fatalf("%s: Reload = %v", st.name, err)
			}
		}
		if got := accepted(oldClient); got != st.old {
			t.Errorf("%s: old CA client accepted = %t, want %t", st.name, got, st.old)
		}
		if got := accepted(newClient); got != st.new {
			t.Errorf("%s: new CA client accepted = %t, want %t", st.name, got, st.new)
		}
	}
}
