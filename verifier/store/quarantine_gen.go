package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// quarantineCounters are this handle's memory of the quarantine table: a
// generation bumped after every write through this handle (so a cache of
// the table in this process sees its own writes at once; another
// process's writes it cannot see) and how often the table and agents'
// addresses were read.
type quarantineCounters struct {
	gen        atomic.Uint64
	tableReads atomic.Uint64
	addrReads  atomic.Uint64
}

// QuarantineGeneration changes after every write of the quarantine table
// through this handle (AddQuarantine, ReleaseQuarantine, RemoveQuarantine),
// whether it succeeded or not; it never goes back. A copy of the table read
// after observing generation g is stale for this process's writes once the
// generation is no longer g. Writes by other handles (another replica,
// pulsectl) do not change it.
func (s *Store) QuarantineGeneration() uint64 { return s.quar.gen.Load() }

// bumpQuarantine marks a write of the quarantine table; called after the
// write has committed (or failed).
func (s *Store) bumpQuarantine() { s.quar.gen.Add(1) }

// QuarantineReads reports how many times this handle read the whole
// quarantine table (ListQuarantine) and an agent's registered addresses
// (AgentAddresses): what the verifier's quarantine cache saves, for tests
// and benchmarks.
func (s *Store) QuarantineReads() (table, addresses uint64) {
	return s.quar.tableReads.Load(), s.quar.addrReads.Load()
}

// QuarantineUsers is an isolated address and the agents registered to it
// (RegisterAddress) within the window asked for.
type QuarantineUsers struct {
	Quarantine
	// Users are the agents whose registered addresses include Address
	// exactly as the table spells it, sorted.
	Users []string
}

// ListQuarantineUsers returns the quarantine table, each address with the
// agents it is registered to, last seen at or after since, in one
// statement: what reconciling any agent's Shield needs, for one round trip
// per read whatever the fleet's size. It counts as a table read
// (QuarantineReads).
func (s *Store) ListQuarantineUsers(ctx context.Context, since time.Time) ([]QuarantineUsers, error) {
	s.quar.tableReads.Add(1)
	st, err := s.prepared(ctx, `SELECT q.address, q.offender, q.reason, q.created_at, COALESCE(aa.agent_id, '')
		FROM quarantine q LEFT JOIN agent_addresses aa ON aa.address = q.address AND aa.last_seen >= ?
		ORDER BY q.address`)
	if err != nil {
		return nil, fmt.Errorf("store: list quarantine users: %w", err)
	}
	rows, err := st.QueryContext(ctx, nanos(since))
	if err != nil {
		return nil, fmt.Errorf("store: list quarantine users: %w", err)
	}
	defer rows.Close()
	var out []QuarantineUsers
	for rows.Next() {
		var (
			q    Quarantine
			at   int64
			user string
		)
		if err := rows.Scan(&q.Address, &q.Offender, &q.Reason, &at, &user); err != nil {
			return nil, fmt.Errorf("store: list quarantine users: %w", err)
		}
		q.Since = fromNanos(at)
		if n := len(out); n == 0 || out[n-1].Address != q.Address {
			out = append(out, QuarantineUsers{Quarantine: q})
		}
		if user != "" {
			last := &out[len(out)-1]
			last.Users = append(last.Users, user)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list quarantine users: %w", err)
	}
	return out, nil
}
