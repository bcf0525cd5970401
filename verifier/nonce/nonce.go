// Package nonce issues and checks the verifier's single-use challenge nonces.
//
// A nonce is self-describing and authenticated with a key every replica
// shares (kept in the store), so issuing one writes nothing:
//
//	version(1) | binding(8) | epoch(8) | expires(8, Unix ms) | random(8) | tag(16)
//
// binding is a keyed hash of the agent ID, tag an HMAC-SHA-256 over the rest.
// Single use comes from the epoch: the store keeps one counter per agent, a
// nonce is fresh while its epoch equals that counter, and spending it is one
// conditional increment (the store's job, atomic across replicas). A nonce
// of an older epoch has been spent: a replay.
//
// This package is pure: it takes the key, the agent ID and the clock and
// returns what it found, with typed errors.
package nonce

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Size is the length of an issued nonce in bytes.
const Size = 1 + bindingSize + 8 + 8 + randomSize + tagSize

// KeySize is the length of the shared key.
const KeySize = 32

const (
	version     = 0x01
	bindingSize = 8
	randomSize  = 8
	tagSize     = 16
	signedSize  = Size - tagSize
)

// Domain separation of the two keyed hashes.
var (
	bindingLabel = []byte("pulse nonce binding v1\x00")
	tagLabel     = []byte("pulse nonce tag v1\x00")
)

// Errors returned by Check. Match with errors.Is.
var (
	// ErrUnknown: the bytes are not a nonce this verifier fleet issued
	// (wrong length or version, or the tag does not verify).
	ErrUnknown = errors.New("nonce was never issued")
	// ErrWrongAgent: an issued nonce bound to another agent.
	ErrWrongAgent = errors.New("nonce was issued to another agent")
	// ErrExpired: an issued nonce past its expiry.
	ErrExpired = errors.New("nonce expired")
)

// Nonce is a decoded, authenticated nonce.
type Nonce struct {
	Epoch   uint64
	Expires time.Time
}

// Keyring issues and checks nonces with one key.
type Keyring struct {
	key []byte
}

// New returns a keyring over key (KeySize bytes). The key is a secret: a
// holder can mint nonces for any agent.
func New(key []byte) (*Keyring, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("nonce: key is %d bytes, want %d", len(key), KeySize)
	}
	return &Keyring{key: append([]byte(nil), key...)}, nil
}

// String never shows the key.
func (k *Keyring) String() string { return "nonce.Keyring{key:redacted}" }

func (k *Keyring) binding(agentID string) [bindingSize]byte {
	m := hmac.New(sha256.New, k.key)
	m.Write(bindingLabel)
	m.Write([]byte(agentID))
	var out [bindingSize]byte
	copy(out[:], m.Sum(nil))
	return out
}

func (k *Keyring) tag(signed []byte) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write(tagLabel)
	m.Write(signed)
	return m.Sum(nil)[:tagSize]
}

// Issue returns a nonce for the agent at epoch that expires at expires.
// random must hold at least 8 unpredictable bytes (two nonces of one epoch
// then differ).
func (k *Keyring) Issue(agentID string, epoch uint64, expires time.Time, random []byte) ([]byte, error) {
	if len(random) < randomSize {
		return nil, fmt.Errorf("nonce: %d random bytes, want %d", len(random), randomSize)
	}
	out := make([]byte, Size)
	out[0] = version
	b := k.binding(agentID)
	copy(out[1:], b[:])
	binary.BigEndian.PutUint64(out[1+bindingSize:], epoch)
	binary.BigEndian.PutUint64(out[1+bindingSize+8:], uint64(expires.UnixMilli()))
	copy(out[1+bindingSize+16:], random[:randomSize])
	copy(out[signedSize:], k.tag(out[:signedSize]))
	return out, nil
}

// Check authenticates a nonce presented by agentID at now. It does not know
// whether the nonce was spent: compare the epoch with the store's.
func (k *Keyring) Check(agentID string, raw []byte, now time.Time) (Nonce, error) {
	if len(raw) != Size || raw[0] != version {
		return Nonce{}, ErrUnknown
	}
	if !hmac.Equal(k.tag(raw[:signedSize]), raw[signedSize:]) {
		return Nonce{}, ErrUnknown
	}
	n := Nonce{
		Epoch:   binary.BigEndian.Uint64(raw[1+bindingSize:]),
		Expires: time.UnixMilli(int64(binary.BigEndian.Uint64(raw[1+bindingSize+8:]))).UTC(),
	}
	b := k.binding(agentID)
	if !hmac.Equal(b[:], raw[1:1+bindingSize]) {
		return n, ErrWrongAgent
	}
	if !now.Before(n.Expires) {
		return n, ErrExpired
	}
	return n, nil
}
