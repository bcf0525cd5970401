package verifier

import (
	"container/list"
	"sync"

	"github.com/pulse-attest/pulse/policy"
	"github.com/pulse-attest/pulse/tpm/eventlog"
)

// fwCache keeps parsed firmware logs by SHA-256, so a fleet that booted the
// same way costs one parse, and the steady state costs a map lookup and a few
// digest comparisons. Bounded LRU.
type fwCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[[32]byte]*list.Element
}

type fwEntry struct {
	key [32]byte
	log *eventlog.Log
	// replays per bank, computed on first use.
	replays map[eventlog.HashAlg]map[uint32][]byte
	// verified results keyed by the quoted PCR values they were checked
	// against (hex-free string key of the concatenated values).
	verified map[string]*verifiedLog
}

// verifiedLog is a log verified against one set of PCR values, with the
// policy's view of it built once.
type verifiedLog struct {
	v    *eventlog.Verified
	boot *policy.BootEvidence
}

func newFWCache(max int) *fwCache {
	return &fwCache{max: max, ll: list.New(), items: map[[32]byte]*list.Element{}}
}

// get returns the cached parse of the log with this digest, parsing raw when
// absent (raw may be nil when the caller only probes).
func (c *fwCache) get(key [32]byte, raw []byte) (*fwEntry, error) {
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.ll.MoveToFront(el)
		e := el.Value.(*fwEntry)
		c.mu.Unlock()
		return e, nil
	}
	c.mu.Unlock()
	if raw == nil {
		return nil, nil
	}
	l, err := eventlog.Parse(raw)
	if err != nil {
		return nil, err
	}
	e := &fwEntry{key: key, log: l, replays: map[eventlog.HashAlg]map[uint32][]byte{}, verified: map[string]*verifiedLog{}}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		return el.Value.(*fwEntry), nil
	}
	c.items[key] = c.ll.PushFront(e)
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*fwEntry).key)
	}
	return e, nil
}

// replay returns the replayed PCR values of the bank (cached).
func (c *fwCache) replay(e *fwEntry, bank eventlog.HashAlg) (map[uint32][]byte, error) {
	c.mu.Lock()
	r, ok := e.replays[bank]
	c.mu.Unlock()
	if ok {
		return r, nil
	}
	r, err := e.log.Replay(bank)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	e.replays[bank] = r
	c.mu.Unlock()
	return r, nil
}

// verify checks the log against quoted PCR values, caching the result per
// distinct set of values (a fleet booted the same way shares one).
func (c *fwCache) verify(e *fwEntry, bank eventlog.HashAlg, pcrs map[uint32][]byte, order []uint32) (*verifiedLog, error) {
	key := make([]byte, 0, len(order)*33)
	for _, i := range order {
		if v, ok := pcrs[i]; ok {
			key = append(key, byte(i))
			key = append(key, v...)
		}
	}
	k := string(key)
	c.mu.Lock()
	v, ok := e.verified[k]
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	ver, err := e.log.Verify(bank, pcrs)
	if err != nil {
		return nil, err
	}
	v = &verifiedLog{v: ver, boot: bootEvidence(ver)}
	c.mu.Lock()
	if len(e.verified) > 64 {
		e.verified = map[string]*verifiedLog{}
	}
	e.verified[k] = v
	c.mu.Unlock()
	return v, nil
}
