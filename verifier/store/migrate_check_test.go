package store_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pulse-attest/pulse/verifier/store"
)

// fixtureDB copies the committed schema-14 store (testdata/upgrade-schema14,
// made by that release's binaries) into a temporary directory.
func fixtureDB(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "upgrade-schema14", "verifier.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "verifier.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	info, err := store.CheckBackup(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return info.SHA256
}

// TestUpgradeFixture: the store a schema-14 deployment left is reported
// with its pending migrations, untouched by the check, then migrated to
// this binary's schema with every agent's enrollment and last-known-good.
func TestUpgradeFixture(t *testing.T) {
	ctx := context.Background()
	path := fixtureDB(t)
	before := fileDigest(t, path)
	st, err := store.CheckSchema(ctx, store.EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Current != 14 || st.Known != store.KnownSchemaVersion() || len(st.Unknown) != 0 {
		t.Fatalf("status %+v", st)
	}
	if len(st.Pending) != store.KnownSchemaVersion()-14 {
		t.Fatalf("pending %v, want versions 15..%d", st.Pending, store.KnownSchemaVersion())
	}
	if fileDigest(t, path) != before {
		t.Fatal("migrate --check changed the store")
	}
	was, after, err := store.ApplyMigrations(ctx, store.EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	if was.Current != 14 || !after.UpToDate() || after.Current != store.KnownSchemaVersion() {
		t.Fatalf("before %+v after %+v", was, after)
	}
	s, err := store.Open(ctx, store.EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	edge, err := s.GetAgent(ctx, "edge-old-1")
	if err != nil {
		t.Fatal(err)
	}
	if !edge.TPM || len(edge.AKPublic) == 0 || len(edge.EKSHA256) != 32 || edge.LKG.BinarySHA256 == "" || edge.LKG.At.IsZero() || edge.LastSeq == 0 {
		t.Fatalf("edge-old-1 lost its enrollment or last-known-good: %+v", edge)
	}
	lab, err := s.GetAgent(ctx, "lab-old-1")
	if err != nil {
		t.Fatal(err)
	}
	if lab.TPM || lab.Partition != "lab" {
		t.Fatalf("lab-old-1: %+v", lab)
	}
	// A second apply is a no-op.
	again, _, err := store.ApplyMigrations(ctx, store.EngineSQLite, path)
	if err != nil || !again.UpToDate() {
		t.Fatalf("second apply: %+v %v", again, err)
	}
}

// TestMigrateRefusesNewerSchema: a store migrated by a newer binary is
// reported as such and neither migrated nor opened by the check or apply
// (an older binary must not judge with a schema it does not know).
func TestMigrateRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := fixtureDB(t)
	if _, _, err := store.ApplyMigrations(ctx, store.EngineSQLite, path); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	future := store.KnownSchemaVersion() + 1
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, 1)`, future); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st, err := store.CheckSchema(ctx, store.EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	var newer *store.SchemaNewerError
	if !errors.As(st.Err(), &newer) || newer.Store != future || newer.Binary != store.KnownSchemaVersion() || st.UpToDate() {
		t.Fatalf("check of a newer store: %+v, err %v", st, st.Err())
	}
	digest := fileDigest(t, path)
	if _, _, err := store.ApplyMigrations(ctx, store.EngineSQLite, path); !errors.Is(err, store.ErrSchemaNewer) {
		t.Fatalf("apply on a newer store: %v, want ErrSchemaNewer", err)
	}
	if fileDigest(t, path) != digest {
		t.Fatal("a refused apply changed the store")
	}
	// The verifier's own start refuses it too.
	if s, err := store.Open(ctx, store.EngineSQLite, path); !errors.Is(err, store.ErrSchemaNewer) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("open of a newer store: %v, want ErrSchemaNewer", err)
	}
}

// TestCheckSchemaNoStore: checking a missing file creates nothing; apply
// creates a store at this binary's schema.
func TestCheckSchemaNoStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "verifier.db")
	if _, err := store.CheckSchema(ctx, store.EngineSQLite, path); !errors.Is(err, store.ErrNoStore) {
		t.Fatalf("check of a missing store: %v, want ErrNoStore", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("check created the store: %v", err)
	}
	before, after, err := store.ApplyMigrations(ctx, store.EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	if before.Current != 0 || len(before.Pending) != store.KnownSchemaVersion() || !after.UpToDate() {
		t.Fatalf("before %+v after %+v", before, after)
	}
	if _, err := store.CheckSchema(ctx, "oracle", "x"); err == nil {
		t.Fatal("unknown engine accepted")
	}
}
