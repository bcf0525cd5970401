package quarset

import (
	"crypto/sha256"
	"testing"
)

func TestDigest(t *testing.T) {
	a, n, err := Digest([]string{"10.0.0.2", "::ffff:10.0.0.1", "10.0.0.2", "fd00::1"})
	if err != nil || n != 3 {
		t.Fatalf("digest: n=%d err=%v", n, err)
	}
	b, _, _ := Digest([]string{"fd00::1", "10.0.0.1", "10.0.0.2"})
	if a != b {
		t.Fatal("order, duplicates or mapping changed the digest")
	}
	c, _, _ := Digest([]string{"10.0.0.1", "10.0.0.2"})
	if a == c {
		t.Fatal("a different set has the same digest")
	}
	empty, n, _ := Digest(nil)
	if n != 0 || empty != sha256.Sum256(nil) {
		t.Fatal("empty set digest")
	}
	for _, bad := range []string{"", "10.0.0.300", "fe80::1%eth0", "host"} {
		if _, _, err := Digest([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
