package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pulse-attest/pulse/verifier/store"
)

// TestHostProgramState: the host program state is kept with the Sentinel
// cursor, replaced only by a cursor that carries one, and survives cursor
// writes that do not.
func TestHostProgramState(t *testing.T) {
	for name, s := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
			if _, err := s.GetHostProgramState(ctx, "h"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("state of an agent without a cursor: %v", err)
			}
			if err := s.RecordSentinel(ctx, "h", store.SentinelCursor{Boot: "1.0", LastSeq: 1}, nil, t0); err != nil {
				t.Fatal(err)
			}
			if st, err := s.GetHostProgramState(ctx, "h"); err != nil || st != "" {
				t.Fatalf("state before any list: %q %v", st, err)
			}
			first, second := `{"boot":"1.0","mark":40}`, `{"boot":"1.0","mark":41}`
			for _, tc := range []struct {
				set  *string
				want string
			}{{&first, first}, {nil, first}, {&second, second}} {
				if err := s.RecordSentinel(ctx, "h", store.SentinelCursor{Boot: "1.0", LastSeq: 2, HostPrograms: tc.set}, nil, t0); err != nil {
					t.Fatal(err)
				}
				if st, err := s.GetHostProgramState(ctx, "h"); err != nil || st != tc.want {
					t.Errorf("state %q %v, want %q", st, err, tc.want)
				}
			}
			if st, err := s.GetHostProgramState(ctx, "other"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("another agent sees %q %v", st, err)
			}
		})
	}
}
