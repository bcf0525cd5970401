package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/verifier/store"
)

// t0 is the tests' logical clock: three days back, so a log PutFirmwareLog
// stores now is newer than any cut-off the tests use.
var t0 = time.Now().UTC().Add(-72 * time.Hour).Truncate(time.Millisecond)

func usage(t *testing.T, s *store.Store) store.FirmwareLogUsage {
	t.Helper()
	u, err := s.FirmwareLogUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// logNames are the logs of these tests; logOf(prefix, name) is one's digest.
var logNames = []string{"A", "B", "C", "D", "E"}

func logOf(prefix, name string) []byte { return sum(prefix + name) }

// namesOf names digests made by logOf with the prefix.
func namesOf(prefix string, digests [][]byte) []string {
	var out []string
	for _, d := range digests {
		for _, name := range logNames {
			if bytes.Equal(d, logOf(prefix, name)) {
				out = append(out, name)
			}
		}
	}
	return out
}

// refsOf names the agent's references, most recently used first.
func refsOf(t *testing.T, s *store.Store, agentID, prefix string) []string {
	t.Helper()
	refs, err := s.FirmwareLogRefs(context.Background(), agentID)
	if err != nil {
		t.Fatal(err)
	}
	var ds [][]byte
	for _, r := range refs {
		ds = append(ds, r.SHA256)
	}
	return namesOf(prefix, ds)
}

func TestReferenceFirmwareLog(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrollPlain(t, s, "a1")
			enrollPlain(t, s, "a2")
			q := store.FirmwareLogQuota{PerAgent: 4, Window: 24 * time.Hour}

			use, err := s.ReferenceFirmwareLog(ctx, "a1", sum("A"), []byte("A"), t0, q)
			if err != nil || !use.New || !use.Stored || len(use.Evicted) != 0 {
				t.Fatalf("first reference: %+v, %v", use, err)
			}
			// A second agent booted the same way shares the row.
			use, err = s.ReferenceFirmwareLog(ctx, "a2", sum("A"), []byte("A"), t0.Add(time.Second), q)
			if err != nil || !use.New || use.Stored {
				t.Fatalf("second agent: %+v, %v", use, err)
			}
			// Referencing again is no new log; nil bytes are enough when the
			// row exists.
			use, err = s.ReferenceFirmwareLog(ctx, "a1", sum("A"), nil, t0.Add(time.Minute), q)
			if err != nil || use.New || use.Stored {
				t.Fatalf("again: %+v, %v", use, err)
			}
			if u := usage(t, s); u.Logs != 1 || u.Bytes != 1 || u.Refs != 2 {
				t.Fatalf("usage %+v, want one log of one byte and two references", u)
			}
			if got, err := s.GetFirmwareLog(ctx, sum("A")); err != nil || string(got) != "A" {
				t.Fatalf("get: %q, %v", got, err)
			}
			refs, err := s.FirmwareLogRefs(ctx, "a1")
			if err != nil || len(refs) != 1 || !refs[0].UsedAt.Equal(t0.Add(time.Minute)) {
				t.Fatalf("references of a1: %+v, %v", refs, err)
			}

			// Refused, nothing written.
			for _, c := range []struct {
				name  string
				agent string
				sha   []byte
				log   []byte
			}{
				{"nil bytes for a log the store lacks", "a1", sum("B"), nil},
				{"unknown agent", "ghost", sum("B"), []byte("B")},
			} {
				if _, err := s.ReferenceFirmwareLog(ctx, c.agent, c.sha, c.log, t0, q); !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("%s: %v, want ErrNotFound", c.name, err)
				}
			}
			if _, err := s.ReferenceFirmwareLog(ctx, "a1", []byte("short"), []byte("B"), t0, q); err == nil {
				t.Fatal("a digest of 5 bytes was accepted")
			}
			if _, err := s.ReferenceFirmwareLog(ctx, "a1", sum("B"), []byte("B"), t0, store.FirmwareLogQuota{}); err == nil {
				t.Fatal("a quota of 0 logs was accepted")
			}
			if u := usage(t, s); u.Logs != 1 || u.Refs != 2 {
				t.Fatalf("refusals wrote: %+v", u)
			}
		})
	}
}

// TestFirmwareLogQuota: a new log beyond the cap evicts the agent's least
// recently used reference when that one is idle for longer than the window,
// and is refused (nothing written) when it is not.
func TestFirmwareLogQuota(t *testing.T) {
	const day = 24 * time.Hour
	type ref struct {
		name string
		at   time.Duration // after t0
	}
	cases := []struct {
		name     string
		perAgent int
		before   []ref
		add      ref
		quota    bool
		evicted  []string
		refs     []string // most recently used first
	}{
		{name: "under the cap", perAgent: 3, before: []ref{{"A", 0}, {"B", time.Hour}},
			add: ref{"C", 2 * time.Hour}, refs: []string{"C", "B", "A"}},
		{name: "at the cap, least recently used idle past the window: evicted", perAgent: 2, before: []ref{{"A", 0}, {"B", time.Hour}},
			add: ref{"C", day + 30*time.Minute}, evicted: []string{"A"}, refs: []string{"C", "B"}},
		{name: "at the cap, least recently used within the window: refused", perAgent: 2, before: []ref{{"A", 0}, {"B", time.Hour}},
			add: ref{"C", 23 * time.Hour}, quota: true, refs: []string{"B", "A"}},
		{name: "coming back to a referenced log is not a new one", perAgent: 2, before: []ref{{"A", 0}, {"B", time.Hour}},
			add: ref{"A", 2 * time.Hour}, refs: []string{"A", "B"}},
		{name: "a log used again is no longer the least recent", perAgent: 2, before: []ref{{"A", 0}, {"B", time.Hour}, {"A", 2 * time.Hour}},
			add: ref{"C", day + 90*time.Minute}, evicted: []string{"B"}, refs: []string{"C", "A"}},
		{name: "one log per agent: a reboot into new firmware after a day", perAgent: 1, before: []ref{{"A", 0}},
			add: ref{"B", 2 * day}, evicted: []string{"A"}, refs: []string{"B"}},
		{name: "one log per agent: churn within a day", perAgent: 1, before: []ref{{"A", 0}},
			add: ref{"B", time.Hour}, quota: true, refs: []string{"A"}},
	}
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			for i, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					// Each case has its own agent and its own logs.
					agent := fmt.Sprintf("q%d", i)
					enrollPlain(t, s, agent)
					q := store.FirmwareLogQuota{PerAgent: c.perAgent, Window: day}
					for _, r := range c.before {
						if _, err := s.ReferenceFirmwareLog(ctx, agent, logOf(agent, r.name), []byte(agent+r.name), t0.Add(r.at), q); err != nil {
							t.Fatalf("reference %s: %v", r.name, err)
						}
					}
					before := usage(t, s)
					use, err := s.ReferenceFirmwareLog(ctx, agent, logOf(agent, c.add.name), []byte(agent+c.add.name), t0.Add(c.add.at), q)
					if c.quota {
						if !errors.Is(err, store.ErrQuota) {
							t.Fatalf("want ErrQuota, got %+v, %v", use, err)
						}
						if after := usage(t, s); after != before {
							t.Fatalf("a refused log changed the store: %+v, then %+v", before, after)
						}
						if _, err := s.GetFirmwareLog(ctx, logOf(agent, c.add.name)); !errors.Is(err, store.ErrNotFound) {
							t.Fatalf("the refused log was stored: %v", err)
						}
					} else {
						if err != nil {
							t.Fatalf("reference %s: %v", c.add.name, err)
						}
						if ev := namesOf(agent, use.Evicted); !equal(ev, c.evicted) {
							t.Fatalf("evicted %v, want %v", ev, c.evicted)
						}
					}
					if got := refsOf(t, s, agent, agent); !equal(got, c.refs) {
						t.Fatalf("references %v, want %v", got, c.refs)
					}
				})
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestCollectFirmwareLogs: collection deletes exactly the logs no agent
// references that were not touched since the cut-off.
func TestCollectFirmwareLogs(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrollPlain(t, s, "g1")
			enrollPlain(t, s, "g2")
			q := store.FirmwareLogQuota{PerAgent: 1, Window: time.Hour}
			ref := func(agent, name string, at time.Time) {
				t.Helper()
				if _, err := s.ReferenceFirmwareLog(ctx, agent, sum(name), []byte(name+name), at, q); err != nil {
					t.Fatalf("reference %s by %s: %v", name, agent, err)
				}
			}
			// A is referenced by g1 then g2; g1 moves to B (A stays g2's);
			// g2 moves to C (A is now nobody's); D is stored without a
			// reference, long ago; E without one, just now.
			ref("g1", "A", t0)
			ref("g2", "A", t0)
			ref("g1", "B", t0.Add(2*time.Hour))
			ref("g2", "C", t0.Add(3*time.Hour))
			if err := s.PutFirmwareLog(ctx, sum("D"), []byte("DD")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.DB().ExecContext(ctx, rebind1(s, `UPDATE firmware_logs SET stored_at = 1 WHERE sha256 = ?`), sum("D")); err != nil {
				t.Fatal(err)
			}
			if err := s.PutFirmwareLog(ctx, sum("E"), []byte("EE")); err != nil {
				t.Fatal(err)
			}

			// A cut-off before A was last touched spares it.
			n, freed, err := s.DeleteUnreferencedFirmwareLogs(ctx, t0)
			if err != nil || n != 1 || freed != 2 {
				t.Fatalf("first collection: %d logs, %d bytes, %v; want D only", n, freed, err)
			}
			n, freed, err = s.DeleteUnreferencedFirmwareLogs(ctx, t0.Add(4*time.Hour))
			if err != nil || n != 1 || freed != 2 {
				t.Fatalf("second collection: %d logs, %d bytes, %v; want A only", n, freed, err)
			}
			for _, c := range []struct {
				name string
				kept bool
			}{{"A", false}, {"B", true}, {"C", true}, {"D", false}, {"E", true}} {
				_, err := s.GetFirmwareLog(ctx, sum(c.name))
				if c.kept && err != nil {
					t.Errorf("%s: %v, want kept", c.name, err)
				}
				if !c.kept && !errors.Is(err, store.ErrNotFound) {
					t.Errorf("%s: %v, want collected", c.name, err)
				}
			}
			// A collected log comes back when an agent sends it again.
			ref("g1", "A", t0.Add(30*time.Hour))
			if _, err := s.GetFirmwareLog(ctx, sum("A")); err != nil {
				t.Fatalf("A after it was sent again: %v", err)
			}
		})
	}
}

// rebind1 numbers the one placeholder of q for PostgreSQL.
func rebind1(s *store.Store, q string) string {
	if s.Engine() != store.EnginePostgres {
		return q
	}
	return strings.Replace(q, "?", "$1", 1)
}

// TestFirmwareLogMigrationBackfill: a store upgraded from before references
// existed keeps every agent's current log through collection.
func TestFirmwareLogMigrationBackfill(t *testing.T) {
	dsns := map[string]string{store.EngineSQLite: filepath.Join(t.TempDir(), "pulse.db")}
	if !testing.Short() {
		dsns[store.EnginePostgres] = pgtest.NewDatabase(t)
	}
	for engine, dsn := range dsns {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			s, err := store.Open(ctx, engine, dsn)
			if err != nil {
				t.Fatal(err)
			}
			enrollPlain(t, s, "old")
			if st, err := s.CommitPulse(ctx, "old", 0, store.PulseUpdate{At: t0, Verdict: 1, Evidence: true, FirmwareLogSHA256: sum("A")}); err != nil || st != store.NonceOK {
				t.Fatalf("commit: %v %v", st, err)
			}
			for _, n := range []string{"A", "B"} {
				if err := s.PutFirmwareLog(ctx, sum(n), []byte(n+n+n)); err != nil {
					t.Fatal(err)
				}
			}
			// Back to what migration 7 left: no references, no sizes.
			for _, q := range []string{`UPDATE firmware_logs SET size = 0, stored_at = 0`, `DELETE FROM schema_migrations WHERE version = 8`} {
				if _, err := s.DB().ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			s, err = store.Open(ctx, engine, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := refsOf(t, s, "old", ""); !equal(got, []string{"A"}) {
				t.Fatalf("references after the migration: %v, want [A]", got)
			}
			if u := usage(t, s); u.Logs != 2 || u.Bytes != 6 {
				t.Fatalf("usage after the migration: %+v", u)
			}
			n, _, err := s.DeleteUnreferencedFirmwareLogs(ctx, t0)
			if err != nil || n != 1 {
				t.Fatalf("collection: %d, %v; want B only", n, err)
			}
			if _, err := s.GetFirmwareLog(ctx, sum("A")); err != nil {
				t.Fatalf("the agent's current log was collected: %v", err)
			}
		})
	}
}
