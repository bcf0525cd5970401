package store

import (
	"context"
	"fmt"
	"time"
)

// Replica is one verifier replica as it last recorded itself: the digest of
// the policy set it enforces and when (by the database's clock) it said so.
type Replica struct {
	ID           string
	PolicyDigest string
	SeenAt       time.Time
}

// RecordReplica stores the policy digest a replica enforces, seen now by the
// database's clock (replicas' own clocks may disagree).
func (s *Store) RecordReplica(ctx context.Context, id, policyDigest string) error {
	if id == "" {
		return fmt.Errorf("store: record replica: empty replica id")
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO replicas (replica_id, policy_digest, seen_at) VALUES (?, ?, `+s.replicaClock()+`)
		ON CONFLICT (replica_id) DO UPDATE SET policy_digest = excluded.policy_digest, seen_at = excluded.seen_at`), id, policyDigest)
	if err != nil {
		return fmt.Errorf("store: record replica %s: %w", id, err)
	}
	return nil
}

// Replicas returns the replicas seen within the last window by the
// database's clock (every recorded replica when window is 0), by ID, and
// the database's clock at the time of the query.
func (s *Store) Replicas(ctx context.Context, window time.Duration) ([]Replica, time.Time, error) {
	var now int64
	if err := s.db.QueryRowContext(ctx, `SELECT `+s.replicaClock()).Scan(&now); err != nil {
		return nil, time.Time{}, fmt.Errorf("store: replicas: database clock: %w", err)
	}
	since := int64(0)
	if window > 0 {
		since = now - window.Nanoseconds()
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT replica_id, policy_digest, seen_at FROM replicas WHERE seen_at >= ? ORDER BY replica_id`), since)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("store: replicas: %w", err)
	}
	defer rows.Close()
	var out []Replica
	for rows.Next() {
		var r Replica
		var seen int64
		if err := rows.Scan(&r.ID, &r.PolicyDigest, &seen); err != nil {
			return nil, time.Time{}, fmt.Errorf("store: replicas: %w", err)
		}
		r.SeenAt = fromNanos(seen)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("store: replicas: %w", err)
	}
	return out, fromNanos(now), nil
}

// replicaClock is the database's clock in Unix nanoseconds, as SQL, fixed
// for the statement.
func (s *Store) replicaClock() string {
	if s.dialect.name == EnginePostgres {
		return `CAST(extract(epoch FROM statement_timestamp()) * 1000000000 AS BIGINT)`
	}
	return `CAST(unixepoch('subsec') * 1000000000 AS INTEGER)`
}
