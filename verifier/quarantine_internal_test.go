package verifier

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/directivesig"
	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/internal/quarset"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/ektrust"
	"github.com/pulse-attest/pulse/verifier/store"
)

// TestLoadDirectiveKey: a 0600 PKCS#8 file is the key; a file readable by
// group or others, or not a key, is ErrDirectiveKey; without a file every
// replica of one store gets the same generated key.
func TestLoadDirectiveKey(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, err := directivesig.MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), store.EngineSQLite, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, tc := range []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    error
	}{
		{"key 0600", pemKey, 0o600, nil},
		{"readable by others", pemKey, 0o644, ErrDirectiveKey},
		{"readable by group", pemKey, 0o640, ErrDirectiveKey},
		{"not a key", []byte("not a key"), 0o600, ErrDirectiveKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k.pem")
			if err := os.WriteFile(path, tc.content, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			k, err := loadDirectiveKey(context.Background(), &config.Config{DirectiveKey: path}, st, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("load: %v, want %v", err, tc.want)
			}
			if tc.want == nil && !k.Equal(priv) {
				t.Fatal("loaded another key")
			}
		})
	}
	k1, err := loadDirectiveKey(context.Background(), &config.Config{}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := loadDirectiveKey(context.Background(), &config.Config{}, st, nil)
	if err != nil || !k1.Equal(k2) || k1.Equal(priv) {
		t.Fatalf("stored key: replicas disagree or reuse the file's (%v)", err)
	}
}

// TestExpectedQuarantine: the table as one agent must hold it.
func TestExpectedQuarantine(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	qs := []store.Quarantine{
		{Address: "192.0.2.1", Offender: "x", Since: now.Add(-time.Hour)},
		{Address: "192.0.2.2", Offender: "me", Since: now.Add(-time.Hour)},
		{Address: "::ffff:192.0.2.3", Offender: "y", Since: now.Add(-time.Second)},
		{Address: "192.0.2.4", Offender: "z", Since: now.Add(-time.Hour)},
		{Address: "not an address", Offender: "z", Since: now.Add(-time.Hour)},
	}
	want, young, own := expectedQuarantine(qs, "me", []string{"192.0.2.4"}, now, time.Minute)
	if !slices.Equal(want, []string{"192.0.2.1", "192.0.2.3"}) || !slices.Equal(young, []string{"192.0.2.3"}) || !slices.Equal(own, []string{"192.0.2.2", "192.0.2.4"}) {
		t.Fatalf("want %v young %v own %v", want, young, own)
	}
}

// BenchmarkReconcileTable: the per-pulse cost of reconciliation's pure
// part on a 10,000-address quarantine table (the expected set and its
// digest), besides the two store reads.
func BenchmarkReconcileTable(b *testing.B) {
	now := time.Now()
	qs := make([]store.Quarantine, 10000)
	for i := range qs {
		qs[i] = store.Quarantine{Address: fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255), Offender: fmt.Sprintf("a%d", i%50), Since: now.Add(-time.Hour)}
	}
	b.ReportAllocs()
	for b.Loop() {
		want, _, _ := expectedQuarantine(qs, "a7", nil, now, time.Minute)
		if _, n := quarset.DigestCanonical(want); n == 0 {
			b.Fatal("empty")
		}
	}
}

// TestNotIsolatable: addresses that name no single device fleet-wide are
// refused for isolation (issue 20 attack review; the link-local exploit
// over real mTLS is TestAttack20LinkLocalIsolation).
func TestNotIsolatable(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		refused bool
	}{
		{"192.0.2.1", false},
		{"2001:db8::1", false},
		{"fd00::1", false},
		{"127.0.0.5", false}, // loopback: Shield never drops it, but the test fleets use 127/8
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"169.254.169.254", true},
		{"::ffff:169.254.1.1", true},
		{"ff02::1", true},
		{"224.0.0.1", true},
		{"0.0.0.0", true},
		{"::", true},
		{"not-an-address", true},
		{"", true},
	} {
		if got := notIsolatable(tc.addr) != ""; got != tc.refused {
			t.Errorf("notIsolatable(%q) refused %v, want %v", tc.addr, got, tc.refused)
		}
	}
}

// TestQuarantineSnapshotFresh: a copy answers for the store only while no
// write went through this process's handle and both clocks are within the
// TTL of the read; a clock that went back ends it too.
func TestQuarantineSnapshotFresh(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	mono := time.Now()
	ttl := QuarantineCacheTTL
	q := &quarantineSnapshot{gen: 7, at: at, mono: mono}
	for _, tc := range []struct {
		name     string
		gen      uint64
		now, mon time.Time
		fresh    bool
	}{
		{"just read", 7, at, mono, true},
		{"just within the TTL", 7, at.Add(ttl - 1), mono.Add(ttl - 1), true},
		{"the TTL passed on the verifier's clock", 7, at.Add(ttl), mono, false},
		{"the TTL passed on the host's monotonic clock", 7, at, mono.Add(ttl), false},
		{"a write through this handle", 8, at, mono, false},
		{"the verifier's clock went back", 7, at.Add(-time.Second), mono, false},
		{"the monotonic clock is older than the read", 7, at, mono.Add(-time.Nanosecond), false},
	} {
		if got := q.fresh(tc.gen, tc.now, tc.mon); got != tc.fresh {
			t.Errorf("%s: fresh %v, want %v", tc.name, got, tc.fresh)
		}
	}
}

// newQuarantineVerifier is a verifier over a fresh SQLite store at clock.
func newQuarantineVerifier(t *testing.T, clock *testClock) (*Verifier, *store.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), store.EngineSQLite, filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newOutboxVerifier(t, st, "r1", clock, nil), st
}

func shieldPulse(t testing.TB, id string, held ...string) (*Outcome, *pulsev1.PulsePayload) {
	t.Helper()
	d, _, err := quarset.Digest(held)
	if err != nil {
		t.Fatal(err)
	}
	return &Outcome{agent: &store.Agent{ID: id}},
		&pulsev1.PulsePayload{AgentId: id, Bpf: &pulsev1.BPFSnapshot{QuarantineSha256: d[:], QuarantineCount: uint32(len(held))}, Quarantined: held}
}

// TestQuarantineCopyOwnAddresses: the copy knows each isolated address's
// registered agents from the one joined read, so the steady state reads
// nothing per agent; an address stored in a non-canonical spelling (the
// join cannot match it) makes the agents' own addresses be read as before,
// and the expected sets are the same either way. A registration of this
// process that concerns the copy drops it; one that does not keeps it.
func TestQuarantineCopyOwnAddresses(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{now: time.Now()}
	v, st := newQuarantineVerifier(t, clock)
	old := clock.Now().Add(-time.Hour)
	for _, q := range []store.Quarantine{
		{Address: "192.0.2.1", Offender: "x", Since: old},
		{Address: "192.0.2.2", Offender: "y", Since: old},
	} {
		if _, err := st.AddQuarantine(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RegisterAddress(ctx, "victim", "192.0.2.2", clock.Now(), old); err != nil {
		t.Fatal(err)
	}
	check := func(name string, wantExact bool, wantAddrReads uint64) {
		t.Helper()
		_, a0 := st.QuarantineReads()
		for _, tc := range []struct {
			id   string
			held []string
			ok   bool
		}{
			{"bystander", []string{"192.0.2.1", "192.0.2.2"}, true},
			{"bystander", []string{"192.0.2.1"}, false},
			{"victim", []string{"192.0.2.1"}, true},              // its own address not held
			{"victim", []string{"192.0.2.1", "192.0.2.2"}, true}, // or held
			{"victim", []string{"192.0.2.1", "192.0.2.3"}, false},
			{"x", []string{"192.0.2.2"}, true},
			{"y", nil, false}, // misses x's
		} {
			q, err := v.quarantineTable(ctx, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if q.exact != wantExact {
				t.Fatalf("%s: exact %v", name, q.exact)
			}
			_, p := shieldPulse(t, tc.id, tc.held...)
			if got := v.matchesCopy(ctx, q, tc.id, p.GetBpf().GetQuarantineSha256(), clock.Now()); got != tc.ok {
				t.Errorf("%s: %s holding %v matches %v, want %v", name, tc.id, tc.held, got, tc.ok)
			}
		}
		if _, a1 := st.QuarantineReads(); a1-a0 != wantAddrReads {
			t.Errorf("%s: %d address reads, want %d", name, a1-a0, wantAddrReads)
		}
	}
	check("canonical table", true, 0)

	// Registrations: one that concerns no entry keeps the copy; one of an
	// offender's (it owns an entry) drops it.
	kept, _ := v.quarantineTable(ctx, time.Time{})
	v.registerAddress(ctx, "bystander", "198.51.100.1")
	if q, _ := v.quarantineTable(ctx, time.Time{}); q != kept {
		t.Error("an unrelated registration dropped the copy")
	}
	v.registerAddress(ctx, "x", "198.51.100.2")
	if q, _ := v.quarantineTable(ctx, time.Time{}); q == kept {
		t.Error("a registration of an agent owning an entry kept the copy")
	}

	// The victim's address stored as another replica's older code might
	// spell it: the join misses it, the agents' addresses are read.
	if _, err := st.RemoveQuarantine(ctx, "192.0.2.2"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddQuarantine(ctx, store.Quarantine{Address: "::ffff:192.0.2.2", Offender: "y", Since: old}); err != nil {
		t.Fatal(err)
	}
	check("non-canonical entry", false, 7)
}

// TestQuarantineReadFailure: when the table cannot be read the pulse is
// not judged on its quarantine (logged), whatever it reports; a copy that
// still stands keeps answering for a matching digest.
func TestQuarantineReadFailure(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{now: time.Now()}
	v, st := newQuarantineVerifier(t, clock)
	if _, err := st.AddQuarantine(ctx, store.Quarantine{Address: "192.0.2.1", Offender: "x", Since: clock.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	check := func(held ...string) *Outcome {
		t.Helper()
		o, p := shieldPulse(t, "a", held...)
		return v.checkQuarantine(ctx, o, p)
	}
	if out := check("192.0.2.1"); out != nil {
		t.Fatalf("matching: %v", out.Reason)
	}
	st.Close()
	if out := check("192.0.2.1"); out != nil {
		t.Fatalf("matching the standing copy with the store closed: %v", out.Reason)
	}
	clock.Advance(QuarantineCacheTTL + 5*time.Minute) // past the copy's TTL and any grace
	for _, held := range [][]string{{"192.0.2.1"}, nil} {
		if out := check(held...); out != nil {
			t.Fatalf("holding %v with the store closed: judged %v", held, out.Reason)
		}
	}
	if _, ok := v.quar.diverged["a"]; ok {
		t.Error("a divergence was recorded without reading the table")
	}
}

// BenchmarkCheckQuarantine: reconciliation's cost per steady-state pulse
// (the reported digest matches) with a 100-address table the agent owns
// no entry of, on SQLite and PostgreSQL: "reads" is the per-pulse work
// before the cache (the whole table and the agent's addresses read, then
// the expected set and its digest), "cached" is checkQuarantine with a
// standing copy, "fresh" is checkQuarantine reading the table every pulse
// (a copy's TTL of zero: what a pulse that differs costs).
func BenchmarkCheckQuarantine(b *testing.B) {
	ctx := context.Background()
	for _, engine := range []string{store.EngineSQLite, store.EnginePostgres} {
		b.Run(engine, func(b *testing.B) {
			dsn := filepath.Join(b.TempDir(), "state.db")
			if engine == store.EnginePostgres {
				if dsn = pgtest.NewDatabase(b); dsn == "" {
					return
				}
			}
			st, err := store.Open(ctx, engine, dsn)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			clock := &testClock{now: time.Now()}
			trust, err := ektrust.Load(nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			v, err := New(Options{Config: &config.Config{NonceTTL: time.Minute, ClockSkew: 30 * time.Second}, Store: st, Policies: noPolicies{}, EKTrust: trust, Now: clock.Now})
			if err != nil {
				b.Fatal(err)
			}
			var all []string
			for i := range 100 {
				addr := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
				all = append(all, addr)
				if _, err := st.AddQuarantine(ctx, store.Quarantine{Address: addr, Offender: fmt.Sprintf("x%d", i), Since: clock.Now().Add(-time.Hour)}); err != nil {
					b.Fatal(err)
				}
				if err := st.RegisterAddress(ctx, fmt.Sprintf("x%d", i), addr, clock.Now(), clock.Now().Add(-time.Hour)); err != nil {
					b.Fatal(err)
				}
			}
			if err := st.RegisterAddress(ctx, "a", "192.0.2.200", clock.Now(), clock.Now().Add(-time.Hour)); err != nil {
				b.Fatal(err)
			}
			o, p := shieldPulse(b, "a", all...)
			b.Run("reads", func(b *testing.B) {
				t0, a0 := st.QuarantineReads()
				for b.Loop() {
					qs, err := st.ListQuarantine(ctx)
					if err != nil {
						b.Fatal(err)
					}
					qs = slices.DeleteFunc(qs, func(q store.Quarantine) bool {
						c, err := quarset.Canonical(q.Address)
						return err == nil && v.protectedAddr(c)
					})
					mine, err := st.AgentAddresses(ctx, "a", clock.Now().Add(-time.Hour))
					if err != nil {
						b.Fatal(err)
					}
					want, _, _ := expectedQuarantine(qs, "a", mine, clock.Now(), time.Minute)
					if d, _ := quarset.DigestCanonical(want); string(d[:]) != string(p.GetBpf().GetQuarantineSha256()) {
						b.Fatal("no match")
					}
				}
				t1, a1 := st.QuarantineReads()
				b.ReportMetric(float64(t1-t0+a1-a0)/float64(b.N), "reads/pulse")
			})
			for _, tc := range []struct {
				name string
				ttl  time.Duration
			}{{"cached", time.Hour}, {"fresh", 0}} {
				b.Run(tc.name, func(b *testing.B) {
					prev := QuarantineCacheTTL
					QuarantineCacheTTL = tc.ttl
					b.Cleanup(func() { QuarantineCacheTTL = prev })
					t0, a0 := st.QuarantineReads()
					for b.Loop() {
						if out := v.checkQuarantine(ctx, o, p); out != nil {
							b.Fatal(out.Message)
						}
					}
					t1, a1 := st.QuarantineReads()
					b.ReportMetric(float64(t1-t0+a1-a0)/float64(b.N), "reads/pulse")
				})
			}
		})
	}
}

// TestQuarantineCopyConcurrent: pulses reconciled while this process
// isolates and releases addresses share one copy without a race (go test
// -race); once the writes stop, a pulse holding the final table is
// accepted and one holding a released address is not.
func TestQuarantineCopyConcurrent(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{now: time.Now()}
	v, st := newQuarantineVerifier(t, clock)
	old := clock.Now().Add(-time.Hour)
	if _, err := st.AddQuarantine(ctx, store.Quarantine{Address: "192.0.2.1", Offender: "x", Since: old}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for range 50 {
				o, p := shieldPulse(t, fmt.Sprintf("a%d", g), "192.0.2.1")
				v.checkQuarantine(ctx, o, p)
			}
		})
	}
	wg.Go(func() {
		for i := range 20 {
			addr := fmt.Sprintf("198.51.100.%d", i+1)
			if _, err := st.AddQuarantine(ctx, store.Quarantine{Address: addr, Offender: "y", Since: old}); err != nil {
				t.Error(err)
				return
			}
			if _, err := st.RemoveQuarantine(ctx, addr); err != nil {
				t.Error(err)
				return
			}
			v.registerAddress(ctx, "y", fmt.Sprintf("203.0.113.%d", i+1))
		}
	})
	wg.Wait()
	if out := func() *Outcome { o, p := shieldPulse(t, "a0", "192.0.2.1"); return v.checkQuarantine(ctx, o, p) }(); out != nil {
		t.Fatalf("holding the table: %v", out.Reason)
	}
	clock.Advance(time.Hour) // past the grace of a first difference
	o, p := shieldPulse(t, "a1", "192.0.2.1", "198.51.100.20")
	v.checkQuarantine(ctx, o, p)
	clock.Advance(time.Hour)
	o, p = shieldPulse(t, "a1", "192.0.2.1", "198.51.100.20")
	if out := v.checkQuarantine(ctx, o, p); out == nil || out.Reason != pulsev1.Reason_REASON_QUARANTINE_DIVERGED {
		t.Fatalf("holding a released address past the grace: %v", out)
	}
}
