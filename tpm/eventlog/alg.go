package eventlog

import (
	"crypto"
	"fmt"

	// Register the hash implementations Replay and Verify use.
	_ "crypto/sha1"
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// HashAlg is a TPM_ALG_ID naming a PCR bank's hash algorithm.
type HashAlg uint16

// The hash algorithms a PCR bank can use that this package can replay.
const (
	AlgSHA1   HashAlg = 0x0004
	AlgSHA256 HashAlg = 0x000B
	AlgSHA384 HashAlg = 0x000C
	AlgSHA512 HashAlg = 0x000D
	// AlgSM3 is recognised in logs (its digests are parsed and kept) but
	// cannot be replayed: Go has no SM3 implementation in the standard library.
	AlgSM3 HashAlg = 0x0012
)

// String returns the lowercase bank name ("sha1", "sha256", ...), or
// "alg(0xNNNN)" for an algorithm this package does not know.
func (a HashAlg) String() string {
	switch a {
	case AlgSHA1:
		return "sha1"
	case AlgSHA256:
		return "sha256"
	case AlgSHA384:
		return "sha384"
	case AlgSHA512:
		return "sha512"
	case AlgSM3:
		return "sm3_256"
	}
	return fmt.Sprintf("alg(0x%04x)", uint16(a))
}

// Hash returns the Go hash for the algorithm, or 0 when there is none.
func (a HashAlg) Hash() crypto.Hash {
	switch a {
	case AlgSHA1:
		return crypto.SHA1
	case AlgSHA256:
		return crypto.SHA256
	case AlgSHA384:
		return crypto.SHA384
	case AlgSHA512:
		return crypto.SHA512
	}
	return 0
}

// Size is the digest size in bytes, or 0 for an unknown algorithm.
func (a HashAlg) Size() int {
	switch a {
	case AlgSM3:
		return 32
	}
	if h := a.Hash(); h != 0 {
		return h.Size()
	}
	return 0
}

// Replayable reports whether PCR values of this bank can be computed here.
func (a HashAlg) Replayable() bool { return a.Hash() != 0 }

// ParseHashAlg maps a bank name as String prints it ("sha256") back to the
// algorithm.
func ParseHashAlg(name string) (HashAlg, error) {
	for _, a := range []HashAlg{AlgSHA1, AlgSHA256, AlgSHA384, AlgSHA512, AlgSM3} {
		if a.String() == name {
			return a, nil
		}
	}
	return 0, fmt.Errorf("eventlog: unknown hash algorithm %q", name)
}

// Digest is one bank's digest of an event.
type Digest struct {
	Alg   HashAlg
	Value []byte
}
