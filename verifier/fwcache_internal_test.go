package verifier

import (
	"crypto/sha256"
	"runtime"
	"testing"

	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/tpm/eventlog"
	"github.com/pulse-attest/pulse/verifier/config"
)

func parsedFixture(t *testing.T, fixture string, id byte) *fwEntry {
	t.Helper()
	raw := testutil.LoadFixture(t, fixture).Log
	e, err := parseFirmwareLog(sha256.Sum256(append([]byte{id}, raw...)), raw)
	if err != nil {
		t.Fatalf("parse %s: %v", fixture, err)
	}
	return e
}

// consistent checks the cache's byte count is the sum of its entries' and
// within the bound.
func consistent(t *testing.T, c *fwCache) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum int64
	for el := c.ll.Front(); el != nil; el = el.Next() {
		sum += el.Value.(*fwEntry).size
	}
	if sum != c.bytes || len(c.items) != c.ll.Len() {
		t.Fatalf("cache counts %d bytes in %d items, entries hold %d in %d", c.bytes, len(c.items), sum, c.ll.Len())
	}
	if c.bytes > c.max {
		t.Fatalf("cache holds %d bytes, bound %d", c.bytes, c.max)
	}
}

// holds reports whether the cache holds e, without touching its recency.
func holds(c *fwCache, e *fwEntry) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[e.key]
	return ok && el.Value.(*fwEntry) == e
}

// TestFWEntrySize: an entry never counts less than the log's bytes, and
// counts the parsed events on top.
func TestFWEntrySize(t *testing.T) {
	for _, fixture := range []string{"rhel8-uefi", "glinux-alex", "debian-10", "arch-linux-workstation"} {
		t.Run(fixture, func(t *testing.T) {
			raw := testutil.LoadFixture(t, fixture).Log
			e := parsedFixture(t, fixture, 0)
			events := int64(len(e.log.Events) + len(e.log.NoAction))
			if min := int64(len(raw)) + events*eventBytes; e.size < min {
				t.Fatalf("%d-byte log of %d records estimated at %d bytes, want at least %d", len(raw), events, e.size, min)
			}
			if e.size > 4*int64(len(raw))+events*512+parseDigestChunk*digestBytes {
				t.Fatalf("%d-byte log of %d records estimated at %d bytes: too high", len(raw), events, e.size)
			}
		})
	}
}

// TestFWEntrySizeCoversHeap: what an entry is estimated to hold — parsed,
// replayed, verified, with the policy's view — is at least what the heap
// says it holds (the bound is only as good as the estimate).
func TestFWEntrySizeCoversHeap(t *testing.T) {
	for _, fixture := range []string{"rhel8-uefi", "ubuntu-2104-no-secure-boot", "glinux-alex"} {
		t.Run(fixture, func(t *testing.T) {
			raw := testutil.LoadFixture(t, fixture).Log
			const n = 64
			keep := make([]*fwEntry, n)
			var est int64
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for i := range keep {
				e, err := parseFirmwareLog([32]byte{byte(i)}, raw)
				if err != nil {
					t.Fatal(err)
				}
				c := newFWCache(1 << 30)
				c.add(e)
				replayed, err := c.replay(e, eventlog.AlgSHA256)
				if err != nil {
					t.Fatal(err)
				}
				pcrs := map[uint32][]byte{}
				for _, i := range firmwarePCRs {
					if v, ok := replayed[i]; ok {
						pcrs[i] = v
					}
				}
				if _, err := c.verify(e, eventlog.AlgSHA256, pcrs, firmwarePCRs); err != nil {
					t.Fatal(err)
				}
				keep[i], est = e, est+e.size
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(keep)
			measured := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
			if est/n < measured*9/10 {
				t.Fatalf("entry estimated at %d bytes; the heap holds %d per entry", est/n, measured)
			}
			t.Logf("estimated %d bytes per entry, heap %d", est/n, measured)
		})
	}
}

// TestFWCacheBoundedByBytes: the cache keeps the most recently used entries
// that fit its byte bound, counts what verify and replay add to an entry,
// and never keeps an entry larger than itself.
func TestFWCacheBoundedByBytes(t *testing.T) {
	one := parsedFixture(t, "rhel8-uefi", 0).size
	entry := func(i byte) *fwEntry { return parsedFixture(t, "rhel8-uefi", i) }

	t.Run("least recently used out first", func(t *testing.T) {
		c := newFWCache(3*one + one/2)
		for i := range byte(3) {
			c.add(entry(i))
			consistent(t, c)
		}
		c.lookup(entry(0).key) // 0 is now the most recent; 1 the least
		c.add(entry(3))
		consistent(t, c)
		if n, _ := c.stats(); n != 3 {
			t.Fatalf("%d entries, want 3", n)
		}
		for i, want := range []bool{true, false, true, true} {
			if got := c.lookup(entry(byte(i)).key) != nil; got != want {
				t.Fatalf("entry %d cached %v, want %v", i, got, want)
			}
		}
	})

	t.Run("adding a cached digest keeps the first entry", func(t *testing.T) {
		c := newFWCache(10 * one)
		first := c.add(entry(0))
		if got := c.add(entry(0)); got != first {
			t.Fatal("a second parse of a cached log replaced the first")
		}
		if n, b := c.stats(); n != 1 || b != one {
			t.Fatalf("%d entries, %d bytes; want 1 of %d", n, b, one)
		}
	})

	t.Run("an entry larger than the cache is used, not kept", func(t *testing.T) {
		c := newFWCache(one - 1)
		e := entry(0)
		if got := c.add(e); got != e {
			t.Fatal("add did not return the entry")
		}
		if n, b := c.stats(); n != 0 || b != 0 {
			t.Fatalf("%d entries of %d bytes kept, want none", n, b)
		}
	})

	t.Run("verify and replay grow the entry and evict others", func(t *testing.T) {
		c := newFWCache(2*one + one/4)
		older, e := c.add(entry(0)), c.add(entry(1))
		replayed, err := c.replay(e, eventlog.AlgSHA256)
		if err != nil {
			t.Fatal(err)
		}
		consistent(t, c)
		if e.size <= one {
			t.Fatalf("replay did not count: %d bytes", e.size)
		}
		pcrs := map[uint32][]byte{}
		for _, i := range firmwarePCRs {
			if v, ok := replayed[i]; ok {
				pcrs[i] = v
			}
		}
		before := e.size
		v1, err := c.verify(e, eventlog.AlgSHA256, pcrs, firmwarePCRs)
		if err != nil {
			t.Fatal(err)
		}
		consistent(t, c)
		if e.size-before != v1.size || v1.size <= 0 {
			t.Fatalf("verify added %d bytes, its result is %d", e.size-before, v1.size)
		}
		// The same values again: the cached result, nothing added.
		if v2, err := c.verify(e, eventlog.AlgSHA256, pcrs, firmwarePCRs); err != nil || v2 != v1 {
			t.Fatalf("second verify: %v, same result %v", err, v2 == v1)
		}
		// Distinct sets of quoted values (PCR 9 never extended by this log
		// is ignored by Verify but keys the result) grow the entry until
		// the older one goes.
		for i := 0; holds(c, older); i++ {
			if i > maxVerifiedPerLog {
				t.Fatalf("%d verified results did not evict the older entry (%d bytes of %d)", i, c.bytes, c.max)
			}
			p := map[uint32][]byte{}
			for k, v := range pcrs {
				p[k] = v
			}
			p[23] = []byte{byte(i), byte(i >> 8)}
			if _, err := c.verify(e, eventlog.AlgSHA256, p, append(firmwarePCRs[:len(firmwarePCRs):len(firmwarePCRs)], 23)); err != nil {
				t.Fatal(err)
			}
			consistent(t, c)
		}
		if !holds(c, e) {
			t.Fatal("the entry in use was evicted before the older one")
		}
	})

	t.Run("verified results per log are bounded", func(t *testing.T) {
		c := newFWCache(1 << 30)
		e := c.add(entry(0))
		replayed, err := c.replay(e, eventlog.AlgSHA256)
		if err != nil {
			t.Fatal(err)
		}
		order := append(firmwarePCRs[:len(firmwarePCRs):len(firmwarePCRs)], 23)
		for i := range 3 * maxVerifiedPerLog {
			p := map[uint32][]byte{23: {byte(i), byte(i >> 8)}}
			for _, k := range firmwarePCRs {
				if v, ok := replayed[k]; ok {
					p[k] = v
				}
			}
			if _, err := c.verify(e, eventlog.AlgSHA256, p, order); err != nil {
				t.Fatal(err)
			}
			consistent(t, c)
		}
		if n := len(e.verified); n > maxVerifiedPerLog {
			t.Fatalf("%d verified results kept, bound %d", n, maxVerifiedPerLog)
		}
	})
}

func TestFirmwareLogConfig(t *testing.T) {
	cases := []struct {
		name     string
		cfg      config.FirmwareLogs
		perAgent int
		bytes    int64
	}{
		{"unset (a configuration built in code)", config.FirmwareLogs{}, config.DefaultFirmwareLogsPerAgent, config.DefaultFirmwareLogCacheBytes},
		{"configured", config.FirmwareLogs{PerAgent: 2, CacheBytes: 1 << 20}, 2, 1 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := &config.Config{FirmwareLogs: c.cfg}
			if q := firmwareLogQuota(cfg); q.PerAgent != c.perAgent || q.Window != FirmwareLogQuotaWindow {
				t.Fatalf("quota %+v, want %d per agent", q, c.perAgent)
			}
			if b := firmwareLogCacheBytes(cfg); b != c.bytes {
				t.Fatalf("cache bytes %d, want %d", b, c.bytes)
			}
		})
	}
}
