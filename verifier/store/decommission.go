package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// RemovedAgent is what RemoveAgent took out of the store: enough for the
// audit record of a decommissioning.
type RemovedAgent struct {
	ID         string
	Partition  string
	TPM        bool
	EKSHA256   []byte
	EnrolledAt time.Time
}

// RemoveAgent decommissions an agent: its row (enrollment, AK, evidence
// baseline, last-known-good), pending enrollments, firmware log references
// and recorded addresses go in one transaction. Its verdict history and
// alerts stay for the record. ErrNotFound when no such agent is enrolled.
// An agent whose certificate still verifies and whose EK is still trusted
// can enroll again afterwards: revoke it too (revocations).
func (s *Store) RemoveAgent(ctx context.Context, id string) (*RemovedAgent, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: remove agent %s: %w", id, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	var (
		ra       RemovedAgent
		enrolled int64
	)
	err = tx.QueryRowContext(ctx, s.q(`DELETE FROM agents WHERE id = ? RETURNING id, partition, tpm, ek_sha256, enrolled_at`), id).
		Scan(&ra.ID, &ra.Partition, &ra.TPM, &ra.EKSHA256, &enrolled)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: remove agent %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: remove agent %s: %w", id, err)
	}
	ra.EnrolledAt = fromNanos(enrolled)
	for _, q := range []string{
		`DELETE FROM enrollments WHERE agent_id = ?`,
		`DELETE FROM agent_firmware_logs WHERE agent_id = ?`,
		`DELETE FROM agent_addresses WHERE agent_id = ?`,
		`DELETE FROM maintenance_windows WHERE agent_id = ?`,
		`DELETE FROM sentinel_events WHERE agent_id = ?`,
		`DELETE FROM sentinel_cursors WHERE agent_id = ?`,
		`DELETE FROM agent_explanations WHERE agent_id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, s.q(q), id); err != nil {
			return nil, fmt.Errorf("store: remove agent %s: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: remove agent %s: %w", id, err)
	}
	return &ra, nil
}
