// Package directivesig signs and verifies the verifier's Quarantine and
// Release directives with an Ed25519 directive key, separate from the
// verifier's TLS key (docs/operations.md, "Signed directives"). The
// signature covers a domain-separated message over the serialised
// directive (Directive.signed: the directive without signed and
// signature), so no other signature made with the key can pass for a
// directive. Pure: no I/O, no clock; callers pass the time.
package directivesig

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// Domain prefixes every signed message.
const Domain = "pulse/v1 directive signature\x00"

// MaxAge is how far a signed directive's issued time may lie from the
// agent's clock, either way: older directives are replays, newer ones come
// from a clock that is off.
const MaxAge = 10 * time.Minute

// Typed errors; every error Open returns matches one of them.
var (
	// ErrUnsigned: the directive carries no signed copy or no signature.
	ErrUnsigned = errors.New("directive is not signed")
	// ErrBadSignature: the signature does not verify with the directive key.
	ErrBadSignature = errors.New("directive signature does not verify")
	// ErrMalformed: the signed copy does not decode, or itself carries a
	// signature.
	ErrMalformed = errors.New("signed directive is malformed")
	// ErrAudience: the directive is addressed to another agent.
	ErrAudience = errors.New("directive is addressed to another agent")
	// ErrStale: issued too long ago, in the future, or without a time.
	ErrStale = errors.New("directive issued outside the accepted window")
	// ErrReplayed: a directive with this id was accepted already.
	ErrReplayed = errors.New("directive replayed")
	// ErrKey: a key does not parse.
	ErrKey = errors.New("bad directive key")
)

// Message is the byte string the signature covers.
func Message(signed []byte) []byte {
	m := make([]byte, 0, len(Domain)+len(signed))
	m = append(m, Domain...)
	return append(m, signed...)
}

// Sign fills d.Signed and d.Signature: d (its id, issued and audience set
// by the caller) without signed and signature, serialised
// deterministically, then signed.
func Sign(key ed25519.PrivateKey, d *pulsev1.Directive) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("sign directive: %w: private key size %d", ErrKey, len(key))
	}
	inner := proto.Clone(d).(*pulsev1.Directive)
	inner.Signed, inner.Signature = nil, nil
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(inner)
	if err != nil {
		return fmt.Errorf("sign directive: %w", err)
	}
	d.Signed = raw
	d.Signature = ed25519.Sign(key, Message(raw))
	return nil
}

// Open verifies d's signature with pub and returns the signed copy: the
// directive an agent acts on (never the unsigned outer fields). audience
// is the agent's ID: the signed copy's audience must be empty or equal.
// Freshness and replays are the caller's (Window).
func Open(pub ed25519.PublicKey, d *pulsev1.Directive, audience string) (*pulsev1.Directive, error) {
	if len(d.GetSigned()) == 0 || len(d.GetSignature()) == 0 {
		return nil, ErrUnsigned
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key size %d", ErrKey, len(pub))
	}
	if !ed25519.Verify(pub, Message(d.GetSigned()), d.GetSignature()) {
		return nil, ErrBadSignature
	}
	inner := &pulsev1.Directive{}
	if err := proto.Unmarshal(d.GetSigned(), inner); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(inner.GetSigned()) != 0 || len(inner.GetSignature()) != 0 {
		return nil, fmt.Errorf("%w: signed copy carries a signature", ErrMalformed)
	}
	if a := inner.GetAudience(); a != "" && a != audience {
		return nil, fmt.Errorf("%w: %q", ErrAudience, a)
	}
	return inner, nil
}

// Window refuses replays of signed directives: a directive is accepted
// once by id, and only while its issued time is within MaxAge of now. Ids
// are remembered for MaxAge past their issued time, so the memory is
// bounded by the directives of two windows. Not safe for concurrent use.
type Window struct {
	seen map[string]time.Time
}

// Accept checks d (a signed copy from Open) against now and records its id.
func (w *Window) Accept(d *pulsev1.Directive, now time.Time) error {
	if d.GetIssued() == nil || d.GetId() == "" {
		return fmt.Errorf("%w: no issued time or id", ErrStale)
	}
	issued := d.GetIssued().AsTime()
	if age := now.Sub(issued); age > MaxAge || age < -MaxAge {
		return fmt.Errorf("%w: issued %s, now %s", ErrStale, issued.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if w.seen == nil {
		w.seen = map[string]time.Time{}
	}
	for id, at := range w.seen {
		if now.Sub(at) > MaxAge {
			delete(w.seen, id)
		}
	}
	if _, dup := w.seen[d.GetId()]; dup {
		return fmt.Errorf("%w: id %s", ErrReplayed, d.GetId())
	}
	// Remembered until its issued time leaves the window.
	w.seen[d.GetId()] = maxTime(issued, now)
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// PEM block types.
const (
	pemPrivate = "PRIVATE KEY"
	pemPublic  = "PUBLIC KEY"
)

// MarshalPrivateKey encodes key as PKCS#8 PEM.
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: der}), nil
}

// MarshalPublicKey encodes pub as PKIX PEM.
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: der}), nil
}

// ParsePrivateKey decodes a PKCS#8 PEM Ed25519 private key.
func ParsePrivateKey(raw []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != pemPrivate {
		return nil, fmt.Errorf("%w: no %s PEM block", ErrKey, pemPrivate)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %T is not Ed25519", ErrKey, k)
	}
	return ek, nil
}

// ParsePublicKey decodes a PKIX PEM Ed25519 public key.
func ParsePublicKey(raw []byte) (ed25519.PublicKey, error) {
	b, _ := pem.Decode(raw)
	if b == nil || b.Type != pemPublic {
		return nil, fmt.Errorf("%w: no %s PEM block", ErrKey, pemPublic)
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: %T is not Ed25519", ErrKey, k)
	}
	return ek, nil
}

// Kind names a directive's kind for logs, errors and the directive outbox
// ("quarantine", "release", ...; "empty" when it has none).
func Kind(d *pulsev1.Directive) string {
	switch d.GetKind().(type) {
	case *pulsev1.Directive_Quarantine:
		return "quarantine"
	case *pulsev1.Directive_Release:
		return "release"
	case *pulsev1.Directive_NextNonce:
		return "next_nonce"
	case *pulsev1.Directive_SetInterval:
		return "set_interval"
	case *pulsev1.Directive_SendFirmwareLog:
		return "send_firmware_log"
	case *pulsev1.Directive_PulseNow:
		return "pulse_now"
	case *pulsev1.Directive_Rotate:
		return "rotate"
	case nil:
		return "empty"
	}
	return "unknown"
}
