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
