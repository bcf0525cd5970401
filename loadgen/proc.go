package loadgen

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Usage is a process's resource use at one moment.
type Usage struct {
	// RSSBytes is the resident set; PeakRSSBytes its high-water mark.
	RSSBytes     uint64 `json:"rss_bytes"`
	PeakRSSBytes uint64 `json:"peak_rss_bytes"`
	// CPU is user + system time consumed since the process started.
	UserSeconds   float64 `json:"user_seconds"`
	SystemSeconds float64 `json:"system_seconds"`
	Threads       int     `json:"threads"`
}

// CPU is user + system time.
func (u Usage) CPU() time.Duration {
	return time.Duration((u.UserSeconds + u.SystemSeconds) * float64(time.Second))
}

// SelfUsage reads this process's usage from /proc/self/status and getrusage.
func SelfUsage() (Usage, error) {
	u, err := statusUsage("/proc/self/status")
	if err != nil {
		return u, err
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return u, fmt.Errorf("loadgen: getrusage: %w", err)
	}
	u.UserSeconds = tvSeconds(ru.Utime)
	u.SystemSeconds = tvSeconds(ru.Stime)
	return u, nil
}

func tvSeconds(tv syscall.Timeval) float64 {
	return float64(tv.Sec) + float64(tv.Usec)/1e6
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// PIDUsage reads another process's usage from /proc/PID/status and
// /proc/PID/stat (an external verifier).
func PIDUsage(pid int) (Usage, error) {
	u, err := statusUsage(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("loadgen: %w", err)
	}
	// The command name may contain spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return u, fmt.Errorf("loadgen: /proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(raw[i+1:]))
	// After ')': state(3) ... utime is field 14, stime 15 (1-based overall).
	if len(f) < 13 {
		return u, fmt.Errorf("loadgen: /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return u, fmt.Errorf("loadgen: /proc/%d/stat: bad cpu times", pid)
	}
	u.UserSeconds = float64(ut) / clockTicks
	u.SystemSeconds = float64(st) / clockTicks
	return u, nil
}

func statusUsage(path string) (Usage, error) {
	var u Usage
	f, err := os.Open(path)
	if err != nil {
		return u, fmt.Errorf("loadgen: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			u.RSSBytes = n << 10
		case "VmHWM":
			u.PeakRSSBytes = n << 10
		case "Threads":
			u.Threads = int(n)
		}
	}
	return u, sc.Err()
}

// RaiseFileLimit raises RLIMIT_NOFILE to at least want (as root the hard
// limit too) and returns the soft limit in force.
func RaiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	nl := lim
	if nl.Max < want {
		nl.Max = want
	}
	nl.Cur = want
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err != nil {
		// Not root: go as far as the hard limit allows.
		nl = lim
		nl.Cur = lim.Max
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &nl); err2 != nil {
			return lim.Cur, err2
		}
		return nl.Cur, fmt.Errorf("loadgen: open-file limit %d < %d wanted: %w", nl.Cur, want, err)
	}
	return nl.Cur, nil
}
