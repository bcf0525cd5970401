package agent

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is exponential backoff with full jitter: the n-th consecutive
// failure waits a uniformly random time in [Min, min(Max, Min*2^n)], so a
// fleet that lost its verifier does not come back in lock step. Reset after
// a success. Not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	failures int
	// rand returns a float in [0,1); nil uses math/rand/v2.
	rand func() float64
}

// Next returns the wait after one more failure.
func (b *Backoff) Next() time.Duration {
	ceil := b.Min
	for i := 0; i < b.failures && ceil < b.Max; i++ {
		ceil *= 2
	}
	if ceil > b.Max {
		ceil = b.Max
	}
	b.failures++
	r := rand.Float64
	if b.rand != nil {
		r = b.rand
	}
	return b.Min + time.Duration(r()*float64(ceil-b.Min))
}

// Failures is the number of failures since the last Reset.
func (b *Backoff) Failures() int { return b.failures }

// Reset forgets the failures.
func (b *Backoff) Reset() { b.failures = 0 }

// Wait sleeps for Next() or until ctx is done, returning ctx.Err() then.
func (b *Backoff) Wait(ctx context.Context) error {
	return sleep(ctx, b.Next())
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// maxRetryWait bounds every wait between two attempts to reach the verifier.
const maxRetryWait = 2 * time.Minute

// minRetryWait keeps a (test-only) tiny interval from spinning.
const minRetryWait = 10 * time.Millisecond

// retryBounds are the shortest and longest waits between two attempts to
// reach the verifier while it is unreachable, for an agent pulsing every
// interval: at most a quarter of the interval (and never more than
// maxRetryWait), so a verifier that comes back hears from the agent well
// within one interval and before a grace of one interval runs out; the
// first wait is a quarter of that cap, at most one second.
func retryBounds(interval time.Duration) (lo, hi time.Duration) {
	hi = max(min(interval/4, maxRetryWait), minRetryWait)
	return min(time.Second, hi/4), hi
}

// limit sets the bounds of the waits to come, keeping the failure count:
// the interval, and with it the cap, can change while the verifier is away.
func (b *Backoff) limit(lo, hi time.Duration) {
	b.Min, b.Max = lo, hi
}
