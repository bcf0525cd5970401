package directivesig

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// FuzzOpen: arbitrary signed bytes and signatures never panic and are
// never accepted, except the one valid signature of the seed; every
// refusal matches one of the typed errors.
func FuzzOpen(f *testing.F) {
	seed := [32]byte{7}
	priv := ed25519.NewKeyFromSeed(seed[:])
	pub := priv.Public().(ed25519.PublicKey)
	d := quarantine("10.0.0.9", "edge-1", time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC))
	if err := Sign(priv, d); err != nil {
		f.Fatal(err)
	}
	f.Add(d.Signed, d.Signature, "edge-1")
	f.Add([]byte{}, []byte{}, "")
	f.Add([]byte{0x52, 0x02, 0x08, 0x01}, make([]byte, 64), "x")
	f.Fuzz(func(t *testing.T, signed, sig []byte, audience string) {
		got, err := Open(pub, &pulsev1.Directive{Signed: signed, Signature: sig}, audience)
		if err == nil {
			if !ed25519.Verify(pub, Message(signed), sig) || got == nil {
				t.Fatal("accepted a directive whose signature does not verify")
			}
			return
		}
		for _, want := range []error{ErrUnsigned, ErrBadSignature, ErrMalformed, ErrAudience, ErrKey} {
			if errors.Is(err, want) {
				return
			}
		}
		t.Fatalf("untyped error %v", err)
	})
}

// FuzzParseKeys: arbitrary bytes never panic either key parser, and any
// refusal is ErrKey.
func FuzzParseKeys(f *testing.F) {
	seed := [32]byte{9}
	priv := ed25519.NewKeyFromSeed(seed[:])
	privPEM, _ := MarshalPrivateKey(priv)
	pubPEM, _ := MarshalPublicKey(priv.Public().(ed25519.PublicKey))
	f.Add(privPEM)
	f.Add(pubPEM)
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if _, err := ParsePublicKey(raw); err != nil && !errors.Is(err, ErrKey) {
			t.Fatalf("public: untyped error %v", err)
		}
		if _, err := ParsePrivateKey(raw); err != nil && !errors.Is(err, ErrKey) {
			t.Fatalf("private: untyped error %v", err)
		}
	})
}
