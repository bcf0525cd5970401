package verifier

import (
	"context"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/audit"
	"github.com/pulse-attest/pulse/verifier/store"
)

// AlertUpdateApproved is raised (severity 4) when an operator approves an
// agent binary update window.
const AlertUpdateApproved = string(alert.KindUpdateApproved)

// operatorRecorder is an Alerter that also keeps operator actions on the
// audit chain.
type operatorRecorder interface {
	RecordOperator(ctx context.Context, rec audit.Record) (audit.Record, error)
}

// RecordOperator appends an operator action to the audit log, when one is
// configured (a zero record and no error otherwise).
func (a *dispatchAlerter) RecordOperator(ctx context.Context, rec audit.Record) (audit.Record, error) {
	if a.audit == nil {
		return audit.Record{}, nil
	}
	return a.audit.Append(ctx, rec)
}

// RecordOperatorAction puts an operator action (audit.OperatorRecord) on
// the audit chain and logs it with its seq and hash, the anchors of the
// chain. Without an audit log it is only logged. Revocations and any
// further operator action use it too.
func (v *Verifier) RecordOperatorAction(ctx context.Context, rec audit.Record) error {
	if !strings.HasPrefix(rec.Kind, audit.KindOperatorPrefix) {
		return fmt.Errorf("verifier: record operator action: kind %q is not an operator kind", rec.Kind)
	}
	var written audit.Record
	if r, ok := v.alerter.(operatorRecorder); ok {
		var err error
		if written, err = r.RecordOperator(ctx, rec); err != nil {
			return fmt.Errorf("verifier: record operator action %s: %w", rec.Kind, err)
		}
	}
	args := []any{"kind", rec.Kind, "agent_id", rec.AgentID}
	for _, k := range []string{audit.OperatorByKey, audit.OperatorAuthKey} {
		args = append(args, k, rec.Data[k])
	}
	if written.Hash != "" {
		args = append(args, "audit_seq", written.Seq, "audit_hash", written.Hash)
	}
	v.log.Info("operator action recorded", args...)
	return nil
}

// approveUpdate stores an update window and raises the informational
// update_approved alert, so webhooks see every approval.
func (v *Verifier) approveUpdate(ctx context.Context, w *store.UpdateWindow) error {
	if err := v.store.AddUpdateWindow(ctx, w); err != nil {
		return err
	}
	matched := 0
	if agents, err := v.store.ListAgents(ctx); err == nil {
		for _, a := range agents {
			for _, g := range w.Agents {
				if ok, _ := path.Match(g, a.ID); ok {
					matched++
					break
				}
			}
		}
	}
	v.raise(ctx, &store.Alert{DedupKey: "update_approved:" + w.ID, Kind: AlertUpdateApproved, Severity: alert.SeverityLow,
		Message: fmt.Sprintf("agent binary %s approved for %s from %s until %s by %s (%d enrolled agents match)",
			w.Digest, strings.Join(w.Agents, ","), w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339), w.CreatedBy, matched)})
	return nil
}
