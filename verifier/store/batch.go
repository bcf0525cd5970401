package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Group commit. Every pulse writes twice on the hot path: spending its
// nonce epoch and recording its outcome. Each is one statement, and on its
// own each is one transaction: on SQLite a WAL lock, frame write and commit;
// on PostgreSQL a commit and a WAL flush. Under a fleet's load most of that
// cost is the commit, not the statement, so concurrent callers' statements
// share transactions: a writer takes whatever is queued (up to maxBatch)
// and runs it as one transaction. Nothing waits for a timer: a lone caller's
// statement runs at once, on its own (on the caller's goroutine when no
// other operation is queued or running: no hand-off to a writer and back);
// batches form only while the database is busy with the previous one,
// which is when they pay.
//
// Every caller still waits for its own statement's commit: a pulse's answer
// is never sent before what it changed is durable, and a spent nonce stays
// spent across a crash.
//
// A statement error inside a batch (on PostgreSQL one failed statement
// aborts the transaction) rolls the batch back and runs each operation
// again in its own transaction, so one bad operation never fails another
// caller's. A failed COMMIT is reported to every caller of the batch: it is
// ambiguous, and running a nonce spend twice would turn an honest pulse into
// a replay.

const (
	// maxBatch bounds the operations of one transaction (and so how long
	// its row locks are held).
	maxBatch = 128
	// batchTimeout bounds BEGIN and COMMIT of a batch.
	batchTimeout = 30 * time.Second
)

// runner runs the store's statements on the database or inside a batch's
// transaction, with the cached prepared statements either way.
type runner struct {
	s  *Store
	tx *sql.Tx
}

func (r runner) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if r.tx == nil {
		return r.s.prepared(ctx, query)
	}
	if st, ok := r.s.stmts.Load(query); ok {
		return r.tx.StmtContext(ctx, st.(*sql.Stmt)), nil
	}
	// Not cached yet: prepare on the transaction's own connection. Preparing
	// on the pool would wait for a connection, and SQLite's only one is the
	// transaction's. The statement ends with the transaction; the cache
	// fills on the next lone run.
	return r.tx.PrepareContext(ctx, r.s.q(query))
}

func (r runner) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := r.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (r runner) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := r.stmt(ctx, query)
	if err != nil {
		// Let the caller see the error through Scan.
		if r.tx != nil {
			return r.tx.QueryRowContext(ctx, r.s.q(query), args...)
		}
		return r.s.db.QueryRowContext(ctx, r.s.q(query), args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// batchOp is one queued operation. run reports only database failures; an
// operation's own outcome (not found, replayed) is a result it keeps in its
// closure, and it may run twice (after a batch rolled back), so it must
// set its results afresh each time.
type batchOp struct {
	ctx  context.Context
	key  string
	run  func(ctx context.Context, r runner) error
	done chan error
}

var errClosed = errors.New("store: closed")

// batcher owns the write queue and its writers.
type batcher struct {
	mu     sync.RWMutex
	closed bool
	ops    chan *batchOp
	wg     sync.WaitGroup
	// ordered sorts a batch by key so that replicas (and several writers)
	// take row locks in one order and cannot deadlock one another.
	ordered bool

	// hold is taken by a writer after it takes an operation and before it
	// drains the queue; internal tests lock it to let operations queue up.
	hold sync.Mutex

	// pending counts the operations queued or running: when it is 0 a
	// caller runs its operation itself (submit).
	pending atomic.Int64

	// Counters for tests and metrics.
	statsMu sync.Mutex
	stats   BatchStats
}

// BatchStats counts what group commit did.
type BatchStats struct {
	// Ops is the number of operations run; Batches the transactions that
	// held more than one; Batched the operations those held; Retried the
	// operations run again alone after their batch rolled back.
	Ops, Batches, Batched, Retried uint64
}

func (s *Store) startBatcher(writers int, ordered bool) {
	s.group = &batcher{ops: make(chan *batchOp, 4*maxBatch), ordered: ordered}
	for i := 0; i < writers; i++ {
		s.group.wg.Add(1)
		go s.writeLoop()
	}
}

func (s *Store) stopBatcher() {
	b := s.group
	if b == nil {
		return
	}
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.ops)
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// BatchStats returns what group commit did so far.
func (s *Store) BatchStats() BatchStats {
	s.group.statsMu.Lock()
	defer s.group.statsMu.Unlock()
	return s.group.stats
}

// submit runs an operation and waits for its transaction to end. When no
// other operation is queued or running, the caller runs it itself, alone,
// exactly as a writer would run a lone operation (nothing to batch it
// with), without handing it to a writer goroutine and back; otherwise it
// is queued for a writer, which batches it with whatever else waits.
func (s *Store) submit(ctx context.Context, key string, run func(ctx context.Context, r runner) error) error {
	b := s.group
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return errClosed
	}
	if b.pending.CompareAndSwap(0, 1) {
		if b.hold.TryLock() {
			b.hold.Unlock()
			b.statsMu.Lock()
			b.stats.Ops++
			b.statsMu.Unlock()
			// Close waits for this run (it takes mu).
			err := run(ctx, runner{s: s})
			b.pending.Add(-1)
			b.mu.RUnlock()
			return err
		}
		b.pending.Add(-1)
	}
	op := &batchOp{ctx: ctx, key: key, run: run, done: make(chan error, 1)}
	b.pending.Add(1)
	b.ops <- op
	b.mu.RUnlock()
	return <-op.done
}

func (s *Store) writeLoop() {
	defer s.group.wg.Done()
	buf := make([]*batchOp, 0, maxBatch)
	for op := range s.group.ops {
		batch := append(buf[:0], op)
		s.group.hold.Lock()
		//lint:ignore SA2001 an empty critical section is the gate tests hold
		s.group.hold.Unlock()
	drain:
		for len(batch) < maxBatch {
			select {
			case next, ok := <-s.group.ops:
				if !ok {
					break drain
				}
				batch = append(batch, next)
			default:
				break drain
			}
		}
		s.runBatch(batch)
		s.group.pending.Add(-int64(len(batch)))
		clear(batch)
	}
}

func (s *Store) runBatch(batch []*batchOp) {
	b := s.group
	b.statsMu.Lock()
	b.stats.Ops += uint64(len(batch))
	if len(batch) > 1 {
		b.stats.Batches++
		b.stats.Batched += uint64(len(batch))
	}
	b.statsMu.Unlock()
	if len(batch) == 1 {
		op := batch[0]
		op.done <- op.run(op.ctx, runner{s: s})
		return
	}
	if b.ordered {
		sort.SliceStable(batch, func(i, j int) bool { return batch[i].key < batch[j].key })
	}
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		s.runAlone(batch)
		return
	}
	r := runner{s: s, tx: tx}
	for _, op := range batch {
		if err := op.run(op.ctx, r); err != nil {
			_ = tx.Rollback()
			s.runAlone(batch)
			return
		}
	}
	if err := tx.Commit(); err != nil {
		err = fmt.Errorf("store: commit batch of %d: %w", len(batch), err)
		for _, op := range batch {
			op.done <- err
		}
		return
	}
	for _, op := range batch {
		op.done <- nil
	}
}

// runAlone runs each operation of a rolled-back batch on its own.
func (s *Store) runAlone(batch []*batchOp) {
	s.group.statsMu.Lock()
	s.group.stats.Retried += uint64(len(batch))
	s.group.statsMu.Unlock()
	for _, op := range batch {
		op.done <- op.run(op.ctx, runner{s: s})
	}
}
