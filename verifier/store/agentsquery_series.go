package store

import (
	"context"
	"fmt"
	"time"
)

// MaxSeriesPoints bounds a verdict series.
const MaxSeriesPoints = 500

// SeriesPoint is the fleet's verdict counts at At.
type SeriesPoint struct {
	At     time.Time
	Counts map[int32]int
}

// VerdictSeries returns the fleet's verdict counts at points evenly spaced
// from `from` to `to` (inclusive), replayed from the recorded verdict
// changes (history): each agent counts under the last verdict it changed
// to at or before the point; agents with no change recorded by then are
// not counted. Agents no longer enrolled are left out.
func (s *Store) VerdictSeries(ctx context.Context, from, to time.Time, points int) ([]SeriesPoint, error) {
	if points < 2 || points > MaxSeriesPoints || !to.After(from) {
		return nil, fmt.Errorf("store: verdict series: %d points from %s to %s", points, from, to)
	}
	state := map[string]int32{}
	base, err := s.db.QueryContext(ctx, s.q(`SELECT h.agent_id, h.verdict FROM history h
		JOIN (SELECT agent_id, MAX(at) AS m FROM history WHERE at <= ? GROUP BY agent_id) x ON x.agent_id = h.agent_id AND x.m = h.at
		JOIN agents a ON a.id = h.agent_id`), nanos(from))
	if err != nil {
		return nil, fmt.Errorf("store: verdict series: %w", err)
	}
	for base.Next() {
		var id string
		var v int64
		if err := base.Scan(&id, &v); err != nil {
			base.Close()
			return nil, fmt.Errorf("store: verdict series: %w", err)
		}
		state[id] = int32(v)
	}
	base.Close()
	if err := base.Err(); err != nil {
		return nil, fmt.Errorf("store: verdict series: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT h.agent_id, h.at, h.verdict FROM history h JOIN agents a ON a.id = h.agent_id
		WHERE h.at > ? AND h.at <= ? ORDER BY h.at`), nanos(from), nanos(to))
	if err != nil {
		return nil, fmt.Errorf("store: verdict series: %w", err)
	}
	defer rows.Close()
	step := to.Sub(from) / time.Duration(points-1)
	out := make([]SeriesPoint, 0, points)
	snapshot := func(at time.Time) {
		c := map[int32]int{}
		for _, v := range state {
			c[v]++
		}
		out = append(out, SeriesPoint{At: at, Counts: c})
	}
	snapshot(from)
	next := 1
	for rows.Next() {
		var id string
		var at, v int64
		if err := rows.Scan(&id, &at, &v); err != nil {
			return nil, fmt.Errorf("store: verdict series: %w", err)
		}
		for next < points && nanos(from.Add(time.Duration(next)*step)) < at {
			snapshot(from.Add(time.Duration(next) * step))
			next++
		}
		state[id] = int32(v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: verdict series: %w", err)
	}
	for ; next < points; next++ {
		snapshot(from.Add(time.Duration(next) * step))
	}
	return out, nil
}

// AgentPartitions returns every agent's partition (for counting the agents
// each policy selects).
func (s *Store) AgentPartitions(ctx context.Context) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, partition FROM agents`)
	if err != nil {
		return nil, fmt.Errorf("store: agent partitions: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, p string
		if err := rows.Scan(&id, &p); err != nil {
			return nil, fmt.Errorf("store: agent partitions: %w", err)
		}
		out[id] = p
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: agent partitions: %w", err)
	}
	return out, nil
}
