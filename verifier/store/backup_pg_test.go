package store_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/verifier/store"
)

// docBlock returns the ```sh test:NAME block of a markdown file.
func docBlock(t *testing.T, path, name string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		in   bool
		text strings.Builder
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case !in && l == "```sh test:"+name:
			in = true
		case in && l == "```":
			return text.String()
		case in:
			text.WriteString(l + "\n")
		}
	}
	t.Fatalf("%s has no block test:%s", path, name)
	return ""
}

// TestPostgresDumpRestore runs docs/operations.md's PostgreSQL backup and
// restore blocks: a store with agents and their last-known-good is dumped
// with pg_dump while it is open, restored with pg_restore into an empty
// database, and the restored store is at this binary's schema with every
// agent intact. A restore into a database that already holds a store
// fails (--exit-on-error).
func TestPostgresDumpRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	src := pgtest.NewDatabase(t)
	if src == "" {
		return
	}
	ctx := context.Background()
	s, err := store.Open(ctx, store.EnginePostgres, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enrollN(t, s, 0, 20)
	if err := s.SetLKG(ctx, "edge-0003", store.LKG{BinarySHA256: "beef", At: time.Unix(5, 0)}); err != nil {
		t.Fatal(err)
	}
	pgBin, err := pgtest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	backupDir := t.TempDir()
	dst := pgtest.NewDatabase(t)
	runDoc := func(name string, env ...string) (string, error) {
		cmd := exec.Command("bash", "-c", "set -euo pipefail\n"+docBlock(t, "../../docs/operations.md", name))
		cmd.Env = append(os.Environ(), append([]string{"PATH=" + pgBin + ":" + os.Getenv("PATH"), "BACKUP_DIR=" + backupDir,
			"PULSE_DSN=" + src, "RESTORE_DSN=" + dst}, env...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := runDoc("pg-backup"); err != nil {
		t.Fatalf("pg-backup: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(backupDir, "pulse.dump")); err != nil {
		t.Fatal(err)
	}
	if out, err := runDoc("pg-restore"); err != nil {
		t.Fatalf("pg-restore: %v\n%s", err, out)
	}
	st, err := store.CheckSchema(ctx, store.EnginePostgres, dst)
	if err != nil || !st.UpToDate() || st.Current != store.KnownSchemaVersion() {
		t.Fatalf("restored schema: %+v %v", st, err)
	}
	r, err := store.Open(ctx, store.EnginePostgres, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	agents, err := r.ListAgents(ctx)
	if err != nil || len(agents) != 20 {
		t.Fatalf("restored %d agents (%v), want 20", len(agents), err)
	}
	if l, err := r.GetLKG(ctx, "edge-0003"); err != nil || l.BinarySHA256 != "beef" {
		t.Fatalf("restored lkg %+v %v", l, err)
	}
	// The same restore over a database that holds a store now fails.
	if out, err := runDoc("pg-restore"); err == nil {
		t.Fatalf("pg_restore over an existing store succeeded:\n%s", out)
	}
}
