package verifier

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pulse-attest/pulse/verifier/config"
)

// Enrollment is the one RPC that needs no proof from a TPM: the EK public
// area and certificate are public. enrollGuard bounds what it may cost:
// Enroll calls per source address (token buckets), and the pending rows
// they leave (expired ones are deleted now and then).
type enrollGuard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	// lastSweep is when expired enrollments were last deleted (Unix nanos).
	lastSweep atomic.Int64
}

type bucket struct {
	tokens float64
	last   time.Time
}

const (
	// maxEnrollBuckets bounds the limiter's memory. Past it, buckets that
	// have refilled (idle callers) go first, then arbitrary ones: a caller
	// evicted that way only gets a full bucket, which a new address gets
	// anyway.
	maxEnrollBuckets = 8192
	// enrollSweepEvery spaces the deletion of expired enrollments.
	enrollSweepEvery = time.Minute
)

// allow takes a token from the bucket of the address addr (the peer's
// host), refilled at perMinute a minute up to perMinute. IPv6 addresses
// share one bucket per /64, the block one host is usually given.
func (g *enrollGuard) allow(addr string, now time.Time, perMinute int) bool {
	if perMinute <= 0 {
		perMinute = config.DefaultEnrollRatePerMinute
	}
	key := limiterKey(addr)
	burst := float64(perMinute)
	refill := func(b *bucket) {
		if el := now.Sub(b.last); el > 0 {
			b.tokens = min(burst, b.tokens+el.Minutes()*float64(perMinute))
			b.last = now
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.buckets == nil {
		g.buckets = map[string]*bucket{}
	}
	b, ok := g.buckets[key]
	if !ok {
		if len(g.buckets) >= maxEnrollBuckets {
			g.evict(refill, burst)
		}
		b = &bucket{tokens: burst, last: now}
		g.buckets[key] = b
	}
	refill(b)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evict frees at least a tenth of the buckets: full ones first.
func (g *enrollGuard) evict(refill func(*bucket), burst float64) {
	for k, b := range g.buckets {
		if refill(b); b.tokens >= burst {
			delete(g.buckets, k)
		}
	}
	for k := range g.buckets {
		if len(g.buckets) <= maxEnrollBuckets*9/10 {
			break
		}
		delete(g.buckets, k)
	}
}

func limiterKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// sweepEnrollments deletes expired pending enrollments, at most once per
// enrollSweepEvery on this replica; Enroll calls it, so rows are collected
// while enrollments happen, which is when they are created.
func (v *Verifier) sweepEnrollments(ctx context.Context, now time.Time) {
	last := v.enroll.lastSweep.Load()
	if now.UnixNano()-last < int64(enrollSweepEvery) || !v.enroll.lastSweep.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	n, err := v.store.DeleteExpiredEnrollments(ctx, now)
	if err != nil {
		v.log.Warn("deleting expired enrollments failed", "error", err)
		return
	}
	if n > 0 {
		v.log.Debug("expired enrollments deleted", "count", n)
	}
}
