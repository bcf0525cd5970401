package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestAgentAddresses: addresses are registered per agent, shared ones show
// every user, expired ones and those beyond the bound are forgotten.
func TestAgentAddresses(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
			reg := func(agent, addr string, at time.Time) {
				t.Helper()
				if err := s.RegisterAddress(ctx, agent, addr, at, at.Add(-24*time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
			reg("a", "10.0.0.1", t0)
			reg("b", "10.0.0.2", t0)
			reg("b", "10.0.0.9", t0.Add(time.Minute)) // b behind the NAT too
			reg("c", "10.0.0.9", t0.Add(time.Minute))
			for _, tc := range []struct {
				addr string
				want []string
			}{{"10.0.0.1", []string{"a"}}, {"10.0.0.9", []string{"b", "c"}}, {"10.0.0.3", nil}} {
				got, err := s.AddressUsers(ctx, tc.addr, t0.Add(-time.Hour))
				if err != nil || !slices.Equal(got, tc.want) {
					t.Errorf("users of %s: %v %v, want %v", tc.addr, got, err, tc.want)
				}
			}
			if got, _ := s.AddressUsers(ctx, "10.0.0.9", t0.Add(2*time.Minute)); len(got) != 0 {
				t.Errorf("users seen since later: %v", got)
			}
			if got, _ := s.AgentAddresses(ctx, "b", t0.Add(-time.Hour)); !slices.Equal(got, []string{"10.0.0.9", "10.0.0.2"}) {
				t.Errorf("b's addresses %v", got)
			}
			// A day later b registers again: its expired addresses go.
			reg("b", "10.0.0.3", t0.Add(25*time.Hour))
			if got, _ := s.AgentAddresses(ctx, "b", time.Time{}); !slices.Equal(got, []string{"10.0.0.3"}) {
				t.Errorf("b's addresses after expiry %v", got)
			}
			for i := range store.MaxAgentAddresses + 3 {
				reg("d", fmt.Sprintf("10.1.0.%d", i), t0.Add(time.Duration(i)*time.Second))
			}
			got, _ := s.AgentAddresses(ctx, "d", time.Time{})
			if len(got) != store.MaxAgentAddresses || got[0] != fmt.Sprintf("10.1.0.%d", store.MaxAgentAddresses+2) {
				t.Errorf("d's addresses %v: want the %d most recent", got, store.MaxAgentAddresses)
			}
		})
	}
}
