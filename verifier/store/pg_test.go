package store_test

import (
	"context"
	"os"
	"testing"

	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/verifier/store"
)

// postgresStores returns a store on a fresh database of the shared throwaway
// PostgreSQL cluster (fails in CI when PostgreSQL is missing; skipped in -short).
func postgresStores(t *testing.T) map[string]*store.Store {
	t.Helper()
	if testing.Short() {
		return nil
	}
	dsn := pgtest.NewDatabase(t)
	s, err := store.Open(context.Background(), store.EnginePostgres, dsn)
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return map[string]*store.Store{store.EnginePostgres: s}
}

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
