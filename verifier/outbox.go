package verifier

import (
	"context"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// The alert outbox (docs/alerts.md): raise stores an alert claimed by this
// replica, dispatches it and marks it dispatched. An alert stored but not
// marked (the replica crashed in between, or its alerter could not take
// the alert) is claimed by whichever replica's redispatch pass wins the
// store's conditional update once the claim is AlertClaimStaleAfter old.
var (
	// AlertOutboxInterval is how often the outbox is looked at.
	AlertOutboxInterval = 2 * time.Second
	// AlertClaimStaleAfter is how long a claim on an undispatched alert
	// holds: longer than one dispatch (audit fsync, bounded at 5 s), and
	// than the clock skew between replicas.
	AlertClaimStaleAfter = 10 * time.Second
	// alertOutboxBatch bounds the alerts one pass claims.
	alertOutboxBatch = 100
)

// CheckedAlerter is an Alerter that reports whether an alert reached its
// sinks. An alert whose dispatch fails stays in the outbox and is
// dispatched again later (by this replica or another). An Alerter without
// the method is taken to have received every alert.
type CheckedAlerter interface {
	Alerter
	DispatchAlert(a *store.Alert) error
}

// dispatchStored hands a stored alert this replica holds the claim on to
// the alerter and marks it dispatched. Without an alerter, or when the
// alerter refused it, the alert stays in the outbox. It reports whether
// the alert was dispatched.
func (v *Verifier) dispatchStored(ctx context.Context, a *store.Alert) bool {
	if v.alerter == nil {
		return false
	}
	if c, ok := v.alerter.(CheckedAlerter); ok {
		if err := c.DispatchAlert(a); err != nil {
			v.log.Error("alert not dispatched; left in the outbox", "alert_id", a.ID, "agent_id", a.AgentID, "kind", a.Kind, "error", err)
			return false
		}
	} else {
		v.alerter.Alert(a)
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := v.store.MarkAlertDispatched(mctx, a.ID, v.now()); err != nil {
		// The claim goes stale and the alert is dispatched again: the
		// audit log and webhooks see it twice (same alert ID).
		v.log.Error("marking alert dispatched failed; it may be dispatched again", "alert_id", a.ID, "kind", a.Kind, "error", err)
	}
	return true
}

// redispatchAlerts runs RedispatchAlerts every interval until ctx ends.
func (v *Verifier) redispatchAlerts(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v.RedispatchAlerts(ctx)
	}
}

// RedispatchAlerts makes one pass over the outbox: every alert stored but
// not dispatched whose claim is older than AlertClaimStaleAfter is claimed
// (one conditional update: of replicas racing, one wins) and dispatched by
// this replica. It returns how many this pass dispatched. Without an
// alerter it does nothing.
func (v *Verifier) RedispatchAlerts(ctx context.Context) int {
	if v.alerter == nil {
		return 0
	}
	now := v.now()
	stale := now.Add(-AlertClaimStaleAfter)
	pending, err := v.store.PendingAlerts(ctx, stale, alertOutboxBatch)
	if err != nil {
		v.log.Error("reading the alert outbox failed", "error", err)
		return 0
	}
	n := 0
	for _, a := range pending {
		won, err := v.store.ClaimAlert(ctx, a.ID, now, stale)
		if err != nil {
			v.log.Error("claiming an undispatched alert failed", "alert_id", a.ID, "error", err)
			continue
		}
		if !won {
			continue // another replica has it
		}
		v.log.Warn("dispatching an alert stored but not dispatched", "alert_id", a.ID, "agent_id", a.AgentID, "kind", a.Kind,
			"raised_by", a.Replica, "raised_at", a.CreatedAt)
		if v.dispatchStored(ctx, a) {
			n++
		}
	}
	return n
}
