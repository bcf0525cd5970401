package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// The alert outbox. Every stored alert is dispatched (audit log, webhooks)
// by whichever replica holds its claim: the raiser from the moment it is
// stored (RaiseAlert), or, when the raiser died or could not dispatch it,
// the replica whose conditional UPDATE takes the stale claim (ClaimAlert).
// A crash between dispatching and MarkAlertDispatched dispatches the alert
// again: delivery is at least once, and exactly once otherwise.

// alertColumns are the columns scanAlerts reads, in its order.
const alertColumns = `id, dedup_key, agent_id, kind, severity, reason, message, replica, created_at, acked_at, acked_by, dispatched_at`

func scanAlerts(rows *sql.Rows) ([]*Alert, error) {
	var out []*Alert
	for rows.Next() {
		var (
			a                          Alert
			created, acked, dispatched int64
			sev                        int64
		)
		if err := rows.Scan(&a.ID, &a.DedupKey, &a.AgentID, &a.Kind, &sev, &a.Reason, &a.Message, &a.Replica,
			&created, &acked, &a.AckedBy, &dispatched); err != nil {
			return nil, err
		}
		a.Severity, a.CreatedAt, a.AckedAt, a.DispatchedAt = int(sev), fromNanos(created), fromNanos(acked), fromNanos(dispatched)
		out = append(out, &a)
	}
	return out, rows.Err()
}

// PendingAlerts returns up to limit alerts not dispatched yet whose claim
// was taken before staleBefore, oldest first: the ones ClaimAlert may take.
func (s *Store) PendingAlerts(ctx context.Context, staleBefore time.Time, limit int) ([]*Alert, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+alertColumns+` FROM alerts
		WHERE dispatched_at = 0 AND claimed_at < ? ORDER BY created_at, id LIMIT ?`), nanos(staleBefore), limit)
	if err != nil {
		return nil, fmt.Errorf("store: pending alerts: %w", err)
	}
	defer rows.Close()
	out, err := scanAlerts(rows)
	if err != nil {
		return nil, fmt.Errorf("store: pending alerts: %w", err)
	}
	return out, nil
}

// ClaimAlert takes the dispatch of an undispatched alert whose claim was
// taken before staleBefore, with one conditional UPDATE: of replicas
// racing for the same alert, exactly one gets true. The claim lasts until
// the alert is marked dispatched or the claim is older than the next
// claimer's staleBefore.
func (s *Store) ClaimAlert(ctx context.Context, id string, now, staleBefore time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE alerts SET claimed_at = `+s.notAfterNow("?")+` WHERE id = ? AND dispatched_at = 0 AND claimed_at < ?`),
		nanos(now), id, nanos(staleBefore))
	if err != nil {
		return false, fmt.Errorf("store: claim alert %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: claim alert %s: %w", id, err)
	}
	return n == 1, nil
}

// MarkAlertDispatched records that the alert reached the alerter. Marking
// an alert already marked keeps the first time.
func (s *Store) MarkAlertDispatched(ctx context.Context, id string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.q(`UPDATE alerts SET dispatched_at = ? WHERE id = ? AND dispatched_at = 0`),
		max(nanos(at), 1), id); err != nil {
		return fmt.Errorf("store: mark alert %s dispatched: %w", id, err)
	}
	return nil
}
