package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Maintenance is an operator's maintenance window for one agent: a planned
// stop (SIGTERM) of the agent while it is open is expected (severity 4),
// and the agent is kept OFFLINE rather than BLINDED until Until.
type Maintenance struct {
	AgentID string
	// Until is when the window closes (the replica's clock that set it).
	Until time.Time
	By    string
	// Reason is the operator's free text (may be empty).
	Reason string
	At     time.Time
}

// SetMaintenance opens (or replaces) the maintenance window of m.AgentID.
// It answers ErrNotFound when no such agent is enrolled.
func (s *Store) SetMaintenance(ctx context.Context, m Maintenance) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: set maintenance: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	var n int
	if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM agents WHERE id = ?`), m.AgentID).Scan(&n); err != nil {
		return fmt.Errorf("store: set maintenance: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("store: set maintenance of %s: %w", m.AgentID, ErrNotFound)
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO maintenance_windows (agent_id, until_at, set_by, reason, set_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (agent_id) DO UPDATE SET until_at = excluded.until_at, set_by = excluded.set_by, reason = excluded.reason, set_at = excluded.set_at`),
		m.AgentID, nanos(m.Until), m.By, m.Reason, nanos(m.At)); err != nil {
		return fmt.Errorf("store: set maintenance: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: set maintenance: commit: %w", err)
	}
	return nil
}

// OpenMaintenance returns the agent's maintenance window when it is open
// at t, or ErrNotFound.
func (s *Store) OpenMaintenance(ctx context.Context, agentID string, t time.Time) (*Maintenance, error) {
	m := Maintenance{AgentID: agentID}
	var until, at int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT until_at, set_by, reason, set_at FROM maintenance_windows WHERE agent_id = ? AND until_at > ?`),
		agentID, nanos(t)).Scan(&until, &m.By, &m.Reason, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: maintenance of %s: %w", agentID, err)
	}
	m.Until, m.At = fromNanos(until), fromNanos(at)
	return &m, nil
}

// ListMaintenance returns the windows open at t, by agent. Closed windows
// are deleted on the way (they decide nothing any more).
func (s *Store) ListMaintenance(ctx context.Context, t time.Time) ([]*Maintenance, error) {
	if _, err := s.db.ExecContext(ctx, s.q(`DELETE FROM maintenance_windows WHERE until_at <= ?`), nanos(t)); err != nil {
		return nil, fmt.Errorf("store: list maintenance: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT agent_id, until_at, set_by, reason, set_at FROM maintenance_windows WHERE until_at > ? ORDER BY agent_id`), nanos(t))
	if err != nil {
		return nil, fmt.Errorf("store: list maintenance: %w", err)
	}
	defer rows.Close()
	var out []*Maintenance
	for rows.Next() {
		var (
			m         Maintenance
			until, at int64
		)
		if err := rows.Scan(&m.AgentID, &until, &m.By, &m.Reason, &at); err != nil {
			return nil, fmt.Errorf("store: list maintenance: %w", err)
		}
		m.Until, m.At = fromNanos(until), fromNanos(at)
		out = append(out, &m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list maintenance: %w", err)
	}
	return out, nil
}
