package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// engines returns a fresh store per engine available to the test. PostgreSQL
// joins the list in storetest when a cluster is available.
func engines(t *testing.T) map[string]*store.Store {
	t.Helper()
	ctx := context.Background()
	out := map[string]*store.Store{}
	s, err := store.Open(ctx, store.EngineSQLite, filepath.Join(t.TempDir(), "pulse.db"))
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	out[store.EngineSQLite] = s
	for name, pg := range postgresStores(t) {
		out[name] = pg
	}
	return out
}

func sum(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func TestEnrollAgent(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			a := &store.Agent{ID: "edge-1", Partition: "lab", TPM: true, EKPublic: []byte("ek"), EKSHA256: sum("ek"),
				AKPublic: []byte("ak1"), AKName: []byte("n1"), EnrolledAt: time.Now()}
			if err := s.EnrollAgent(ctx, a); err != nil {
				t.Fatalf("enroll: %v", err)
			}
			// Same EK, new AK: accepted.
			a2 := *a
			a2.AKPublic = []byte("ak2")
			if err := s.EnrollAgent(ctx, &a2); err != nil {
				t.Fatalf("re-enroll same EK: %v", err)
			}
			got, err := s.GetAgent(ctx, "edge-1")
			if err != nil || !bytes.Equal(got.AKPublic, []byte("ak2")) || got.Partition != "lab" || !got.TPM {
				t.Fatalf("get after re-enroll: %+v, %v", got, err)
			}
			// Other EK: identity takeover, refused, nothing changes.
			a3 := *a
			a3.EKPublic, a3.EKSHA256, a3.AKPublic = []byte("other"), sum("other"), []byte("ak3")
			if err := s.EnrollAgent(ctx, &a3); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("enroll other EK: want ErrConflict, got %v", err)
			}
			// TPM agent coming back without a TPM: refused too.
			a4 := store.Agent{ID: "edge-1", EnrolledAt: time.Now()}
			if err := s.EnrollAgent(ctx, &a4); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("enroll without TPM: want ErrConflict, got %v", err)
			}
			got, _ = s.GetAgent(ctx, "edge-1")
			if !bytes.Equal(got.AKPublic, []byte("ak2")) {
				t.Fatalf("refused enrollment changed the AK: %q", got.AKPublic)
			}
			if _, err := s.GetAgent(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("get unknown: %v", err)
			}
		})
	}
}

func enrollPlain(t *testing.T, s *store.Store, id string) {
	t.Helper()
	if err := s.EnrollAgent(context.Background(), &store.Agent{ID: id, TPM: true, EKSHA256: sum("ek-" + id), EnrolledAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func TestNonces(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrollPlain(t, s, "a")
			cases := []struct {
				name  string
				agent string
				epoch uint64
				want  store.NonceStatus
				after uint64
			}{
				{"fresh epoch", "a", 0, store.NonceOK, 1},
				{"same epoch again", "a", 0, store.NonceReplayed, 1},
				{"next epoch", "a", 1, store.NonceOK, 2},
				{"epoch never reached", "a", 9, store.NonceUnknown, 2},
				{"old epoch", "a", 1, store.NonceReplayed, 2},
			}
			for _, c := range cases {
				got, err := s.CommitPulse(ctx, c.agent, c.epoch, store.PulseUpdate{At: time.Now(), Verdict: 1, Message: c.name})
				if err != nil || got != c.want {
					t.Errorf("%s: got %v, %v; want %v", c.name, got, err, c.want)
				}
				a, err := s.GetAgent(ctx, c.agent)
				if err != nil || a.NonceEpoch != c.after {
					t.Errorf("%s: stored %+v, %v; want epoch %d", c.name, a, err, c.after)
				}
				// Only the spend that won writes its outcome.
				if wrote := a.LastMessage == c.name; wrote != (c.want == store.NonceOK) {
					t.Errorf("%s: status %v but stored message %q", c.name, got, a.LastMessage)
				}
			}
			if _, err := s.CommitPulse(ctx, "nobody", 0, store.PulseUpdate{At: time.Now()}); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("unknown agent: %v, want ErrNotFound", err)
			}
		})
	}
}

// TestNonceSpentOnce races many pulses for one epoch; exactly one may win.
func TestNonceSpentOnce(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrollPlain(t, s, "race")
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				wins int
			)
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := s.CommitPulse(ctx, "race", 0, store.PulseUpdate{At: time.Now(), Verdict: 1})
					if err != nil {
						t.Error(err)
						return
					}
					if st == store.NonceOK {
						mu.Lock()
						wins++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if wins != 1 {
				t.Fatalf("nonce spent %d times, want exactly 1", wins)
			}
		})
	}
}

func TestSecretCreatedOnce(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				seen = map[string]bool{}
			)
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					v, err := s.Secret(ctx, "k", func() ([]byte, error) { return []byte{byte(i), 1, 2}, nil })
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					seen[string(v)] = true
					mu.Unlock()
				}()
			}
			wg.Wait()
			if len(seen) != 1 {
				t.Fatalf("concurrent creators saw %d values, want 1", len(seen))
			}
			if _, err := s.Secret(ctx, "other", func() ([]byte, error) { return nil, errors.New("no entropy") }); err == nil {
				t.Fatal("a failing generator was not reported")
			}
		})
	}
}

func TestEnrollmentTakenOnce(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := &store.Enrollment{ID: "e1-" + name, AgentID: "a", SecretSHA256: sum("s"), Expires: time.Now().Add(time.Minute)}
			if err := s.CreateEnrollment(ctx, e); err != nil {
				t.Fatal(err)
			}
			if _, err := s.TakeEnrollment(ctx, e.ID, "other"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("take by other agent: %v", err)
			}
			got, err := s.TakeEnrollment(ctx, e.ID, "a")
			if err != nil || !bytes.Equal(got.SecretSHA256, sum("s")) {
				t.Fatalf("take: %+v %v", got, err)
			}
			if _, err := s.TakeEnrollment(ctx, e.ID, "a"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("second take: %v", err)
			}
		})
	}
}

func TestCommitPulseAndFirmwareLogs(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if err := s.EnrollAgent(ctx, &store.Agent{ID: "p1", TPM: true, EKSHA256: sum("ek"), EnrolledAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			at := time.Now().UTC().Truncate(time.Microsecond)
			commit := func(epoch uint64, u store.PulseUpdate) {
				t.Helper()
				if st, err := s.CommitPulse(ctx, "p1", epoch, u); err != nil || st != store.NonceOK {
					t.Fatalf("commit at epoch %d: %v, %v", epoch, st, err)
				}
			}
			commit(0, store.PulseUpdate{At: at, Verdict: 1, Reason: 1, Evidence: true, Seq: 7,
				ResetCount: 3, RuntimeRecords: []byte("rec"), RuntimeCount: 1, FirmwareLogSHA256: sum("log")})
			// A rejected pulse updates the verdict but not the evidence.
			commit(1, store.PulseUpdate{At: at.Add(time.Second), Verdict: 3, Reason: 20, Message: "bad sig"})
			a, err := s.GetAgent(ctx, "p1")
			if err != nil {
				t.Fatal(err)
			}
			if a.LastVerdict != 3 || a.LastReason != 20 || a.LastSeq != 7 || a.ResetCount != 3 || string(a.RuntimeRecords) != "rec" || !a.LastPulseAt.Equal(at.Add(time.Second)) {
				t.Fatalf("agent after pulses: %+v", a)
			}
			// A replayed pulse writes nothing, evidence included.
			if st, err := s.CommitPulse(ctx, "p1", 1, store.PulseUpdate{At: at, Verdict: 1, Evidence: true, Seq: 99}); err != nil || st != store.NonceReplayed {
				t.Fatalf("replayed commit: %v, %v", st, err)
			}
			if a, err := s.GetAgent(ctx, "p1"); err != nil || a.LastSeq != 7 || a.LastVerdict != 3 {
				t.Fatalf("agent after a replay: %+v, %v", a, err)
			}
			// A pulse carries the next deadline, counted on the database's
			// clock (nanoseconds need 64 bits).
			before, err := s.Now(ctx)
			if err != nil {
				t.Fatal(err)
			}
			commit(2, store.PulseUpdate{At: at, Verdict: 1, DeadlineIn: 90 * time.Second, Interval: 30 * time.Second})
			after, _ := s.Now(ctx)
			if ops, err := s.GetAgentOps(ctx, "p1"); err != nil || ops.Deadline.Before(before.Add(90*time.Second)) || ops.Deadline.After(after.Add(90*time.Second)) || ops.Interval != 30*time.Second {
				t.Fatalf("ops after pulse: %+v %v (database clock %s to %s)", ops, err, before, after)
			}
			if _, err := s.CommitPulse(ctx, "ghost", 0, store.PulseUpdate{At: at}); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("record for unknown agent: %v", err)
			}
			if err := s.PutFirmwareLog(ctx, sum("log"), []byte("LOG")); err != nil {
				t.Fatal(err)
			}
			if err := s.PutFirmwareLog(ctx, sum("log"), []byte("LOG")); err != nil {
				t.Fatalf("idempotent put: %v", err)
			}
			if got, err := s.GetFirmwareLog(ctx, sum("log")); err != nil || string(got) != "LOG" {
				t.Fatalf("get log: %q %v", got, err)
			}
			if _, err := s.GetFirmwareLog(ctx, sum("nope")); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("get missing log: %v", err)
			}
		})
	}
}

func TestReopenKeepsState(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pulse.db")
	s, err := store.Open(ctx, store.EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnrollAgent(ctx, &store.Agent{ID: "keep", EnrolledAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = store.Open(ctx, store.EngineSQLite, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.GetAgent(ctx, "keep"); err != nil {
		t.Fatalf("agent lost across reopen: %v", err)
	}
	if v, err := s.SchemaVersion(ctx); err != nil || v < 1 {
		t.Fatalf("schema version %d %v", v, err)
	}
}

func TestCountByVerdict(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			for _, id := range []string{"v1", "v2", "v3", "v4"} {
				enrollPlain(t, s, id)
			}
			for id, verdict := range map[string]int32{"v1": 1, "v2": 1, "v3": 3} {
				if st, err := s.CommitPulse(ctx, id, 0, store.PulseUpdate{At: time.Now(), Verdict: verdict}); err != nil || st != store.NonceOK {
					t.Fatalf("commit %s: %v, %v", id, st, err)
				}
			}
			got, err := s.CountByVerdict(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := map[int32]int{0: 1, 1: 2, 3: 1}
			if len(got) != len(want) {
				t.Fatalf("counts %v, want %v", got, want)
			}
			for v, n := range want {
				if got[v] != n {
					t.Fatalf("counts %v, want %v", got, want)
				}
			}
		})
	}
}
