package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/verifier/audit"
)

// ErrClosed is returned by Dispatch after Close.
var ErrClosed = errors.New("alert dispatcher closed")

// AuditLog is where the dispatcher records alerts; *audit.Writer is one.
type AuditLog interface {
	Append(ctx context.Context, rec audit.Record) (audit.Record, error)
}

// Config configures a Dispatcher.
type Config struct {
	// Logger is the parent logger; the dispatcher logs as "alert".
	Logger hclog.Logger
	// Audit, when set, receives every alert before Dispatch returns.
	Audit AuditLog
	// Webhooks each get their own queue and worker.
	Webhooks []WebhookConfig
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Stats are the dispatcher's counters since it started.
type Stats struct {
	// Dispatched counts accepted alerts by kind (every kind is present).
	Dispatched map[Kind]uint64
	// Rejected counts alerts refused by validation.
	Rejected uint64
	// AuditFailed counts alerts the audit log could not record.
	AuditFailed uint64
	// Webhooks maps webhook names to their counters.
	Webhooks map[string]WebhookStats
}

// WebhookStats are one webhook's counters.
type WebhookStats struct {
	// Delivered: alerts the receiver accepted (2xx).
	Delivered uint64
	// Failed: alerts given up on (permanent error, attempts or age
	// exhausted, or abandoned at Close).
	Failed uint64
	// Dropped: alerts shed because the queue was full (the least severe
	// one queued, or the new one).
	Dropped uint64
	// DroppedBySeverity splits Dropped by the dropped alert's severity
	// (keys 1 to 4 are always present).
	DroppedBySeverity map[int]uint64
	// Retried: retries scheduled (attempts after the first).
	Retried uint64
	// Abandoned: the part of Failed cut short by Close's deadline.
	Abandoned uint64
	// Queued: alerts waiting now.
	Queued int
}

// Dispatcher fans alerts out to the structured log, the audit log and the
// webhooks. It is safe for concurrent use.
type Dispatcher struct {
	log      hclog.Logger
	audit    AuditLog
	now      func() time.Time
	webhooks []*webhook

	dispatched  map[Kind]*atomic.Uint64 // fixed key set: read without a lock
	rejected    atomic.Uint64
	auditFailed atomic.Uint64

	mu     sync.RWMutex // guards closed against enqueue racing Close
	closed bool
}

// NewDispatcher validates the webhook configuration and starts one worker
// per webhook.
func NewDispatcher(cfg Config) (*Dispatcher, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	d := &Dispatcher{
		log:        logger.Named("alert"),
		audit:      cfg.Audit,
		now:        cfg.Now,
		dispatched: map[Kind]*atomic.Uint64{},
	}
	if d.now == nil {
		d.now = time.Now
	}
	for _, k := range Kinds() {
		d.dispatched[k] = new(atomic.Uint64)
	}
	seen := map[string]bool{}
	for _, wc := range cfg.Webhooks {
		if seen[wc.Name] {
			d.stopWorkers()
			return nil, fmt.Errorf("new alert dispatcher: duplicate webhook name %q", wc.Name)
		}
		seen[wc.Name] = true
		h, err := newWebhook(wc, d.log.Named("webhook"), d.now)
		if err != nil {
			d.stopWorkers()
			return nil, fmt.Errorf("new alert dispatcher: %w", err)
		}
		d.webhooks = append(d.webhooks, h)
	}
	return d, nil
}

func (d *Dispatcher) stopWorkers() {
	for _, h := range d.webhooks {
		h.cancel()
		h.queue.close()
		<-h.done
	}
}

// Dispatch raises an alert. It fills the defaults (ID, Time, Severity),
// validates, appends the alert to the audit log (synchronously: the record
// is on disk when Dispatch returns), logs it, and queues it for every
// webhook without waiting for any receiver. It returns the alert as
// dispatched. An audit failure is returned (and logged and counted) after
// the other sinks still got the alert. After Close the alert is still
// audited and logged, and ErrClosed is returned.
func (d *Dispatcher) Dispatch(ctx context.Context, a Alert) (Alert, error) {
	a.Data = maps.Clone(a.Data)
	a.normalize(d.now())
	if err := a.Validate(); err != nil {
		d.rejected.Add(1)
		d.log.Error("alert rejected", "kind", a.Kind, "agent_id", a.AgentID, "reason", a.Reason, "error", err)
		return a, fmt.Errorf("dispatch alert: %w", err)
	}

	var auditErr error
	if d.audit != nil {
		rec, err := d.audit.Append(ctx, auditRecord(&a))
		if err != nil {
			d.auditFailed.Add(1)
			auditErr = fmt.Errorf("dispatch alert %s: audit: %w", a.ID, err)
			d.log.Error("alert not written to the audit log", "alert_id", a.ID, "kind", a.Kind, "error", err)
		} else {
			a.AuditSeq, a.AuditHash = rec.Seq, rec.Hash
		}
	}

	d.logAlert(&a)
	d.dispatched[a.Kind].Add(1)

	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		d.log.Error("alert dispatched after close; webhooks skipped", "alert_id", a.ID, "kind", a.Kind)
		return a, errors.Join(auditErr, fmt.Errorf("dispatch alert %s: %w", a.ID, ErrClosed))
	}
	if len(d.webhooks) > 0 {
		body, err := json.Marshal(a)
		if err != nil { // cannot happen for this struct; never silently skip
			return a, errors.Join(auditErr, fmt.Errorf("dispatch alert %s: encode: %w", a.ID, err))
		}
		j := job{id: a.ID, kind: a.Kind, severity: a.Severity, alert: body, queued: d.now()}
		for _, h := range d.webhooks {
			h.enqueue(j)
		}
	}
	return a, auditErr
}

// auditRecord is the audit form of an alert: the alert's ID, reason and
// message join its data under reserved keys.
func auditRecord(a *Alert) audit.Record {
	data := make(map[string]string, len(a.Data)+3)
	maps.Copy(data, a.Data)
	data["alert_id"] = a.ID
	if a.Reason != "" {
		data["reason"] = a.Reason
	}
	if a.Message != "" {
		data["message"] = a.Message
	}
	return audit.Record{Time: a.Time, Kind: string(a.Kind), AgentID: a.AgentID, Severity: a.Severity, Data: data}
}

func (d *Dispatcher) logAlert(a *Alert) {
	args := []any{"alert_id", a.ID, "kind", string(a.Kind), "severity", a.Severity, "agent_id", a.AgentID}
	if a.Reason != "" {
		args = append(args, "reason", a.Reason)
	}
	if a.Message != "" {
		args = append(args, "message", a.Message)
	}
	if len(a.Data) > 0 {
		args = append(args, "data", a.Data)
	}
	if a.AuditHash != "" {
		args = append(args, "audit_seq", a.AuditSeq, "audit_hash", a.AuditHash)
	}
	switch {
	case a.Severity <= SeverityCritical:
		d.log.Error("alert", args...)
	case a.Severity <= SeverityMedium:
		d.log.Warn("alert", args...)
	default:
		d.log.Info("alert", args...)
	}
}

// Stats returns a snapshot of the counters.
func (d *Dispatcher) Stats() Stats {
	s := Stats{
		Dispatched:  make(map[Kind]uint64, len(d.dispatched)),
		Rejected:    d.rejected.Load(),
		AuditFailed: d.auditFailed.Load(),
		Webhooks:    make(map[string]WebhookStats, len(d.webhooks)),
	}
	for k, c := range d.dispatched {
		s.Dispatched[k] = c.Load()
	}
	for _, h := range d.webhooks {
		s.Webhooks[h.cfg.Name] = h.stats()
	}
	return s
}

// Close stops accepting webhook work and waits for the queues to drain,
// retries included, until ctx ends. Then the remaining deliveries (in
// flight, backing off or queued) are abandoned, counted as failed, and Close
// returns an error wrapping ctx.Err(). Close does not close the audit log
// (its owner does). Calling Close again returns nil.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	for _, h := range d.webhooks {
		h.queue.close()
	}
	d.mu.Unlock()

	drained := true
	for _, h := range d.webhooks {
		select {
		case <-h.done:
		case <-ctx.Done():
			drained = false
		}
		if !drained {
			break
		}
	}
	for _, h := range d.webhooks {
		h.cancel()
	}
	var abandoned uint64
	for _, h := range d.webhooks {
		<-h.done
		abandoned += h.abandoned.Load()
	}
	if drained {
		return nil
	}
	d.log.Error("alert dispatcher closed before the webhook queues drained", "abandoned", abandoned, "error", ctx.Err())
	return fmt.Errorf("close alert dispatcher: %d webhook deliveries abandoned: %w", abandoned, ctx.Err())
}
