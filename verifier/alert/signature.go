package alert

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Webhook request headers.
const (
	// HeaderSignature carries "sha256=" + hex(HMAC-SHA256(secret, body)).
	HeaderSignature = "X-Pulse-Signature"
	// HeaderTimestamp carries the Unix time (seconds) the attempt was
	// signed; the same value is the body's "timestamp", which the signature
	// covers. Receivers reject stale deliveries by it.
	HeaderTimestamp = "X-Pulse-Timestamp"
	// HeaderAlertID carries the alert's ID, for receivers' logs.
	HeaderAlertID = "X-Pulse-Alert-Id"
)

const signaturePrefix = "sha256="

// Signature verification errors, matched with errors.Is.
var (
	ErrSignatureMissing   = errors.New("webhook signature missing")
	ErrSignatureMalformed = errors.New("webhook signature malformed")
	ErrSignatureMismatch  = errors.New("webhook signature mismatch")
)

// Sign returns the X-Pulse-Signature value for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks an X-Pulse-Signature header value against the raw
// request body, in constant time. Receivers must verify the exact bytes
// they received, before parsing them.
func VerifySignature(secret, body []byte, header string) error {
	if len(secret) == 0 {
		return errors.New("verify webhook signature: empty secret")
	}
	header = strings.TrimSpace(header)
	if header == "" {
		return ErrSignatureMissing
	}
	hexSig, ok := strings.CutPrefix(header, signaturePrefix)
	if !ok {
		return fmt.Errorf("%w: want the %q prefix", ErrSignatureMalformed, signaturePrefix)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: want %d hex-encoded bytes", ErrSignatureMalformed, sha256.Size)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return ErrSignatureMismatch
	}
	return nil
}

// Secret is a webhook signing key. It prints as "[redacted]" with every fmt
// verb and in JSON/text encodings, so it cannot leak through logs.
type Secret []byte

func (Secret) String() string                 { return "[redacted]" }
func (Secret) GoString() string               { return "alert.Secret([redacted])" }
func (Secret) MarshalText() ([]byte, error)   { return []byte("[redacted]"), nil }
func (s Secret) Format(f fmt.State, _ rune)   { fmt.Fprint(f, "[redacted]") }
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }
