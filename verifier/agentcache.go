package verifier

import (
	"bytes"
	"sync"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/store"
)

// AgentCacheSize bounds the agent rows one verifier process keeps (about
// 2-4 KiB each: keys, certificate, runtime log). Beyond it an arbitrary row
// is dropped and read again at its agent's next pulse.
var AgentCacheSize = 1 << 16

// agentCache keeps each agent's row as this process last read or wrote it,
// so a steady-state pulse reads nothing before its commit. A cached row is
// only ever a guess: the pulse's commit is conditional on the row's version
// (store.PulseUpdate.RowVersion), which every writer of the row changes (a
// re-enrolment, an approved update, another replica's pulse, BLINDED), so a
// pulse judged against a stale row writes nothing and is judged again
// against the row as it is (Verifier.commit). A nonce naming another epoch
// than the cached row's is checked against the store at once.
//
// Rows are immutable once cached: get returns a copy the caller may change.
type agentCache struct {
	mu   sync.Mutex
	rows map[string]*store.Agent
	// runtime memoises each agent's last verified runtime evidence.
	runtime map[string]*runtimeMemo
	// sentinel and explained are what this process last recorded for an
	// agent's Sentinel state and explanation, each valid only for the row
	// version its commit gave the agent (versioned below).
	sentinel  map[string]versioned[store.SentinelState]
	explained map[string]versioned[explained]
}

// versioned is a value the store holds for an agent as of the agent row's
// version: the Sentinel cursor and host program state and the
// explanation's digest, all written by the pulse's commit in its
// transaction (sentinelWrite, explain). Every other writer of those tables
// writes the agent row too (a new version) or deletes it (decommission),
// so a memo
// recorded for version V is what the store holds while the row is at V;
// a pulse judged against a cached row that is stale finds the memo of the
// stale version, and its commit, conditional on that version, writes
// nothing and is judged again against the row read from the store (whose
// version no memo holds: the store is read).
type versioned[T any] struct {
	version int64
	value   T
}

// memoAt returns m's value for id when it was recorded at version.
func memoAt[T any](c *agentCache, m *map[string]versioned[T], id string, version int64) (T, bool) {
	c.mu.Lock()
	e, ok := (*m)[id]
	c.mu.Unlock()
	if !ok || version == 0 || e.version != version {
		var zero T
		return zero, false
	}
	return e.value, true
}

// putMemo records value for id at version in *m (bounded like the rows).
func putMemo[T any](c *agentCache, m *map[string]versioned[T], id string, version int64, value T) {
	if AgentCacheSize <= 0 || version == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if *m == nil {
		*m = make(map[string]versioned[T])
	}
	if _, ok := (*m)[id]; !ok && len(*m) >= AgentCacheSize {
		for k := range *m {
			delete(*m, k)
			break
		}
	}
	(*m)[id] = versioned[T]{version: version, value: value}
}

func (c *agentCache) sentinelAt(id string, version int64) (store.SentinelState, bool) {
	return memoAt(c, &c.sentinel, id, version)
}

func (c *agentCache) putSentinel(id string, version int64, st store.SentinelState) {
	putMemo(c, &c.sentinel, id, version, st)
}

func (c *agentCache) explainedAt(id string, version int64) (explained, bool) {
	return memoAt(c, &c.explained, id, version)
}

func (c *agentCache) putExplained(id string, version int64, e explained) {
	putMemo(c, &c.explained, id, version, e)
}

func (c *agentCache) get(id string) *store.Agent {
	c.mu.Lock()
	a := c.rows[id]
	c.mu.Unlock()
	if a == nil {
		return nil
	}
	cp := *a
	return &cp
}

// put caches a copy of the row (the slices it holds are never written in
// place: the pipeline builds new ones).
func (c *agentCache) put(a *store.Agent) {
	if a == nil || AgentCacheSize <= 0 {
		return
	}
	cp := *a
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rows == nil {
		c.rows = make(map[string]*store.Agent)
	}
	if _, ok := c.rows[a.ID]; !ok && len(c.rows) >= AgentCacheSize {
		for id := range c.rows {
			delete(c.rows, id)
			break
		}
	}
	c.rows[a.ID] = &cp
}

// drop forgets the agent's row and what was recorded with it (it changed
// under a pulse, or is gone).
func (c *agentCache) drop(id string) {
	c.mu.Lock()
	delete(c.rows, id)
	delete(c.sentinel, id)
	delete(c.explained, id)
	c.mu.Unlock()
}

func (c *agentCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.rows)
}

// runtimeMemo is the runtime evidence last verified for an agent and the
// exact inputs it was verified from. verifyRuntime is a pure function of
// them, so a steady-state pulse (no new records, the same stored log, the
// same quoted runtime PCR: the quote itself is verified every pulse) reuses
// it instead of decoding and replaying the whole log again.
type runtimeMemo struct {
	stored  []byte
	count   uint64
	pcr     uint32
	initial []byte
	quoted  []byte
	rt      *runtimeEvidence
}

// runtimeEvidence returns verifyRuntime's result for these inputs, from
// the agent's memo when the inputs are the memo's and the pulse brings no
// records, else verified now (and remembered when it verified).
func (c *agentCache) runtimeEvidence(id string, stored []byte, storedCount, first uint64, fresh []byte, pcr uint32, initial, quoted []byte) (*runtimeEvidence, pulsev1.Reason, error) {
	if len(fresh) == 0 && first == storedCount && len(stored) > 0 {
		c.mu.Lock()
		m := c.runtime[id]
		c.mu.Unlock()
		if m != nil && m.count == storedCount && m.pcr == pcr && bytes.Equal(m.stored, stored) &&
			bytes.Equal(m.initial, initial) && bytes.Equal(m.quoted, quoted) {
			return m.rt, pulsev1.Reason_REASON_OK, nil
		}
	}
	rt, reason, err := verifyRuntime(stored, storedCount, first, fresh, pcr, initial, quoted)
	if err != nil || AgentCacheSize <= 0 {
		return rt, reason, err
	}
	// What the next pulse finds stored is this log (rt.records).
	m := &runtimeMemo{stored: rt.records, count: rt.count, pcr: pcr, initial: bytes.Clone(initial), quoted: bytes.Clone(quoted), rt: rt}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runtime == nil {
		c.runtime = make(map[string]*runtimeMemo)
	}
	if _, ok := c.runtime[id]; !ok && len(c.runtime) >= AgentCacheSize {
		for k := range c.runtime {
			delete(c.runtime, k)
			break
		}
	}
	c.runtime[id] = m
	return rt, reason, nil
}
