package store

import (
	"context"
	"fmt"
)

// The directive outbox is read completely, whatever order writers commit in.
//
// A sequence number is taken when a row is inserted, not when it commits: on
// PostgreSQL a row holding seq 7 may become visible after seq 8 did, and a
// poller that remembered "everything up to 8" would never see it. So readers
// do not trust seq order. Each row records the transaction that wrote it
// (tx_id, PostgreSQL's 64-bit transaction ID, which never wraps), and every
// poll first reads the horizon: the snapshot's xmin, below which every
// transaction has ended (committed and visible, or rolled back). A cursor
// keeps the horizon of its previous poll and re-reads every row at or above
// it, skipping those it already returned. Rows below the horizon can never
// appear any more, so they are forgotten, and the set of returned rows held
// in memory is bounded by the rows written since the oldest transaction
// still open.
//
// SQLite has one writer at a time, so rows commit in seq order; its horizon
// is simply the next seq, and the same code reads it.

// DirectiveCursor is one poller's position in the outbox. It is not safe
// for concurrent use.
type DirectiveCursor struct {
	// horizon: every row with tx below it was returned or skipped.
	horizon int64
	// seen maps the seq of each row at or above horizon already returned
	// (or skipped at creation) to its tx.
	seen map[int64]int64
}

// Pending is the number of rows the cursor remembers having returned
// (those whose writer is not yet below the horizon).
func (c *DirectiveCursor) Pending() int { return len(c.seen) }

// txColumn is the column ordering writers' transactions.
func (s *Store) txColumn() string {
	if s.dialect.name == EnginePostgres {
		return "tx_id"
	}
	return "seq"
}

// directiveHorizon returns a value below which every writer has ended.
func (s *Store) directiveHorizon(ctx context.Context) (int64, error) {
	q := `SELECT COALESCE(MAX(seq), 0) + 1 FROM directives`
	if s.dialect.name == EnginePostgres {
		q = `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`
	}
	var h int64
	if err := s.db.QueryRowContext(ctx, q).Scan(&h); err != nil {
		return 0, fmt.Errorf("store: directive horizon: %w", err)
	}
	return h, nil
}

// NewDirectiveCursor returns a cursor positioned at the present: directives
// already committed are not returned by NextDirectives, every later one is,
// once.
func (s *Store) NewDirectiveCursor(ctx context.Context) (*DirectiveCursor, error) {
	c := &DirectiveCursor{seen: map[int64]int64{}}
	h, err := s.directiveHorizon(ctx)
	if err != nil {
		return nil, err
	}
	c.horizon = h
	// Rows at or above the horizon that are visible now are the present
	// too; remember them so they are not returned.
	if _, err := s.pollDirectives(ctx, c, 0, false); err != nil {
		return nil, err
	}
	return c, nil
}

// NextDirectives returns, oldest first by seq, up to limit directives the
// cursor has not returned yet, and advances it. Every directive committed
// after the cursor was made is returned exactly once across calls, whatever
// order the writers committed in; limit <= 0 means no limit.
func (s *Store) NextDirectives(ctx context.Context, c *DirectiveCursor, limit int) ([]*Directive, error) {
	return s.pollDirectives(ctx, c, limit, true)
}

func (s *Store) pollDirectives(ctx context.Context, c *DirectiveCursor, limit int, deliver bool) ([]*Directive, error) {
	// The horizon is read before the rows: every writer below it ended
	// before the rows' snapshot, so its rows are in what we read now.
	next, err := s.directiveHorizon(ctx)
	if err != nil {
		return nil, err
	}
	tx := s.txColumn()
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT seq, target, kind, body, created_at, `+tx+` FROM directives WHERE `+tx+` >= ? ORDER BY seq`), c.horizon)
	if err != nil {
		return nil, fmt.Errorf("store: directives: %w", err)
	}
	defer rows.Close()
	var (
		out  []*Directive
		txs  []int64
		full bool
	)
	for rows.Next() {
		var (
			d      Directive
			at, wr int64
		)
		if err := rows.Scan(&d.Seq, &d.Target, &d.Kind, &d.Body, &at, &wr); err != nil {
			return nil, fmt.Errorf("store: directives: %w", err)
		}
		if _, done := c.seen[d.Seq]; done {
			continue
		}
		if limit > 0 && len(out) >= limit {
			// More than a batch: keep the horizon, the rest comes next time.
			full = true
			break
		}
		d.CreatedAt = fromNanos(at)
		out = append(out, &d)
		txs = append(txs, wr)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: directives: %w", err)
	}
	// Only a read that went through moves the cursor.
	for i, d := range out {
		c.seen[d.Seq] = txs[i]
	}
	if !full && next > c.horizon {
		c.horizon = next
		for seq, wr := range c.seen {
			if wr < next {
				delete(c.seen, seq)
			}
		}
	}
	if !deliver {
		return nil, nil
	}
	return out, nil
}
