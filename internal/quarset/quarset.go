// Package quarset is the one definition of a quarantine set's digest, shared
// by the agent (which reads Shield's map from the kernel) and the verifier
// (which computes it from its quarantine table): SHA-256 over the canonical
// addresses, sorted and joined by newlines.
package quarset

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Canonical returns an address's canonical text: IPv4-mapped IPv6 unmapped,
// no zone, as netip prints it.
func Canonical(s string) (string, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("quarantine address %q: %w", s, err)
	}
	if a.Zone() != "" {
		return "", fmt.Errorf("quarantine address %q: zones are not allowed", s)
	}
	return a.Unmap().String(), nil
}

// Digest is SHA-256 of the canonical addresses of set, deduplicated,
// sorted and joined by "\n" (the empty set: SHA-256 of ""). It fails on an
// address that does not parse.
func Digest(set []string) ([32]byte, int, error) {
	seen := make(map[string]struct{}, len(set))
	out := make([]string, 0, len(set))
	for _, s := range set {
		c, err := Canonical(s)
		if err != nil {
			return [32]byte{}, 0, err
		}
		if _, dup := seen[c]; dup {
			continue
		}
		seen[c] = struct{}{}
		out = append(out, c)
	}
	sort.Strings(out)
	return sha256.Sum256([]byte(strings.Join(out, "\n"))), len(out), nil
}

// DigestCanonical is Digest for addresses already canonical (Canonical's
// output): the same value without parsing them again. It does not check
// them: a caller passing anything else gets a digest no agent reports.
func DigestCanonical(set []string) ([32]byte, int) {
	out := make([]string, len(set))
	copy(out, set)
	sort.Strings(out)
	out = compactSorted(out)
	return sha256.Sum256([]byte(strings.Join(out, "\n"))), len(out)
}

func compactSorted(s []string) []string {
	if len(s) == 0 {
		return s
	}
	j := 1
	for i := 1; i < len(s); i++ {
		if s[i] != s[j-1] {
			s[j] = s[i]
			j++
		}
	}
	return s[:j]
}
