package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/pulse-attest/pulse/internal/pgtest"
)

func TestSchemaStatus(t *testing.T) {
	for _, tc := range []struct {
		name             string
		applied          []int
		known            int
		current          int
		pending, unknown []int
		upToDate         bool
	}{
		{"new store", nil, 3, 0, []int{1, 2, 3}, nil, false},
		{"up to date", []int{1, 2, 3}, 3, 3, []int{}, nil, true},
		{"behind", []int{1, 2}, 4, 2, []int{3, 4}, nil, false},
		{"gap", []int{1, 3}, 3, 3, []int{2}, nil, false},
		{"unordered", []int{3, 1, 2}, 3, 3, []int{}, nil, true},
		{"newer", []int{1, 2, 3, 4}, 3, 4, []int{}, []int{4}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := schemaStatus(EngineSQLite, tc.applied, tc.known)
			if st.Current != tc.current || !reflect.DeepEqual(st.Pending, tc.pending) || !reflect.DeepEqual(st.Unknown, tc.unknown) || st.UpToDate() != tc.upToDate {
				t.Fatalf("%+v", st)
			}
			var newer *SchemaNewerError
			if got := errors.As(st.Err(), &newer); got != (len(tc.unknown) > 0) {
				t.Fatalf("Err() = %v", st.Err())
			}
			if st.String() == "" {
				t.Fatal("empty report")
			}
		})
	}
}

// migrateTo applies the first n migrations only: a store as an older
// release left it.
func migrateTo(t *testing.T, engine, dsn string, n int) {
	t.Helper()
	ctx := context.Background()
	d := sqliteDialect
	driver := "sqlite"
	if engine == EnginePostgres {
		d, driver = postgresDialect, "pgx"
	}
	if engine == EngineSQLite {
		// The store holds secrets: the verifier wants it 0600.
		f, err := os.OpenFile(dsn, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := &Store{db: db, dialect: d}
	if _, err := db.ExecContext(ctx, d.ddl(`CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, applied_at {{bigint}} NOT NULL)`)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := s.applyMigration(ctx, i+1, migrations[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, s.q(`INSERT INTO agents (id, partition, tpm, ek_sha256, ak_public, enrolled_at, lkg_binary_sha256, lkg_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), "old-1", "fleet", true, []byte("ek-digest"), []byte("ak"), int64(1e18), "beef", int64(2e18)); err != nil {
		t.Fatal(err)
	}
}

// TestMigrationPath: a store left by an older release (schema 14) on
// each engine is reported behind, migrated by ApplyMigrations, and keeps
// its agents; PostgreSQL's path is the one pg_restore leaves.
func TestMigrationPath(t *testing.T) {
	engines := map[string]string{EngineSQLite: filepath.Join(t.TempDir(), "old.db")}
	if !testing.Short() {
		engines[EnginePostgres] = pgtest.NewDatabase(t)
	}
	for engine, dsn := range engines {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			migrateTo(t, engine, dsn, 14)
			st, err := CheckSchema(ctx, engine, dsn)
			if err != nil {
				t.Fatal(err)
			}
			if st.Current != 14 || len(st.Pending) != len(migrations)-14 {
				t.Fatalf("check: %+v", st)
			}
			_, after, err := ApplyMigrations(ctx, engine, dsn)
			if err != nil {
				t.Fatal(err)
			}
			if !after.UpToDate() || after.Current != len(migrations) {
				t.Fatalf("after apply: %+v", after)
			}
			s, err := Open(ctx, engine, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			a, err := s.GetAgent(ctx, "old-1")
			if err != nil {
				t.Fatal(err)
			}
			if !a.TPM || a.LKG.BinarySHA256 != "beef" || a.RuntimePCR != DefaultRuntimePCR {
				t.Fatalf("agent after migration: %+v", a)
			}
		})
	}
}
