package store

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"
)

var statementEnd = regexp.MustCompile(`;[ \t]*(\r?\n|$)`)

// migrations are applied in order, once each, inside a transaction. Never edit
// a released migration: append a new one.
var migrations = []string{
	// 1: agents, enrollments, nonces, firmware logs.
	`CREATE TABLE agents (
		id TEXT PRIMARY KEY,
		partition TEXT NOT NULL DEFAULT '',
		tpm BOOLEAN NOT NULL,
		ek_public {{blob}},
		ek_sha256 {{blob}},
		ek_certificate {{blob}},
		ak_public {{blob}},
		ak_name {{blob}},
		enrolled_at {{bigint}} NOT NULL,
		last_seq {{bigint}} NOT NULL DEFAULT 0,
		reset_count {{bigint}} NOT NULL DEFAULT 0,
		restart_count {{bigint}} NOT NULL DEFAULT 0,
		tpm_clock {{bigint}} NOT NULL DEFAULT 0,
		firmware_log_sha256 {{blob}},
		runtime_records {{blob}},
		runtime_count {{bigint}} NOT NULL DEFAULT 0,
		last_pulse_at {{bigint}} NOT NULL DEFAULT 0,
		last_verdict {{bigint}} NOT NULL DEFAULT 0,
		last_reason {{bigint}} NOT NULL DEFAULT 0,
		last_message TEXT NOT NULL DEFAULT '',
		policy_digest TEXT NOT NULL DEFAULT '',
		address TEXT NOT NULL DEFAULT ''
	);
	CREATE TABLE enrollments (
		id TEXT PRIMARY KEY,
		agent_id TEXT NOT NULL,
		partition TEXT NOT NULL DEFAULT '',
		secret_sha256 {{blob}} NOT NULL,
		ek_public {{blob}},
		ek_sha256 {{blob}},
		ek_certificate {{blob}},
		ak_public {{blob}},
		ak_name {{blob}},
		expires_at {{bigint}} NOT NULL
	);
	CREATE TABLE nonces (
		nonce_sha256 {{blob}} PRIMARY KEY,
		agent_id TEXT NOT NULL,
		expires_at {{bigint}} NOT NULL,
		spent_at {{bigint}} NOT NULL DEFAULT 0
	);
	CREATE INDEX nonces_expires ON nonces (expires_at);
	CREATE TABLE firmware_logs (
		sha256 {{blob}} PRIMARY KEY,
		log {{blob}} NOT NULL
	)`,
	// 2: operations — alerts, verdict history, last-known-good, update
	// windows, quarantine, cross-replica directives, stream presence.
	`CREATE TABLE alerts (
		id TEXT PRIMARY KEY,
		dedup_key TEXT NOT NULL UNIQUE,
		agent_id TEXT NOT NULL,
		kind TEXT NOT NULL,
		severity {{bigint}} NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		message TEXT NOT NULL DEFAULT '',
		replica TEXT NOT NULL DEFAULT '',
		created_at {{bigint}} NOT NULL,
		acked_at {{bigint}} NOT NULL DEFAULT 0,
		acked_by TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX alerts_agent ON alerts (agent_id, created_at);
	CREATE TABLE history (
		agent_id TEXT NOT NULL,
		at {{bigint}} NOT NULL,
		verdict {{bigint}} NOT NULL,
		reason {{bigint}} NOT NULL,
		message TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX history_agent ON history (agent_id, at);
	ALTER TABLE agents ADD COLUMN lkg_binary_sha256 TEXT NOT NULL DEFAULT '';
	ALTER TABLE agents ADD COLUMN lkg_bpf TEXT NOT NULL DEFAULT '';
	ALTER TABLE agents ADD COLUMN lkg_at {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN interval_ms {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN deadline_at {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN blinded_at {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN stream_replica TEXT NOT NULL DEFAULT '';
	ALTER TABLE agents ADD COLUMN stream_changed_at {{bigint}} NOT NULL DEFAULT 0;
	CREATE TABLE update_windows (
		id TEXT PRIMARY KEY,
		digest TEXT NOT NULL,
		agents TEXT NOT NULL,
		start_at {{bigint}} NOT NULL,
		end_at {{bigint}} NOT NULL,
		created_by TEXT NOT NULL DEFAULT '',
		created_at {{bigint}} NOT NULL
	);
	CREATE TABLE quarantine (
		address TEXT PRIMARY KEY,
		offender TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		created_at {{bigint}} NOT NULL
	);
	CREATE TABLE directives (
		seq {{serial}},
		target TEXT NOT NULL,
		kind TEXT NOT NULL,
		body {{blob}} NOT NULL,
		created_at {{bigint}} NOT NULL
	)`,
	// 3: what each agent's Shield reports it drops.
	`ALTER TABLE agents ADD COLUMN quarantined TEXT NOT NULL DEFAULT ''`,
	// 4: an operator's release holds off re-isolation until the agent is
	// trusted again.
	`CREATE TABLE isolation_holds (
		agent_id TEXT PRIMARY KEY,
		held_by TEXT NOT NULL,
		held_at {{bigint}} NOT NULL
	)`,
	// 5: the sweeper looks agents up by deadline.
	`CREATE INDEX agents_deadline ON agents (deadline_at)`,
	// 6: nonces are authenticated by a key every replica shares and made
	// single-use by a per-agent epoch: issuing one writes nothing, spending
	// one is the agent row's conditional increment. The nonce table goes.
	`ALTER TABLE agents ADD COLUMN nonce_epoch {{bigint}} NOT NULL DEFAULT 0;
	CREATE TABLE secrets (
		name TEXT PRIMARY KEY,
		value {{blob}} NOT NULL
	);
	DROP TABLE nonces`,
	// 7: soundness — the runtime PCR is the verifier's, recorded at
	// enrollment; streaks of non-compromise failures are counted so they
	// escalate; firmware logs are referenced per agent (quota, garbage
	// collection); an EK backs a bounded number of agent IDs.
	`ALTER TABLE agents ADD COLUMN runtime_pcr {{bigint}} NOT NULL DEFAULT 14;
	ALTER TABLE agents ADD COLUMN transient_streak {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN desync_streak {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN lkg_boot TEXT NOT NULL DEFAULT '';
	ALTER TABLE agents ADD COLUMN lkg_bpf_builds TEXT NOT NULL DEFAULT '';
	CREATE INDEX agents_ek ON agents (ek_sha256);
	CREATE INDEX enrollments_expires ON enrollments (expires_at);
	ALTER TABLE firmware_logs ADD COLUMN size {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE firmware_logs ADD COLUMN stored_at {{bigint}} NOT NULL DEFAULT 0;
	CREATE TABLE agent_firmware_logs (
		agent_id TEXT NOT NULL,
		sha256 {{blob}} NOT NULL,
		used_at {{bigint}} NOT NULL,
		PRIMARY KEY (agent_id, sha256)
	);
	CREATE INDEX agent_firmware_logs_sha ON agent_firmware_logs (sha256)`,
	// 8: firmware logs stored before references existed: each agent's
	// current log becomes its reference, so collecting unreferenced logs
	// keeps them; sizes are filled in. Logs no agent holds stay unreferenced
	// (stored_at 0) and go at the first collection.
	`INSERT INTO agent_firmware_logs (agent_id, sha256, used_at)
		SELECT a.id, a.firmware_log_sha256, a.last_pulse_at FROM agents a
		WHERE a.firmware_log_sha256 IS NOT NULL
			AND EXISTS (SELECT 1 FROM firmware_logs f WHERE f.sha256 = a.firmware_log_sha256)
		ON CONFLICT (agent_id, sha256) DO NOTHING;
	UPDATE firmware_logs SET size = length(log) WHERE size = 0`,
	// directive outbox: each row names the transaction that wrote it
	// (PostgreSQL), so pollers read it completely whatever the commit order
	// (directives.go).
	`ALTER TABLE directives ADD COLUMN tx_id {{txid}};
	CREATE INDEX directives_tx ON directives (tx_id)`,
	// revocations: operator-revoked agent certificates (by serial or SPKI
	// SHA-256) and agent IDs, shared by every replica (revocations.go).
	`CREATE TABLE revocations (
		kind TEXT NOT NULL,
		value TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		created_by TEXT NOT NULL DEFAULT '',
		created_at {{bigint}} NOT NULL,
		PRIMARY KEY (kind, value)
	)`,
	// alert outbox: an alert is dispatched (audit log, webhooks) by the
	// replica holding its claim; one stored but never marked dispatched is
	// claimed again once the claim is stale (alerts.go). Alerts stored
	// before the outbox count as dispatched.
	`ALTER TABLE alerts ADD COLUMN dispatched_at {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE alerts ADD COLUMN claimed_at {{bigint}} NOT NULL DEFAULT 0;
	UPDATE alerts SET dispatched_at = CASE WHEN created_at > 0 THEN created_at ELSE 1 END, claimed_at = created_at;
	CREATE INDEX alerts_undispatched ON alerts (dispatched_at, claimed_at)`,
	// isolation holds live on the agent's row, with an expiry (the
	// database's clock), so the pulse commit that accepts the agent ends
	// the hold and isolate/release serialise on the row; a silence is
	// confirmed before it isolates. Holds carried over expire a day after
	// they were set; BLINDED marks from before count as confirmed.
	`ALTER TABLE agents ADD COLUMN hold_until {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN hold_at {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN hold_by TEXT NOT NULL DEFAULT '';
	ALTER TABLE agents ADD COLUMN silence_confirmed_at {{bigint}} NOT NULL DEFAULT 0;
	UPDATE agents SET
		hold_until = (SELECT h.held_at + 86400000000000 FROM isolation_holds h WHERE h.agent_id = agents.id),
		hold_at = (SELECT h.held_at FROM isolation_holds h WHERE h.agent_id = agents.id),
		hold_by = (SELECT h.held_by FROM isolation_holds h WHERE h.agent_id = agents.id)
		WHERE id IN (SELECT agent_id FROM isolation_holds);
	UPDATE agents SET silence_confirmed_at = blinded_at WHERE blinded_at > 0;
	DROP TABLE isolation_holds`,
	// replicas: the digest of the policy set each verifier replica enforces,
	// recorded from a loop, so replicas judging with different policies are
	// seen (replicas.go).
	`CREATE TABLE replicas (
		replica_id TEXT PRIMARY KEY,
		policy_digest TEXT NOT NULL,
		seen_at {{bigint}} NOT NULL
	)`,
	// agent addresses: the addresses each agent's accepted pulses and
	// enrolment came from, bounded per agent and expiring, so isolation
	// hits only an offender's own addresses and never one several agents
	// use (a NAT, a proxy) (addresses.go).
	`CREATE TABLE agent_addresses (
		agent_id TEXT NOT NULL,
		address TEXT NOT NULL,
		first_seen {{bigint}} NOT NULL,
		last_seen {{bigint}} NOT NULL,
		PRIMARY KEY (agent_id, address)
	);
	CREATE INDEX agent_addresses_address ON agent_addresses (address, last_seen)`,
	// maintenance windows: an operator expects an agent's planned stop
	// until until_at (pulsectl agents maintenance; maintenance.go).
	`CREATE TABLE maintenance_windows (
		agent_id TEXT PRIMARY KEY,
		until_at {{bigint}} NOT NULL,
		set_by TEXT NOT NULL,
		reason TEXT NOT NULL DEFAULT '',
		set_at {{bigint}} NOT NULL
	)`,
	// Sentinel: the last records each agent reported in committed pulses
	// (bounded per agent) and, per agent, the boot and last sequence number
	// the verifier holds, so a gap in the record stream is seen
	// (sentinel.go).
	`CREATE TABLE sentinel_events (
		agent_id TEXT NOT NULL,
		boot TEXT NOT NULL,
		seq {{bigint}} NOT NULL,
		kind TEXT NOT NULL,
		at {{bigint}} NOT NULL,
		sender_pid {{bigint}} NOT NULL DEFAULT 0,
		sender_uid {{bigint}} NOT NULL DEFAULT 0,
		sender_comm TEXT NOT NULL DEFAULT '',
		target_pid {{bigint}} NOT NULL DEFAULT 0,
		signal {{bigint}} NOT NULL DEFAULT 0,
		detail TEXT NOT NULL DEFAULT '',
		finding TEXT NOT NULL DEFAULT '',
		recorded_at {{bigint}} NOT NULL,
		PRIMARY KEY (agent_id, boot, seq)
	);
	CREATE TABLE sentinel_cursors (
		agent_id TEXT PRIMARY KEY,
		boot TEXT NOT NULL,
		last_seq {{bigint}} NOT NULL,
		updated_at {{bigint}} NOT NULL
	)`,
	// Row versions: every write of an agent's row gives it a new random
	// version (the pulse commit sets its own; triggers every other writer,
	// present and future), so a verifier's cached copy of the row is valid
	// exactly while the version is the one it read (commit.go, the
	// verifier's agent cache). Random, not a counter: a row deleted and
	// enrolled again never repeats a version a cache may hold.
	`ALTER TABLE agents ADD COLUMN row_version {{bigint}} NOT NULL DEFAULT 0;
	{{row_version_triggers}}`,
	// Explanations: per agent, the findings of its last verdict and the
	// evidence of its last verified pulse, bounded (evidence.go), written
	// only by the pulse's commit.
	`CREATE TABLE agent_explanations (
		agent_id TEXT PRIMARY KEY,
		at {{bigint}} NOT NULL,
		verdict {{bigint}} NOT NULL DEFAULT 0,
		reason {{bigint}} NOT NULL DEFAULT 0,
		policy TEXT NOT NULL DEFAULT '',
		findings {{blob}},
		evidence_at {{bigint}} NOT NULL DEFAULT 0,
		evidence {{blob}},
		digest {{blob}} NOT NULL
	)`,
	// The agent's version as its last verified pulse reported it
	// (agent_version, signed with the pulse; informational: the binary's
	// digest is what is attested).
	`ALTER TABLE agents ADD COLUMN agent_version TEXT NOT NULL DEFAULT ''`,
	// The verifier's state of each agent's host program list, kept with
	// its Sentinel cursor: the boot's highest accounted program ID, the
	// digest of the list judged, its unexplained programs and Sentinel's
	// unmatched load records (JSON; verifier/hostprogs.go).
	`ALTER TABLE sentinel_cursors ADD COLUMN host_programs TEXT NOT NULL DEFAULT ''`,
	// The agent's TLS certificate as the pulse's handshake verified it
	// (subject, escaped and clipped; NotAfter) and the kernel summary of
	// its last verified pulse (eBPF snapshot, Fortress, Sentinel; JSON),
	// kept with its explanation and written by the pulse's commit
	// (explain_identity.go).
	`ALTER TABLE agent_explanations ADD COLUMN cert_subject TEXT NOT NULL DEFAULT '';
	ALTER TABLE agent_explanations ADD COLUMN cert_not_after {{bigint}} NOT NULL DEFAULT 0;
	ALTER TABLE agent_explanations ADD COLUMN kernel {{blob}}`,
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, s.dialect.ddl(`CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, applied_at {{bigint}} NOT NULL)`)); err != nil {
		return fmt.Errorf("store: create schema_migrations: %w", err)
	}
	// A store a newer release migrated is refused, never served by an
	// older binary that does not know its tables.
	applied, err := appliedVersions(ctx, s.db, s.dialect)
	if err != nil {
		return err
	}
	if err := schemaStatus(s.dialect.name, applied, KnownSchemaVersion()).Err(); err != nil {
		return err
	}
	for i, m := range migrations {
		version := i + 1
		if err := s.applyMigration(ctx, version, m); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) applyMigration(ctx context.Context, version int, ddl string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: migration %d: %w", version, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after commit
	if s.dialect.name == EnginePostgres {
		// Serialise concurrent replicas starting at once.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7243001)`); err != nil {
			return fmt.Errorf("store: migration lock: %w", err)
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), version).Scan(&n); err != nil {
		return fmt.Errorf("store: migration %d: %w", version, err)
	}
	if n > 0 {
		return nil
	}
	for _, stmt := range splitStatements(s.dialect.ddl(ddl)) {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("store: migration %d: %w", version, err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`), version, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("store: migration %d: %w", version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: migration %d: commit: %w", version, err)
	}
	return nil
}

// SchemaVersion returns the highest applied migration.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: schema version: %w", err)
	}
	return v, nil
}

// splitStatements splits a migration at each ';' that ends a line (a
// trigger's body holds ';' inside a line).
func splitStatements(ddl string) []string {
	var out []string
	for _, stmt := range statementEnd.Split(ddl, -1) {
		if strings.TrimSpace(stmt) != "" {
			out = append(out, stmt)
		}
	}
	return out
}
