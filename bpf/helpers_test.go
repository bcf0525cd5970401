package bpf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/testutil"
)

// requireKernel skips (fails in CI) unless the test can load eBPF programs.
func requireKernel(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t)
	if err := EnsureFilesystems(hclog.NewNullLogger()); err != nil {
		t.Fatalf("mount pseudo filesystems: %v", err)
	}
}

func randomSuffix(t testing.TB) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// tempPinDir returns a fresh directory on bpffs, removed (with everything
// pinned in it) when the test ends.
func tempPinDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(BPFFSPath, "pulse-test-"+randomSuffix(t))
	t.Cleanup(func() {
		if err := RemoveAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return dir
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Debug, Output: testWriter{t}})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// recordingMeasurer keeps every measurement in memory and, at measurement
// time, checks the kernel state: the program must not be attached by any
// link nor pinned under its name yet.
type recordingMeasurer struct {
	pinDir string
	failOn string // program name whose measurement fails

	mu         sync.Mutex
	records    []ProgramMeasurement
	violations []string
}

var errMeasureRefused = errors.New("test measurer refuses")

func (r *recordingMeasurer) MeasureProgram(_ context.Context, m ProgramMeasurement) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Name == r.failOn {
		return errMeasureRefused
	}
	if ids, err := linkedProgramIDs(); err != nil {
		r.violations = append(r.violations, fmt.Sprintf("list links: %v", err))
	} else if ids[m.ProgramID] {
		r.violations = append(r.violations, fmt.Sprintf("%s (id %d) already attached when measured at %q", m.Name, m.ProgramID, m.AttachPoint))
	}
	// A program is pinned after its first measurement; later attaches
	// (Shield.Attach) measure an already pinned program.
	first := true
	for _, prev := range r.records {
		if prev.ProgramID == m.ProgramID {
			first = false
		}
	}
	if p, err := ebpf.LoadPinnedProgram(filepath.Join(r.pinDir, m.Name), nil); err == nil {
		info, _ := p.Info()
		id, _ := info.ID()
		if first && uint32(id) == m.ProgramID {
			r.violations = append(r.violations, fmt.Sprintf("%s (id %d) already pinned when measured", m.Name, m.ProgramID))
		}
		p.Close()
	}
	r.records = append(r.records, m)
	return nil
}

func (r *recordingMeasurer) snapshot() ([]ProgramMeasurement, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ProgramMeasurement(nil), r.records...), append([]string(nil), r.violations...)
}

// linkedProgramIDs returns the IDs of all programs some link in the kernel runs.
func linkedProgramIDs() (map[uint32]bool, error) {
	ids := map[uint32]bool{}
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			continue
		}
		ids[uint32(info.Program)] = true
	}
	return ids, it.Err()
}

// loadTestManager loads a Manager into a fresh pin directory.
func loadTestManager(t testing.TB, opts Options) (*Manager, *recordingMeasurer) {
	t.Helper()
	if opts.PinDir == "" {
		opts.PinDir = tempPinDir(t)
	}
	rm, _ := opts.Measurer.(*recordingMeasurer)
	if opts.Measurer == nil {
		rm = &recordingMeasurer{pinDir: opts.PinDir}
		opts.Measurer = rm
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	m, err := Load(context.Background(), opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m, rm
}

// helperEnv makes the test binary act as a long-running child process (a
// stand-in agent with several threads) instead of running tests.
const helperEnv = "PULSE_BPF_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "idle" {
		time.Sleep(time.Hour)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
