package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// MaxSentinelEvents bounds the Sentinel events kept per agent; the oldest
// go first.
const MaxSentinelEvents = 32

// SentinelEvent is one Sentinel record an agent reported in a committed pulse.
type SentinelEvent struct {
	// Boot names the boot the record's sequence number belongs to.
	Boot string `json:"boot"`
	Seq  uint64 `json:"seq"`
	// Kind is "signal", "bpf_load", "fortress_denied", "exit" or "unknown".
	Kind       string    `json:"kind"`
	At         time.Time `json:"at"`
	SenderPID  uint32    `json:"sender_pid"`
	SenderUID  uint32    `json:"sender_uid"`
	SenderComm string    `json:"sender_comm"`
	TargetPID  uint32    `json:"target_pid,omitempty"`
	Signal     int32     `json:"signal,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	// Finding is the reason the verifier judged the record a finding
	// ("REASON_AGENT_SIGNALLED"), empty when it is allowed.
	Finding    string    `json:"finding,omitempty"`
	RecordedAt time.Time `json:"recorded_at"`
}

// SentinelCursor is the last Sentinel sequence number the verifier holds
// for an agent's boot.
type SentinelCursor struct {
	Boot    string
	LastSeq uint64
	// HostPrograms, when set, replaces the verifier's state of the
	// agent's host program list (verifier/hostprogs.go); nil keeps it.
	HostPrograms *string
}

// RecordSentinel stores the events of a committed pulse (ignoring ones
// already held), keeps the newest MaxSentinelEvents per agent, and sets the
// agent's cursor, in its own transaction. A pulse's own record is written
// by its commit (PulseUpdate.Sentinel); this is for records outside one.
func (s *Store) RecordSentinel(ctx context.Context, agentID string, cursor SentinelCursor, events []SentinelEvent, at time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: record sentinel: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	if err := s.recordSentinel(ctx, runner{s: s, tx: tx}, agentID, SentinelWrite{Cursor: cursor, Events: events, At: at}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: record sentinel: commit: %w", err)
	}
	return nil
}

const (
	qSentinelEvent = `INSERT INTO sentinel_events (agent_id, boot, seq, kind, at, sender_pid, sender_uid, sender_comm,
			target_pid, signal, detail, finding, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (agent_id, boot, seq) DO NOTHING`
	qPruneSentinel = `DELETE FROM sentinel_events WHERE agent_id = ? AND NOT EXISTS (SELECT 1 FROM
			(SELECT boot, seq FROM sentinel_events WHERE agent_id = ? ORDER BY recorded_at DESC, seq DESC LIMIT ?) k
			WHERE k.boot = sentinel_events.boot AND k.seq = sentinel_events.seq)`
	qSentinelCursor = `INSERT INTO sentinel_cursors (agent_id, boot, last_seq, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (agent_id) DO UPDATE SET
				last_seq = excluded.last_seq, boot = excluded.boot, updated_at = excluded.updated_at`
	qHostPrograms = `UPDATE sentinel_cursors SET host_programs = ? WHERE agent_id = ?`
)

// sentinelQueries are recordSentinel's statements (prepared by the commit
// outside its transaction).
var sentinelQueries = []string{qSentinelEvent, qPruneSentinel, qSentinelCursor, qHostPrograms}

// recordSentinel writes w in r (a transaction: RecordSentinel's, or the
// pulse commit's).
func (s *Store) recordSentinel(ctx context.Context, r runner, agentID string, w SentinelWrite) error {
	at := nanos(w.At)
	for _, e := range w.Events {
		if _, err := r.exec(ctx, qSentinelEvent,
			agentID, e.Boot, int64(e.Seq), e.Kind, nanos(e.At), int64(e.SenderPID), int64(e.SenderUID), e.SenderComm,
			int64(e.TargetPID), int64(e.Signal), e.Detail, e.Finding, at); err != nil {
			return fmt.Errorf("store: record sentinel event: %w", err)
		}
	}
	if len(w.Events) > 0 {
		if _, err := r.exec(ctx, qPruneSentinel, agentID, agentID, MaxSentinelEvents); err != nil {
			return fmt.Errorf("store: prune sentinel events: %w", err)
		}
	}
	if c := w.Cursor; c.Boot != "" {
		if _, err := r.exec(ctx, qSentinelCursor, agentID, c.Boot, int64(c.LastSeq), at); err != nil {
			return fmt.Errorf("store: sentinel cursor: %w", err)
		}
		if c.HostPrograms != nil {
			if _, err := r.exec(ctx, qHostPrograms, *c.HostPrograms, agentID); err != nil {
				return fmt.Errorf("store: host program state: %w", err)
			}
		}
	}
	return nil
}

// GetSentinelCursor returns the agent's cursor; ErrNotFound when none.
func (s *Store) GetSentinelCursor(ctx context.Context, agentID string) (SentinelCursor, error) {
	var c SentinelCursor
	var last int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT boot, last_seq FROM sentinel_cursors WHERE agent_id = ?`), agentID).Scan(&c.Boot, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	if err != nil {
		return c, fmt.Errorf("store: sentinel cursor: %w", err)
	}
	c.LastSeq = uint64(last)
	return c, nil
}

// SentinelState is what the store holds of an agent's Sentinel judgement:
// its cursor and its host program state, one read.
type SentinelState struct {
	// Found is false when the agent has no cursor row (nothing recorded
	// yet): Cursor and HostPrograms are then empty.
	Found        bool
	Cursor       SentinelCursor
	HostPrograms string
}

// GetSentinelState reads the agent's cursor and host program state at once
// (Found false when it has none).
func (s *Store) GetSentinelState(ctx context.Context, agentID string) (SentinelState, error) {
	var st SentinelState
	var last int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT boot, last_seq, host_programs FROM sentinel_cursors WHERE agent_id = ?`), agentID).
		Scan(&st.Cursor.Boot, &last, &st.HostPrograms)
	if errors.Is(err, sql.ErrNoRows) {
		return SentinelState{}, nil
	}
	if err != nil {
		return SentinelState{}, fmt.Errorf("store: sentinel state: %w", err)
	}
	st.Found, st.Cursor.LastSeq = true, uint64(last)
	return st, nil
}

// GetHostProgramState returns the verifier's state of the agent's host
// program list (empty: none yet); ErrNotFound when the agent has no cursor.
func (s *Store) GetHostProgramState(ctx context.Context, agentID string) (string, error) {
	var st string
	err := s.db.QueryRowContext(ctx, s.q(`SELECT host_programs FROM sentinel_cursors WHERE agent_id = ?`), agentID).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("store: host program state: %w", err)
	}
	return st, nil
}

// SentinelEvents returns the agent's stored events, newest first.
func (s *Store) SentinelEvents(ctx context.Context, agentID string) ([]SentinelEvent, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT boot, seq, kind, at, sender_pid, sender_uid, sender_comm, target_pid, signal, detail, finding, recorded_at
		FROM sentinel_events WHERE agent_id = ? ORDER BY recorded_at DESC, seq DESC`), agentID)
	if err != nil {
		return nil, fmt.Errorf("store: sentinel events: %w", err)
	}
	defer rows.Close()
	var out []SentinelEvent
	for rows.Next() {
		var e SentinelEvent
		var seq, at, pid, uid, target, sig, rec int64
		if err := rows.Scan(&e.Boot, &seq, &e.Kind, &at, &pid, &uid, &e.SenderComm, &target, &sig, &e.Detail, &e.Finding, &rec); err != nil {
			return nil, fmt.Errorf("store: sentinel events: %w", err)
		}
		e.Seq, e.At, e.SenderPID, e.SenderUID = uint64(seq), fromNanos(at), uint32(pid), uint32(uid)
		e.TargetPID, e.Signal, e.RecordedAt = uint32(target), int32(sig), fromNanos(rec)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: sentinel events: %w", err)
	}
	return out, nil
}
