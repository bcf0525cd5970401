package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// UpdateWindowsNotEnded returns the update windows whose end is after t
// (open at t or scheduled later), by start: what operators list.
func (s *Store) UpdateWindowsNotEnded(ctx context.Context, t time.Time) ([]*UpdateWindow, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, digest, agents, start_at, end_at, created_by, created_at FROM update_windows WHERE end_at > ? ORDER BY start_at, id`), nanos(t))
	if err != nil {
		return nil, fmt.Errorf("store: list update windows: %w", err)
	}
	defer rows.Close()
	var out []*UpdateWindow
	for rows.Next() {
		var (
			w                   UpdateWindow
			agents              string
			start, end, created int64
		)
		if err := rows.Scan(&w.ID, &w.Digest, &agents, &start, &end, &w.CreatedBy, &created); err != nil {
			return nil, fmt.Errorf("store: list update windows: %w", err)
		}
		w.Agents = strings.Split(agents, ",")
		w.Start, w.End = fromNanos(start), fromNanos(end)
		out = append(out, &w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list update windows: %w", err)
	}
	return out, nil
}
