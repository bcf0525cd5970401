package verifier

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"reflect"
	"sync"
	"time"
	"unsafe"

	"github.com/pulse-attest/pulse/policy"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// Firmware-log storage bounds (docs/performance.md, "Firmware-log storage
// bounds"; docs/operations.md, "Firmware-log retention").
var (
	// FirmwareLogQuotaWindow: an agent may move to at most
	// firmware_logs.per_agent distinct firmware logs within it. Beyond the
	// cap, a new log evicts the agent's least recently used one if that one
	// was last used longer ago than the window, and is refused
	// (REASON_FIRMWARE_LOG_QUOTA) otherwise.
	FirmwareLogQuotaWindow = 24 * time.Hour
	// FirmwareLogGCInterval is how often a replica deletes firmware logs no
	// agent references; FirmwareLogGCGrace is how long such a log is kept
	// after it was last stored or referenced.
	FirmwareLogGCInterval = 10 * time.Minute
	FirmwareLogGCGrace    = time.Hour
)

// firmwareLogQuota is the configured per-agent quota (defaults for a
// configuration built in code).
func firmwareLogQuota(cfg *config.Config) store.FirmwareLogQuota {
	n := cfg.FirmwareLogs.PerAgent
	if n <= 0 {
		n = config.DefaultFirmwareLogsPerAgent
	}
	return store.FirmwareLogQuota{PerAgent: n, Window: FirmwareLogQuotaWindow}
}

// firmwareLogCacheBytes is the configured bound of the parsed-log cache.
func firmwareLogCacheBytes(cfg *config.Config) int64 {
	if cfg == nil || cfg.FirmwareLogs.CacheBytes <= 0 {
		return config.DefaultFirmwareLogCacheBytes
	}
	return cfg.FirmwareLogs.CacheBytes
}

// collectFirmwareLogs deletes the firmware logs no agent references, at most
// once per FirmwareLogGCInterval (the sweeper calls it every sweep).
func (v *Verifier) collectFirmwareLogs(ctx context.Context, now time.Time) {
	if !v.fw.gcDue(now) {
		return
	}
	n, freed, err := v.store.DeleteUnreferencedFirmwareLogs(ctx, now.Add(-FirmwareLogGCGrace))
	if err != nil {
		v.log.Warn("collecting firmware logs failed", "error", err)
		return
	}
	if n > 0 {
		v.log.Info("collected unreferenced firmware logs", "logs", n, "bytes", freed)
	}
}

// fwCache keeps parsed firmware logs by SHA-256, so a fleet that booted the
// same way costs one parse, and the steady state costs a map lookup and a few
// digest comparisons. It holds only logs that verified against a quote and
// were recorded as an agent's (verifyFirmware), and is bounded by an
// estimate of the bytes its entries hold, least recently used out first.
type fwCache struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	ll    *list.List
	items map[[32]byte]*list.Element
	// gcAt is when the last firmware-log collection ran.
	gcAt time.Time
}

type fwEntry struct {
	key [32]byte
	log *eventlog.Log
	// size is the estimated bytes of the entry (under fwCache.mu once
	// the entry is shared).
	size int64
	// replays per bank, computed on first use.
	replays map[eventlog.HashAlg]map[uint32][]byte
	// verified results keyed by the quoted PCR values they were checked
	// against (hex-free string key of the concatenated values).
	verified map[string]*verifiedLog
	// verifiedBytes is the part of size the verified results hold.
	verifiedBytes int64
}

// verifiedLog is a log verified against one set of PCR values, with the
// policy's view of it built once.
type verifiedLog struct {
	v    *eventlog.Verified
	boot *policy.BootEvidence
	size int64

	// bootSum is the SHA-256 of boot's JSON, computed once when first
	// asked (bootDigest): the key of a pulse's stored evidence names the
	// shared boot evidence by it instead of encoding it every pulse.
	bootOnce sync.Once
	bootSum  [32]byte
	bootErr  error
}

// bootDigest is the SHA-256 of the JSON of the log's boot evidence.
func (l *verifiedLog) bootDigest() ([32]byte, error) {
	l.bootOnce.Do(func() {
		raw, err := json.Marshal(l.boot)
		if err != nil {
			l.bootErr = err
			return
		}
		l.bootSum = sha256.Sum256(raw)
	})
	return l.bootSum, l.bootErr
}

// sharesBoot reports whether b is l's boot evidence but for its runtime
// PCR history (the pulse's copy, Verifier.verify): the same bank, the same
// PCR map, events and SecureBoot value, not copies of them.
func (l *verifiedLog) sharesBoot(b *policy.BootEvidence) bool {
	lb := l.boot
	if lb == nil || b == nil || lb.Bank != b.Bank || lb.SecureBoot != b.SecureBoot || len(lb.Events) != len(b.Events) ||
		reflect.ValueOf(lb.PCRs).UnsafePointer() != reflect.ValueOf(b.PCRs).UnsafePointer() || lb.RuntimePCRHistory != nil {
		return false
	}
	return len(lb.Events) == 0 || &lb.Events[0] == &b.Events[0]
}

// maxVerifiedPerLog bounds the verified results kept per log (distinct
// sets of quoted values, e.g. PCR 8/9 varying by kernel command line).
const maxVerifiedPerLog = 64

func newFWCache(maxBytes int64) *fwCache {
	return &fwCache{max: maxBytes, ll: list.New(), items: map[[32]byte]*list.Element{}}
}

// parseFirmwareLog parses raw into an entry that is not cached: it enters
// the cache (add) only once it verified.
func parseFirmwareLog(key [32]byte, raw []byte) (*fwEntry, error) {
	l, err := eventlog.Parse(raw)
	if err != nil {
		return nil, err
	}
	return &fwEntry{key: key, log: l, size: logBytes(len(raw), l),
		replays: map[eventlog.HashAlg]map[uint32][]byte{}, verified: map[string]*verifiedLog{}}, nil
}

// lookup returns the cached entry of that digest, or nil.
func (c *fwCache) lookup(key [32]byte) *fwEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil
	}
	c.ll.MoveToFront(el)
	return el.Value.(*fwEntry)
}

// add caches e and returns the entry to use: the one already cached for the
// digest, if a concurrent pulse added it first. An entry larger than the
// whole cache is used once and not kept.
func (c *fwCache) add(e *fwEntry) *fwEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*fwEntry)
	}
	if e.size > c.max {
		return e
	}
	c.items[e.key] = c.ll.PushFront(e)
	c.bytes += e.size
	c.evictLocked()
	return e
}

// grow accounts for bytes e gained (or lost) and evicts to stay in bounds.
// Called with c.mu held.
func (c *fwCache) growLocked(e *fwEntry, delta int64) {
	e.size += delta
	if el, ok := c.items[e.key]; ok && el.Value.(*fwEntry) == e {
		c.bytes += delta
		c.evictLocked()
	}
}

func (c *fwCache) evictLocked() {
	for c.bytes > c.max && c.ll.Len() > 0 {
		last := c.ll.Back()
		e := last.Value.(*fwEntry)
		c.ll.Remove(last)
		delete(c.items, e.key)
		c.bytes -= e.size
	}
}

// stats reports the cached entries and their estimated bytes.
func (c *fwCache) stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len(), c.bytes
}

// gcDue reports whether a firmware-log collection is due, and if so takes
// it.
func (c *fwCache) gcDue(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.gcAt.IsZero() && now.Sub(c.gcAt) < FirmwareLogGCInterval {
		return false
	}
	c.gcAt = now
	return true
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
	defer c.mu.Unlock()
	if prev, ok := e.replays[bank]; ok {
		return prev, nil
	}
	e.replays[bank] = r
	c.growLocked(e, mapEntryBytes+pcrMapBytes(r))
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
	v.size = mapEntryBytes + int64(len(k)) + verifiedBytes(ver, v.boot)
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := e.verified[k]; ok {
		return prev, nil
	}
	delta := v.size
	if len(e.verified) >= maxVerifiedPerLog {
		e.verified = map[string]*verifiedLog{}
		delta -= e.verifiedBytes
		e.verifiedBytes = 0
	}
	e.verified[k] = v
	e.verifiedBytes += v.size
	c.growLocked(e, delta)
	return v, nil
}

// Size estimates. They count what an entry keeps reachable: the parsed
// log's copy of the raw bytes (events' digests and data alias it), the
// event structs and their digest headers, and the replay and verified
// results with their maps. Map overhead is an estimate per entry.
const (
	eventBytes      = int64(unsafe.Sizeof(eventlog.Event{}))
	digestBytes     = int64(unsafe.Sizeof(eventlog.Digest{}))
	bootEventBytes  = int64(unsafe.Sizeof(policy.BootEvent{}))
	sbVariableBytes = int64(unsafe.Sizeof(eventlog.SecureBootVariable{}))
	sigEntryBytes   = int64(unsafe.Sizeof(eventlog.SignatureEntry{}))
	authorityBytes  = int64(unsafe.Sizeof(eventlog.Authority{}))
	// mapEntryBytes approximates a map entry's share of buckets, hash and
	// overflow.
	mapEntryBytes = 48
	sliceBytes    = int64(unsafe.Sizeof([]byte(nil)))
	// parseDigestChunk is how many digest headers eventlog.Parse allocates
	// at a time (one slab shared by the log's events): a parsed log holds
	// whole chunks, 128 KiB each, however few events it has.
	parseDigestChunk = 4096
	entryBytes       = int64(unsafe.Sizeof(fwEntry{}) + unsafe.Sizeof(eventlog.Log{}) + unsafe.Sizeof(list.Element{}))
)

// logBytes estimates a parsed log of rawLen bytes: its copy of the bytes
// (digests and data alias it), the event structs and the digest headers.
func logBytes(rawLen int, l *eventlog.Log) int64 {
	var events, digests int64
	for _, evs := range [][]eventlog.Event{l.Events, l.NoAction} {
		events += int64(len(evs))
		for i := range evs {
			digests += int64(len(evs[i].Digests))
		}
	}
	chunks := (digests + parseDigestChunk - 1) / parseDigestChunk
	return entryBytes + allocBytes(int64(rawLen)) + grownBytes(events*eventBytes) + max(chunks*parseDigestChunk, digests)*digestBytes
}

// allocBytes is n rounded up as the allocator does: to whole 8 KiB pages
// above 32 KiB, by up to an eighth below.
func allocBytes(n int64) int64 {
	if n > 32<<10 {
		return (n + 8<<10 - 1) &^ (8<<10 - 1)
	}
	return n + n/8
}

// grownBytes is a slice of n bytes' worth built by append: its capacity
// averages half as much again.
func grownBytes(n int64) int64 { return n + n/2 }

func pcrMapBytes(m map[uint32][]byte) int64 {
	var n int64
	for _, v := range m {
		n += mapEntryBytes + sliceBytes + int64(len(v))
	}
	return n
}

// verifiedBytes estimates a verified result and the policy's view of it.
func verifiedBytes(v *eventlog.Verified, b *policy.BootEvidence) int64 {
	n := int64(unsafe.Sizeof(eventlog.Verified{})+unsafe.Sizeof(policy.BootEvidence{})) +
		grownBytes(int64(len(v.Events))*eventBytes) + pcrMapBytes(v.PCRs) + int64(len(v.Unverified))*4 +
		grownBytes(int64(len(b.Events))*bootEventBytes)
	for _, ev := range b.Events {
		n += allocBytes(int64(len(ev.Type) + len(ev.Digest) + len(ev.Note)))
	}
	// The Secure Boot record: decoded signature lists (their data aliases
	// the log) and digests.
	for _, sv := range v.SecureBoot.Variables {
		n += sbVariableBytes + int64(len(sv.SHA256)) + grownBytes(int64(len(sv.Entries))*sigEntryBytes)
	}
	n += int64(len(v.SecureBoot.Authorities)) * (authorityBytes + sha256.Size)
	for _, p := range b.PCRs {
		n += mapEntryBytes + int64(len(p))
	}
	return n
}
