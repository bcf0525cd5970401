package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestListQuarantineUsers: the table comes with the agents registered to
// each address within the window, in one read; every write through the
// handle moves its generation (one that wrote nothing too), reads do not
// and are counted.
func TestListQuarantineUsers(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
			for _, r := range []struct {
				agent, addr string
				at          time.Time
			}{{"a", "10.0.0.1", t0}, {"b", "10.0.0.9", t0}, {"c", "10.0.0.9", t0}, {"old", "10.0.0.5", t0.Add(-2 * time.Hour)}} {
				if err := s.RegisterAddress(ctx, r.agent, r.addr, r.at, r.at.Add(-24*time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
			gen := s.QuarantineGeneration()
			moved := func(what string) {
				t.Helper()
				if g := s.QuarantineGeneration(); g == gen {
					t.Errorf("%s: generation still %d", what, g)
				} else {
					gen = g
				}
			}
			for _, q := range []store.Quarantine{
				{Address: "10.0.0.9", Offender: "b", Since: t0},
				{Address: "10.0.0.5", Offender: "x", Since: t0},
				{Address: "192.0.2.1", Offender: "y", Since: t0},
			} {
				if _, err := s.AddQuarantine(ctx, q); err != nil {
					t.Fatal(err)
				}
				moved("add " + q.Address)
			}
			if _, err := s.AddQuarantine(ctx, store.Quarantine{Address: "10.0.0.9", Offender: "b", Since: t0}); err != nil {
				t.Fatal(err)
			}
			moved("add again (nothing written)")

			table0, addr0 := s.QuarantineReads()
			got, err := s.ListQuarantineUsers(ctx, t0.Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			type row struct {
				addr, offender string
				users          []string
			}
			var rows []row
			for _, q := range got {
				rows = append(rows, row{q.Address, q.Offender, q.Users})
			}
			want := []row{{"10.0.0.5", "x", nil}, {"10.0.0.9", "b", []string{"b", "c"}}, {"192.0.2.1", "y", nil}}
			if !slices.EqualFunc(rows, want, func(a, b row) bool {
				return a.addr == b.addr && a.offender == b.offender && slices.Equal(a.users, b.users)
			}) {
				t.Fatalf("table with users %+v, want %+v", rows, want)
			}
			if !got[1].Since.Equal(t0) {
				t.Errorf("since %v, want %v", got[1].Since, t0)
			}
			if got, _ := s.ListQuarantineUsers(ctx, t0.Add(-3*time.Hour)); len(got) != 3 || !slices.Equal(got[0].Users, []string{"old"}) {
				t.Errorf("with a wider window: %+v", got)
			}
			if _, err := s.ListQuarantine(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AgentAddresses(ctx, "a", time.Time{}); err != nil {
				t.Fatal(err)
			}
			if table, addr := s.QuarantineReads(); table != table0+3 || addr != addr0+1 {
				t.Errorf("reads counted: table %d addresses %d, want %d and %d", table, addr, table0+3, addr0+1)
			}
			if g := s.QuarantineGeneration(); g != gen {
				t.Errorf("reads moved the generation %d -> %d", gen, g)
			}

			if _, err := s.ReleaseQuarantine(ctx, "10.0.0.5", "op", time.Hour); err != nil {
				t.Fatal(err)
			}
			moved("release")
			if _, err := s.RemoveQuarantine(ctx, "192.0.2.1"); err != nil {
				t.Fatal(err)
			}
			moved("remove")
			if _, err := s.RemoveQuarantine(ctx, "192.0.2.1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("remove again: %v", err)
			}
			moved("remove of nothing")
		})
	}
}
