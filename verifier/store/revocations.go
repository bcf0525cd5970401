package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Revocation is one entry of the revocation list every replica checks at
// the TLS handshake and on every call. Kind is "serial", "spki" or "agent"
// (tlsconfig.RevokeSerial...); Value is the canonical text the verifier
// compares (tlsconfig.ParseRevocation makes it). The store keeps what it is
// given: callers canonicalise.
type Revocation struct {
	Kind   string
	Value  string
	Reason string
	By     string
	At     time.Time
}

// AddRevocation adds r; ErrConflict when the same kind and value is already
// revoked (the existing entry is unchanged).
func (s *Store) AddRevocation(ctx context.Context, r Revocation) error {
	if r.Kind == "" || r.Value == "" {
		return errors.New("store: add revocation: kind and value are required")
	}
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO revocations (kind, value, reason, created_by, created_at)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, value) DO NOTHING`),
		r.Kind, r.Value, r.Reason, r.By, nanos(r.At))
	if err != nil {
		return fmt.Errorf("store: add revocation: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: add revocation: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("store: %s %s is already revoked: %w", r.Kind, r.Value, ErrConflict)
	}
	return nil
}

// RemoveRevocation deletes one entry and returns it; ErrNotFound when there
// is none.
func (s *Store) RemoveRevocation(ctx context.Context, kind, value string) (*Revocation, error) {
	var (
		r  Revocation
		at int64
	)
	err := s.db.QueryRowContext(ctx, s.q(`DELETE FROM revocations WHERE kind = ? AND value = ?
		RETURNING kind, value, reason, created_by, created_at`), kind, value).
		Scan(&r.Kind, &r.Value, &r.Reason, &r.By, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: %s %s is not revoked: %w", kind, value, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: remove revocation: %w", err)
	}
	r.At = fromNanos(at)
	return &r, nil
}

// ListRevocations returns every entry, ordered by kind and value.
func (s *Store) ListRevocations(ctx context.Context) ([]Revocation, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT kind, value, reason, created_by, created_at FROM revocations ORDER BY kind, value`)
	if err != nil {
		return nil, fmt.Errorf("store: list revocations: %w", err)
	}
	defer rows.Close()
	var out []Revocation
	for rows.Next() {
		var (
			r  Revocation
			at int64
		)
		if err := rows.Scan(&r.Kind, &r.Value, &r.Reason, &r.By, &at); err != nil {
			return nil, fmt.Errorf("store: list revocations: %w", err)
		}
		r.At = fromNanos(at)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list revocations: %w", err)
	}
	return out, nil
}
