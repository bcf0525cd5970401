package pulsesig

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pki"
)

type keyCase struct {
	name string
	gen  func(testing.TB) crypto.Signer
	// rawSign signs an arbitrary message the way this package would if the
	// message were msg, bypassing Message: used to build signatures from
	// other domains and to pin the documented wire format.
	rawSign func(testing.TB, crypto.Signer, []byte) []byte
}

func ecdsaKey(c elliptic.Curve) func(testing.TB) crypto.Signer {
	return func(t testing.TB) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
}

func ecdsaRaw(t testing.TB, k crypto.Signer, msg []byte) []byte {
	d := sha256.Sum256(msg)
	s, err := ecdsa.SignASN1(rand.Reader, k.(*ecdsa.PrivateKey), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ed25519Key(t testing.TB) crypto.Signer {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ed25519Raw(_ testing.TB, k crypto.Signer, msg []byte) []byte {
	return ed25519.Sign(k.(ed25519.PrivateKey), msg)
}

func rsaKey(bits int) func(testing.TB) crypto.Signer {
	return func(t testing.TB) crypto.Signer {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
}

func rsaRaw(t testing.TB, k crypto.Signer, msg []byte) []byte {
	d := sha256.Sum256(msg)
	s, err := rsa.SignPSS(rand.Reader, k.(*rsa.PrivateKey), crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: sha256.Size})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var keyCases = []keyCase{
	{"ecdsa-p256", ecdsaKey(elliptic.P256()), ecdsaRaw},
	{"ecdsa-p384", ecdsaKey(elliptic.P384()), ecdsaRaw},
	{"ed25519", ed25519Key, ed25519Raw},
	{"rsa-3072-pss", rsaKey(3072), rsaRaw},
}

func TestMessageFormat(t *testing.T) {
	if len(Domain) != 27 || Domain[len(Domain)-1] != 0 {
		t.Fatalf("Domain %q has length %d", Domain, len(Domain))
	}
	payload := []byte("payload")
	sum := sha256.Sum256(payload)
	want := append([]byte("PULSE-v1-PAYLOAD-SIGNATURE\x00"), sum[:]...)
	if got := Message(payload); !bytes.Equal(got, want) {
		t.Fatalf("Message = %x, want %x", got, want)
	}
	// Ed25519 is deterministic: Sign must equal a hand-built signature over the documented message.
	k := ed25519Key(t)
	sig, err := Sign(k, payload)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sig, ed25519.Sign(k.(ed25519.PrivateKey), want)) {
		t.Error("ed25519 signature is not over the documented message")
	}
}

func TestSignVerify(t *testing.T) {
	payload := []byte("agent_id=edge-042 nonce=0123456789abcdef seq=7")
	for _, kc := range keyCases {
		t.Run(kc.name, func(t *testing.T) {
			key := kc.gen(t)
			other := kc.gen(t)
			sig, err := Sign(key, payload)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if err := Verify(key.Public(), payload, sig); err != nil {
				t.Fatalf("Verify good signature: %v", err)
			}
			// A signature built independently over the documented message verifies.
			if err := Verify(key.Public(), payload, kc.rawSign(t, key, Message(payload))); err != nil {
				t.Fatalf("Verify independently built signature: %v", err)
			}
			// Empty payload is a valid (if useless) payload.
			esig, err := Sign(key, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(key.Public(), []byte{}, esig); err != nil {
				t.Errorf("empty payload: %v", err)
			}

			flip := func(b []byte, i int) []byte {
				c := bytes.Clone(b)
				c[i] ^= 0x01
				return c
			}
			sum := sha256.Sum256(payload)
			otherSig, err := Sign(other, payload)
			if err != nil {
				t.Fatal(err)
			}
			bad := []struct {
				name    string
				pub     crypto.PublicKey
				payload []byte
				sig     []byte
			}{
				{"wrong key", other.Public(), payload, sig},
				{"signature by other key", key.Public(), payload, otherSig},
				{"flipped first payload byte", key.Public(), flip(payload, 0), sig},
				{"flipped last payload byte", key.Public(), flip(payload, len(payload)-1), sig},
				{"appended payload byte", key.Public(), append(bytes.Clone(payload), 0), sig},
				{"flipped first sig byte", key.Public(), payload, flip(sig, 0)},
				{"flipped middle sig byte", key.Public(), payload, flip(sig, len(sig)/2)},
				{"flipped last sig byte", key.Public(), payload, flip(sig, len(sig)-1)},
				{"truncated sig", key.Public(), payload, sig[:len(sig)-1]},
				{"half sig", key.Public(), payload, sig[:len(sig)/2]},
				{"empty sig", key.Public(), payload, nil},
				{"sig with trailing byte", key.Public(), payload, append(bytes.Clone(sig), 0)},
				{"domain: plain sig over sha256(payload)", key.Public(), payload, kc.rawSign(t, key, sum[:])},
				{"domain: plain sig over payload", key.Public(), payload, kc.rawSign(t, key, payload)},
				{"domain: other prefix", key.Public(), payload, kc.rawSign(t, key, append([]byte("PULSE-v2-PAYLOAD-SIGNATURE\x00"), sum[:]...))},
				{"domain: prefix without separator", key.Public(), payload, kc.rawSign(t, key, append([]byte("PULSE-v1-PAYLOAD-SIGNATURE"), sum[:]...))},
			}
			for _, b := range bad {
				t.Run(b.name, func(t *testing.T) {
					err := Verify(b.pub, b.payload, b.sig)
					if !errors.Is(err, ErrBadSignature) {
						t.Fatalf("Verify = %v, want ErrBadSignature", err)
					}
					if errors.Is(err, ErrUnsupportedKey) {
						t.Fatalf("Verify = %v, also ErrUnsupportedKey", err)
					}
				})
			}
		})
	}
}

func TestCrossKeyTypes(t *testing.T) {
	payload := []byte("p")
	keys := make([]crypto.Signer, len(keyCases))
	sigs := make([][]byte, len(keyCases))
	for i, kc := range keyCases {
		keys[i] = kc.gen(t)
		s, err := Sign(keys[i], payload)
		if err != nil {
			t.Fatal(err)
		}
		sigs[i] = s
	}
	for i := range keys {
		for j := range keys {
			err := Verify(keys[i].Public(), payload, sigs[j])
			if i == j && err != nil {
				t.Errorf("%s own signature: %v", keyCases[i].name, err)
			}
			if i != j && !errors.Is(err, ErrBadSignature) {
				t.Errorf("%s key, %s signature: %v, want ErrBadSignature", keyCases[i].name, keyCases[j].name, err)
			}
		}
	}
}

func TestUnsupportedKeys(t *testing.T) {
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	x25519, _ := ecdh.X25519().GenerateKey(rand.Reader)
	signers := []struct {
		name string
		key  crypto.Signer
	}{
		{"nil", nil},
		{"ecdsa-p224", p224},
		{"ecdsa-p521", p521},
		{"rsa-1024", rsa1024},
		{"foreign signer", foreignSigner{x25519.PublicKey()}},
	}
	for _, s := range signers {
		t.Run("sign/"+s.name, func(t *testing.T) {
			if _, err := Sign(s.key, []byte("p")); !errors.Is(err, ErrUnsupportedKey) {
				t.Errorf("Sign = %v, want ErrUnsupportedKey", err)
			}
		})
	}
	pubs := []struct {
		name string
		pub  crypto.PublicKey
	}{
		{"nil", nil},
		{"nil ecdsa", (*ecdsa.PublicKey)(nil)},
		{"nil rsa", (*rsa.PublicKey)(nil)},
		{"ecdsa-p224", p224.Public()},
		{"ecdsa-p521", p521.Public()},
		{"rsa-1024", rsa1024.Public()},
		{"x25519", x25519.PublicKey()},
		{"ed25519 short", ed25519.PublicKey(make([]byte, 31))},
		{"raw byte slice", make([]byte, 32)},
		{"ecdsa by value", ecdsa.PublicKey{}},
	}
	for _, p := range pubs {
		t.Run("verify/"+p.name, func(t *testing.T) {
			err := Verify(p.pub, []byte("p"), make([]byte, 64))
			if !errors.Is(err, ErrUnsupportedKey) {
				t.Errorf("Verify = %v, want ErrUnsupportedKey", err)
			}
		})
	}
}

type foreignSigner struct{ pub crypto.PublicKey }

func (f foreignSigner) Public() crypto.PublicKey { return f.pub }
func (f foreignSigner) Sign(_ io.Reader, _ []byte, _ crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("must not be called")
}

// failingSigner reports a supported public key but fails to sign, like a
// hardware token that was removed.
type failingSigner struct{ crypto.Signer }

var errToken = errors.New("token removed")

func (f failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errToken
}

func TestSignerFailure(t *testing.T) {
	_, err := Sign(failingSigner{ed25519Key(t)}, []byte("p"))
	if !errors.Is(err, errToken) || errors.Is(err, ErrUnsupportedKey) {
		t.Fatalf("Sign = %v, want wrapped signer error", err)
	}
}

func TestLeafKeyDigest(t *testing.T) {
	ca, err := pki.NewCA("digest test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[[32]byte]string{}
	for _, kt := range pki.KeyTypes {
		is, err := pki.Issue(ca, pki.Request{Role: pki.RoleAgent, ID: "a", KeyType: kt})
		if err != nil {
			t.Fatal(err)
		}
		d := LeafKeyDigest(is.Cert)
		if want := sha256.Sum256(is.Cert.RawSubjectPublicKeyInfo); d != want {
			t.Errorf("%s: LeafKeyDigest != sha256(spki)", kt)
		}
		pd, err := PublicKeyDigest(is.Key.Public())
		if err != nil || pd != d {
			t.Errorf("%s: PublicKeyDigest(key) = %x, %v; want %x", kt, pd, err, d)
		}
		if prev, dup := seen[d]; dup {
			t.Errorf("%s and %s share a key digest", kt, prev)
		}
		seen[d] = string(kt)
		// A pki-issued key signs pulses the certificate's public key verifies.
		sig, err := Sign(is.Key, []byte("x"))
		if err != nil {
			t.Fatalf("%s: %v", kt, err)
		}
		if err := Verify(is.Cert.PublicKey, []byte("x"), sig); err != nil {
			t.Errorf("%s: verify with certificate key: %v", kt, err)
		}
	}
	// Re-issuing for the same key type gives a different key and digest;
	// the same certificate parsed twice gives the same digest.
	is, _ := pki.Issue(ca, pki.Request{Role: pki.RoleAgent, ID: "a"})
	again, err := x509.ParseCertificate(is.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if LeafKeyDigest(again) != LeafKeyDigest(is.Cert) {
		t.Error("digest not stable across parses")
	}
	if _, err := PublicKeyDigest(struct{}{}); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("PublicKeyDigest(struct{}) = %v", err)
	}
}

func benchKeys(b *testing.B) []struct {
	name string
	key  crypto.Signer
} {
	b.Helper()
	mk := func(t pki.KeyType) crypto.Signer {
		k, err := pki.GenerateKey(t)
		if err != nil {
			b.Fatal(err)
		}
		return k
	}
	return []struct {
		name string
		key  crypto.Signer
	}{
		{"ecdsa-p256", mk(pki.KeyECDSAP256)},
		{"ed25519", mk(pki.KeyEd25519)},
		{"rsa-3072-pss", mk(pki.KeyRSA3072)},
	}
}

// benchPayload approximates a pulse payload with a short runtime log delta.
var benchPayload = bytes.Repeat([]byte{0x5a}, 2048)

func BenchmarkSign(b *testing.B) {
	for _, k := range benchKeys(b) {
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Sign(k.key, benchPayload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, k := range benchKeys(b) {
		sig, err := Sign(k.key, benchPayload)
		if err != nil {
			b.Fatal(err)
		}
		pub := k.key.Public()
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := Verify(pub, benchPayload, sig); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
