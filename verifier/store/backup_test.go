package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

func enrollN(t *testing.T, s *store.Store, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		id := fmt.Sprintf("edge-%04d", i)
		if err := s.EnrollAgent(context.Background(), &store.Agent{ID: id, TPM: true, EKPublic: []byte(id), EKSHA256: sum(id), AKPublic: []byte("ak-" + id), EnrolledAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBackupWhileServing: a backup taken from another handle while the
// store is being written is a consistent, intact store (0600) holding a
// prefix of the writes, and opens as a store with its agents and LKG.
func TestBackupWhileServing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "verifier.db")
	s, err := store.Open(ctx, store.EngineSQLite, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enrollN(t, s, 0, 50)
	lkg := store.LKG{BinarySHA256: "beef", At: time.Now()}
	if err := s.SetLKG(ctx, "edge-0000", lkg); err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		written atomic.Int64
	)
	written.Store(50)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 50; !stop.Load(); i++ {
			id := fmt.Sprintf("edge-%04d", i)
			if err := s.EnrollAgent(ctx, &store.Agent{ID: id, TPM: true, EKPublic: []byte(id), EKSHA256: sum(id), AKPublic: []byte("ak"), EnrolledAt: time.Now()}); err != nil {
				t.Error(err)
				return
			}
			written.Store(int64(i + 1))
		}
	}()
	time.Sleep(50 * time.Millisecond)
	out := filepath.Join(dir, "backup.db")
	info, err := store.BackupSQLite(ctx, src, out, false)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if info.Agents < 50 || int64(info.Agents) > written.Load() || info.SchemaVersion != store.KnownSchemaVersion() || len(info.SHA256) != 64 {
		t.Fatalf("backup %+v (written %d)", info, written.Load())
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode: %v %v", st.Mode(), err)
	}
	b, err := store.Open(ctx, store.EngineSQLite, out)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := b.GetLKG(ctx, "edge-0000")
	if err != nil || got.BinarySHA256 != "beef" {
		t.Fatalf("lkg in backup: %+v %v", got, err)
	}
	// Overwriting needs asking.
	if _, err := store.BackupSQLite(ctx, src, out, false); !errors.Is(err, store.ErrBackupExists) {
		t.Fatalf("backup over an existing file: %v, want ErrBackupExists", err)
	}
	if _, err := store.BackupSQLite(ctx, src, out, true); err != nil {
		t.Fatalf("backup with overwrite: %v", err)
	}
}

// TestCheckBackupRefuses: a damaged file, a file that is no SQLite
// database and a database without Pulse's schema are refused.
func TestCheckBackupRefuses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "verifier.db")
	s, err := store.Open(ctx, store.EngineSQLite, src)
	if err != nil {
		t.Fatal(err)
	}
	enrollN(t, s, 0, 200)
	good := filepath.Join(dir, "good.db")
	if _, err := store.BackupSQLite(ctx, src, good, false); err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	damaged := append([]byte(nil), raw...)
	for i := len(damaged) / 2; i < len(damaged)/2+4096 && i < len(damaged); i++ {
		damaged[i] ^= 0x5a
	}
	empty := filepath.Join(dir, "empty.db")
	e, err := os.Create(empty)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	for name, body := range map[string][]byte{
		"damaged":  damaged,
		"not-sql":  []byte("hello, this is not a database at all, not even close...................................................."),
		"header":   raw[:100],
		"no-table": nil,
	} {
		t.Run(name, func(t *testing.T) {
			path := empty
			if body != nil {
				path = filepath.Join(dir, name+".db")
				if err := os.WriteFile(path, body, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := store.CheckBackup(ctx, path); !errors.Is(err, store.ErrBackupCorrupt) {
				t.Fatalf("CheckBackup: %v, want ErrBackupCorrupt", err)
			}
			if _, err := store.RestoreSQLite(ctx, path, filepath.Join(dir, "restored-"+name+".db"), false); !errors.Is(err, store.ErrBackupCorrupt) {
				t.Fatalf("RestoreSQLite: %v, want ErrBackupCorrupt", err)
			}
		})
	}
	if _, err := store.CheckBackup(ctx, good); err != nil {
		t.Fatalf("intact backup refused: %v", err)
	}
}

// TestRestore: a restore refuses to replace a store unless asked, and
// drops the replaced store's WAL so it cannot replay into the restored one.
func TestRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "verifier.db")
	s, err := store.Open(ctx, store.EngineSQLite, src)
	if err != nil {
		t.Fatal(err)
	}
	enrollN(t, s, 0, 3)
	backup := filepath.Join(dir, "backup.db")
	if _, err := store.BackupSQLite(ctx, src, backup, false); err != nil {
		t.Fatal(err)
	}
	enrollN(t, s, 3, 10) // after the backup: gone after the restore
	s.Close()
	if err := os.WriteFile(src+"-wal", []byte("stale wal"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.RestoreSQLite(ctx, backup, src, false); !errors.Is(err, store.ErrBackupExists) {
		t.Fatalf("restore over a store: %v, want ErrBackupExists", err)
	}
	info, err := store.RestoreSQLite(ctx, backup, src, true)
	if err != nil {
		t.Fatal(err)
	}
	if info.Agents != 3 {
		t.Fatalf("restored %+v", info)
	}
	if _, err := os.Stat(src + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale WAL left beside the restored store: %v", err)
	}
	if st, _ := os.Stat(src); st.Mode().Perm() != 0o600 {
		t.Fatalf("restored store mode %v", st.Mode())
	}
	r, err := store.Open(ctx, store.EngineSQLite, src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	agents, err := r.ListAgents(ctx)
	if err != nil || len(agents) != 3 {
		t.Fatalf("restored store holds %d agents (%v), want 3", len(agents), err)
	}
}

// BenchmarkBackupSQLite: an online backup of a store of 10,000 agents (each
// with a 4 KiB runtime log), the time the verifier's writers share the file
// with one reader.
func BenchmarkBackupSQLite(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	src := filepath.Join(dir, "verifier.db")
	s, err := store.Open(ctx, store.EngineSQLite, src)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rt := make([]byte, 4096)
	tx, err := s.DB().Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		id := fmt.Sprintf("edge-%05d", i)
		if _, err := tx.Exec(`INSERT INTO agents (id, tpm, ek_sha256, ak_public, enrolled_at, runtime_records) VALUES (?, 1, ?, ?, 1, ?)`, id, sum(id), []byte("ak-"+id), rt); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := filepath.Join(dir, fmt.Sprintf("backup-%d.db", i))
		info, err := store.BackupSQLite(ctx, src, out, false)
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			b.ReportMetric(float64(info.Bytes)/1e6, "MB")
		}
		os.Remove(out)
	}
}
