package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCheckpointOffWritePath: a file-backed SQLite store's own connection
// never checkpoints; the store's checkpointer copies the WAL back into the
// database, and a failing checkpoint is counted and reported, not fatal.
func TestCheckpointOffWritePath(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pulse.db")
	s, err := Open(ctx, EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var auto int
	if err := s.db.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&auto); err != nil || auto != 0 {
		t.Fatalf("write connection autocheckpoint %d, %v; want 0 (off the write path)", auto, err)
	}

	ids := enrollN(t, s, 20)
	for epoch := range 50 {
		for _, id := range ids {
			if st, err := s.CommitPulse(ctx, id, uint64(epoch), PulseUpdate{At: time.Now(), Verdict: 1, Message: "m"}); err != nil || st != NonceOK {
				t.Fatalf("commit %s at %d: %v, %v", id, epoch, st, err)
			}
		}
	}
	if _, err := s.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	var busy, logFrames, copied int
	if err := s.ckpt.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &copied); err != nil {
		t.Fatal(err)
	}
	if logFrames != copied {
		t.Fatalf("after a checkpoint %d of %d WAL frames remain to copy", logFrames-copied, logFrames)
	}
	st := s.CheckpointStats()
	if st.Runs == 0 || st.Frames == 0 || st.Failures != 0 {
		t.Fatalf("checkpoint stats %+v: want runs that copied frames and no failures", st)
	}

	// A checkpointer that fails reports it; writes go on.
	s.ckpt.db.Close()
	if _, err := s.checkpoint(ctx); err == nil {
		t.Fatal("a checkpoint on a closed connection succeeded")
	}
	if st := s.CheckpointStats(); st.Failures == 0 || st.LastErr == "" {
		t.Fatalf("failed checkpoint not counted: %+v", st)
	}
	if st, err := s.CommitPulse(ctx, ids[0], 50, PulseUpdate{At: time.Now(), Verdict: 1}); err != nil || st != NonceOK {
		t.Fatalf("commit after a failed checkpoint: %v, %v", st, err)
	}
}

// TestCheckpointOnClose: closing the store leaves the data in the database
// file itself.
func TestCheckpointOnClose(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pulse.db")
	s, err := Open(ctx, EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	enrollN(t, s, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
		t.Fatalf("WAL of %d bytes left after Close", fi.Size())
	}
	again, err := Open(ctx, EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if list, err := again.ListAgents(ctx); err != nil || len(list) != 5 {
		t.Fatalf("agents after reopen: %d, %v", len(list), err)
	}
}
