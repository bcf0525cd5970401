package store_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// fleetFixture enrolls 60 agents: every third UNTRUSTED (verdict 2,
// reason 7), partitions lab/edge, every fifth mTLS-only, addresses
// 10.0.<i/10>.<i>, one open alert on agents 0..4, agent 7 a quarantined
// offender, agents 0..29 at version 1.2.0.
func fleetFixture(t *testing.T, s *store.Store) {
	t.Helper()
	ctx := context.Background()
	at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	for i := 0; i < 60; i++ {
		id := fmt.Sprintf("dev-%03d", i)
		part := "edge"
		if i%2 == 0 {
			part = "lab"
		}
		if err := s.EnrollAgent(ctx, &store.Agent{ID: id, Partition: part, TPM: i%5 != 0, EKSHA256: sum("ek-" + id), EnrolledAt: at}); err != nil {
			t.Fatal(err)
		}
		verdict, reason := int32(1), int32(1)
		if i%3 == 0 {
			verdict, reason = 2, 7
		}
		version := "1.1.0"
		if i < 30 {
			version = "1.2.0"
		}
		u := store.PulseUpdate{At: at.Add(time.Duration(i) * time.Second), Verdict: verdict, Reason: reason, Message: "m " + id,
			Address: fmt.Sprintf("10.0.%d.%d", i/10, i), Evidence: true, AgentVersion: version}
		if st, err := s.CommitPulse(ctx, id, 0, u); err != nil || st != store.NonceOK {
			t.Fatalf("commit %s: %v %v", id, st, err)
		}
	}
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("dev-%03d", i)
		if _, err := s.RaiseAlert(ctx, &store.Alert{ID: "al-" + id, DedupKey: "k-" + id, AgentID: id, Kind: "untrusted", Severity: 2, CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AckAlert(ctx, "al-dev-004", "alice", at); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddQuarantine(ctx, store.Quarantine{Address: "10.0.0.7", Offender: "dev-007", Reason: "r", Since: at}); err != nil {
		t.Fatal(err)
	}
}

func ids(rows []store.AgentRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.ID
	}
	return out
}

// TestQueryAgents: filters, search, sorting and cursor pagination against
// the same selection computed by hand.
func TestQueryAgents(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			fleetFixture(t, s)
			want := func(pred func(i int) bool) []string {
				var out []string
				for i := 0; i < 60; i++ {
					if pred(i) {
						out = append(out, fmt.Sprintf("dev-%03d", i))
					}
				}
				return out
			}
			cases := []struct {
				name string
				q    store.AgentQuery
				want []string
			}{
				{"untrusted", store.AgentQuery{Verdicts: []int32{2}}, want(func(i int) bool { return i%3 == 0 })},
				{"reason and partition", store.AgentQuery{Reasons: []int32{7}, Partition: "lab"}, want(func(i int) bool { return i%6 == 0 })},
				{"mtls-only", store.AgentQuery{Trust: "mtls-only"}, want(func(i int) bool { return i%5 == 0 })},
				{"tpm", store.AgentQuery{Trust: "tpm"}, want(func(i int) bool { return i%5 != 0 })},
				{"version", store.AgentQuery{Version: "1.1.0"}, want(func(i int) bool { return i >= 30 })},
				{"open alerts", store.AgentQuery{OpenAlerts: true}, want(func(i int) bool { return i < 4 })},
				{"quarantined", store.AgentQuery{Quarantined: true}, []string{"dev-007"}},
				{"search id", store.AgentQuery{Search: "DEV-05"}, want(func(i int) bool { return i >= 50 })},
				{"search address", store.AgentQuery{Search: "10.0.3."}, want(func(i int) bool { return i >= 30 && i < 40 })},
				{"search wildcard is literal", store.AgentQuery{Search: "%"}, nil},
				{"search underscore is literal", store.AgentQuery{Search: "dev_0"}, nil},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					c.q.Limit = 7
					var got []string
					total := -1
					for pages := 0; ; pages++ {
						if pages > 20 {
							t.Fatal("pagination does not end")
						}
						p, err := s.QueryAgents(ctx, c.q)
						if err != nil {
							t.Fatal(err)
						}
						if total >= 0 && p.Total != total {
							t.Fatalf("total changed between pages: %d then %d", total, p.Total)
						}
						total = p.Total
						got = append(got, ids(p.Agents)...)
						if p.Next == "" {
							break
						}
						c.q.After = p.Next
					}
					if fmt.Sprint(got) != fmt.Sprint(c.want) && !(len(got) == 0 && len(c.want) == 0) {
						t.Fatalf("got %v\nwant %v", got, c.want)
					}
					if total != len(c.want) {
						t.Fatalf("total %d, want %d", total, len(c.want))
					}
				})
			}

			// Sorted by last pulse, newest first, in pages of 11: every
			// agent once, in order.
			q := store.AgentQuery{Sort: "last_pulse", Desc: true, Limit: 11}
			var got []store.AgentRow
			for {
				p, err := s.QueryAgents(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, p.Agents...)
				if p.Next == "" {
					break
				}
				q.After = p.Next
			}
			if len(got) != 60 || got[0].ID != "dev-059" || got[59].ID != "dev-000" {
				t.Fatalf("by last pulse desc: %d rows, first %v", len(got), ids(got)[:3])
			}
			// Sorted by verdict (ties by ID): one pass, no duplicates.
			q = store.AgentQuery{Sort: "verdict", Limit: 9}
			seen := map[string]bool{}
			var verdicts []int
			for {
				p, err := s.QueryAgents(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range p.Agents {
					if seen[r.ID] {
						t.Fatalf("%s twice", r.ID)
					}
					seen[r.ID] = true
					verdicts = append(verdicts, int(r.Verdict))
				}
				if p.Next == "" {
					break
				}
				q.After = p.Next
			}
			if len(seen) != 60 || !sort.IntsAreSorted(verdicts) {
				t.Fatalf("by verdict: %d agents, sorted %v", len(seen), sort.IntsAreSorted(verdicts))
			}
			// Row content.
			p, _ := s.QueryAgents(ctx, store.AgentQuery{Search: "dev-007"})
			if len(p.Agents) != 1 || !p.Agents[0].Quarantined || p.Agents[0].Address != "10.0.0.7" || p.Agents[0].AgentVersion != "1.2.0" {
				t.Fatalf("dev-007 row %+v", p.Agents)
			}
			p, _ = s.QueryAgents(ctx, store.AgentQuery{Search: "dev-001"})
			if len(p.Agents) != 1 || p.Agents[0].OpenAlerts != 1 || p.Agents[0].Quarantined {
				t.Fatalf("dev-001 row %+v", p.Agents)
			}
		})
	}
}

// TestQueryAgentsRefuses: a query the store cannot run is ErrBadQuery.
func TestQueryAgentsRefuses(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			fleetFixture(t, s)
			p, err := s.QueryAgents(ctx, store.AgentQuery{Sort: "verdict", Limit: 5})
			if err != nil {
				t.Fatal(err)
			}
			cases := map[string]store.AgentQuery{
				"unknown sort":           {Sort: "ek_public"},
				"injection in sort":      {Sort: "id; DROP TABLE agents"},
				"trust":                  {Trust: "maybe"},
				"limit":                  {Limit: store.MaxAgentPage + 1},
				"cursor of another sort": {Sort: "id", After: p.Next},
				"cursor reversed":        {Sort: "verdict", Desc: true, After: p.Next},
				"garbage cursor":         {After: "%%%"},
				"cursor not a number":    {Sort: "verdict", After: "eyJzIjoidmVyZGljdCIsInYiOiJ4IiwiaSI6ImEifQ"},
			}
			for name, q := range cases {
				if _, err := s.QueryAgents(ctx, q); !errors.Is(err, store.ErrBadQuery) {
					t.Errorf("%s: %v, want ErrBadQuery", name, err)
				}
			}
		})
	}
}

// TestCountFleet: one statement counts the fleet every way.
func TestCountFleet(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			fleetFixture(t, s)
			c, err := s.CountFleet(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if c.Total != 60 || c.ByVerdict[2] != 20 || c.ByVerdict[1] != 40 || c.ByReason[7] != 20 ||
				c.ByPartition["lab"] != 30 || c.ByVersion["1.2.0"] != 30 || c.ByTrust["mtls-only"] != 12 || c.ByTrust["tpm"] != 48 ||
				c.Quarantined != 1 || c.OpenAlerts != 4 {
				t.Fatalf("counts %+v", c)
			}
		})
	}
}
