package verifier

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestApplyMemoryLimit: a configured limit replaces the process's and is
// logged with its bytes; an unset one leaves the process's limit alone
// (GOMEMLIMIT's, applied by the runtime at start) and logs it only when
// GOMEMLIMIT is set.
func TestApplyMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	cases := []struct {
		name    string
		env     string // GOMEMLIMIT
		before  int64  // the process's limit before
		setting int64  // memory_limit
		want    int64  // the process's limit after
		log     string // "" when nothing is logged
	}{
		{"setting, no limit before", "", math.MaxInt64, 2 << 30, 2 << 30, "memory limit: bytes=2147483648 from=memory_limit"},
		{"setting wins over GOMEMLIMIT", "1GiB", 1 << 30, 3 << 30, 3 << 30, "memory limit: bytes=3221225472 from=memory_limit replaced_bytes=1073741824"},
		{"unset, GOMEMLIMIT kept", "1GiB", 1 << 30, 0, 1 << 30, "memory limit: bytes=1073741824 from=GOMEMLIMIT"},
		{"unset, no GOMEMLIMIT: Go's default", "", math.MaxInt64, 0, math.MaxInt64, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tc.env)
			debug.SetMemoryLimit(tc.before)
			var buf strings.Builder
			log := hclog.New(&hclog.LoggerOptions{Output: &buf, DisableTime: true, Level: hclog.Info})
			applyMemoryLimit(tc.setting, log)
			if got := debug.SetMemoryLimit(-1); got != tc.want {
				t.Fatalf("limit %d, want %d", got, tc.want)
			}
			if tc.log == "" && buf.Len() != 0 || !strings.Contains(buf.String(), tc.log) {
				t.Fatalf("log %q, want %q", buf.String(), tc.log)
			}
		})
	}
}
