package verifier

import (
	"sync"

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

// drop forgets the agent's row (it changed under a pulse, or is gone).
func (c *agentCache) drop(id string) {
	c.mu.Lock()
	delete(c.rows, id)
	c.mu.Unlock()
}

func (c *agentCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.rows)
}
