package directivesig

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

func quarantine(addr, audience string, issued time.Time) *pulsev1.Directive {
	return &pulsev1.Directive{Id: "d-" + addr, Issued: timestamppb.New(issued), Audience: audience,
		Kind: &pulsev1.Directive_Quarantine{Quarantine: &pulsev1.Quarantine{Addresses: []string{addr}, Offender: "bad"}}}
}

func TestSignOpen(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	_ = otherPub
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	signed := func(mut func(d *pulsev1.Directive)) *pulsev1.Directive {
		d := quarantine("10.0.0.9", "edge-1", now)
		if err := Sign(priv, d); err != nil {
			t.Fatal(err)
		}
		if mut != nil {
			mut(d)
		}
		return d
	}
	tests := []struct {
		name string
		d    *pulsev1.Directive
		want error
	}{
		{"valid", signed(nil), nil},
		{"unsigned", quarantine("10.0.0.9", "", now), ErrUnsigned},
		{"signature stripped", signed(func(d *pulsev1.Directive) { d.Signature = nil }), ErrUnsigned},
		{"other key", signed(func(d *pulsev1.Directive) {
			_ = Sign(otherPriv, d)
		}), ErrBadSignature},
		{"signed copy changed", signed(func(d *pulsev1.Directive) {
			inner := &pulsev1.Directive{}
			_ = proto.Unmarshal(d.Signed, inner)
			inner.GetQuarantine().Addresses = []string{"10.0.0.1"}
			d.Signed, _ = proto.Marshal(inner)
		}), ErrBadSignature},
		{"signature without domain", signed(func(d *pulsev1.Directive) { d.Signature = ed25519.Sign(priv, d.Signed) }), ErrBadSignature},
		{"other audience", func() *pulsev1.Directive {
			d := quarantine("10.0.0.9", "edge-2", now)
			_ = Sign(priv, d)
			return d
		}(), ErrAudience},
		{"garbage signed", func() *pulsev1.Directive {
			d := &pulsev1.Directive{Signed: []byte{0xff, 0xff, 0xff}}
			d.Signature = ed25519.Sign(priv, Message(d.Signed))
			return d
		}(), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Open(pub, tc.d, "edge-1")
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
			if tc.want == nil && got.GetQuarantine().GetAddresses()[0] != "10.0.0.9" {
				t.Fatalf("signed copy %v", got)
			}
		})
	}
	// The outer fields are never what is acted on.
	d := signed(func(d *pulsev1.Directive) {
		d.Kind = &pulsev1.Directive_Quarantine{Quarantine: &pulsev1.Quarantine{Addresses: []string{"192.0.2.1"}}}
	})
	got, err := Open(pub, d, "edge-1")
	if err != nil || got.GetQuarantine().GetAddresses()[0] != "10.0.0.9" {
		t.Fatalf("Open returned %v, %v; want the signed copy", got, err)
	}
}

func TestWindow(t *testing.T) {
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	var w Window
	d := quarantine("10.0.0.9", "", now)
	if err := w.Accept(d, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		d    *pulsev1.Directive
		at   time.Time
		want error
	}{
		{"replayed", d, now.Add(2 * time.Second), ErrReplayed},
		{"replayed near the window's end", d, now.Add(MaxAge - time.Second), ErrReplayed},
		{"too old", quarantine("10.0.0.8", "", now), now.Add(MaxAge + time.Second), ErrStale},
		{"future", quarantine("10.0.0.7", "", now.Add(MaxAge+time.Minute)), now, ErrStale},
		{"no issued time", &pulsev1.Directive{Id: "x"}, now, ErrStale},
		{"fresh other id", quarantine("10.0.0.6", "", now), now, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := w.Accept(tc.d, tc.at); !errors.Is(err, tc.want) {
				t.Fatalf("Accept: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestKeysRoundTrip(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pp, err := MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	gotPub, err := ParsePublicKey(pp)
	if err != nil || !gotPub.Equal(pub) {
		t.Fatalf("public key: %v", err)
	}
	gotPriv, err := ParsePrivateKey(sp)
	if err != nil || !gotPriv.Equal(priv) {
		t.Fatalf("private key: %v", err)
	}
	for _, bad := range [][]byte{nil, []byte("nope"), sp} {
		if _, err := ParsePublicKey(bad); !errors.Is(err, ErrKey) {
			t.Errorf("ParsePublicKey accepted %q", bad)
		}
	}
	if _, err := ParsePrivateKey(pp); !errors.Is(err, ErrKey) {
		t.Error("ParsePrivateKey accepted a public key")
	}
}

// BenchmarkSignOpen: one directive signed for one recipient (the
// verifier's per-agent cost at fan-out) and opened (the agent's).
func BenchmarkSignOpen(b *testing.B) {
	seed := [32]byte{1}
	priv := ed25519.NewKeyFromSeed(seed[:])
	pub := priv.Public().(ed25519.PublicKey)
	now := time.Now()
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			if err := Sign(priv, quarantine("10.0.0.9", "edge-1", now)); err != nil {
				b.Fatal(err)
			}
		}
	})
	d := quarantine("10.0.0.9", "edge-1", now)
	if err := Sign(priv, d); err != nil {
		b.Fatal(err)
	}
	b.Run("open", func(b *testing.B) {
		for b.Loop() {
			if _, err := Open(pub, d, "edge-1"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
