package store

import (
	"context"
	"fmt"
	"time"
)

// MaxAgentAddresses bounds the addresses remembered per agent; the least
// recently seen goes first.
const MaxAgentAddresses = 8

// RegisterAddress records that agentID was accepted (or enrolled) from
// address at at; entries of the agent last seen before expireBefore, and
// any beyond MaxAgentAddresses (least recently seen first), are forgotten.
func (s *Store) RegisterAddress(ctx context.Context, agentID, address string, at, expireBefore time.Time) error {
	if agentID == "" || address == "" {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: register address: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO agent_addresses (agent_id, address, first_seen, last_seen) VALUES (?, ?, ?, ?)
		ON CONFLICT (agent_id, address) DO UPDATE SET last_seen = excluded.last_seen`), agentID, address, nanos(at), nanos(at)); err != nil {
		return fmt.Errorf("store: register address: %w", err)
	}
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM agent_addresses WHERE agent_id = ? AND (last_seen < ? OR address NOT IN
		(SELECT address FROM agent_addresses WHERE agent_id = ? ORDER BY last_seen DESC, address LIMIT ?))`),
		agentID, nanos(expireBefore), agentID, MaxAgentAddresses); err != nil {
		return fmt.Errorf("store: register address: prune: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: register address: commit: %w", err)
	}
	return nil
}

// AgentAddresses returns the addresses registered to agentID last seen at
// or after since, most recent first.
func (s *Store) AgentAddresses(ctx context.Context, agentID string, since time.Time) ([]string, error) {
	s.quar.addrReads.Add(1)
	return s.queryStrings(ctx, `SELECT address FROM agent_addresses WHERE agent_id = ? AND last_seen >= ? ORDER BY last_seen DESC, address`, agentID, nanos(since))
}

// AddressUsers returns the agents address is registered to, last seen at
// or after since, sorted.
func (s *Store) AddressUsers(ctx context.Context, address string, since time.Time) ([]string, error) {
	return s.queryStrings(ctx, `SELECT agent_id FROM agent_addresses WHERE address = ? AND last_seen >= ? ORDER BY agent_id`, address, nanos(since))
}

func (s *Store) queryStrings(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: agent addresses: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("store: agent addresses: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: agent addresses: %w", err)
	}
	return out, nil
}
