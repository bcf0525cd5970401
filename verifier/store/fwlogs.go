package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Firmware logs are stored once per SHA-256 and shared by every agent that
// booted the same way. What bounds them:
//
//   - A log is stored only once it has verified against a quote (the
//     verifier's job; ReferenceFirmwareLog is called after it), and only as
//     some agent's reference (agent_firmware_logs).
//   - An agent references at most FirmwareLogQuota.PerAgent logs. A new one
//     beyond that evicts the agent's least recently used reference, unless
//     that reference was used within FirmwareLogQuota.Window: then the new
//     log is refused (ErrQuota) and nothing is written.
//   - A log no agent references is garbage: DeleteUnreferencedFirmwareLogs.
//
// firmware_logs.stored_at is when the log was last stored or newly
// referenced. Garbage collection spares logs touched after its cut-off,
// which also settles the race between collecting a log and a concurrent
// reference to it (the reference touches the row first).

// ErrQuota is returned when an agent may not reference another firmware log
// yet. Match with errors.Is.
var ErrQuota = errors.New("firmware log quota exceeded")

// FirmwareLogQuota bounds the firmware logs one agent references.
type FirmwareLogQuota struct {
	// PerAgent is how many distinct logs an agent may reference (at least 1).
	PerAgent int
	// Window protects recently used references from eviction: when the
	// agent's least recently used reference was used within Window, a new
	// log is refused instead.
	Window time.Duration
}

// FirmwareLogRef is an agent's reference to a stored firmware log.
type FirmwareLogRef struct {
	SHA256 []byte
	// UsedAt is when the agent last moved to this log (first used it, or
	// came back to it from another).
	UsedAt time.Time
}

// FirmwareLogUse is what ReferenceFirmwareLog changed.
type FirmwareLogUse struct {
	// New is true when the agent did not reference the log before.
	New bool
	// Stored is true when the log's bytes were written (no row held them).
	Stored bool
	// Evicted are the agent's references dropped to make room.
	Evicted [][]byte
}

// FirmwareLogUsage is what the firmware-log tables hold.
type FirmwareLogUsage struct {
	Logs  int
	Bytes int64
	Refs  int
}

// ReferenceFirmwareLog records that the agent booted with the firmware log of
// that SHA-256 at the given time, storing the log when no row holds it yet.
// log must hash to sha256 (the caller checked); it may be nil when the caller
// only has a parse of a log it took from the store: then a log that is gone
// returns ErrNotFound (and so does an unknown agent). A log the agent does
// not reference yet is subject to q (ErrQuota). The reference, the evictions
// and the stored log are one transaction.
func (s *Store) ReferenceFirmwareLog(ctx context.Context, agentID string, sha256, log []byte, at time.Time, q FirmwareLogQuota) (*FirmwareLogUse, error) {
	if len(sha256) != 32 {
		return nil, fmt.Errorf("store: reference firmware log: digest of %d bytes", len(sha256))
	}
	if q.PerAgent < 1 {
		return nil, fmt.Errorf("store: reference firmware log: quota of %d logs per agent", q.PerAgent)
	}
	lockAgent := qLockAgent
	if s.dialect.name == EnginePostgres {
		// One agent's references change one transaction at a time (SQLite
		// has a single writer).
		lockAgent += ` FOR UPDATE`
	}
	// Prepared once, outside the transaction (a transaction uses the cached
	// statements; on SQLite it holds the only connection).
	for _, query := range []string{lockAgent, qAgentRefs, qEvictRef, qTouchLog, qStoreLog, qPutRef} {
		if _, err := s.prepared(ctx, query); err != nil {
			return nil, fmt.Errorf("store: reference firmware log for %s: %w", agentID, err)
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: reference firmware log for %s: %w", agentID, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	use, err := s.referenceFirmwareLog(ctx, runner{s: s, tx: tx}, lockAgent, agentID, sha256, log, nanos(at), q)
	if err != nil {
		return nil, fmt.Errorf("store: reference firmware log for %s: %w", agentID, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: reference firmware log for %s: commit: %w", agentID, err)
	}
	return use, nil
}

// The statements of ReferenceFirmwareLog.
const (
	qLockAgent = `SELECT id FROM agents WHERE id = ?`
	qAgentRefs = `SELECT sha256, used_at FROM agent_firmware_logs WHERE agent_id = ? ORDER BY used_at, sha256`
	qEvictRef  = `DELETE FROM agent_firmware_logs WHERE agent_id = ? AND sha256 = ?`
	qTouchLog  = `UPDATE firmware_logs SET stored_at = ? WHERE sha256 = ?`
	qStoreLog  = `INSERT INTO firmware_logs (sha256, log, size, stored_at) VALUES (?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING`
	qPutRef    = `INSERT INTO agent_firmware_logs (agent_id, sha256, used_at) VALUES (?, ?, ?) ON CONFLICT (agent_id, sha256) DO UPDATE SET used_at = excluded.used_at`
)

func (s *Store) referenceFirmwareLog(ctx context.Context, r runner, lockAgent, agentID string, sha256, log []byte, at int64, q FirmwareLogQuota) (*FirmwareLogUse, error) {
	var id string
	err := r.queryRow(ctx, lockAgent, agentID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("agent: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("lock agent: %w", err)
	}
	st, err := r.stmt(ctx, qAgentRefs)
	if err != nil {
		return nil, fmt.Errorf("list references: %w", err)
	}
	refs, err := listFirmwareLogRefs(ctx, stmtQuerier{st}, "", agentID)
	if err != nil {
		return nil, err
	}
	isNew, victims, err := quotaVictims(refs, sha256, at, q)
	if err != nil {
		return nil, err
	}
	use := &FirmwareLogUse{New: isNew}
	for _, ref := range victims {
		if _, err := r.exec(ctx, qEvictRef, agentID, ref.SHA256); err != nil {
			return nil, fmt.Errorf("evict reference: %w", err)
		}
		use.Evicted = append(use.Evicted, ref.SHA256)
	}
	use.Stored, err = s.storeOrTouchLog(ctx, r, sha256, log, at)
	if err != nil {
		return nil, err
	}
	if _, err := r.exec(ctx, qPutRef, agentID, sha256, at); err != nil {
		return nil, fmt.Errorf("record reference: %w", err)
	}
	return use, nil
}

// quotaVictims applies q to an agent's references (least recently used
// first) for a reference to sha256 at the given time: whether the agent
// references the log already, which references a new one evicts, or
// ErrQuota when one of those was used within q.Window.
func quotaVictims(refs []FirmwareLogRef, sha256 []byte, at int64, q FirmwareLogQuota) (bool, []FirmwareLogRef, error) {
	for _, ref := range refs {
		if bytes.Equal(ref.SHA256, sha256) {
			return false, nil, nil
		}
	}
	if len(refs) < q.PerAgent {
		return true, nil, nil
	}
	victims := refs[:len(refs)-q.PerAgent+1]
	cut := at - q.Window.Nanoseconds()
	for _, ref := range victims {
		if nanos(ref.UsedAt) > cut {
			return true, nil, fmt.Errorf("agent references %d firmware logs, the least recently used since %s (within %s): %w",
				len(refs), ref.UsedAt.Format(time.RFC3339), q.Window, ErrQuota)
		}
	}
	return true, victims, nil
}

// storeOrTouchLog stores the log when no row holds it (one statement for a
// new log) and otherwise sets its stored_at, so a concurrent collection
// spares it (the collection re-checks stored_at on the row it waited for).
// It reports whether it stored the bytes; a touch that finds no row when the
// caller has no bytes is ErrNotFound.
func (s *Store) storeOrTouchLog(ctx context.Context, r runner, sha256, log []byte, at int64) (bool, error) {
	if log != nil {
		res, err := r.exec(ctx, qStoreLog, sha256, log, int64(len(log)), at)
		if err != nil {
			return false, fmt.Errorf("store log: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return false, fmt.Errorf("store log: %w", err)
		} else if n > 0 {
			return true, nil
		}
	}
	res, err := r.exec(ctx, qTouchLog, at, sha256)
	if err != nil {
		return false, fmt.Errorf("touch log: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, fmt.Errorf("touch log: %w", err)
	} else if n > 0 {
		return false, nil
	}
	if log == nil {
		return false, fmt.Errorf("log %x: %w", sha256[:8], ErrNotFound)
	}
	// Collected between the two statements: store it again.
	if _, err := r.exec(ctx, qStoreLog, sha256, log, int64(len(log)), at); err != nil {
		return false, fmt.Errorf("store log: %w", err)
	}
	return true, nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// stmtQuerier runs its prepared statement whatever the query text.
type stmtQuerier struct{ st *sql.Stmt }

func (q stmtQuerier) QueryContext(ctx context.Context, _ string, args ...any) (*sql.Rows, error) {
	return q.st.QueryContext(ctx, args...)
}

func listFirmwareLogRefs(ctx context.Context, db querier, query string, agentID string) ([]FirmwareLogRef, error) {
	rows, err := db.QueryContext(ctx, query, agentID)
	if err != nil {
		return nil, fmt.Errorf("list references: %w", err)
	}
	defer rows.Close()
	var out []FirmwareLogRef
	for rows.Next() {
		var (
			r  FirmwareLogRef
			at int64
		)
		if err := rows.Scan(&r.SHA256, &at); err != nil {
			return nil, fmt.Errorf("list references: %w", err)
		}
		r.UsedAt = fromNanos(at)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list references: %w", err)
	}
	return out, nil
}

// FirmwareLogRefs returns the agent's firmware-log references, most recently
// used first.
func (s *Store) FirmwareLogRefs(ctx context.Context, agentID string) ([]FirmwareLogRef, error) {
	refs, err := listFirmwareLogRefs(ctx, s.db, s.q(`SELECT sha256, used_at FROM agent_firmware_logs WHERE agent_id = ? ORDER BY used_at DESC, sha256`), agentID)
	if err != nil {
		return nil, fmt.Errorf("store: firmware log references of %s: %w", agentID, err)
	}
	return refs, nil
}

// DeleteUnreferencedFirmwareLogs deletes the firmware logs no agent
// references that were last stored or referenced before the cut-off, and
// reports how many and how many bytes went.
func (s *Store) DeleteUnreferencedFirmwareLogs(ctx context.Context, before time.Time) (int, int64, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`DELETE FROM firmware_logs WHERE stored_at < ?
		AND NOT EXISTS (SELECT 1 FROM agent_firmware_logs r WHERE r.sha256 = firmware_logs.sha256)
		RETURNING size`), nanos(before))
	if err != nil {
		return 0, 0, fmt.Errorf("store: collect firmware logs: %w", err)
	}
	defer rows.Close()
	var (
		n     int
		freed int64
	)
	for rows.Next() {
		var size int64
		if err := rows.Scan(&size); err != nil {
			return 0, 0, fmt.Errorf("store: collect firmware logs: %w", err)
		}
		n, freed = n+1, freed+size
	}
	if err := rows.Err(); err != nil {
		return 0, 0, fmt.Errorf("store: collect firmware logs: %w", err)
	}
	return n, freed, nil
}

// FirmwareLogUsage counts the stored firmware logs, their bytes and the
// agents' references to them.
func (s *Store) FirmwareLogUsage(ctx context.Context) (FirmwareLogUsage, error) {
	var u FirmwareLogUsage
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT),
		(SELECT COUNT(*) FROM agent_firmware_logs) FROM firmware_logs`).Scan(&u.Logs, &u.Bytes, &u.Refs)
	if err != nil {
		return FirmwareLogUsage{}, fmt.Errorf("store: firmware log usage: %w", err)
	}
	return u, nil
}

// PutFirmwareLog stores a firmware log by its SHA-256 (shared by every agent
// that booted the same way). It records no reference: a log no agent
// references is collected (DeleteUnreferencedFirmwareLogs). The verifier
// uses ReferenceFirmwareLog.
func (s *Store) PutFirmwareLog(ctx context.Context, sha256 []byte, log []byte) error {
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO firmware_logs (sha256, log, size, stored_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (sha256) DO NOTHING`), sha256, log, int64(len(log)), time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("store: put firmware log: %w", err)
	}
	return nil
}

// GetFirmwareLog returns the log with that SHA-256 or ErrNotFound.
func (s *Store) GetFirmwareLog(ctx context.Context, sha256 []byte) ([]byte, error) {
	var log []byte
	err := s.db.QueryRowContext(ctx, s.q(`SELECT log FROM firmware_logs WHERE sha256 = ?`), sha256).Scan(&log)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: get firmware log: %w", err)
	}
	return log, nil
}
