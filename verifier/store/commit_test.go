package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestCommitPulseFirmwareLog: a pulse's firmware-log reference is written
// by its commit and only by a commit that wins the epoch; a reference the
// commit cannot make rolls the whole commit back.
func TestCommitPulseFirmwareLog(t *testing.T) {
	q := store.FirmwareLogQuota{PerAgent: 1, Window: 24 * time.Hour}
	upd := func(log string, bytes bool, msg string) store.PulseUpdate {
		w := &store.FirmwareLogWrite{SHA256: sum(log), Quota: q}
		if bytes {
			w.Log = []byte(log)
		}
		return store.PulseUpdate{At: t0, Message: msg, FirmwareLog: w}
	}
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrollPlain(t, s, "a")

			// Honest: checked, then committed with the reference.
			if err := s.CheckFirmwareLogReference(ctx, "a", sum("A"), true, t0, q); err != nil {
				t.Fatalf("check A: %v", err)
			}
			if st, err := s.CommitPulse(ctx, "a", 0, upd("A", true, "first")); err != nil || st != store.NonceOK {
				t.Fatalf("commit with A: %v, %v", st, err)
			}
			if got := refsOf(t, s, "a", ""); !equal(got, []string{"A"}) {
				t.Fatalf("references %v, want [A]", got)
			}

			// Eight copies for one epoch, each with a new log B: one wins,
			// the others write nothing (no log, no reference).
			var wg sync.WaitGroup
			won := make(chan store.NonceStatus, 8)
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					u := upd("B", true, "copy")
					if i > 0 {
						u = upd("C", true, "copy")
					}
					u.At = t0.Add(48 * time.Hour)
					st, err := s.CommitPulse(ctx, "a", 1, u)
					if err != nil {
						t.Errorf("copy %d: %v", i, err)
					}
					won <- st
				}()
			}
			wg.Wait()
			close(won)
			n := 0
			for st := range won {
				if st == store.NonceOK {
					n++
				} else if st != store.NonceReplayed {
					t.Fatalf("losing copy: %v, want replayed", st)
				}
			}
			if n != 1 {
				t.Fatalf("%d copies won epoch 1, want 1", n)
			}
			refs := refsOf(t, s, "a", "")
			if len(refs) != 1 || refs[0] == "A" {
				t.Fatalf("references %v, want the winner's log only", refs)
			}
			// A (now unreferenced, until collected) and the winner's log.
			if u := usage(t, s); u.Logs != 2 || u.Refs != 1 {
				t.Fatalf("usage %+v: a losing copy stored its log", u)
			}
			for _, l := range []string{"B", "C"} {
				_, err := s.GetFirmwareLog(ctx, sum(l))
				if stored := err == nil; stored != (refs[0] == l) {
					t.Fatalf("log %s stored = %v (%v); the winner referenced %s", l, stored, err, refs[0])
				}
			}

			// Attack-side: a reference over the quota rolls the commit back.
			a0, err := s.GetAgent(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			if err := s.CheckFirmwareLogReference(ctx, "a", sum("D"), true, t0.Add(49*time.Hour), q); !errors.Is(err, store.ErrQuota) {
				t.Fatalf("check D within the window: %v, want ErrQuota", err)
			}
			u := upd("D", true, "over quota")
			u.At = t0.Add(49 * time.Hour)
			if _, err := s.CommitPulse(ctx, "a", a0.NonceEpoch, u); !errors.Is(err, store.ErrQuota) {
				t.Fatalf("commit over the quota: %v, want ErrQuota", err)
			}
			// A log the store lacks, with no bytes: gone, nothing written.
			if err := s.CheckFirmwareLogReference(ctx, "a", sum("E"), false, t0, store.FirmwareLogQuota{PerAgent: 4, Window: time.Hour}); !errors.Is(err, store.ErrFirmwareLogGone) || !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("check E without bytes: %v, want ErrFirmwareLogGone", err)
			}
			q2 := store.FirmwareLogQuota{PerAgent: 4, Window: time.Hour}
			u = store.PulseUpdate{At: t0, Message: "gone", FirmwareLog: &store.FirmwareLogWrite{SHA256: sum("E"), Quota: q2}}
			if _, err := s.CommitPulse(ctx, "a", a0.NonceEpoch, u); !errors.Is(err, store.ErrFirmwareLogGone) {
				t.Fatalf("commit of a gone log: %v, want ErrFirmwareLogGone", err)
			}
			a1, err := s.GetAgent(ctx, "a")
			if err != nil || a1.NonceEpoch != a0.NonceEpoch || a1.LastMessage != a0.LastMessage {
				t.Fatalf("a rolled-back commit wrote the row: %+v, %v", a1, err)
			}
			if got := refsOf(t, s, "a", ""); !equal(got, refs) {
				t.Fatalf("a rolled-back commit changed the references: %v", got)
			}
			// Bad input is refused before anything runs.
			u = store.PulseUpdate{At: t0, FirmwareLog: &store.FirmwareLogWrite{SHA256: []byte("short"), Quota: q}}
			if _, err := s.CommitPulse(ctx, "a", a0.NonceEpoch, u); err == nil {
				t.Fatal("a digest of 5 bytes was accepted")
			}
			// The ghost agent: not found, nothing written.
			if _, err := s.CommitPulse(ctx, "ghost", 0, upd("A", true, "ghost")); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("ghost: %v, want ErrNotFound", err)
			}
		})
	}
}

// TestRowVersion: every write of an agent's row gives it a new version,
// whoever writes it (the pulse commit sets its own, triggers the rest); a
// commit judged against an older version writes nothing (NonceStale); and
// AfterCommit computes the row a won commit leaves exactly as the store
// holds it.
func TestRowVersion(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			enrollPlain(t, s, "v")
			get := func() *store.Agent {
				t.Helper()
				a, err := s.GetAgent(ctx, "v")
				if err != nil {
					t.Fatal(err)
				}
				return a
			}
			a := get()
			if a.RowVersion == 0 {
				t.Fatal("an enrolled row has version 0")
			}
			lkgAt := t0.Add(time.Minute)
			updates := []struct {
				name string
				u    store.PulseUpdate
			}{
				{"no evidence", store.PulseUpdate{At: t0, Verdict: 3, Reason: 9, Message: "denied", PolicyDigest: "p1", Quarantined: "198.51.100.1", TransientStreak: 2}},
				{"evidence", store.PulseUpdate{At: t0.Add(time.Second), Verdict: 1, Message: "ok", Address: "192.0.2.7", Evidence: true, Seq: 4,
					ResetCount: 3, RestartCount: 1, TPMClock: 9000, FirmwareLogSHA256: sum("fw"), RuntimeRecords: []byte("records"), RuntimeCount: 2,
					DeadlineIn: time.Minute, Interval: 30 * time.Second, LKG: &store.LKG{BinarySHA256: "ab", BPF: "x=1", At: lkgAt, Boot: "3.1:2:ff", BPFBuilds: "[]"}}},
				{"runtime unchanged", store.PulseUpdate{At: t0.Add(2 * time.Second), Verdict: 1, Message: "ok", Evidence: true, Seq: 5,
					ResetCount: 3, RestartCount: 1, TPMClock: 9900, FirmwareLogSHA256: sum("fw"), RuntimeUnchanged: true, DesyncStreak: 1}},
			}
			for _, c := range updates {
				u := c.u
				u.RowVersion, u.NextRowVersion = a.RowVersion, store.NewRowVersion()
				if st, err := s.CommitPulse(ctx, "v", a.NonceEpoch, u); err != nil || st != store.NonceOK {
					t.Fatalf("%s: commit %v, %v", c.name, st, err)
				}
				want := a.AfterCommit(u)
				got := get()
				if !reflect.DeepEqual(*got, want) {
					t.Fatalf("%s: AfterCommit\n%+v\nthe store holds\n%+v", c.name, want, *got)
				}
				a = got
			}

			// Every other writer moves the version; a pulse judged against
			// the row before it writes nothing.
			writers := []struct {
				name  string
				write func() error
			}{
				{"directive stream", func() error { return s.SetStream(ctx, "v", "replica-2", time.Now()) }},
				{"last-known-good", func() error { return s.SetLKG(ctx, "v", store.LKG{BinarySHA256: "cd", At: time.Now()}) }},
				{"deadline", func() error { return s.SetDeadline(ctx, "v", time.Minute, time.Minute) }},
				{"blinded", func() error {
					if err := s.SetDeadline(ctx, "v", time.Minute, -time.Hour); err != nil {
						return err
					}
					before := get()
					if ok, err := s.MarkBlinded(ctx, "v", 4, 5, "silent"); err != nil || !ok {
						return fmt.Errorf("mark blinded: %v, %v", ok, err)
					}
					if get().RowVersion == before.RowVersion {
						return errors.New("marking BLINDED did not move the row version")
					}
					return nil
				}},
				{"re-enrolment with a new AK", func() error {
					return s.EnrollAgent(ctx, &store.Agent{ID: "v", TPM: true, EKSHA256: sum("ek-v"), AKPublic: []byte("new ak"), AKName: []byte("n"), EnrolledAt: time.Now()})
				}},
			}
			for _, w := range writers {
				before := get()
				if err := w.write(); err != nil {
					t.Fatalf("%s: %v", w.name, err)
				}
				after := get()
				if after.RowVersion == before.RowVersion {
					t.Fatalf("%s did not move the row version", w.name)
				}
				u := store.PulseUpdate{At: time.Now(), Message: "judged against the old row", RowVersion: before.RowVersion}
				if st, err := s.CommitPulse(ctx, "v", after.NonceEpoch, u); err != nil || st != store.NonceStale {
					t.Fatalf("%s: commit against the old row: %v, %v; want stale", w.name, st, err)
				}
				if got := get(); got.NonceEpoch != after.NonceEpoch || got.LastMessage == u.Message || got.RowVersion != after.RowVersion {
					t.Fatalf("%s: a stale commit wrote: %+v", w.name, got)
				}
			}
			// A row removed and enrolled again never repeats the version.
			old := get().RowVersion
			if _, err := s.DB().ExecContext(ctx, `DELETE FROM agents WHERE id = 'v'`); err != nil {
				t.Fatal(err)
			}
			enrollPlain(t, s, "v")
			if get().RowVersion == old {
				t.Fatal("a row enrolled again repeats its old version")
			}
		})
	}
}
