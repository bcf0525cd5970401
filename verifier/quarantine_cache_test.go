package verifier_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pgtest"
	"github.com/pulse-attest/pulse/internal/quarset"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/simulator/simtest"
	"github.com/pulse-attest/pulse/verifier"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
	"github.com/pulse-attest/pulse/verifier/verifiertest"
)

// otherReplica writes the quarantine table behind the back of the
// verifier under test: another store handle on its SQLite file, or a
// second verifier on its PostgreSQL database.
type otherReplica struct {
	st *store.Store
	v  *verifier.Verifier // nil: release through the store
}

func (r otherReplica) add(t *testing.T, addr, offender string, since time.Time) {
	t.Helper()
	if isNew, err := r.st.AddQuarantine(context.Background(), store.Quarantine{Address: addr, Offender: offender, Reason: "REASON_TEST", Since: since}); err != nil || !isNew {
		t.Fatalf("another replica isolating %s: new %v, %v", addr, isNew, err)
	}
}

func (r otherReplica) release(t *testing.T, addr string) {
	t.Helper()
	var err error
	if r.v != nil {
		err = r.v.Release(context.Background(), addr, "operator@r2")
	} else {
		_, err = r.st.ReleaseQuarantine(context.Background(), addr, "operator@r2", time.Hour)
	}
	if err != nil {
		t.Fatalf("another replica releasing %s: %v", addr, err)
	}
}

// startSecondReplica starts another verifier "r2" on the PostgreSQL
// database of first (e's configuration), with its certificate, policy and
// directive key.
func startSecondReplica(t *testing.T, e *env, first *config.Config) *verifier.Daemon {
	t.Helper()
	cfg := &config.Config{
		Listen:       "127.0.0.1:0",
		Replica:      "r2",
		TLS:          config.TLS{Cert: filepath.Join(e.dir, "v.pem"), Key: filepath.Join(e.dir, "v-key.pem"), AgentCA: e.caFile},
		Store:        first.Store,
		Policy:       first.Policy,
		Enrollment:   config.Enrollment{Timeout: time.Minute, DefaultPartition: "fleet"},
		NonceTTL:     time.Minute,
		ClockSkew:    30 * time.Second,
		DirectiveKey: first.DirectiveKey,
		Alerts:       config.Alerts{AuditLog: filepath.Join(t.TempDir(), "audit.log")},
	}
	ctx, cancel := context.WithCancel(context.Background())
	d, err := verifier.Start(ctx, cfg, simtest.Logger(t))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(); cancel() })
	return d
}

func countOf(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// TestQuarantineCache: a pulse whose Shield digest matches the set the
// verifier expects from its copy of the quarantine table costs no store
// read (neither the table nor the agent's addresses), for an agent that
// owns an entry and one that does not. An isolation by another replica is
// accepted as in flight while the copy stands and judged (corrected, then
// REASON_QUARANTINE_DIVERGED past the grace) once its TTL passes. A
// release by another replica while the copy stands never makes this
// verifier send the released address back: a difference is judged on a
// copy read after the pulse. This verifier's own release drops the copy
// at once. On SQLite (another store handle) and PostgreSQL (a second
// verifier).
func TestQuarantineCache(t *testing.T) {
	const ttl = 20 * time.Second // within it, the steps' wall-clock time
	prev := verifier.QuarantineCacheTTL
	verifier.QuarantineCacheTTL = ttl
	t.Cleanup(func() { verifier.QuarantineCacheTTL = prev })
	for _, engine := range []string{store.EngineSQLite, store.EnginePostgres} {
		t.Run(engine, func(t *testing.T) {
			withKey, pub := directiveKeyFile(t)
			var dsn string
			onEngine := func(c *config.Config) { c.Replica = "r1" }
			if engine == store.EnginePostgres {
				if testing.Short() {
					t.Skip("needs PostgreSQL")
				}
				if dsn = pgtest.NewDatabase(t); dsn == "" {
					return
				}
				onEngine = func(c *config.Config) {
					c.Replica, c.Store = "r1", config.Store{Engine: store.EnginePostgres, DSN: dsn}
				}
			}
			var seen config.Config
			grace := time.Minute
			e := newEnvCfg(t, "rhel8-uefi", both(withKey, onEngine, ekBacks(2),
				fleetPolicy(t, "  heartbeat {\n    interval = \"1m\"\n  }\n"), func(c *config.Config) { seen = *c }))
			if e == nil {
				return
			}
			other := otherReplica{}
			if engine == store.EnginePostgres {
				d2 := startSecondReplica(t, e, &seen)
				other = otherReplica{st: d2.Store, v: d2.Verifier}
			} else {
				other.st = openStore(t, e)
			}
			st := e.daemon.Store
			const (
				isolated = "192.0.2.7"    // someone else's: every agent holds it
				ownEntry = "192.0.2.8"    // a's own entry: a may hold it or not
				late     = "192.0.2.9"    // isolated by the other replica
				released = "198.51.100.4" // released by the other replica
			)
			old := e.clock.Now().Add(-time.Hour)
			a := e.enrolled("edge-q")
			b := e.sharing(a, "edge-r", "127.0.0.3")
			wantVerdict(t, b.Pulse(nil), trusted, pulsev1.Reason_REASON_OK)
			other.add(t, isolated, "edge-x", old)
			other.add(t, ownEntry, a.ID, old)
			dirs := openDirectives(t, a)

			digest := func(set ...string) []byte {
				d, _, err := quarset.Digest(set)
				if err != nil {
					t.Fatal(err)
				}
				return d[:]
			}
			pulse := func(who *verifiertest.Client, what string, want pulsev1.Reason, list ...string) {
				t.Helper()
				who.Challenge()
				resp := who.Pulse(func(p *parts) {
					p.Payload.Time = timestampNow(e)
					p.Payload.Bpf = &pulsev1.BPFSnapshot{QuarantineSha256: digest(list...), QuarantineCount: uint32(len(list))}
					p.Payload.Quarantined = list
				})
				if resp.GetReason() != want {
					t.Fatalf("%s: %s/%s (%s), want %s", what, resp.GetVerdict(), resp.GetReason(), resp.GetMessage(), want)
				}
			}
			reads := func() (uint64, uint64) { return st.QuarantineReads() }
			wantReads := func(what string, t0, a0 uint64, table uint64) {
				t.Helper()
				t1, a1 := reads()
				if t1-t0 != table || a1 != a0 {
					t.Errorf("%s: %d table reads and %d address reads, want %d and none", what, t1-t0, a1-a0, table)
				}
			}

			// The steady state: after the first read, none.
			pulse(a, "a, first", pulsev1.Reason_REASON_OK, isolated)
			pulse(b, "b, first", pulsev1.Reason_REASON_OK, isolated, ownEntry)
			t0, a0 := reads()
			for range 3 {
				pulse(a, "a, steady (owns an entry)", pulsev1.Reason_REASON_OK, isolated)
				pulse(a, "a, steady, holding its own entry", pulsev1.Reason_REASON_OK, isolated, ownEntry)
				pulse(b, "b, steady", pulsev1.Reason_REASON_OK, isolated, ownEntry)
			}
			wantReads("steady state", t0, a0, 0)

			// Another replica isolates an address: in flight while the copy
			// stands; once it has aged out, missing it is corrected, then
			// judged past the grace.
			other.add(t, late, "edge-y", old)
			t0, a0 = reads()
			pulse(a, "a, within the TTL of another replica's isolation", pulsev1.Reason_REASON_OK, isolated)
			wantReads("within the TTL", t0, a0, 0)
			e.clock.Advance(ttl + time.Second)
			pulse(a, "a missing it past the TTL: corrected", pulsev1.Reason_REASON_OK, isolated)
			waitFor(t, "the correcting quarantine directive", func() bool { return countOf(dirs.quarantined(t, pub, a.ID), late) > 0 })
			e.clock.Advance(grace + time.Second)
			pulse(a, "a missing it past the grace", pulsev1.Reason_REASON_QUARANTINE_DIVERGED, isolated)
			pulse(a, "a holding it", pulsev1.Reason_REASON_OK, isolated, late)
			pulse(b, "b holding it", pulsev1.Reason_REASON_OK, isolated, ownEntry, late)

			// Another replica releases an address while this one's copy
			// still holds it: a, having applied the release, is accepted and
			// never told to drop it again.
			other.add(t, released, "edge-z", old)
			e.clock.Advance(ttl + time.Second)
			pulse(a, "a holding the address to be released", pulsev1.Reason_REASON_OK, isolated, late, released)
			t0, a0 = reads()
			pulse(a, "a holding it, copy standing", pulsev1.Reason_REASON_OK, isolated, late, released)
			wantReads("copy standing", t0, a0, 0)
			sent := countOf(dirs.quarantined(t, pub, a.ID), released)
			other.release(t, released)
			t0, a0 = reads()
			pulse(a, "a after the other replica's release", pulsev1.Reason_REASON_OK, isolated, late)
			wantReads("a difference", t0, a0, 1)
			time.Sleep(3 * verifier.DirectivePollInterval)
			if n := countOf(dirs.quarantined(t, pub, a.ID), released); n != sent {
				t.Fatalf("a was told to drop %s again after another replica released it (%d quarantine directives naming it, %d before)", released, n, sent)
			}
			// b still holds it (its release in flight): told to release it,
			// not yet a finding.
			pulse(b, "b still holding the released address", pulsev1.Reason_REASON_OK, isolated, ownEntry, late, released)

			// This verifier's own release drops its copy at once: a pulse
			// that matches the old copy is judged on a fresh read.
			pulse(a, "a, copy refreshed", pulsev1.Reason_REASON_OK, isolated, late)
			if err := e.daemon.Verifier.Release(context.Background(), late, "operator@r1"); err != nil {
				t.Fatal(err)
			}
			t0, a0 = reads()
			pulse(a, "a still holding what this replica released", pulsev1.Reason_REASON_OK, isolated, late)
			wantReads("after this replica's own release", t0, a0, 1)
			e.clock.Advance(grace + time.Second)
			pulse(a, "a still holding it past the grace", pulsev1.Reason_REASON_QUARANTINE_DIVERGED, isolated, late)
			pulse(a, "a agreeing", pulsev1.Reason_REASON_OK, isolated)
		})
	}
}
