package verifier

import (
	"strings"
	"sync"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/metrics"
)

// Store operations as pulse_store_errors_total names them.
const (
	storeOpSweep     = metrics.StoreOpSweep
	storeOpChallenge = metrics.StoreOpChallenge
	storeOpPulse     = metrics.StoreOpPulse
)

// storeHealth is what this replica knows of its store's availability: a
// failed store operation (the sweeper's, a Challenge's read, a pulse's
// read or commit) marks the store down; the next sweep that reads it marks
// it up again and remembers when (back). While the store is down no pulse
// is recorded, so no agent's deadline moves: the sweeper then gives every
// agent the heartbeat grace from the store's return, as it does from a
// replica's start (docs/decisions.md, "Store outages").
type storeHealth struct {
	mu        sync.Mutex
	down      bool
	downSince time.Time
	back      time.Time
}

// storeFault records a failed store operation.
func (v *Verifier) storeFault(op string, err error) {
	v.metrics.StoreError(op)
	h := &v.storeHealth
	h.mu.Lock()
	first := !h.down
	if first {
		h.down, h.downSince = true, v.now()
	}
	h.mu.Unlock()
	if first {
		v.log.Warn("store unavailable; pulses are refused with Unavailable until it answers", "op", op, "error", err)
	}
}

// storeAnswered records a store operation that succeeded (the sweeper's).
func (v *Verifier) storeAnswered() {
	h := &v.storeHealth
	h.mu.Lock()
	was, since := h.down, h.downSince
	now := v.now()
	if was {
		h.down, h.back = false, now
	}
	h.mu.Unlock()
	v.metrics.StoreUp()
	if was {
		v.log.Info("store available again; every agent gets its heartbeat grace from now", "down_for", now.Sub(since).Round(time.Millisecond).String())
	}
}

// graceFrom is when the current startup grace began: this replica's start
// or its store's last return, whichever is later.
func (v *Verifier) graceFrom() time.Time {
	h := &v.storeHealth
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.back.After(v.started) {
		return h.back
	}
	return v.started
}

// storeFailurePrefixes begin the messages of the pipeline's REASON_INTERNAL
// outcomes that a store read or commit caused (pipeline.go, sentinel.go,
// hostprogs.go);
// the others (a verdict decided twice, a row that kept changing under
// concurrent pulses) are not the store's unavailability and must not
// extend the fleet's grace.
// TestStoreFailurePrefixesCoverInternal keeps this list and
// notStoreFailures in step with the pipeline's messages.
var storeFailurePrefixes = []string{"nonce store: ", "firmware log store: ", "sentinel cursor: ", "host program state: "}

// notStoreFailures begin the pipeline's other REASON_INTERNAL messages.
var notStoreFailures = []string{"agent %s's record changed under", "verdict decided ", "nonce: "}

// storeFailed reports whether a pulse's outcome is a store failure.
func storeFailed(o *Outcome) bool {
	if o.Reason != pulsev1.Reason_REASON_INTERNAL {
		return false
	}
	for _, p := range storeFailurePrefixes {
		if strings.HasPrefix(o.Message, p) {
			return true
		}
	}
	return false
}
