package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/internal/pgtest"
)

// batchStores opens one store per engine (PostgreSQL unless -short).
func batchStores(t *testing.T) map[string]*Store {
	t.Helper()
	ctx := context.Background()
	out := map[string]*Store{}
	s, err := Open(ctx, EngineSQLite, filepath.Join(t.TempDir(), "pulse.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	out[EngineSQLite] = s
	if !testing.Short() {
		pg, err := Open(ctx, EnginePostgres, pgtest.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pg.Close() })
		out[EnginePostgres] = pg
	}
	return out
}

// holdWriters restarts the store's group commit with one writer and holds
// it after it takes its first operation, so that operations submitted
// meanwhile queue up and then run as one batch once release is called.
func holdWriters(t *testing.T, s *Store) (release func()) {
	t.Helper()
	ordered := s.group.ordered
	s.stopBatcher()
	s.startBatcher(1, ordered)
	s.group.hold.Lock()
	return s.group.hold.Unlock
}

// waitQueued waits until n operations wait in the queue.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.group.ops) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d operations queued, want %d", len(s.group.ops), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func enrollN(t *testing.T, s *Store, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("agent-%02d", i)
		ek := sha256.Sum256([]byte("ek-" + ids[i]))
		if err := s.EnrollAgent(context.Background(), &Agent{ID: ids[i], TPM: true, EKSHA256: ek[:], EnrolledAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

type spendResult struct {
	st  NonceStatus
	err error
}

// TestGroupCommit queues pulse commits of many agents, two per epoch, behind
// a held table, then checks that they ran in shared transactions and that
// each caller got its own right answer: one commit per epoch wins and its
// record lands, the other is a replay, an unknown agent is told so.
func TestGroupCommit(t *testing.T) {
	for name, s := range batchStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ids := enrollN(t, s, 8)
			release := holdWriters(t, s)
			before := s.BatchStats()

			var wg sync.WaitGroup
			spends := make([]spendResult, 2*len(ids)+1)
			for i, id := range ids {
				for j := 0; j < 2; j++ {
					wg.Add(1)
					go func(k int) {
						defer wg.Done()
						st, err := s.CommitPulse(ctx, id, 0, PulseUpdate{At: time.Now(), Verdict: 1, Message: "batched " + id})
						spends[k] = spendResult{st, err}
					}(2*i + j)
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := s.CommitPulse(ctx, "nobody", 0, PulseUpdate{At: time.Now()})
				spends[len(spends)-1] = spendResult{st, err}
			}()
			total := 2*len(ids) + 1
			waitQueued(t, s, total-1)
			release()
			wg.Wait()

			for i, id := range ids {
				a, b := spends[2*i], spends[2*i+1]
				if a.err != nil || b.err != nil {
					t.Fatalf("%s: spend errors %v, %v", id, a.err, b.err)
				}
				if (a.st == NonceOK) == (b.st == NonceOK) || (a.st != NonceReplayed && b.st != NonceReplayed) {
					t.Errorf("%s: spends %v and %v, want one ok and one replayed", id, a.st, b.st)
				}
				got, err := s.GetAgent(ctx, id)
				if err != nil || got.NonceEpoch != 1 || got.LastMessage != "batched "+id {
					t.Errorf("%s: stored %+v, %v", id, got, err)
				}
			}
			if last := spends[len(spends)-1]; !errors.Is(last.err, ErrNotFound) {
				t.Errorf("unknown agent: %v, want ErrNotFound", last.err)
			}
			after := s.BatchStats()
			if after.Batches == before.Batches || after.Batched-before.Batched < uint64(total-1) {
				t.Errorf("stats %+v after %+v: the queued operations did not share transactions", after, before)
			}
			if after.Retried != before.Retried {
				t.Errorf("%d operations retried, want none", after.Retried-before.Retried)
			}
		})
	}
}

// TestGroupCommitIsolatesFailures puts a failing statement in a batch: the
// batch rolls back and every other operation runs again alone and succeeds;
// only the failing caller sees an error, and no spend counts twice.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	for name, s := range batchStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ids := enrollN(t, s, 6)
			release := holdWriters(t, s)
			before := s.BatchStats()

			var wg sync.WaitGroup
			spends := make([]spendResult, len(ids))
			for i, id := range ids {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := s.CommitPulse(ctx, id, 0, PulseUpdate{At: time.Now(), Verdict: 1})
					spends[i] = spendResult{st, err}
				}()
			}
			var bad error
			wg.Add(1)
			go func() {
				defer wg.Done()
				bad = s.submit(ctx, "agent-03", func(ctx context.Context, r runner) error {
					_, err := r.exec(ctx, `UPDATE no_such_table SET x = 1`)
					return err
				})
			}()
			waitQueued(t, s, len(ids))
			release()
			wg.Wait()

			if bad == nil {
				t.Fatal("a statement on a missing table succeeded")
			}
			for i, id := range ids {
				if spends[i].err != nil || spends[i].st != NonceOK {
					t.Errorf("%s: spend %v, %v; want ok", id, spends[i].st, spends[i].err)
				}
				if got, err := s.GetAgent(ctx, id); err != nil || got.NonceEpoch != 1 {
					t.Errorf("%s: stored epoch %+v, %v; want 1", id, got, err)
				}
			}
			if after := s.BatchStats(); after.Retried == before.Retried {
				t.Errorf("stats %+v: the failed batch was not rerun alone", after)
			}
		})
	}
}

// TestClosedStoreRefusesWrites: after Close, writes fail instead of hanging.
func TestClosedStoreRefusesWrites(t *testing.T) {
	s, err := Open(context.Background(), EngineSQLite, filepath.Join(t.TempDir(), "pulse.db"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.CommitPulse(context.Background(), "a", 0, PulseUpdate{At: time.Now()}); !errors.Is(err, errClosed) {
		t.Fatalf("spend on a closed store: %v, want errClosed", err)
	}
}
