package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFixCommRenamesEveryThread: an agent exec'ed through /proc/self/fd/N
// (every thread called "N") renames every thread after its binary, so
// Sentinel's records of its own eBPF loads and ps name it; a process that
// already has a name keeps it.
func TestFixCommRenamesEveryThread(t *testing.T) {
	tasks, err := filepath.Glob("/proc/self/task/*/comm")
	if err != nil || len(tasks) < 2 {
		t.Fatalf("threads: %v %v", tasks, err)
	}
	orig := map[string]string{}
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		orig[p] = strings.TrimSpace(string(b))
	}
	t.Cleanup(func() {
		for p, name := range orig {
			_ = os.WriteFile(p, []byte(name), 0)
		}
	})
	names := func() map[string]bool {
		got := map[string]bool{}
		ts, _ := filepath.Glob("/proc/self/task/*/comm")
		for _, p := range ts {
			if b, err := os.ReadFile(p); err == nil {
				got[strings.TrimSpace(string(b))] = true
			}
		}
		return got
	}
	// A named process is left alone.
	fixComm("/usr/bin/pulse-agent")
	if got := names(); got["pulse-agent"] {
		t.Fatalf("a named process was renamed: %v", got)
	}
	for _, p := range tasks {
		if err := os.WriteFile(p, []byte("3"), 0); err != nil {
			t.Fatalf("set thread name: %v", err)
		}
	}
	fixComm("/usr/bin/pulse-agent")
	if got := names(); len(got) != 1 || !got["pulse-agent"] {
		t.Fatalf("thread names after fixComm: %v, want only pulse-agent", got)
	}
}
