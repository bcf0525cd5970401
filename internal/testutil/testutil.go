// Package testutil holds helpers shared by Pulse's tests: locating the repo's
// real fixtures and requiring external tools (swtpm, root, PostgreSQL) in a way
// that fails inside CI and skips, with a printed reason, outside it.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where a missing
// dependency is a failure rather than a skip.
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1" || v == "yes"
}

// Unavailable fails the test inside CI and skips it outside, with the reason.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required test dependency missing in CI: "+format, args...)
	}
	t.Skipf("skipping: "+format, args...)
}

// RequireTools checks each named program is on PATH and returns their paths.
func RequireTools(t testing.TB, names ...string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			Unavailable(t, "%s not found on PATH (apt-get install the package .ci/run installs)", n)
			return nil
		}
		paths[n] = p
	}
	return paths
}

// RequireRoot skips (or fails in CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "test needs root (eUID %d)", os.Geteuid())
	}
}

// RepoRoot returns the directory holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testutil: cannot locate source file")
	}
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testutil: go.mod not found above " + file)
		}
		dir = parent
	}
}

// EventLogDir is the directory of the real captured firmware event logs
// (copied unchanged from shared/fixtures/eventlogs).
func EventLogDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(RepoRoot(t), "testdata", "eventlogs")
}

// EventLogFixtures returns the fixture names (without extension), sorted.
func EventLogFixtures(t testing.TB) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(EventLogDir(t), "*.bin"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("testutil: no event log fixtures in %s: %v", EventLogDir(t), err)
	}
	names := make([]string, 0, len(matches))
	for _, m := range matches {
		names = append(names, strings.TrimSuffix(filepath.Base(m), ".bin"))
	}
	sort.Strings(names)
	return names
}
