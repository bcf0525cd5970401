package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// ErrEKInUse is returned when an EK already backs as many agent IDs as
// allowed: a new agent ID on it is refused. Match with errors.Is.
var ErrEKInUse = errors.New("endorsement key backs too many agents")

// EnrollOutcome says what an enrollment replaced.
type EnrollOutcome struct {
	// New is true when the agent ID was not enrolled before.
	New bool
	// PreviousAKName is the AK the agent was enrolled with (nil when new or
	// mTLS-only).
	PreviousAKName []byte
	// PreviousPartition is the partition it was enrolled in.
	PreviousPartition string
}

// AKChanged reports whether a re-enrollment brought another AK than the
// one enrolled before.
func (o *EnrollOutcome) AKChanged(akName []byte) bool {
	return !o.New && len(o.PreviousAKName) > 0 && !bytes.Equal(o.PreviousAKName, akName)
}

// EnrollAgentLimited is EnrollAgent with a bound on how many agent IDs one
// EK may back: a new agent ID whose EK already backs ekMaxAgents others
// returns ErrEKInUse (ekMaxAgents <= 0: no bound). The existing agent's EK,
// the count and the write are decided in one transaction; on PostgreSQL it
// holds a transaction-scoped advisory lock keyed by the EK, so replicas
// enrolling agents on the same EK run one after the other and cannot both
// pass the count. (SQLite has one writer.)
func (s *Store) EnrollAgentLimited(ctx context.Context, a *Agent, ekMaxAgents int) (*EnrollOutcome, error) {
	out, err := s.enrollAgent(ctx, a, ekMaxAgents)
	if err != nil {
		return nil, fmt.Errorf("store: enroll agent %s: %w", a.ID, err)
	}
	return out, nil
}

func (s *Store) enrollAgent(ctx context.Context, a *Agent, ekMaxAgents int) (*EnrollOutcome, error) {
	pcr := a.RuntimePCR
	if pcr == 0 {
		// PCR 0 is the firmware's, never a runtime PCR: unset means the
		// default.
		pcr = DefaultRuntimePCR
	}
	ek := nilIfEmpty(a.EKSHA256)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if ek != nil && s.dialect.name == EnginePostgres {
		if _, err := tx.ExecContext(ctx, s.q(`SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))`), ekLockKey(ek)); err != nil {
			return nil, fmt.Errorf("lock EK: %w", err)
		}
	}
	out := &EnrollOutcome{}
	var (
		prevTPM  bool
		prevEK   []byte
		prevAK   []byte
		prevPart string
	)
	err = tx.QueryRowContext(ctx, s.q(`SELECT tpm, ek_sha256, ak_name, partition FROM agents WHERE id = ?`), a.ID).
		Scan(&prevTPM, &prevEK, &prevAK, &prevPart)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		out.New = true
	case err != nil:
		return nil, err
	default:
		if prevTPM != a.TPM || !bytes.Equal(prevEK, ek) {
			return nil, fmt.Errorf("enrolled with another TPM: %w", ErrConflict)
		}
		out.PreviousAKName, out.PreviousPartition = prevAK, prevPart
	}
	if out.New && ek != nil && ekMaxAgents > 0 {
		var n int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM agents WHERE ek_sha256 = ? AND id <> ?`), ek, a.ID).Scan(&n); err != nil {
			return nil, fmt.Errorf("count agents on EK: %w", err)
		}
		if n >= ekMaxAgents {
			return nil, fmt.Errorf("EK already backs %d agent(s), at most %d allowed: %w", n, ekMaxAgents, ErrEKInUse)
		}
	}
	// The WHERE clause repeats the EK check: without the advisory lock
	// (SQLite) or should a row appear between the read and the write, the
	// database still refuses a takeover.
	res, err := tx.ExecContext(ctx, s.q(`INSERT INTO agents (id, partition, tpm, ek_public, ek_sha256, ek_certificate,
		ak_public, ak_name, enrolled_at, last_message, policy_digest, address, runtime_pcr)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', '', '', ?)
		ON CONFLICT (id) DO UPDATE SET partition = excluded.partition, ak_public = excluded.ak_public,
			ak_name = excluded.ak_name, ek_certificate = excluded.ek_certificate, enrolled_at = excluded.enrolled_at,
			runtime_pcr = excluded.runtime_pcr, runtime_records = NULL, runtime_count = 0,
			firmware_log_sha256 = CASE WHEN agents.ak_name = excluded.ak_name THEN agents.firmware_log_sha256 ELSE NULL END,
			lkg_boot = CASE WHEN agents.ak_name = excluded.ak_name THEN agents.lkg_boot ELSE '' END
		WHERE agents.tpm = excluded.tpm AND (agents.ek_sha256 = excluded.ek_sha256 OR (agents.ek_sha256 IS NULL AND excluded.ek_sha256 IS NULL))`),
		a.ID, a.Partition, a.TPM, a.EKPublic, ek, a.EKCertificate, a.AKPublic, a.AKName, nanos(a.EnrolledAt), int64(pcr))
	if err != nil {
		return nil, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("enrolled with another TPM: %w", ErrConflict)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return out, nil
}

// ekLockKey maps an EK digest to a PostgreSQL advisory lock key.
func ekLockKey(ekSHA256 []byte) int64 {
	var b [8]byte
	copy(b[:], ekSHA256)
	return int64(binary.BigEndian.Uint64(b[:]))
}

// AgentsOnEK counts the agents other than exceptID enrolled with the EK.
func (s *Store) AgentsOnEK(ctx context.Context, ekSHA256 []byte, exceptID string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM agents WHERE ek_sha256 = ? AND id <> ?`), ekSHA256, exceptID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: count agents on EK: %w", err)
	}
	return n, nil
}

// DeleteExpiredEnrollments removes pending enrollments whose challenge
// expired before now and returns how many it removed.
func (s *Store) DeleteExpiredEnrollments(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.q(`DELETE FROM enrollments WHERE expires_at < ?`), nanos(now))
	if err != nil {
		return 0, fmt.Errorf("store: delete expired enrollments: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: delete expired enrollments: %w", err)
	}
	return n, nil
}

// CountEnrollments returns how many enrollments are pending (expired or
// not).
func (s *Store) CountEnrollments(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM enrollments`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count enrollments: %w", err)
	}
	return n, nil
}
