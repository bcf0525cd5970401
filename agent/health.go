package agent

import (
	"bytes"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// counters are the health counters a pulse reports.
type counters struct {
	pulsesSent  atomic.Uint64
	pulseErrors atomic.Uint64
	reconnects  atomic.Uint64
}

// health gathers the process's health figures.
func (c *counters) health(started time.Time) *pulsev1.Health {
	h := &pulsev1.Health{
		Uptime:      durationpb.New(time.Since(started).Truncate(time.Millisecond)),
		RssBytes:    rssBytes(),
		PulsesSent:  c.pulsesSent.Load(),
		PulseErrors: c.pulseErrors.Load(),
		Reconnects:  c.reconnects.Load(),
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		h.CpuMicros = uint64(ru.Utime.Sec*1e6+ru.Utime.Usec) + uint64(ru.Stime.Sec*1e6+ru.Stime.Usec)
	}
	return h
}

// rssBytes reads the resident set size from /proc/self/statm (0 if unknown).
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}
