package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"
)

// SQLite's WAL is folded back into the database by a checkpoint. Left to
// SQLite, a checkpoint runs inside whichever commit crosses 1,000 WAL pages
// and fsyncs while holding the store's only connection, so every ~10 s at a
// few hundred pulses per second the pulses queued behind it wait for the
// disk (the 9,700-agent fleet run's p99 spikes). The store turns that off on
// its connection and checkpoints from a second connection of its own every
// checkpointInterval instead: a PASSIVE checkpoint copies what no reader
// still needs without taking the write lock, so commits go on meanwhile.

const checkpointInterval = time.Second

// checkpointer runs the background checkpoints of a SQLite store.
type checkpointer struct {
	db   *sql.DB
	stop chan struct{}
	wg   sync.WaitGroup

	mu    sync.Mutex
	stats CheckpointStats
}

// CheckpointStats counts the background checkpoints of a SQLite store.
type CheckpointStats struct {
	// Runs and Failures count checkpoints; Frames is the WAL frames they
	// copied into the database; LastErr is the last failure's text.
	Runs, Failures, Frames uint64
	LastErr                string
}

func (s *Store) startCheckpointer(path string) error {
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		return fmt.Errorf("store: open checkpoint connection: %w", err)
	}
	db.SetMaxOpenConns(1)
	if err := db.Ping(); err != nil {
		db.Close()
		return fmt.Errorf("store: open checkpoint connection: %w", err)
	}
	c := &checkpointer{db: db, stop: make(chan struct{})}
	s.ckpt = c
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTicker(checkpointInterval)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				_, _ = s.checkpoint(context.Background())
			}
		}
	}()
	return nil
}

// checkpoint runs one PASSIVE checkpoint and returns the frames it copied.
func (s *Store) checkpoint(ctx context.Context) (int, error) {
	c := s.ckpt
	var busy, logFrames, copied int
	err := c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &copied)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Runs++
	if err != nil {
		c.stats.Failures++
		c.stats.LastErr = err.Error()
		return 0, fmt.Errorf("store: checkpoint: %w", err)
	}
	if copied > 0 {
		c.stats.Frames += uint64(copied)
	}
	return copied, nil
}

// CheckpointStats reports the background checkpoints (zero for PostgreSQL
// and in-memory stores).
func (s *Store) CheckpointStats() CheckpointStats {
	if s.ckpt == nil {
		return CheckpointStats{}
	}
	s.ckpt.mu.Lock()
	defer s.ckpt.mu.Unlock()
	return s.ckpt.stats
}

func (s *Store) stopCheckpointer() {
	c := s.ckpt
	if c == nil {
		return
	}
	close(c.stop)
	c.wg.Wait()
	// A last checkpoint leaves the database file whole for the next open.
	_, _ = s.checkpoint(context.Background())
	c.db.Close()
	s.ckpt = nil
}
