package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Alert is a raised alert. DedupKey makes raising idempotent across
// replicas: the same event raised by two replicas is stored once, and only
// the replica whose insert won reports it.
type Alert struct {
	ID        string
	DedupKey  string
	AgentID   string
	Kind      string
	Severity  int
	Reason    string
	Message   string
	Replica   string
	CreatedAt time.Time
	AckedAt   time.Time
	AckedBy   string
	// DispatchedAt is when a replica handed the alert to its alerter
	// (audit log, webhooks); zero while it waits in the outbox.
	DispatchedAt time.Time
}

// AlertFilter selects alerts.
type AlertFilter struct {
	AgentID  string
	OpenOnly bool
	Limit    int
}

func newID() string {
	b := make([]byte, 12)
	rand.Read(b) //nolint:errcheck // crypto/rand does not fail
	return hex.EncodeToString(b)
}

// RaiseAlert stores an alert unless one with the same DedupKey exists. It
// reports whether this call raised it. A stored alert is undispatched and
// claimed by its raiser as of CreatedAt: the raiser dispatches it and marks
// it (MarkAlertDispatched); otherwise another replica claims it once the
// claim is stale (ClaimAlert).
func (s *Store) RaiseAlert(ctx context.Context, a *Alert) (bool, error) {
	if a.ID == "" {
		a.ID = newID()
	}
	if a.DedupKey == "" {
		a.DedupKey = a.ID
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = time.Now().UTC()
	}
	res, err := s.db.ExecContext(ctx, s.q(`INSERT INTO alerts (id, dedup_key, agent_id, kind, severity, reason, message, replica, created_at, claimed_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, `+s.notAfterNow("?")+`) ON CONFLICT (dedup_key) DO NOTHING`),
		a.ID, a.DedupKey, a.AgentID, a.Kind, a.Severity, a.Reason, a.Message, a.Replica, nanos(a.CreatedAt), nanos(a.CreatedAt))
	if err != nil {
		return false, fmt.Errorf("store: raise alert: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: raise alert: %w", err)
	}
	return n == 1, nil
}

// ListAlerts returns alerts, newest first.
func (s *Store) ListAlerts(ctx context.Context, f AlertFilter) ([]*Alert, error) {
	q := `SELECT ` + alertColumns + ` FROM alerts WHERE 1=1`
	var args []any
	if f.AgentID != "" {
		q += ` AND agent_id = ?`
		args = append(args, f.AgentID)
	}
	if f.OpenOnly {
		q += ` AND acked_at = 0`
	}
	q += ` ORDER BY created_at DESC, id`
	if f.Limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list alerts: %w", err)
	}
	defer rows.Close()
	out, err := scanAlerts(rows)
	if err != nil {
		return nil, fmt.Errorf("store: list alerts: %w", err)
	}
	return out, nil
}

// CountOpenAlerts returns open alerts per agent.
func (s *Store) CountOpenAlerts(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT agent_id, COUNT(*) FROM alerts WHERE acked_at = 0 GROUP BY agent_id`)
	if err != nil {
		return nil, fmt.Errorf("store: count alerts: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var (
			id string
			n  int
		)
		if err := rows.Scan(&id, &n); err != nil {
			return nil, fmt.Errorf("store: count alerts: %w", err)
		}
		out[id] = n
	}
	return out, rows.Err()
}

// AckAlert acknowledges an open alert.
func (s *Store) AckAlert(ctx context.Context, id, by string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE alerts SET acked_at = ?, acked_by = ? WHERE id = ? AND acked_at = 0`), nanos(at), by, id)
	if err != nil {
		return fmt.Errorf("store: ack alert: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("store: ack alert %s: %w", id, ErrNotFound)
	}
	return nil
}

// HistoryEntry is one verdict change.
type HistoryEntry struct {
	At      time.Time
	Verdict int32
	Reason  int32
	Message string
}

// HistoryLimit bounds the history kept per agent.
const HistoryLimit = 200

// AppendHistory records a verdict change and trims the agent's history to
// HistoryLimit entries.
func (s *Store) AppendHistory(ctx context.Context, agentID string, e HistoryEntry) error {
	if _, err := s.db.ExecContext(ctx, s.q(`INSERT INTO history (agent_id, at, verdict, reason, message) VALUES (?, ?, ?, ?, ?)`),
		agentID, nanos(e.At), e.Verdict, e.Reason, e.Message); err != nil {
		return fmt.Errorf("store: append history: %w", err)
	}
	_, err := s.db.ExecContext(ctx, s.q(`DELETE FROM history WHERE agent_id = ? AND at < (
		SELECT at FROM (SELECT at FROM history WHERE agent_id = ? ORDER BY at DESC LIMIT 1 OFFSET ?) AS cutoff)`),
		agentID, agentID, HistoryLimit-1)
	if err != nil {
		return fmt.Errorf("store: trim history: %w", err)
	}
	return nil
}

// History returns an agent's verdict changes, newest first.
func (s *Store) History(ctx context.Context, agentID string, limit int) ([]HistoryEntry, error) {
	if limit <= 0 || limit > HistoryLimit {
		limit = HistoryLimit
	}
	rows, err := s.db.QueryContext(ctx, s.q(fmt.Sprintf(`SELECT at, verdict, reason, message FROM history WHERE agent_id = ? ORDER BY at DESC LIMIT %d`, limit)), agentID)
	if err != nil {
		return nil, fmt.Errorf("store: history: %w", err)
	}
	defer rows.Close()
	var out []HistoryEntry
	for rows.Next() {
		var (
			e    HistoryEntry
			at   int64
			v, r int64
		)
		if err := rows.Scan(&at, &v, &r, &e.Message); err != nil {
			return nil, fmt.Errorf("store: history: %w", err)
		}
		e.At, e.Verdict, e.Reason = fromNanos(at), int32(v), int32(r)
		out = append(out, e)
	}
	return out, rows.Err()
}

// LKG is an agent's last-known-good measurements.
type LKG struct {
	BinarySHA256 string
	// BPF is "name=digest" pairs joined by ",", sorted by name.
	BPF string
	At  time.Time
	// Boot is the accepted prefix of the agent-binary records of the
	// runtime log: "<count>:<SHA-256 of their digests, comma-joined>".
	// Every record stays in the runtime PCR, so each pulse judges all of
	// them; those of the accepted prefix (an approved update, since
	// superseded) are not judged again.
	Boot string
	// BPFBuilds is the eBPF program set each agent build was accepted with
	// (JSON; the verifier's learned manifest): a build that comes back must
	// bring the same programs.
	BPFBuilds string
}

// GetLKG returns the agent's last-known-good (zero when none).
func (s *Store) GetLKG(ctx context.Context, agentID string) (LKG, error) {
	var (
		l  LKG
		at int64
	)
	err := s.db.QueryRowContext(ctx, s.q(`SELECT lkg_binary_sha256, lkg_bpf, lkg_at, lkg_boot, lkg_bpf_builds FROM agents WHERE id = ?`), agentID).Scan(&l.BinarySHA256, &l.BPF, &at, &l.Boot, &l.BPFBuilds)
	if errors.Is(err, sql.ErrNoRows) {
		return LKG{}, ErrNotFound
	}
	if err != nil {
		return LKG{}, fmt.Errorf("store: get lkg: %w", err)
	}
	l.At = fromNanos(at)
	return l, nil
}

// SetLKG records new last-known-good measurements.
func (s *Store) SetLKG(ctx context.Context, agentID string, l LKG) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE agents SET lkg_binary_sha256 = ?, lkg_bpf = ?, lkg_at = ?, lkg_boot = ?, lkg_bpf_builds = ? WHERE id = ?`),
		l.BinarySHA256, l.BPF, nanos(l.At), l.Boot, l.BPFBuilds, agentID)
	if err != nil {
		return fmt.Errorf("store: set lkg: %w", err)
	}
	return nil
}

// dbNow is the database's clock in Unix nanoseconds, as SQL. Deadlines,
// BLINDED marks, silence confirmations and isolation holds are written and
// compared with it, never with a replica's clock: replicas whose clocks
// disagree then still agree on who is overdue (docs/operations.md, "One
// clock for deadlines"). SQLite reads the host's clock once per statement;
// PostgreSQL's statement_timestamp() is fixed for the statement too.
func (s *Store) dbNow() string {
	if s.dialect.name == EnginePostgres {
		return `CAST(extract(epoch FROM statement_timestamp()) * 1000000000 AS BIGINT)`
	}
	return `CAST(unixepoch('subsec') * 1000000000 AS INTEGER)`
}

// notAfterNow is the SQL for the smaller of the nanosecond value param
// (a "?" placeholder) and the database's clock: a time a replica writes
// that must never lie in the database's future (a replica with a fast
// clock would otherwise date claims ahead and starve the others).
func (s *Store) notAfterNow(param string) string {
	if s.dialect.name == EnginePostgres {
		return `LEAST(CAST(` + param + ` AS BIGINT), ` + s.dbNow() + `)`
	}
	return `min(CAST(` + param + ` AS INTEGER), ` + s.dbNow() + `)`
}

// Now returns the database's clock.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT `+s.dbNow()).Scan(&n); err != nil {
		return time.Time{}, fmt.Errorf("store: database clock: %w", err)
	}
	return fromNanos(n), nil
}

// SetFirstDeadline gives an agent its first deadline, in (by the
// database's clock) from now. It writes nothing when the agent already has
// one: re-enrolling is not being heard from, so it never moves a deadline
// nor clears a BLINDED mark (only an accepted pulse does).
func (s *Store) SetFirstDeadline(ctx context.Context, agentID string, interval, in time.Duration) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE agents SET interval_ms = ?, deadline_at = `+s.dbNow()+` + CAST(? AS BIGINT) WHERE id = ? AND deadline_at = 0`),
		interval.Milliseconds(), int64(in), agentID)
	if err != nil {
		return fmt.Errorf("store: set first deadline: %w", err)
	}
	return nil
}

// SetDeadline records that the agent must next be heard from in (by the
// database's clock), and clears a BLINDED mark and its confirmation (the
// agent spoke). An accepted pulse does the same in its commit
// (PulseUpdate.DeadlineIn).
func (s *Store) SetDeadline(ctx context.Context, agentID string, interval, in time.Duration) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE agents SET interval_ms = ?, deadline_at = `+s.dbNow()+` + CAST(? AS BIGINT), blinded_at = 0, silence_confirmed_at = 0 WHERE id = ?`),
		interval.Milliseconds(), int64(in), agentID)
	if err != nil {
		return fmt.Errorf("store: set deadline: %w", err)
	}
	return nil
}

// GraceAll pushes every deadline to at least grace from now (the
// database's clock): after a verifier (re)start or outage every agent gets
// grace before it can be BLINDED.
func (s *Store) GraceAll(ctx context.Context, grace time.Duration) error {
	now := s.dbNow()
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE agents SET deadline_at = `+now+` + CAST(? AS BIGINT)
		WHERE deadline_at > 0 AND deadline_at < `+now+` + CAST(? AS BIGINT) AND blinded_at = 0`), int64(grace), int64(grace))
	if err != nil {
		return fmt.Errorf("store: grace: %w", err)
	}
	return nil
}

// Overdue lists agents past their deadline by the database's clock and not
// yet BLINDED.
func (s *Store) Overdue(ctx context.Context) ([]*Agent, error) {
	return s.listAgentsWhere(ctx, "overdue", `deadline_at > 0 AND deadline_at < `+s.dbNow()+` AND blinded_at = 0`)
}

func (s *Store) listAgentsWhere(ctx context.Context, what, where string, args ...any) ([]*Agent, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+agentColumns+` FROM agents WHERE `+where), args...)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	defer rows.Close()
	var out []*Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	return out, nil
}

// MarkBlinded marks an agent overdue by the database's clock BLINDED, at
// the database's clock. Exactly one caller across all replicas gets true
// for a given silence.
func (s *Store) MarkBlinded(ctx context.Context, agentID string, verdict, reason int32, msg string) (bool, error) {
	now := s.dbNow()
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE agents SET blinded_at = `+now+`, silence_confirmed_at = 0, last_verdict = ?, last_reason = ?, last_message = ?
		WHERE id = ? AND deadline_at > 0 AND deadline_at < `+now+` AND blinded_at = 0`), verdict, reason, msg, agentID)
	if err != nil {
		return false, fmt.Errorf("store: mark blinded: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: mark blinded: %w", err)
	}
	return n == 1, nil
}

// SilencesToConfirm lists BLINDED agents whose silence is not confirmed yet
// and was marked at least after ago (the database's clock).
func (s *Store) SilencesToConfirm(ctx context.Context, after time.Duration) ([]*Agent, error) {
	return s.listAgentsWhere(ctx, "silences to confirm", `blinded_at > 0 AND silence_confirmed_at = 0 AND blinded_at <= `+s.dbNow()+` - CAST(? AS BIGINT)
		AND hold_until <= `+s.dbNow(), int64(after))
}

// ConfirmSilence confirms a BLINDED mark: the agent was marked at least
// after ago and is still past its deadline, unheard from since (an accepted
// pulse clears the mark). Exactly one caller across all replicas gets true
// for a given silence; only that one may act on it (isolation).
func (s *Store) ConfirmSilence(ctx context.Context, agentID string, after time.Duration) (bool, error) {
	now := s.dbNow()
	res, err := s.db.ExecContext(ctx, s.q(`UPDATE agents SET silence_confirmed_at = `+now+`
		WHERE id = ? AND blinded_at > 0 AND silence_confirmed_at = 0 AND blinded_at <= `+now+` - CAST(? AS BIGINT)
			AND deadline_at > 0 AND deadline_at < `+now+` AND hold_until <= `+now), agentID, int64(after))
	if err != nil {
		return false, fmt.Errorf("store: confirm silence: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: confirm silence: %w", err)
	}
	return n == 1, nil
}

// UpdateWindow approves a new agent-binary digest for some agents.
type UpdateWindow struct {
	ID     string
	Digest string
	// Agents are glob patterns of agent IDs ("*" for all).
	Agents     []string
	Start, End time.Time
	CreatedBy  string
}

// AddUpdateWindow stores an approval.
func (s *Store) AddUpdateWindow(ctx context.Context, w *UpdateWindow) error {
	if w.ID == "" {
		w.ID = newID()
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO update_windows (id, digest, agents, start_at, end_at, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		w.ID, strings.ToLower(w.Digest), strings.Join(w.Agents, ","), nanos(w.Start), nanos(w.End), w.CreatedBy, time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("store: add update window: %w", err)
	}
	return nil
}

// UpdateWindows returns the windows open at t.
func (s *Store) UpdateWindows(ctx context.Context, t time.Time) ([]*UpdateWindow, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, digest, agents, start_at, end_at, created_by FROM update_windows WHERE start_at <= ? AND end_at > ?`), nanos(t), nanos(t))
	if err != nil {
		return nil, fmt.Errorf("store: update windows: %w", err)
	}
	defer rows.Close()
	var out []*UpdateWindow
	for rows.Next() {
		var (
			w          UpdateWindow
			agents     string
			start, end int64
		)
		if err := rows.Scan(&w.ID, &w.Digest, &agents, &start, &end, &w.CreatedBy); err != nil {
			return nil, fmt.Errorf("store: update windows: %w", err)
		}
		w.Agents = strings.Split(agents, ",")
		w.Start, w.End = fromNanos(start), fromNanos(end)
		out = append(out, &w)
	}
	return out, rows.Err()
}

// Quarantine is an isolated address.
type Quarantine struct {
	Address  string
	Offender string
	Reason   string
	Since    time.Time
}

// ErrIsolationHeld: an operator's release holds off isolating the offender
// (AddQuarantine returns it as a *HoldError).
var ErrIsolationHeld = errors.New("isolation held by an operator's release")

// Hold is an operator's release of an agent's isolation: the agent is not
// isolated again until an accepted pulse is committed after it, or Until
// passes (the database's clock).
type Hold struct {
	AgentID string
	By      string
	At      time.Time
	Until   time.Time
}

// HoldError reports the hold that suppressed an isolation. It matches
// ErrIsolationHeld.
type HoldError struct{ Hold Hold }

func (e *HoldError) Error() string {
	return fmt.Sprintf("isolation of %s held by %s's release until %s", e.Hold.AgentID, e.Hold.By, e.Hold.Until.Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrIsolationHeld) true.
func (e *HoldError) Is(target error) bool { return target == ErrIsolationHeld }

// AddQuarantine isolates an address unless an operator's release holds
// off isolating the offender; it reports whether the address was newly
// isolated. A hold returns a *HoldError (errors.Is ErrIsolationHeld) and
// writes nothing. The hold is checked in the insert itself; on PostgreSQL
// the offender's row is locked first, so a release committing meanwhile is
// waited for and seen (ReleaseQuarantine locks the same row before it
// removes the address): isolate and release serialise on the agent's row.
func (s *Store) AddQuarantine(ctx context.Context, q Quarantine) (bool, error) {
	defer s.bumpQuarantine()
	now := s.dbNow()
	query := `INSERT INTO quarantine (address, offender, reason, created_at)
		SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM agents WHERE id = ? AND hold_until > ` + now + `)
		ON CONFLICT (address) DO NOTHING`
	args := []any{q.Address, q.Offender, q.Reason, nanos(q.Since), q.Offender}
	if s.dialect.name == EnginePostgres {
		query = `WITH locked AS (SELECT hold_until FROM agents WHERE id = ? FOR UPDATE)
		INSERT INTO quarantine (address, offender, reason, created_at)
		SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM locked WHERE hold_until > ` + now + `)
		ON CONFLICT (address) DO NOTHING`
		args = []any{q.Offender, q.Address, q.Offender, q.Reason, nanos(q.Since)}
	}
	res, err := s.db.ExecContext(ctx, s.q(query), args...)
	if err != nil {
		return false, fmt.Errorf("store: quarantine: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: quarantine: %w", err)
	}
	if n == 1 {
		return true, nil
	}
	// Nothing written: the address was isolated already, or a hold
	// refused it. Which one is only reported; the insert decided.
	h, held, err := s.IsolationHold(ctx, q.Offender)
	if err != nil {
		return false, err
	}
	if held {
		return false, &HoldError{Hold: h}
	}
	return false, nil
}

// ReleaseQuarantine lifts an isolation and holds off isolating its
// offender again for holdFor (the database's clock) or until an accepted
// pulse of the offender is committed after it, in one transaction: no
// isolation can slip between the two (see AddQuarantine). ErrNotFound when
// the address is not isolated.
func (s *Store) ReleaseQuarantine(ctx context.Context, address, by string, holdFor time.Duration) (*Quarantine, error) {
	defer s.bumpQuarantine() // runs last: after the commit or the rollback
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: release: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	var offender string
	err = tx.QueryRowContext(ctx, s.q(`SELECT offender FROM quarantine WHERE address = ?`), address).Scan(&offender)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: release: %w", err)
	}
	now := s.dbNow()
	// The hold first: it locks the offender's row, which an isolation
	// locks too, before the address goes. A silence confirmed before the
	// release is forgotten: if the device is still silent when the hold
	// ends, it is confirmed (and isolated) again.
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE agents SET hold_until = `+now+` + CAST(? AS BIGINT), hold_at = `+now+`, hold_by = ?,
		silence_confirmed_at = 0 WHERE id = ?`),
		int64(holdFor), by, offender); err != nil {
		return nil, fmt.Errorf("store: release: hold: %w", err)
	}
	var (
		q  Quarantine
		at int64
	)
	err = tx.QueryRowContext(ctx, s.q(`DELETE FROM quarantine WHERE address = ? RETURNING address, offender, reason, created_at`), address).
		Scan(&q.Address, &q.Offender, &q.Reason, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound // released meanwhile by someone else
	}
	if err != nil {
		return nil, fmt.Errorf("store: release: %w", err)
	}
	if q.Offender != offender {
		// Released and isolated again for another offender meanwhile:
		// start over so the hold names the right agent.
		return nil, fmt.Errorf("store: release %s: %w", address, ErrConflict)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: release: commit: %w", err)
	}
	q.Since = fromNanos(at)
	return &q, nil
}

// RemoveQuarantine lifts an isolation without holding off the next one;
// ErrNotFound when the address was not isolated. Operators release with
// ReleaseQuarantine.
func (s *Store) RemoveQuarantine(ctx context.Context, address string) (*Quarantine, error) {
	defer s.bumpQuarantine()
	var (
		q  Quarantine
		at int64
	)
	err := s.db.QueryRowContext(ctx, s.q(`DELETE FROM quarantine WHERE address = ? RETURNING address, offender, reason, created_at`), address).
		Scan(&q.Address, &q.Offender, &q.Reason, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: release: %w", err)
	}
	q.Since = fromNanos(at)
	return &q, nil
}

// ListQuarantine returns isolated addresses.
func (s *Store) ListQuarantine(ctx context.Context) ([]Quarantine, error) {
	s.quar.tableReads.Add(1)
	rows, err := s.db.QueryContext(ctx, `SELECT address, offender, reason, created_at FROM quarantine ORDER BY address`)
	if err != nil {
		return nil, fmt.Errorf("store: list quarantine: %w", err)
	}
	defer rows.Close()
	var out []Quarantine
	for rows.Next() {
		var (
			q  Quarantine
			at int64
		)
		if err := rows.Scan(&q.Address, &q.Offender, &q.Reason, &at); err != nil {
			return nil, fmt.Errorf("store: list quarantine: %w", err)
		}
		q.Since = fromNanos(at)
		out = append(out, q)
	}
	return out, rows.Err()
}

// Directive is a directive published for delivery by whichever replica
// holds the target's stream. Target "*" means every agent.
type Directive struct {
	Seq       int64
	Target    string
	Kind      string
	Body      []byte
	CreatedAt time.Time
}

// PublishDirective appends a directive to the shared outbox.
func (s *Store) PublishDirective(ctx context.Context, d *Directive) error {
	if d.CreatedAt.IsZero() {
		d.CreatedAt = time.Now()
	}
	_, err := s.db.ExecContext(ctx, s.q(`INSERT INTO directives (target, kind, body, created_at) VALUES (?, ?, ?, ?)`),
		d.Target, d.Kind, d.Body, nanos(d.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: publish directive: %w", err)
	}
	return nil
}

// DirectivesAfter returns directives with seq > after, oldest first.
func (s *Store) DirectivesAfter(ctx context.Context, after int64, limit int) ([]*Directive, error) {
	rows, err := s.db.QueryContext(ctx, s.q(fmt.Sprintf(`SELECT seq, target, kind, body, created_at FROM directives WHERE seq > ? ORDER BY seq LIMIT %d`, limit)), after)
	if err != nil {
		return nil, fmt.Errorf("store: directives: %w", err)
	}
	defer rows.Close()
	var out []*Directive
	for rows.Next() {
		var (
			d  Directive
			at int64
		)
		if err := rows.Scan(&d.Seq, &d.Target, &d.Kind, &d.Body, &at); err != nil {
			return nil, fmt.Errorf("store: directives: %w", err)
		}
		d.CreatedAt = fromNanos(at)
		out = append(out, &d)
	}
	return out, rows.Err()
}

// LastDirectiveSeq returns the newest directive's sequence number.
func (s *Store) LastDirectiveSeq(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM directives`).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: last directive: %w", err)
	}
	return n, nil
}

// SetStream records which replica holds the agent's directive stream (""
// when it dropped), so every replica can show "disconnected" at once.
func (s *Store) SetStream(ctx context.Context, agentID, replica string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, s.q(`UPDATE agents SET stream_replica = ?, stream_changed_at = ? WHERE id = ?`), replica, nanos(at), agentID)
	if err != nil {
		return fmt.Errorf("store: set stream: %w", err)
	}
	return nil
}

// AgentOps is the operations view of an agent.
type AgentOps struct {
	StreamReplica string
	Deadline      time.Time
	BlindedAt     time.Time
	Interval      time.Duration
}

// GetAgentOps returns the operations fields of an agent.
func (s *Store) GetAgentOps(ctx context.Context, agentID string) (AgentOps, error) {
	var (
		o                  AgentOps
		dl, bl, intervalMs int64
	)
	err := s.db.QueryRowContext(ctx, s.q(`SELECT stream_replica, deadline_at, blinded_at, interval_ms FROM agents WHERE id = ?`), agentID).
		Scan(&o.StreamReplica, &dl, &bl, &intervalMs)
	if errors.Is(err, sql.ErrNoRows) {
		return o, ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("store: agent ops: %w", err)
	}
	o.Deadline, o.BlindedAt, o.Interval = fromNanos(dl), fromNanos(bl), time.Duration(intervalMs)*time.Millisecond
	return o, nil
}

// IsolationHold returns the agent's active hold (the database's clock),
// and whether there is one.
func (s *Store) IsolationHold(ctx context.Context, agentID string) (Hold, bool, error) {
	var (
		h         Hold
		at, until int64
	)
	err := s.db.QueryRowContext(ctx, s.q(`SELECT hold_by, hold_at, hold_until FROM agents WHERE id = ? AND hold_until > `+s.dbNow()), agentID).
		Scan(&h.By, &at, &until)
	if errors.Is(err, sql.ErrNoRows) {
		return Hold{}, false, nil
	}
	if err != nil {
		return Hold{}, false, fmt.Errorf("store: isolation hold: %w", err)
	}
	h.AgentID, h.At, h.Until = agentID, fromNanos(at), fromNanos(until)
	return h, true, nil
}

// IsolationHeld reports whether an operator's release holds off isolating
// the agent now.
func (s *Store) IsolationHeld(ctx context.Context, agentID string) (bool, error) {
	_, held, err := s.IsolationHold(ctx, agentID)
	return held, err
}

// ClearIsolationHold ends a hold. An accepted pulse ends one in its commit
// (PulseUpdate.DeadlineIn).
func (s *Store) ClearIsolationHold(ctx context.Context, agentID string) error {
	if _, err := s.db.ExecContext(ctx, s.q(`UPDATE agents SET hold_until = 0 WHERE id = ?`), agentID); err != nil {
		return fmt.Errorf("store: clear isolation hold: %w", err)
	}
	return nil
}
