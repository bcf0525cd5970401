package quarset

import (
	"slices"
	"strings"
	"testing"
)

// FuzzDigest: the digest of a set does not depend on order, duplicates or
// IPv4-mapped spelling, and an address that does not parse is refused.
func FuzzDigest(f *testing.F) {
	f.Add("10.0.0.1\n2001:db8::1\n10.0.0.1")
	f.Add("::ffff:192.0.2.1\n192.0.2.1")
	f.Add("fe80::1%eth0")
	f.Add("")
	f.Fuzz(func(t *testing.T, lines string) {
		set := strings.Split(lines, "\n")
		d, n, err := Digest(set)
		if err != nil {
			return
		}
		rev := slices.Clone(set)
		slices.Reverse(rev)
		var spelled []string
		for _, s := range rev {
			c, err := Canonical(s)
			if err != nil {
				t.Fatalf("%q: digest accepted what Canonical refuses: %v", s, err)
			}
			if !strings.Contains(c, ":") {
				c = "::ffff:" + c // the same address, IPv4-mapped
			}
			spelled = append(spelled, c, c)
		}
		var canon []string
		for _, s := range set {
			c, _ := Canonical(s)
			canon = append(canon, c, c)
		}
		if dc, nc := DigestCanonical(canon); dc != d || nc != n {
			t.Fatalf("DigestCanonical of %q differs from Digest", set)
		}
		d2, n2, err := Digest(spelled)
		if err != nil || d2 != d || n2 != n {
			t.Fatalf("digest of %q differs from its reordered, duplicated, mapped spelling (%v)", set, err)
		}
	})
}
