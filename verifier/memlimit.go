package verifier

import (
	"math"
	"os"
	"runtime/debug"

	"github.com/hashicorp/go-hclog"
)

// applyMemoryLimit sets the process's soft memory limit from the
// configuration's memory_limit (bytes; 0: not set there). The setting wins
// over GOMEMLIMIT, which the Go runtime has already applied at start; with
// neither, Go's default (no limit) stays. The limit in force is logged.
// It trades garbage-collector CPU for resident memory: the collector runs
// more often as the heap nears the limit (docs/config.md, memory_limit).
func applyMemoryLimit(limit int64, log hclog.Logger) {
	switch {
	case limit > 0:
		prev := debug.SetMemoryLimit(limit)
		args := []any{"bytes", limit, "from", "memory_limit"}
		if prev != math.MaxInt64 {
			args = append(args, "replaced_bytes", prev)
		}
		log.Info("memory limit", args...)
	case os.Getenv("GOMEMLIMIT") != "":
		log.Info("memory limit", "bytes", debug.SetMemoryLimit(-1), "from", "GOMEMLIMIT")
	}
}
