package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
)

// ErrSchemaNewer is matched (errors.Is) by a SchemaNewerError: the store was
// migrated by a newer binary than this one. Serving it, or migrating it,
// with an older binary would judge agents with a schema it does not know
// (a downgrade): restore the backup taken before the upgrade instead.
var ErrSchemaNewer = errors.New("store schema is newer than this binary")

// ErrNoStore is returned (wrapped) by CheckSchema when a SQLite store file
// does not exist: there is nothing to check or upgrade.
var ErrNoStore = errors.New("no store")

// SchemaNewerError names the store's and the binary's schema versions.
type SchemaNewerError struct {
	Store, Binary int
	// Unknown lists the applied versions this binary does not know.
	Unknown []int
}

func (e *SchemaNewerError) Error() string {
	return fmt.Sprintf("store schema is at version %d, this binary knows versions up to %d (unknown applied versions %v): use the newer binary or restore the backup taken before the upgrade",
		e.Store, e.Binary, e.Unknown)
}

// Unwrap makes errors.Is(err, ErrSchemaNewer) true.
func (e *SchemaNewerError) Unwrap() error { return ErrSchemaNewer }

// KnownSchemaVersion is the highest schema version this binary's migrations
// reach.
func KnownSchemaVersion() int { return len(migrations) }

// SchemaStatus is what CheckSchema found.
type SchemaStatus struct {
	Engine string `json:"engine"`
	// Applied lists the versions recorded in schema_migrations, ascending
	// (empty for a store never opened).
	Applied []int `json:"applied"`
	// Current is the highest applied version (0 when none).
	Current int `json:"current"`
	// Known is KnownSchemaVersion.
	Known int `json:"known"`
	// Pending lists the versions this binary would apply, ascending.
	Pending []int `json:"pending"`
	// Unknown lists applied versions beyond Known (a newer binary's).
	Unknown []int `json:"unknown,omitempty"`
}

// UpToDate reports whether nothing is pending and nothing is unknown.
func (s SchemaStatus) UpToDate() bool { return len(s.Pending) == 0 && len(s.Unknown) == 0 }

// Err returns a *SchemaNewerError when the store holds versions this binary
// does not know, else nil.
func (s SchemaStatus) Err() error {
	if len(s.Unknown) == 0 {
		return nil
	}
	return &SchemaNewerError{Store: s.Current, Binary: s.Known, Unknown: s.Unknown}
}

// String is a one-line report for operators.
func (s SchemaStatus) String() string {
	switch {
	case len(s.Unknown) > 0:
		return fmt.Sprintf("%s store at schema version %d, newer than this binary (knows %d)", s.Engine, s.Current, s.Known)
	case len(s.Pending) == 0:
		return fmt.Sprintf("%s store at schema version %d: up to date", s.Engine, s.Current)
	default:
		return fmt.Sprintf("%s store at schema version %d: %d migration(s) pending (%s), this binary migrates it to %d",
			s.Engine, s.Current, len(s.Pending), joinInts(s.Pending), s.Known)
	}
}

func joinInts(v []int) string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = fmt.Sprint(n)
	}
	return strings.Join(parts, ", ")
}

// CheckSchema reads a store's applied schema versions without changing
// anything: a SQLite file is opened read-only and must exist (ErrNoStore
// otherwise); a PostgreSQL database is only queried.
func CheckSchema(ctx context.Context, engine, dsn string) (SchemaStatus, error) {
	var (
		d   dialect
		db  *sql.DB
		err error
	)
	switch engine {
	case EngineSQLite, "":
		d = sqliteDialect
		if dsn == "" {
			return SchemaStatus{}, fmt.Errorf("store: check schema: an in-memory store has no schema to check: %w", ErrNoStore)
		}
		if _, err := os.Stat(dsn); errors.Is(err, fs.ErrNotExist) {
			return SchemaStatus{}, fmt.Errorf("store: check schema: %s: %w", dsn, ErrNoStore)
		} else if err != nil {
			return SchemaStatus{}, fmt.Errorf("store: check schema: %w", err)
		}
		db, err = sql.Open("sqlite", "file:"+dsn+"?mode=ro&_pragma=busy_timeout(10000)")
	case EnginePostgres:
		d = postgresDialect
		db, err = sql.Open("pgx", dsn)
	default:
		return SchemaStatus{}, fmt.Errorf("store: unknown engine %q (want sqlite or postgres)", engine)
	}
	if err != nil {
		return SchemaStatus{}, fmt.Errorf("store: check schema: open %s: %w", d.name, err)
	}
	defer db.Close()
	applied, err := appliedVersions(ctx, db, d)
	if err != nil {
		return SchemaStatus{}, err
	}
	return schemaStatus(d.name, applied, KnownSchemaVersion()), nil
}

// appliedVersions lists schema_migrations' versions; a database without the
// table has none.
func appliedVersions(ctx context.Context, db *sql.DB, d dialect) ([]int, error) {
	var exists bool
	var q string
	if d.name == EnginePostgres {
		q = `SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_migrations')`
	} else {
		q = `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')`
	}
	if err := db.QueryRowContext(ctx, q).Scan(&exists); err != nil {
		return nil, fmt.Errorf("store: check schema: %w", err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := db.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("store: check schema: %w", err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("store: check schema: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: check schema: %w", err)
	}
	return out, nil
}

// schemaStatus compares applied versions with the known 1..known.
func schemaStatus(engine string, applied []int, known int) SchemaStatus {
	sort.Ints(applied)
	st := SchemaStatus{Engine: engine, Applied: applied, Known: known, Pending: []int{}}
	have := make(map[int]bool, len(applied))
	for _, v := range applied {
		have[v] = true
		if v > st.Current {
			st.Current = v
		}
		if v > known {
			st.Unknown = append(st.Unknown, v)
		}
	}
	for v := 1; v <= known; v++ {
		if !have[v] {
			st.Pending = append(st.Pending, v)
		}
	}
	return st
}

// ApplyMigrations brings a store to this binary's schema: it checks first
// (refusing, with a *SchemaNewerError, a store a newer binary migrated),
// then opens it, which applies each pending migration in its own
// transaction (on PostgreSQL under an advisory lock, so replicas starting
// at once do not race). It returns the status before and after. A SQLite
// store that does not exist yet is created.
func ApplyMigrations(ctx context.Context, engine, dsn string) (before, after SchemaStatus, err error) {
	before, err = CheckSchema(ctx, engine, dsn)
	switch {
	case errors.Is(err, ErrNoStore) && dsn != "":
		before = schemaStatus(EngineSQLite, nil, KnownSchemaVersion())
	case err != nil:
		return before, after, err
	}
	if err := before.Err(); err != nil {
		return before, after, fmt.Errorf("store: migrate: %w", err)
	}
	s, err := Open(ctx, engine, dsn)
	if err != nil {
		return before, after, fmt.Errorf("store: migrate: %w", err)
	}
	if err := s.Close(); err != nil {
		return before, after, fmt.Errorf("store: migrate: close: %w", err)
	}
	after, err = CheckSchema(ctx, engine, dsn)
	return before, after, err
}
