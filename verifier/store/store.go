// Package store keeps the verifier's state: enrolled agents and their TPM
// keys, pending enrollments, nonce epochs and the nonce key, cached firmware logs, each
// agent's runtime log and last verdict. One schema and one implementation
// over database/sql serve both engines: embedded SQLite (pure Go, the
// default) and PostgreSQL (several verifier replicas behind one address).
//
// Every operation that must be atomic across replicas (spending a nonce,
// taking an enrollment, creating the shared nonce key) is a single
// conditional statement, so the database, not a replica's memory, decides.
// The hot path's writes (nonce spends, pulse records) share transactions
// under load by group commit (batch.go); each stays one statement, and each
// caller still waits for its own commit.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Errors returned by the store. Match with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// NonceStatus is the outcome of spending a nonce epoch.
type NonceStatus int

const (
	NonceOK NonceStatus = iota
	NonceUnknown
	NonceReplayed
	// NonceStale: the epoch is the agent's, but its row changed since the
	// pulse read it (PulseUpdate.RowVersion): nothing was written, and the
	// pulse must be judged again against the row as it is.
	NonceStale
)

func (s NonceStatus) String() string {
	switch s {
	case NonceOK:
		return "ok"
	case NonceUnknown:
		return "unknown"
	case NonceReplayed:
		return "replayed"
	case NonceStale:
		return "stale"
	}
	return fmt.Sprintf("nonce_status(%d)", int(s))
}

// DefaultRuntimePCR is recorded for an agent enrolled without one.
const DefaultRuntimePCR = 14

// Agent is one enrolled agent.
type Agent struct {
	ID        string
	Partition string
	// TPM is true when the agent enrolled with a TPM; an mTLS-only pulse from
	// such an agent is a downgrade.
	TPM           bool
	EKPublic      []byte
	EKSHA256      []byte
	EKCertificate []byte
	AKPublic      []byte
	AKName        []byte
	EnrolledAt    time.Time

	// Evidence bookkeeping, updated after every verified pulse.
	LastSeq           uint64
	ResetCount        uint32
	RestartCount      uint32
	TPMClock          uint64
	FirmwareLogSHA256 []byte
	// Runtime log of the current boot (ResetCount): concatenated CEL records.
	RuntimeRecords []byte
	RuntimeCount   uint64

	LastPulseAt  time.Time
	LastVerdict  int32
	LastReason   int32
	LastMessage  string
	PolicyDigest string
	Address      string
	// AgentVersion is the version the agent's last verified pulse reported
	// (agent_version; a claim of the agent, bounded and printable).
	AgentVersion string
	// Quarantined lists the addresses the agent's Shield reported dropping
	// in its last pulse (comma-separated).
	Quarantined string
	// LKG is the last-known-good measurements.
	LKG LKG
	// StreamReplica is the replica holding the agent's directive stream
	// ("" when it has none): shared, so every replica shows it.
	StreamReplica string
	// NonceEpoch is the epoch a fresh nonce of this agent carries; spending
	// one moves it on (see package verifier/nonce).
	NonceEpoch uint64
	// RuntimePCR is the runtime log's PCR, recorded at enrollment from the
	// verifier's configuration.
	RuntimePCR uint32
	// TransientStreak and DesyncStreak count transient failures and
	// CLOCK_DESYNC verdicts in a row; an accepted pulse clears both.
	TransientStreak uint32
	DesyncStreak    uint32
	// RowVersion changes with every write of the row (random, never a
	// counter): a copy read at one version is the row while the version
	// is the same (CommitPulse's PulseUpdate.RowVersion).
	RowVersion int64
}

// Enrollment is a pending credential-activation challenge.
type Enrollment struct {
	ID            string
	AgentID       string
	Partition     string
	SecretSHA256  []byte
	EKPublic      []byte
	EKSHA256      []byte
	EKCertificate []byte
	AKPublic      []byte
	AKName        []byte
	Expires       time.Time
}

// PulseUpdate is what a verified (or rejected) pulse changes.
type PulseUpdate struct {
	At           time.Time
	Verdict      int32
	Reason       int32
	Message      string
	PolicyDigest string
	// Address is the agent's address; empty keeps the stored one (only an
	// accepted pulse records where the device is: silence isolates it).
	Address     string
	Quarantined string
	// DeadlineIn is how long from the commit (the database's clock, never
	// a replica's) the agent has until it must next be heard from; zero
	// leaves the stored deadline as it is. Only an accepted pulse sets it,
	// and setting it clears a BLINDED mark and its confirmation and ends an
	// operator's isolation hold (an accepted pulse committed after it).
	DeadlineIn time.Duration
	Interval   time.Duration
	// Evidence fields are written only when Evidence is true (the pulse's
	// quote and logs verified); a rejected pulse must not move them.
	// AgentVersion among them: the version the verified pulse reported.
	Evidence          bool
	AgentVersion      string
	Seq               uint64
	ResetCount        uint32
	RestartCount      uint32
	TPMClock          uint64
	FirmwareLogSHA256 []byte
	RuntimeRecords    []byte
	RuntimeCount      uint64
	// RuntimeUnchanged skips rewriting the runtime log (no new records).
	RuntimeUnchanged bool
	// TransientStreak and DesyncStreak are the agent's failure streaks after
	// this pulse (absolute values: the commit is conditional on the epoch
	// the row was read at).
	TransientStreak uint32
	DesyncStreak    uint32
	// LKG, when set, becomes the agent's last-known-good with this pulse's
	// record (only a TRUSTED pulse sets it).
	LKG *LKG
	// FirmwareLog, when set, is the firmware-log reference the commit
	// records (CommitPulse).
	FirmwareLog *FirmwareLogWrite
	// RowVersion, when not 0, is the agent row's version the pulse was
	// judged against: the commit writes only while the row is still at it
	// (else NonceStale). NextRowVersion is the version the commit gives
	// the row (0: the store picks one at random).
	RowVersion     int64
	NextRowVersion int64
	// Explanation, when set, is written with the row in the commit's
	// transaction (evidence.go).
	Explanation *Explanation
	// Sentinel, when set, is what the pulse recorded of Sentinel (its
	// records, the agent's cursor and host program state), written with
	// the row in the commit's transaction: the next epoch's pulse, on any
	// replica, is judged against it.
	Sentinel *SentinelWrite
}

// SentinelWrite is a pulse's Sentinel record (RecordSentinel's arguments).
type SentinelWrite struct {
	Cursor SentinelCursor
	Events []SentinelEvent
	At     time.Time
}

// Store is the verifier's state.
type Store struct {
	db      *sql.DB
	dialect dialect

	// stmts caches prepared statements of the hot path by query text.
	stmts sync.Map
	// group runs the hot path's writes with group commit (batch.go).
	group *batcher
	// ckpt checkpoints a SQLite file's WAL off the write path (checkpoint.go).
	ckpt *checkpointer

	// pulseQueries are the pulse statement's forms (commit.go).
	pulseQueriesOnce sync.Once
	pulseQueries     [3]string

	// quar counts quarantine writes and reads (quarantine_gen.go).
	quar quarantineCounters
}

// prepared returns a cached prepared statement for the query (written with
// '?' placeholders).
func (s *Store) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, s.q(query))
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return runner{s: s}.queryRow(ctx, query, args...)
}

// Engine names accepted by Open.
const (
	EngineSQLite   = "sqlite"
	EnginePostgres = "postgres"
)

// Open opens (creating and migrating as needed) a store. For sqlite dsn is a
// file path; for postgres a connection string.
func Open(ctx context.Context, engine, dsn string) (*Store, error) {
	var (
		db  *sql.DB
		err error
		d   dialect
	)
	switch engine {
	case EngineSQLite, "":
		d = sqliteDialect
		if err := prepareSQLiteFile(dsn); err != nil {
			return nil, err
		}
		mainDSN := sqliteDSN(dsn)
		if dsn != "" {
			// Checkpoints run off the write path (checkpoint.go).
			mainDSN += "&_pragma=wal_autocheckpoint(0)"
		}
		db, err = sql.Open("sqlite", mainDSN)
		if err == nil {
			// One writer at a time is SQLite's model; a single connection
			// avoids SQLITE_BUSY between our own goroutines.
			db.SetMaxOpenConns(1)
		}
	case EnginePostgres:
		d = postgresDialect
		db, err = sql.Open("pgx", dsn)
		if err == nil {
			db.SetMaxOpenConns(16)
			db.SetMaxIdleConns(16)
		}
	default:
		return nil, fmt.Errorf("store: unknown engine %q (want sqlite or postgres)", engine)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", engine, err)
	}
	s := &Store{db: db, dialect: d}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect %s: %w", engine, err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if d.name == EngineSQLite {
		if dsn != "" {
			if err := s.startCheckpointer(dsn); err != nil {
				db.Close()
				return nil, err
			}
		}
		// One connection: one writer.
		s.startBatcher(1, false)
	} else {
		s.startBatcher(4, true)
	}
	return s, nil
}

func sqliteDSN(path string) string {
	if path == "" {
		path = ":memory:"
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return "file:" + path + sep + "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)"
}

// Close closes the database.
func (s *Store) Close() error {
	s.stopBatcher()
	s.stmts.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
	s.stopCheckpointer()
	return s.db.Close()
}

// DB exposes the handle for packages that add their own tables through
// migrations registered here.
func (s *Store) DB() *sql.DB { return s.db }

// Engine names the engine in use.
func (s *Store) Engine() string { return s.dialect.name }

func (s *Store) q(query string) string { return s.dialect.rebind(query) }

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

const agentColumns = `id, partition, tpm, ek_public, ek_sha256, ek_certificate, ak_public, ak_name, enrolled_at,
	last_seq, reset_count, restart_count, tpm_clock, firmware_log_sha256, runtime_records, runtime_count,
	last_pulse_at, last_verdict, last_reason, last_message, policy_digest, address, quarantined,
	lkg_binary_sha256, lkg_bpf, lkg_at, stream_replica, nonce_epoch, runtime_pcr, transient_streak, desync_streak, lkg_boot, lkg_bpf_builds, row_version, agent_version`

type scanner interface{ Scan(dest ...any) error }

func scanAgent(row scanner) (*Agent, error) {
	var (
		a                         Agent
		tpm                       bool
		enrolled, lastPulse       int64
		seq, clock, runtimeCount  int64
		reset, restart            int64
		verdict, reason           int64
		ekPub, ekSHA, ekCert      []byte
		lkgAt, epoch              int64
		rtPCR, tStreak, dStreak   int64
		akPub, akName, fwSHA, rtR []byte
	)
	err := row.Scan(&a.ID, &a.Partition, &tpm, &ekPub, &ekSHA, &ekCert, &akPub, &akName, &enrolled,
		&seq, &reset, &restart, &clock, &fwSHA, &rtR, &runtimeCount,
		&lastPulse, &verdict, &reason, &a.LastMessage, &a.PolicyDigest, &a.Address, &a.Quarantined,
		&a.LKG.BinarySHA256, &a.LKG.BPF, &lkgAt, &a.StreamReplica, &epoch, &rtPCR, &tStreak, &dStreak, &a.LKG.Boot, &a.LKG.BPFBuilds, &a.RowVersion, &a.AgentVersion)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: scan agent: %w", err)
	}
	a.TPM = tpm
	a.EKPublic, a.EKSHA256, a.EKCertificate, a.AKPublic, a.AKName = ekPub, ekSHA, ekCert, akPub, akName
	a.EnrolledAt, a.LastPulseAt = fromNanos(enrolled), fromNanos(lastPulse)
	a.LastSeq, a.TPMClock, a.RuntimeCount = uint64(seq), uint64(clock), uint64(runtimeCount)
	a.ResetCount, a.RestartCount = uint32(reset), uint32(restart)
	a.LastVerdict, a.LastReason = int32(verdict), int32(reason)
	a.FirmwareLogSHA256, a.RuntimeRecords = fwSHA, rtR
	a.LKG.At = fromNanos(lkgAt)
	a.NonceEpoch = uint64(epoch)
	a.RuntimePCR, a.TransientStreak, a.DesyncStreak = uint32(rtPCR), uint32(tStreak), uint32(dStreak)
	return &a, nil
}

// GetAgent returns the agent or ErrNotFound.
func (s *Store) GetAgent(ctx context.Context, id string) (*Agent, error) {
	row := s.queryRow(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = ?`, id)
	return scanAgent(row)
}

// CountByVerdict returns how many agents hold each last verdict: one
// aggregate, where ListAgents would copy every row (keys, certificates,
// runtime logs) while holding SQLite's only connection.
func (s *Store) CountByVerdict(ctx context.Context) (map[int32]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT last_verdict, COUNT(*) FROM agents GROUP BY last_verdict`)
	if err != nil {
		return nil, fmt.Errorf("store: count agents by verdict: %w", err)
	}
	defer rows.Close()
	out := map[int32]int{}
	for rows.Next() {
		var v int32
		var n int
		if err := rows.Scan(&v, &n); err != nil {
			return nil, fmt.Errorf("store: count agents by verdict: %w", err)
		}
		out[v] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: count agents by verdict: %w", err)
	}
	return out, nil
}

// ListAgents returns every agent ordered by ID.
func (s *Store) ListAgents(ctx context.Context) ([]*Agent, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+agentColumns+` FROM agents ORDER BY id`))
	if err != nil {
		return nil, fmt.Errorf("store: list agents: %w", err)
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
	return out, rows.Err()
}

// EnrollAgent records an enrolled agent. A new agent is inserted. An agent
// that exists is updated only when its EK is the same (a new AK on the same
// TPM, e.g. after the AK was cleared); a different EK returns ErrConflict:
// the caller treats it as an identity takeover attempt. The check and the
// write are one transaction, and the write repeats the check, so two
// replicas cannot both win. EnrollAgentLimited (enroll.go) also bounds how
// many agent IDs one EK backs and says what the enrollment replaced.
//
// A re-enrollment drops the stored runtime log (the agent resends it from
// record 0, and the quoted PCR forces it to send every record of the boot).
// When the AK changes, the evidence baseline goes too: the TPM obfuscates
// reset and restart counts per signing key, so counts seen under the old AK
// say nothing about reboots under the new one. The TPM clock is kept (it is
// not obfuscated) so a rollback is still caught.
func (s *Store) EnrollAgent(ctx context.Context, a *Agent) error {
	_, err := s.EnrollAgentLimited(ctx, a, 0)
	return err
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// CreateEnrollment stores a pending credential-activation challenge. It
// replaces the agent's earlier pending ones: an agent answers one challenge
// at a time, and rows an agent asks for and never answers stay bounded by
// the number of agent IDs.
func (s *Store) CreateEnrollment(ctx context.Context, e *Enrollment) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: create enrollment: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM enrollments WHERE agent_id = ?`), e.AgentID); err != nil {
		return fmt.Errorf("store: create enrollment: %w", err)
	}
	_, err = tx.ExecContext(ctx, s.q(`INSERT INTO enrollments (id, agent_id, partition, secret_sha256, ek_public,
		ek_sha256, ek_certificate, ak_public, ak_name, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		e.ID, e.AgentID, e.Partition, e.SecretSHA256, e.EKPublic, nilIfEmpty(e.EKSHA256), e.EKCertificate, e.AKPublic, e.AKName, nanos(e.Expires))
	if err != nil {
		return fmt.Errorf("store: create enrollment: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: create enrollment: %w", err)
	}
	return nil
}

// TakeEnrollment removes and returns a pending enrollment of the agent. It
// can be taken once: a second call returns ErrNotFound.
func (s *Store) TakeEnrollment(ctx context.Context, id, agentID string) (*Enrollment, error) {
	row := s.db.QueryRowContext(ctx, s.q(`DELETE FROM enrollments WHERE id = ? AND agent_id = ?
		RETURNING id, agent_id, partition, secret_sha256, ek_public, ek_sha256, ek_certificate, ak_public, ak_name, expires_at`), id, agentID)
	var (
		e       Enrollment
		expires int64
	)
	err := row.Scan(&e.ID, &e.AgentID, &e.Partition, &e.SecretSHA256, &e.EKPublic, &e.EKSHA256, &e.EKCertificate, &e.AKPublic, &e.AKName, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: take enrollment: %w", err)
	}
	e.Expires = fromNanos(expires)
	return &e, nil
}

// Secret returns the named secret, creating it with gen when absent. Two
// replicas creating it at once agree on one value.
func (s *Store) Secret(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error) {
	var v []byte
	err := s.db.QueryRowContext(ctx, s.q(`SELECT value FROM secrets WHERE name = ?`), name).Scan(&v)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store: read secret %s: %w", name, err)
	}
	fresh, err := gen()
	if err != nil {
		return nil, fmt.Errorf("store: create secret %s: %w", name, err)
	}
	if _, err := s.db.ExecContext(ctx, s.q(`INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`), name, fresh); err != nil {
		return nil, fmt.Errorf("store: create secret %s: %w", name, err)
	}
	if err := s.db.QueryRowContext(ctx, s.q(`SELECT value FROM secrets WHERE name = ?`), name).Scan(&v); err != nil {
		return nil, fmt.Errorf("store: read secret %s: %w", name, err)
	}
	return v, nil
}
