package verifier

import (
	"fmt"
	"testing"
	"time"
)

// TestEnrollLimiter: the token bucket from both sides, addresses keyed so
// an IPv6 host cannot multiply its buckets, and bounded memory.
func TestEnrollLimiter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	steps := []struct {
		name string
		addr string
		at   time.Duration
		want bool
	}{
		{"first of the burst", "192.0.2.1", 0, true},
		{"second of the burst", "192.0.2.1", 0, true},
		{"burst spent", "192.0.2.1", 0, false},
		{"another address has its own bucket", "192.0.2.2", 0, true},
		{"IPv4-mapped IPv6 is the same IPv4 host", "::ffff:192.0.2.1", 0, false},
		{"half a minute refills one token", "192.0.2.1", 30 * time.Second, true},
		{"and only one", "192.0.2.1", 30 * time.Second, false},
		{"an IPv6 host", "2001:db8:1:2::1", 0, true},
		{"same /64", "2001:db8:1:2::ffff", 0, true},
		{"same /64, burst spent", "2001:db8:1:2:aaaa::3", 0, false},
		{"another /64", "2001:db8:1:3::1", 0, true},
		{"a long idle refills the burst, no more", "192.0.2.1", time.Hour, true},
		{"burst after the idle", "192.0.2.1", time.Hour, true},
		{"burst after the idle spent", "192.0.2.1", time.Hour, false},
	}
	var g enrollGuard
	for _, s := range steps {
		if got := g.allow(s.addr, t0.Add(s.at), 2); got != s.want {
			t.Fatalf("%s: allow(%s) = %t, want %t", s.name, s.addr, got, s.want)
		}
	}

	// Many addresses: memory stays bounded.
	var h enrollGuard
	for i := range 3 * maxEnrollBuckets {
		h.allow(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), t0, 3)
		if n := len(h.buckets); n > maxEnrollBuckets {
			t.Fatalf("%d buckets after %d addresses, bound %d", n, i+1, maxEnrollBuckets)
		}
	}
	// Unparseable peer addresses are keyed as they are.
	if k := limiterKey("not-an-ip"); k != "not-an-ip" {
		t.Fatalf("key %q", k)
	}
}
