package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA("test ca", time.Hour*24)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	ca := newTestCA(t)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || !c.MaxPathLenZero || c.MaxPathLen != 0 {
		t.Errorf("ca constraints: IsCA=%v valid=%v maxPathLen=%d zero=%v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("ca key usage %v lacks CertSign", c.KeyUsage)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("ca key is %T, want ECDSA P-256", c.PublicKey)
	}
	if c.Subject.CommonName != "test ca" {
		t.Errorf("CN = %q", c.Subject.CommonName)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if got := c.NotAfter.Sub(c.NotBefore); got < 24*time.Hour || got > 24*time.Hour+Backdate+time.Minute {
		t.Errorf("validity %s, want ~24h", got)
	}

	for _, tc := range []struct {
		name     string
		validity time.Duration
	}{{"", time.Hour}, {"  ", time.Hour}, {"x", -time.Hour}} {
		if _, err := NewCA(tc.name, tc.validity); !errors.Is(err, ErrBadRequest) {
			t.Errorf("NewCA(%q, %s) = %v, want ErrBadRequest", tc.name, tc.validity, err)
		}
	}
	def, err := NewCA("default", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := def.Cert.NotAfter.Sub(def.Cert.NotBefore); got < DefaultCAValidity {
		t.Errorf("default validity %s < %s", got, DefaultCAValidity)
	}
}

func TestIssue(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		name    string
		req     Request
		wantEKU x509.ExtKeyUsage
		wantDNS []string
		wantIPs []string
		keyType KeyType
	}{
		{"agent default key", Request{Role: RoleAgent, ID: "edge-042"}, x509.ExtKeyUsageClientAuth, nil, nil, KeyECDSAP256},
		{"agent ed25519", Request{Role: RoleAgent, ID: "a.b_c-D9", KeyType: KeyEd25519}, x509.ExtKeyUsageClientAuth, nil, nil, KeyEd25519},
		{"agent rsa", Request{Role: RoleAgent, ID: "rsa1", KeyType: KeyRSA3072}, x509.ExtKeyUsageClientAuth, nil, nil, KeyRSA3072},
		{"verifier defaults", Request{Role: RoleVerifier, ID: "v1"}, x509.ExtKeyUsageServerAuth, []string{"localhost"}, []string{"127.0.0.1", "::1"}, KeyECDSAP256},
		{"verifier explicit", Request{Role: RoleVerifier, ID: "v2", DNSNames: []string{"verifier.example.net"}, IPs: []net.IP{net.ParseIP("10.0.0.5")}}, x509.ExtKeyUsageServerAuth, []string{"verifier.example.net"}, []string{"10.0.0.5"}, KeyECDSAP256},
		{"operator", Request{Role: RoleOperator, ID: "alice", KeyType: KeyEd25519}, x509.ExtKeyUsageClientAuth, nil, nil, KeyEd25519},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is, err := Issue(ca, tc.req)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			c := is.Cert
			id, err := IdentityFromCert(c)
			if err != nil {
				t.Fatalf("IdentityFromCert: %v", err)
			}
			if id != (Identity{Role: tc.req.Role, ID: tc.req.ID}) || is.Identity != id {
				t.Errorf("identity %+v / %+v, want %s/%s", id, is.Identity, tc.req.Role, tc.req.ID)
			}
			if len(c.URIs) != 1 || c.URIs[0].String() != "pulse://"+string(tc.req.Role)+"/"+tc.req.ID {
				t.Errorf("URIs = %v", c.URIs)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{tc.wantEKU}) {
				t.Errorf("EKU = %v, want [%v]", c.ExtKeyUsage, tc.wantEKU)
			}
			if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("IsCA=%v KeyUsage=%v", c.IsCA, c.KeyUsage)
			}
			if !slices.Equal(c.DNSNames, tc.wantDNS) {
				t.Errorf("DNSNames = %v, want %v", c.DNSNames, tc.wantDNS)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.wantIPs) {
				t.Errorf("IPs = %v, want %v", ips, tc.wantIPs)
			}
			switch tc.keyType {
			case KeyECDSAP256:
				if k, ok := is.Key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
					t.Errorf("key %T, want ecdsa p256", is.Key)
				}
			case KeyEd25519:
				if _, ok := is.Key.(ed25519.PrivateKey); !ok {
					t.Errorf("key %T, want ed25519", is.Key)
				}
			case KeyRSA3072:
				if k, ok := is.Key.(*rsa.PrivateKey); !ok || k.N.BitLen() != 3072 {
					t.Errorf("key %T, want rsa 3072", is.Key)
				}
			}
			if !PublicKeysEqual(c.PublicKey, is.Key.Public()) {
				t.Error("certificate key does not match returned key")
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{tc.wantEKU}}); err != nil {
				t.Errorf("chain verify: %v", err)
			}
			// The PEM forms round-trip.
			certs, err := ParseCertificatesPEM(is.CertPEM)
			if err != nil || len(certs) != 1 || !certs[0].Equal(c) {
				t.Errorf("CertPEM round trip: %v", err)
			}
			k, err := ParsePrivateKeyPEM(is.KeyPEM)
			if err != nil || !PublicKeysEqual(k.Public(), c.PublicKey) {
				t.Errorf("KeyPEM round trip: %v", err)
			}
		})
	}
}

func TestIssueValidityCappedAtCA(t *testing.T) {
	ca := newTestCA(t) // 24h
	is, err := Issue(ca, Request{Role: RoleAgent, ID: "a", Validity: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if is.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("leaf NotAfter %s after CA NotAfter %s", is.Cert.NotAfter, ca.Cert.NotAfter)
	}
	if is.Cert.NotBefore.Before(ca.Cert.NotBefore) {
		t.Errorf("leaf NotBefore %s before CA NotBefore %s", is.Cert.NotBefore, ca.Cert.NotBefore)
	}
	short, err := Issue(ca, Request{Role: RoleAgent, ID: "b", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(short.Cert.NotAfter); d > time.Hour || d < 59*time.Minute {
		t.Errorf("1h leaf expires in %s", d)
	}
}

func TestIssueRejects(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		name  string
		ca    *CA
		req   Request
		extra error
	}{
		{"nil ca", nil, Request{Role: RoleAgent, ID: "a"}, nil},
		{"empty id", ca, Request{Role: RoleAgent, ID: ""}, ErrBadID},
		{"slash in id", ca, Request{Role: RoleAgent, ID: "a/b"}, ErrBadID},
		{"space in id", ca, Request{Role: RoleAgent, ID: "a b"}, ErrBadID},
		{"dotdot id", ca, Request{Role: RoleAgent, ID: ".."}, ErrBadID},
		{"long id", ca, Request{Role: RoleAgent, ID: strings.Repeat("a", 129)}, ErrBadID},
		{"unknown role", ca, Request{Role: "admin", ID: "a"}, ErrBadRole},
		{"empty role", ca, Request{ID: "a"}, ErrBadRole},
		{"bad key type", ca, Request{Role: RoleAgent, ID: "a", KeyType: "dsa"}, nil},
		{"negative validity", ca, Request{Role: RoleAgent, ID: "a", Validity: -time.Second}, nil},
		{"bad dns", ca, Request{Role: RoleVerifier, ID: "v", DNSNames: []string{"bad name"}}, nil},
		{"empty dns label", ca, Request{Role: RoleVerifier, ID: "v", DNSNames: []string{"a..b"}}, nil},
		{"nil ip", ca, Request{Role: RoleVerifier, ID: "v", IPs: []net.IP{nil}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			is, err := Issue(tc.ca, tc.req)
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("Issue = %v, %v; want ErrBadRequest", is, err)
			}
			if tc.extra != nil && !errors.Is(err, tc.extra) {
				t.Errorf("Issue error %v does not wrap %v", err, tc.extra)
			}
		})
	}
}

func TestValidateID(t *testing.T) {
	good := []string{"a", "edge-042", "A.B_c-9", strings.Repeat("z", 128), "...", ".a", "a.."}
	bad := []string{"", ".", "..", "a/b", "a b", "é", "a%41", "a\x00", "a:b", strings.Repeat("z", 129), "a?b", "a#b"}
	for _, id := range good {
		if err := ValidateID(id); err != nil {
			t.Errorf("ValidateID(%q) = %v", id, err)
		}
	}
	for _, id := range bad {
		if err := ValidateID(id); !errors.Is(err, ErrBadID) {
			t.Errorf("ValidateID(%q) = %v, want ErrBadID", id, err)
		}
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range Roles {
		got, err := ParseRole(string(r))
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "Agent", "admin", "agent "} {
		if _, err := ParseRole(s); !errors.Is(err, ErrBadRole) {
			t.Errorf("ParseRole(%q) = %v, want ErrBadRole", s, err)
		}
	}
}

// certWith issues a certificate with arbitrary SANs and subject, bypassing
// Issue's validation, to test IdentityFromCert on hostile input. The URIs
// are written byte for byte as given (not as url.Parse re-spells them).
func certWith(t *testing.T, ca *CA, cn string, uris ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(uris) > 0 {
		var names []asn1.RawValue
		for _, s := range uris {
			names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(s)})
		}
		val, err := asn1.Marshal(names)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: val}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("ParseCertificate(%q): %v", uris, err)
	}
	return c
}

func TestIdentityFromCert(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		name    string
		cn      string
		uris    []string
		want    Identity
		wantErr error
	}{
		{"agent", "ignored", []string{"pulse://agent/edge-1"}, Identity{RoleAgent, "edge-1"}, nil},
		{"verifier", "", []string{"pulse://verifier/v.1"}, Identity{RoleVerifier, "v.1"}, nil},
		{"operator", "", []string{"pulse://operator/alice"}, Identity{RoleOperator, "alice"}, nil},
		{"other schemes ignored", "", []string{"spiffe://example.org/x", "pulse://agent/a", "https://example.org/"}, Identity{RoleAgent, "a"}, nil},
		{"uppercase scheme", "", []string{"PULSE://agent/a"}, Identity{}, ErrBadID},
		{"mixed-case scheme", "", []string{"Pulse://agent/a"}, Identity{}, ErrBadID},
		{"empty fragment", "", []string{"pulse://agent/a#"}, Identity{}, ErrBadID},
		{"empty query", "", []string{"pulse://agent/a?"}, Identity{}, ErrBadID},
		{"trailing slash", "", []string{"pulse://agent/a/"}, Identity{}, ErrBadID},
		{"percent-encoded letter", "", []string{"pulse://agent/%78"}, Identity{}, ErrBadID},
		{"uppercase role host", "", []string{"pulse://AGENT/a"}, Identity{}, ErrBadRole},
		{"empty port", "", []string{"pulse://agent:/a"}, Identity{}, ErrBadRole},
		{"uppercase non-canonical beside a spiffe id", "", []string{"spiffe://example.org/x", "PULSE://agent/a"}, Identity{}, ErrBadID},
		{"no uris", "pulse://agent/edge-1", nil, Identity{}, ErrNoIdentity},
		{"cn is not identity", "edge-1", []string{"spiffe://example.org/agent/edge-1"}, Identity{}, ErrNoIdentity},
		{"two identities", "", []string{"pulse://agent/a", "pulse://operator/b"}, Identity{}, ErrMultipleIdentities},
		{"same identity twice", "", []string{"pulse://agent/a", "pulse://agent/a"}, Identity{}, ErrMultipleIdentities},
		{"unknown role", "", []string{"pulse://admin/a"}, Identity{}, ErrBadRole},
		{"uppercase role", "", []string{"pulse://Agent/a"}, Identity{}, ErrBadRole},
		{"empty role", "", []string{"pulse:///a"}, Identity{}, ErrBadRole},
		{"empty id", "", []string{"pulse://agent/"}, Identity{}, ErrBadID},
		{"no path", "", []string{"pulse://agent"}, Identity{}, ErrBadID},
		{"extra segment", "", []string{"pulse://agent/a/b"}, Identity{}, ErrBadID},
		{"query", "", []string{"pulse://agent/a?x=1"}, Identity{}, ErrBadID},
		{"fragment", "", []string{"pulse://agent/a#f"}, Identity{}, ErrBadID},
		{"port", "", []string{"pulse://agent:1/a"}, Identity{}, ErrBadRole},
		{"userinfo", "", []string{"pulse://u@agent/a"}, Identity{}, ErrBadID},
		{"percent encoded", "", []string{"pulse://agent/%61"}, Identity{}, ErrBadID},
		{"encoded slash", "", []string{"pulse://agent/a%2Fb"}, Identity{}, ErrBadID},
		{"dot segment", "", []string{"pulse://agent/.."}, Identity{}, ErrBadID},
		{"too long", "", []string{"pulse://agent/" + strings.Repeat("x", 129)}, Identity{}, ErrBadID},
		{"max length", "", []string{"pulse://agent/" + strings.Repeat("x", 128)}, Identity{RoleAgent, strings.Repeat("x", 128)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := certWith(t, ca, tc.cn, tc.uris...)
			got, err := IdentityFromCert(c)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("IdentityFromCert = %+v, %v; want %v", got, err, tc.wantErr)
				}
				if got != (Identity{}) {
					t.Errorf("identity %+v returned with error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("IdentityFromCert = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if _, err := IdentityFromCert(nil); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("nil cert: %v", err)
	}
}

func TestFilesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.WriteFiles(caCert, caKey, false); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{caCert: 0o644, caKey: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
	if err := ca.WriteFiles(caCert, caKey, false); !errors.Is(err, os.ErrExist) {
		t.Errorf("second write without overwrite = %v, want ErrExist", err)
	}
	loaded, err := LoadCA(caCert, caKey)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("loaded CA certificate differs")
	}
	is, err := Issue(loaded, Request{Role: RoleAgent, ID: "x", KeyType: KeyEd25519})
	if err != nil {
		t.Fatal(err)
	}
	leaf, leafKey := filepath.Join(dir, "agent-x.pem"), filepath.Join(dir, "agent-x-key.pem")
	if err := is.WriteFiles(leaf, leafKey, false); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(leafKey); st.Mode().Perm() != 0o600 {
		t.Errorf("leaf key mode %v", st.Mode().Perm())
	}
	pool, err := ReadCertPool(caCert)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ReadCertificates(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify issued cert against written CA: %v", err)
	}
	k, err := ReadPrivateKey(leafKey)
	if err != nil || !PublicKeysEqual(k.Public(), certs[0].PublicKey) {
		t.Errorf("ReadPrivateKey: %v", err)
	}
	// Overwrite replaces both.
	is2, err := Issue(loaded, Request{Role: RoleAgent, ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := is2.WriteFiles(leaf, leafKey, true); err != nil {
		t.Fatal(err)
	}
	if k, _ := ReadPrivateKey(leafKey); !PublicKeysEqual(k.Public(), is2.Cert.PublicKey) {
		t.Error("overwrite did not replace key")
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("leftover temp file %s", e.Name())
		}
	}
	// Mismatched CA key, non-CA cert.
	if _, err := LoadCA(caCert, leafKey); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("LoadCA with wrong key = %v, want ErrKeyMismatch", err)
	}
	if _, err := LoadCA(leaf, leafKey); err == nil {
		t.Error("LoadCA accepted a leaf certificate")
	}
	if _, err := LoadCA(filepath.Join(dir, "missing.pem"), caKey); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadCA missing file = %v", err)
	}
}

func TestParsePEMErrors(t *testing.T) {
	if _, err := ParseCertificatesPEM([]byte("not pem")); !errors.Is(err, ErrNoPEM) {
		t.Errorf("certs from garbage: %v", err)
	}
	if _, err := ParsePrivateKeyPEM([]byte("not pem")); !errors.Is(err, ErrNoPEM) {
		t.Errorf("key from garbage: %v", err)
	}
	ca := newTestCA(t)
	if _, err := ParsePrivateKeyPEM(ca.CertPEM()); !errors.Is(err, ErrNoPEM) {
		t.Errorf("key from cert pem: %v", err)
	}
	bad := []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	if _, err := ParseCertificatesPEM(bad); err == nil || errors.Is(err, ErrNoPEM) {
		t.Errorf("corrupt cert: %v", err)
	}
	keyPEM, _ := ca.KeyPEM()
	// The key's base64 body must not appear in any error.
	corrupt := []byte(strings.Replace(string(keyPEM), "PRIVATE KEY-----\n", "PRIVATE KEY-----\nAAAA", 1))
	_, err := ParsePrivateKeyPEM(corrupt)
	if err == nil {
		t.Fatal("corrupt key accepted")
	}
	body := strings.Split(string(keyPEM), "\n")[1]
	if strings.Contains(err.Error(), body) {
		t.Error("error message contains key material")
	}
	// Mixed file: certificate then key.
	k, err := ParsePrivateKeyPEM(append(ca.CertPEM(), keyPEM...))
	if err != nil || !PublicKeysEqual(k.Public(), ca.Cert.PublicKey) {
		t.Errorf("key after cert: %v", err)
	}
}

func FuzzParseIdentityURI(f *testing.F) {
	for _, s := range []string{"pulse://agent/a", "pulse://verifier/v.1", "pulse://agent/a%2Fb", "pulse://x/y?z", "pulse:opaque", "pulse://agent/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		id, err := ParseIdentityURI(u)
		if err != nil {
			if id != (Identity{}) {
				t.Fatalf("identity %+v with error %v", id, err)
			}
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("accepted %q as %+v which does not validate: %v", s, id, err)
		}
		u2, err := url.Parse(id.String())
		if err != nil {
			t.Fatal(err)
		}
		id2, err := ParseIdentityURI(u2)
		if err != nil || id2 != id {
			t.Fatalf("round trip of %q: %+v, %v", id.String(), id2, err)
		}
	})
}

// FuzzParseIdentity: whatever text is accepted is exactly the canonical
// spelling of the identity it names.
func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{"pulse://agent/a", "PULSE://agent/a", "pulse://agent/a#", "pulse://agent/a?", "pulse://agent/%78", "pulse://agent/a/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			if id != (Identity{}) {
				t.Fatalf("identity %+v with error %v", id, err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("accepted %q as %s", s, id)
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("accepted %q as %+v which does not validate: %v", s, id, err)
		}
	})
}

func FuzzParsePrivateKeyPEM(f *testing.F) {
	ca, err := NewCA("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	k, _ := ca.KeyPEM()
	f.Add(k)
	f.Add(ca.CertPEM())
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ParsePrivateKeyPEM(data)
		if err == nil && key == nil {
			t.Fatal("nil key without error")
		}
		_, _ = ParseCertificatesPEM(data)
	})
}
