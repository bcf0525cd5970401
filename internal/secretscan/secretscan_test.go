package secretscan

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var hookSecret = []byte("drill-webhook-secret-4242")

func scanner(t *testing.T, extra ...Secret) *Scanner {
	t.Helper()
	s, err := New(append([]Secret{{Name: "webhook secret", Value: hookSecret}}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestScanFindsPlanted: each way a secret can leak into a log, an audit
// record or a webhook body is found, with its kind and name.
func TestScanFindsPlanted(t *testing.T) {
	long := []byte("0123456789abcdef-secret-value-xyz")
	s := scanner(t, Secret{Name: "long", Value: long}, Secret{Name: "url", Value: []byte("\xfb\xff\xfe-url-alphabet-secret")})
	b64 := base64.StdEncoding.EncodeToString(append([]byte("prefix-"), long...))
	tests := []struct {
		name, text, kind, what, encoding string
	}{
		{"pem private key", "key material:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----", KindPEMPrivateKey, "EC PRIVATE KEY", ""},
		{"pkcs8 pem in json", `{"msg":"-----BEGIN PRIVATE KEY-----\nMC4CAQ"}`, KindPEMPrivateKey, "PRIVATE KEY", ""},
		{"raw secret in hclog line", `2026-12-07T12:00:00Z [DEBUG] alerts: sending: url=http://x body=drill-webhook-secret-4242`, KindKnownSecret, "webhook secret", "raw"},
		{"hex secret", "sig key " + hex.EncodeToString(hookSecret), KindKnownSecret, "webhook secret", "hex"},
		{"upper hex secret", "K=" + strings.ToUpper(hex.EncodeToString(hookSecret)), KindKnownSecret, "webhook secret", "hex"},
		{"base64 secret", "k " + base64.StdEncoding.EncodeToString(hookSecret), KindKnownSecret, "webhook secret", "base64"},
		{"base64url secret unpadded", "k " + base64.RawURLEncoding.EncodeToString([]byte("\xfb\xff\xfe-url-alphabet-secret")), KindKnownSecret, "url", "base64url"},
		{"base64 secret inside a larger blob", "blob " + b64, KindKnownSecret, "long", "base64"},
		{"key=value", `agent: reload token=f00dfeedcafebabe0123`, KindAssignment, "token", ""},
		{"json field", `{"webhook_secret":"abcdefghijklmnop"}`, KindAssignment, "webhook_secret", ""},
		{"escaped json in a log line", `msg="{\"hmac_key\":\"q1w2e3r4t5y6u7i8\"}"`, KindAssignment, "hmac_key", ""},
		{"yaml-ish", `admin_password: hunter2hunter2`, KindAssignment, "admin_password", ""},
		{"bearer header", `Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig`, KindAssignment, "bearer", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.ScanBytes("artefact.log", []byte(tt.text))
			found := false
			for _, f := range got {
				if f.Kind == tt.kind && f.Name == tt.what && (tt.encoding == "" || strings.HasPrefix(f.Encoding, tt.encoding)) {
					found = true
				}
			}
			if !found {
				t.Fatalf("no %s %q (%s) finding in %q; got %v", tt.kind, tt.what, tt.encoding, tt.text, got)
			}
			for _, f := range got {
				if strings.Contains(f.String(), string(hookSecret)) || strings.Contains(f.String(), string(long)) {
					t.Fatalf("finding %s repeats the secret", f)
				}
			}
		})
	}
}

// TestScanCleanText: what the e2e suite's artefacts honestly contain —
// hclog lines naming secret files, digests, audit hashes, redacted fields,
// certificates — gives no finding.
func TestScanCleanText(t *testing.T) {
	s := scanner(t)
	clean := []string{
		`2026-12-07T12:00:00.000Z [INFO]  pulse-verifier: webhook configured: name=drill secret_file=/tmp/x/webhook.secret`,
		`2026-12-07T12:00:00.000Z [DEBUG] pulse-agent.pulse: pulse accepted: verdict=VERDICT_TRUSTED reason=REASON_OK sequence=3 rtt_ms=4`,
		`{"seq":4,"prev":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","hash":"60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"}`,
		`admin_token_file = "token"`,
		`tls: key=pki/verifier-key.pem cert=pki/verifier.pem`,
		`private_key_sha256=0123456789abcdef0123456789abcdef`,
		`secret=[redacted] token=*** password=<hidden>`,
		`has_secret=true token_set=true`,
		"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIQ\n-----END CERTIFICATE-----",
		`nonce epoch 4 spent: replayed pulse`,
		`X-Pulse-Signature: sha256=3f2a9b0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e`,
	}
	for _, text := range clean {
		if got := s.ScanBytes("clean.log", []byte(text)); len(got) != 0 {
			t.Errorf("%q: unexpected findings %v", text, got)
		}
	}
}

func TestNewRefusesShortSecret(t *testing.T) {
	_, err := New(Secret{Name: "short", Value: []byte("abc")})
	if !errors.Is(err, ErrSecretTooShort) {
		t.Fatalf("New with a 3-byte secret: %v, want ErrSecretTooShort", err)
	}
}

// TestKeySecrets: a key's scalar or seed and its DER are found however
// they are encoded; its certificate is not a finding.
func TestKeySecrets(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		key  any
		want string
	}{{"ec", ec, "(scalar)"}, {"ed25519", ed, "(seed)"}} {
		t.Run(tt.name, func(t *testing.T) {
			der, err := x509.MarshalPKCS8PrivateKey(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			secs, err := KeySecrets(tt.name+" key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(secs...)
			if err != nil {
				t.Fatal(err)
			}
			var scalar []byte
			for _, sec := range secs {
				if strings.HasSuffix(sec.Name, tt.want) {
					scalar = sec.Value
				}
			}
			if scalar == nil {
				t.Fatalf("no %s secret in %d", tt.want, len(secs))
			}
			got := s.ScanBytes("a.log", []byte("d="+hex.EncodeToString(scalar)+"\nder "+base64.StdEncoding.EncodeToString(der)))
			if len(got) < 2 || got[0].Line != 1 || got[len(got)-1].Line != 2 {
				t.Fatalf("findings %v, want the scalar on line 1 and the DER on line 2", got)
			}
		})
	}
	if _, err := KeySecrets("cert", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")); err == nil {
		t.Fatal("KeySecrets of a certificate: no error")
	}
}

// TestScanDir: a planted secret in one file of a tree is reported with
// that file's relative path and line; the clean file gives nothing.
func TestScanDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "TestX"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "TestX", "verifier.log"), []byte("ok line\nstill ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "TestX", "webhook-1.json"), []byte("{}\n{\"k\":\""+string(hookSecret)+"\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := scanner(t).ScanDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].File != filepath.Join("TestX", "webhook-1.json") || got[0].Line != 2 || got[0].Kind != KindKnownSecret {
		t.Fatalf("findings %v, want one known secret at TestX/webhook-1.json:2", got)
	}
	if _, err := scanner(t).ScanDir(filepath.Join(dir, "absent")); err == nil {
		t.Fatal("scanning a missing directory: no error")
	}
}

func FuzzScanBytes(f *testing.F) {
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\n"))
	f.Add([]byte(`{"token":"abcdefghijkl"} secret=x`))
	f.Add([]byte("bearer " + strings.Repeat("a", 20)))
	f.Add(hookSecret)
	s, err := New(Secret{Name: "webhook secret", Value: hookSecret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := s.ScanBytes("f", b)
		lines := strings.Count(string(b), "\n") + 1
		for _, fd := range got {
			if fd.Line < 1 || fd.Line > lines || fd.Column < 1 {
				t.Fatalf("finding %v outside the input (%d lines)", fd, lines)
			}
		}
		if strings.Contains(string(b), string(hookSecret)) && len(got) == 0 {
			t.Fatal("a raw planted secret was not found")
		}
	})
}
