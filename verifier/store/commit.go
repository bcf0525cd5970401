package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// ErrFirmwareLogGone is returned by CommitPulse when the firmware log the
// pulse references was collected after the pulse checked it (the pulse
// had no bytes to store again): nothing was written. It matches
// ErrNotFound too.
var ErrFirmwareLogGone = fmt.Errorf("firmware log no longer stored: %w", ErrNotFound)

// FirmwareLogWrite is the firmware-log reference a pulse records with its
// commit (see ReferenceFirmwareLog): the agent booted with the log of
// SHA256, whose bytes are Log (nil when the verifier took its parse from
// the store), under Quota.
type FirmwareLogWrite struct {
	SHA256 []byte
	Log    []byte
	Quota  FirmwareLogQuota
}

// CheckFirmwareLogReference reports, without writing, whether the agent
// may reference the log now: ErrQuota when the reference would exceed q,
// ErrFirmwareLogGone when the caller has no bytes (haveLog false) and no
// row holds the log. The pulse's commit writes the reference (under the
// same rule, in the commit's transaction): an agent's references change
// only with its own committed pulses, one per nonce epoch, so what this
// read sees is what the commit finds unless the commit loses its epoch.
func (s *Store) CheckFirmwareLogReference(ctx context.Context, agentID string, sha256 []byte, haveLog bool, at time.Time, q FirmwareLogQuota) error {
	if len(sha256) != 32 {
		return fmt.Errorf("store: check firmware log reference: digest of %d bytes", len(sha256))
	}
	if q.PerAgent < 1 {
		return fmt.Errorf("store: check firmware log reference: quota of %d logs per agent", q.PerAgent)
	}
	st, err := s.prepared(ctx, qAgentRefs)
	if err != nil {
		return fmt.Errorf("store: check firmware log reference for %s: %w", agentID, err)
	}
	refs, err := listFirmwareLogRefs(ctx, stmtQuerier{st}, "", agentID)
	if err != nil {
		return fmt.Errorf("store: check firmware log reference for %s: %w", agentID, err)
	}
	if _, _, err := quotaVictims(refs, sha256, nanos(at), q); err != nil {
		return fmt.Errorf("store: check firmware log reference for %s: %w", agentID, err)
	}
	if haveLog {
		return nil
	}
	var one int
	err = s.queryRow(ctx, qLogExists, sha256).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("store: check firmware log reference for %s: log %x: %w", agentID, sha256[:8], ErrFirmwareLogGone)
	}
	if err != nil {
		return fmt.Errorf("store: check firmware log reference for %s: %w", agentID, err)
	}
	return nil
}

const qLogExists = `SELECT 1 FROM firmware_logs WHERE sha256 = ?`

// CommitPulse spends the agent's nonce epoch and writes the pulse's
// outcome: the pulse's only write. The agent's row is one conditional
// statement (and, when u.FirmwareLog is set, the firmware-log reference
// goes in the same transaction, after the row's statement won). It
// succeeds (NonceOK) for exactly one caller per epoch across all replicas;
// otherwise nothing is written and it reports NonceReplayed (the epoch was
// spent, perhaps by a concurrent pulse), NonceUnknown (an epoch never
// reached), NonceStale (the epoch is the pulse's but the row is no longer
// at u.RowVersion) or ErrNotFound (no such agent). Evidence fields move
// only when u.Evidence is set. A firmware-log reference that fails (ErrQuota,
// ErrFirmwareLogGone) rolls the whole commit back: nothing is written.
func (s *Store) CommitPulse(ctx context.Context, agentID string, epoch uint64, u PulseUpdate) (NonceStatus, error) {
	if u.FirmwareLog != nil {
		return s.commitWithFirmwareLog(ctx, agentID, epoch, u)
	}
	// The statements are prepared (and cached) here, outside any
	// transaction: inside one, a statement not cached yet is prepared on
	// the transaction's connection and dropped with it, so a commit that is
	// always a transaction would prepare its statements on every pulse.
	// A statement that cannot be prepared here fails the commit itself,
	// with the commit's error (a closed store: errClosed).
	for _, query := range []string{s.pulseQuery(pulseKind(u)), qNonceEpoch, qPutExplanation} {
		_, _ = s.prepared(ctx, query)
	}
	if u.Sentinel != nil {
		for _, query := range sentinelQueries {
			_, _ = s.prepared(ctx, query)
		}
	}
	st := NonceUnknown
	var rs error
	err := s.submit(ctx, agentID, func(ctx context.Context, r runner) error {
		if u.Explanation != nil || u.Sentinel != nil {
			// Row, explanation and Sentinel record stand or fall
			// together (evidence.go).
			return s.commitInTx(ctx, r, func(r runner) (bool, error) {
				var err error
				st, rs, err = s.commitRow(ctx, r, agentID, epoch, u)
				return err == nil && rs == nil && st == NonceOK, err
			})
		}
		var err error
		st, rs, err = s.commitRow(ctx, r, agentID, epoch, u)
		return err
	})
	if err != nil {
		return NonceUnknown, err
	}
	return st, rs
}

// commitRow runs the pulse's conditional statement and, when it wrote
// nothing, finds out why. It reports database failures as its error and
// the pulse's own outcome (not found) as rs.
func (s *Store) commitRow(ctx context.Context, r runner, agentID string, epoch uint64, u PulseUpdate) (st NonceStatus, rs error, err error) {
	res, err := s.recordPulse(ctx, r, agentID, int64(epoch), u)
	if err != nil {
		return NonceUnknown, nil, fmt.Errorf("store: commit pulse for %s: %w", agentID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return NonceUnknown, nil, fmt.Errorf("store: commit pulse for %s: %w", agentID, err)
	} else if n > 0 {
		if u.Explanation != nil {
			if err := s.putExplanation(ctx, r, agentID, u.Explanation); err != nil {
				return NonceUnknown, nil, fmt.Errorf("store: commit pulse for %s: %w", agentID, err)
			}
		}
		if u.Sentinel != nil {
			if err := s.recordSentinel(ctx, r, agentID, *u.Sentinel); err != nil {
				return NonceUnknown, nil, fmt.Errorf("store: commit pulse for %s: %w", agentID, err)
			}
		}
		return NonceOK, nil, nil
	}
	var stored int64
	err = r.queryRow(ctx, qNonceEpoch, agentID).Scan(&stored)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return NonceUnknown, fmt.Errorf("store: commit pulse for %s: %w", agentID, ErrNotFound), nil
	case err != nil:
		return NonceUnknown, nil, fmt.Errorf("store: commit pulse for %s: %w", agentID, err)
	case uint64(stored) > epoch:
		return NonceReplayed, nil, nil
	case uint64(stored) == epoch && u.RowVersion != 0:
		// The epoch is the pulse's; the row moved under it.
		return NonceStale, nil, nil
	}
	return NonceUnknown, nil, nil
}

// commitWithFirmwareLog is CommitPulse for a pulse that references a
// firmware log: its own transaction, outside group commit (a batch's
// operation is one statement; this is several that must stand or fall
// together). A pulse that loses its epoch writes no reference.
func (s *Store) commitWithFirmwareLog(ctx context.Context, agentID string, epoch uint64, u PulseUpdate) (NonceStatus, error) {
	fl := u.FirmwareLog
	if len(fl.SHA256) != 32 {
		return NonceUnknown, fmt.Errorf("store: commit pulse for %s: firmware log digest of %d bytes", agentID, len(fl.SHA256))
	}
	if fl.Quota.PerAgent < 1 {
		return NonceUnknown, fmt.Errorf("store: commit pulse for %s: quota of %d firmware logs per agent", agentID, fl.Quota.PerAgent)
	}
	lockAgent := qLockAgent
	if s.dialect.name == EnginePostgres {
		lockAgent += ` FOR UPDATE`
	}
	// Prepared outside the transaction (on SQLite it holds the only
	// connection; a transaction uses the cached statements).
	for _, query := range append([]string{lockAgent, qAgentRefs, qEvictRef, qTouchLog, qStoreLog, qPutRef, qPutExplanation}, sentinelQueries...) {
		if _, err := s.prepared(ctx, query); err != nil {
			return NonceUnknown, fmt.Errorf("store: commit pulse for %s: %w", agentID, err)
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return NonceUnknown, fmt.Errorf("store: commit pulse for %s: %w", agentID, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	r := runner{s: s, tx: tx}
	st, rs, err := s.commitRow(ctx, r, agentID, epoch, u)
	if err != nil || rs != nil || st != NonceOK {
		return st, errors.Join(err, rs)
	}
	if _, err := s.referenceFirmwareLog(ctx, r, lockAgent, agentID, fl.SHA256, fl.Log, nanos(u.At), fl.Quota); err != nil {
		if errors.Is(err, ErrNotFound) {
			// The row was just written: what is missing is the log.
			err = fmt.Errorf("%w: %w", err, ErrFirmwareLogGone)
		}
		return NonceUnknown, fmt.Errorf("store: commit pulse for %s: firmware log: %w", agentID, err)
	}
	if err := tx.Commit(); err != nil {
		return NonceUnknown, fmt.Errorf("store: commit pulse for %s: commit: %w", agentID, err)
	}
	return NonceOK, nil
}

// recordPulse writes u and spends epoch, only while epoch is the agent's
// current one (and, when u.RowVersion is set, while the row is at that
// version). The row gets u.NextRowVersion (or a random version).
func (s *Store) recordPulse(ctx context.Context, r runner, agentID string, epoch int64, u PulseUpdate) (sql.Result, error) {
	in := int64(u.DeadlineIn)
	var setLKG int64
	var lkg LKG
	if u.LKG != nil {
		setLKG, lkg = 1, *u.LKG
	}
	next := u.NextRowVersion
	if next == 0 {
		next = NewRowVersion()
	}
	args := make([]any, 0, 48)
	args = append(args, nanos(u.At), u.Verdict, u.Reason, u.Message, u.PolicyDigest, u.Address, u.Quarantined)
	kind := pulseNoEvidence
	if u.Evidence {
		kind = pulseEvidence
		args = append(args, int64(u.Seq), int64(u.ResetCount), int64(u.RestartCount), int64(u.TPMClock), nilIfEmpty(u.FirmwareLogSHA256), u.AgentVersion)
		if u.RuntimeUnchanged {
			kind = pulseEvidenceRuntimeUnchanged
		} else {
			args = append(args, nilIfEmpty(u.RuntimeRecords), int64(u.RuntimeCount))
		}
	}
	args = append(args, in, in, u.Interval.Milliseconds(), u.Interval.Milliseconds(), in, in, in,
		int64(u.TransientStreak), int64(u.DesyncStreak), setLKG, lkg.BinarySHA256, setLKG, lkg.BPF,
		setLKG, nanos(lkg.At), setLKG, lkg.Boot, setLKG, lkg.BPFBuilds, next,
		agentID, epoch, u.RowVersion, u.RowVersion)
	return r.exec(ctx, s.pulseQuery(kind), args...)
}

// The three forms of the pulse's statement: without evidence, with
// evidence, with evidence and the runtime log unchanged.
const (
	pulseNoEvidence = iota
	pulseEvidence
	pulseEvidenceRuntimeUnchanged
)

// qNonceEpoch reads why a pulse's statement wrote nothing.
const qNonceEpoch = `SELECT nonce_epoch FROM agents WHERE id = ?`

// pulseKind is the form of the pulse statement u needs (as recordPulse
// chooses it).
func pulseKind(u PulseUpdate) int {
	switch {
	case !u.Evidence:
		return pulseNoEvidence
	case u.RuntimeUnchanged:
		return pulseEvidenceRuntimeUnchanged
	}
	return pulseEvidence
}

// pulseQuery returns the pulse statement's text, built once per store
// (it names the database's clock, which differs by engine).
func (s *Store) pulseQuery(kind int) string {
	s.pulseQueriesOnce.Do(func() {
		// Casts keep PostgreSQL from inferring int4 for the parameters.
		// The deadline is the database's clock plus DeadlineIn (ops.go
		// dbNow).
		tail := `, deadline_at = CASE WHEN CAST(? AS BIGINT) > 0 THEN ` + s.dbNow() + ` + CAST(? AS BIGINT) ELSE deadline_at END,
		interval_ms = CASE WHEN CAST(? AS BIGINT) > 0 THEN CAST(? AS BIGINT) ELSE interval_ms END,
		blinded_at = CASE WHEN CAST(? AS BIGINT) > 0 THEN 0 ELSE blinded_at END,
		silence_confirmed_at = CASE WHEN CAST(? AS BIGINT) > 0 THEN 0 ELSE silence_confirmed_at END,
		hold_until = CASE WHEN CAST(? AS BIGINT) > 0 THEN 0 ELSE hold_until END,
		transient_streak = ?, desync_streak = ?,
		lkg_binary_sha256 = CASE WHEN CAST(? AS BIGINT) > 0 THEN ? ELSE lkg_binary_sha256 END,
		lkg_bpf = CASE WHEN CAST(? AS BIGINT) > 0 THEN ? ELSE lkg_bpf END,
		lkg_at = CASE WHEN CAST(? AS BIGINT) > 0 THEN CAST(? AS BIGINT) ELSE lkg_at END,
		lkg_boot = CASE WHEN CAST(? AS BIGINT) > 0 THEN ? ELSE lkg_boot END,
		lkg_bpf_builds = CASE WHEN CAST(? AS BIGINT) > 0 THEN ? ELSE lkg_bpf_builds END,
		row_version = CAST(? AS BIGINT)
		WHERE id = ? AND nonce_epoch = ? AND (CAST(? AS BIGINT) = 0 OR row_version = CAST(? AS BIGINT))`
		head := `UPDATE agents SET nonce_epoch = nonce_epoch + 1, last_pulse_at = ?, last_verdict = ?, last_reason = ?,
			last_message = ?, policy_digest = ?, address = COALESCE(NULLIF(?, ''), address), quarantined = ?`
		evidence := `, last_seq = ?, reset_count = ?, restart_count = ?, tpm_clock = ?, firmware_log_sha256 = ?, agent_version = ?`
		s.pulseQueries = [3]string{
			pulseNoEvidence:               head + tail,
			pulseEvidence:                 head + evidence + `, runtime_records = ?, runtime_count = ?` + tail,
			pulseEvidenceRuntimeUnchanged: head + evidence + tail,
		}
	})
	return s.pulseQueries[kind]
}

// NewRowVersion returns a random row version (never 0).
func NewRowVersion() int64 {
	for {
		if v := rand.Int64(); v != 0 {
			return v
		}
	}
}

// AfterCommit returns the row a won CommitPulse of u left, computed from
// a (the row the pulse read) as the statement computes it: what a cache
// of the row holds next, without reading it again. u.NextRowVersion must
// be the version the commit wrote.
func (a Agent) AfterCommit(u PulseUpdate) Agent {
	a.NonceEpoch++
	a.LastPulseAt = fromNanos(nanos(u.At))
	a.LastVerdict, a.LastReason, a.LastMessage, a.PolicyDigest = u.Verdict, u.Reason, u.Message, u.PolicyDigest
	if u.Address != "" {
		a.Address = u.Address
	}
	a.Quarantined = u.Quarantined
	if u.Evidence {
		a.LastSeq, a.ResetCount, a.RestartCount, a.TPMClock = u.Seq, u.ResetCount, u.RestartCount, u.TPMClock
		a.FirmwareLogSHA256 = nilIfEmpty(u.FirmwareLogSHA256)
		a.AgentVersion = u.AgentVersion
		if !u.RuntimeUnchanged {
			a.RuntimeRecords, a.RuntimeCount = nilIfEmpty(u.RuntimeRecords), u.RuntimeCount
		}
	}
	a.TransientStreak, a.DesyncStreak = u.TransientStreak, u.DesyncStreak
	if u.LKG != nil {
		a.LKG = LKG{BinarySHA256: u.LKG.BinarySHA256, BPF: u.LKG.BPF, At: fromNanos(nanos(u.LKG.At)), Boot: u.LKG.Boot, BPFBuilds: u.LKG.BPFBuilds}
	}
	a.RowVersion = u.NextRowVersion
	return a
}
