package verifier

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/audit"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// AlertAuditChainBroken: the audit log's tail failed verification at start;
// the damaged segment was kept and the chain resumed in a new one.
const AlertAuditChainBroken = "audit_chain_broken"

// dispatchAlerter sends every alert this replica raised to the audit log
// and the webhooks, without blocking verification on slow receivers.
type dispatchAlerter struct {
	d     *alert.Dispatcher
	audit *audit.Writer
	log   hclog.Logger
}

func newDispatchAlerter(cfg config.Alerts, log hclog.Logger) (*dispatchAlerter, error) {
	var (
		aw  *audit.Writer
		err error
	)
	if cfg.AuditLog != "" {
		// A damaged tail does not stop the verifier: Open keeps the file
		// and resumes the chain in a new segment; Start raises
		// audit_chain_broken for it (raiseAuditChainBroken).
		aw, err = audit.Open(cfg.AuditLog, log.Named("audit"))
		if err != nil {
			return nil, fmt.Errorf("verifier: audit log: %w", err)
		}
	}
	dc := alert.Config{Logger: log.Named("alert")}
	if aw != nil {
		dc.Audit = aw
	}
	for _, w := range cfg.Webhooks {
		secret, err := os.ReadFile(w.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("verifier: webhook %s secret: %w", w.Name, err)
		}
		dc.Webhooks = append(dc.Webhooks, alert.WebhookConfig{Name: w.Name, URL: w.URL, Secret: alert.Secret(strings.TrimSpace(string(secret)))})
	}
	d, err := alert.NewDispatcher(dc)
	if err != nil {
		return nil, fmt.Errorf("verifier: alerts: %w", err)
	}
	return &dispatchAlerter{d: d, audit: aw, log: log}, nil
}

// Alert implements Alerter.
func (a *dispatchAlerter) Alert(s *store.Alert) {
	if err := a.DispatchAlert(s); err != nil {
		a.log.Error("alert dispatch failed", "alert_id", s.ID, "error", err)
	}
}

// DispatchAlert implements CheckedAlerter. It fails, leaving the alert in
// the outbox for a replica that is not shutting down, only when the
// dispatcher is closed. An alert the audit log could not record still
// counts as dispatched (logged and queued for the webhooks; the dispatcher
// logs and counts the audit failure): dispatching it again would repeat
// it to the webhooks. So does one the dispatcher refused as invalid
// (logged and counted): trying again cannot help.
func (a *dispatchAlerter) DispatchAlert(s *store.Alert) error {
	kind := alert.Kind(s.Kind)
	if !kind.Valid() {
		kind = alert.KindUntrusted
	}
	sev := s.Severity
	if sev < 1 || sev > 4 {
		sev = kind.DefaultSeverity()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := a.d.Dispatch(ctx, alert.Alert{ID: s.ID, Kind: kind, Severity: sev, AgentID: s.AgentID, Reason: s.Reason,
		Message: s.Message, Time: s.CreatedAt, Data: map[string]string{"replica": s.Replica}})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, alert.ErrClosed):
		return fmt.Errorf("verifier: dispatch alert %s: %w", s.ID, err)
	default:
		a.log.Error("alert dispatch incomplete", "alert_id", s.ID, "error", err)
		return nil
	}
}

// raiseAuditChainBroken raises audit_chain_broken when opening the audit log
// found its tail damaged and resumed the chain in a new segment. It is
// raised once per new segment (the dedup key names the segment and the
// chain_resumed record).
func (a *dispatchAlerter) raiseAuditChainBroken(ctx context.Context, v *Verifier) {
	if a.audit == nil {
		return
	}
	rc := a.audit.Recovery()
	if rc == nil {
		return
	}
	v.raise(ctx, &store.Alert{
		DedupKey: fmt.Sprintf("%s:%s:%s:%d:%s", AlertAuditChainBroken, v.replica, rc.Segment, rc.Resumed.Seq, rc.Resumed.Hash),
		Kind:     AlertAuditChainBroken, Severity: 1,
		Message: fmt.Sprintf("replica %s: audit log %s is damaged from line %d (seq %d: %s); the file is kept as it is and the chain resumes in %s at seq %d (chain_resumed, hash %s) after the last good record seq %d (hash %q); check with pulsectl audit verify --file %s",
			v.replica, rc.Damaged, rc.Broken.Line, rc.Broken.Seq, rc.Broken.Reason, rc.Segment, rc.Resumed.Seq, rc.Resumed.Hash,
			rc.LastGoodSeq, rc.LastGoodHash, rc.Log),
	})
}

func (a *dispatchAlerter) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.d.Close(ctx) //nolint:errcheck // best effort on shutdown
	if a.audit != nil {
		a.audit.Close()
	}
}
