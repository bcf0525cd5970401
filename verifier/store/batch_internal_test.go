package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
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

// onWriter reports whether the calling goroutine is a group-commit writer.
func onWriter() bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, ".writeLoop") {
			return true
		}
		if !more {
			return false
		}
	}
}

// TestLoneOperationRunsOnCaller: with nothing queued or running, an
// operation runs on its caller's goroutine (no hand-off to a writer and
// back); while another runs, the next one is queued for a writer, which
// may batch it. Every caller gets its own answer either way.
func TestLoneOperationRunsOnCaller(t *testing.T) {
	for name, s := range batchStores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ids := enrollN(t, s, 2)
			var lone bool
			if err := s.submit(ctx, ids[0], func(ctx context.Context, r runner) error { lone = !onWriter(); return nil }); err != nil || !lone {
				t.Fatalf("lone operation: on the caller %v, %v", lone, err)
			}
			if st, err := s.CommitPulse(ctx, ids[0], 0, PulseUpdate{At: time.Now(), Verdict: 1}); err != nil || st != NonceOK {
				t.Fatalf("lone commit: %v, %v", st, err)
			}

			started, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			unblock := func() { once.Do(func() { close(release) }) }
			defer unblock()
			first := make(chan error, 1)
			go func() {
				first <- s.submit(ctx, ids[1], func(ctx context.Context, r runner) error {
					close(started)
					<-release
					return nil
				})
			}()
			<-started
			var queued bool
			second := make(chan error, 1)
			go func() {
				second <- s.submit(ctx, ids[1], func(ctx context.Context, r runner) error { queued = onWriter(); return nil })
			}()
			// A writer runs it while the first still runs on its caller.
			select {
			case err := <-second:
				if err != nil || !queued {
					t.Fatalf("operation submitted while another ran: on a writer %v, %v", queued, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("an operation submitted while another ran on its caller waited for it")
			}
			unblock()
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			if p := s.group.pending.Load(); p != 0 {
				t.Fatalf("%d operations still counted as pending", p)
			}
			// Replays still lose, on either path.
			if st, err := s.CommitPulse(ctx, ids[0], 0, PulseUpdate{At: time.Now()}); err != nil || st != NonceReplayed {
				t.Fatalf("replayed commit: %v, %v", st, err)
			}
		})
	}
}
