// Package simtest starts swtpm simulators for tests: one per test, in the
// test's temporary directory, stopped by t.Cleanup. A missing swtpm fails the
// test under CI=true and skips it elsewhere (internal/testutil).
//
// swtpm_setup (EK and platform certificates from a fresh local CA) runs once
// per user and swtpm version; later simulators copy that set-up state, so
// they share one EK and one CA. Use StartFresh for a TPM with its own EK.
package simtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/pulse-attest/pulse/internal/testutil"
	"github.com/pulse-attest/pulse/simulator"
)

// Start starts an swtpm for the test from the shared set-up state and, when
// bootLog names a fixture of testdata/eventlogs ("glinux-alex"), boots that
// firmware log into it. It is stopped when the test ends.
func Start(t testing.TB, bootLog string) *simulator.Swtpm {
	t.Helper()
	return start(t, bootLog, false)
}

// StartFresh is Start with a TPM set up from scratch (its own EK and local
// CA), for tests that need two different TPMs. It costs a swtpm_setup run.
func StartFresh(t testing.TB, bootLog string) *simulator.Swtpm {
	t.Helper()
	return start(t, bootLog, true)
}

func start(t testing.TB, bootLog string, fresh bool) *simulator.Swtpm {
	t.Helper()
	if testutil.RequireTools(t, "swtpm", "swtpm_setup", "swtpm_ioctl", "swtpm_localca") == nil {
		return nil
	}
	opts := simulator.Options{StateDir: t.TempDir(), Logger: Logger(t)}
	if !fresh {
		tmpl, err := template()
		if err != nil {
			t.Fatalf("simtest: %v", err)
		}
		opts.Template = tmpl
	}
	sw, err := simulator.Start(opts)
	if err != nil {
		t.Fatalf("simtest: %v", err)
	}
	t.Cleanup(func() {
		if err := sw.Stop(); err != nil {
			t.Errorf("simtest: stop swtpm: %v", err)
		}
	})
	if bootLog != "" {
		fx := testutil.LoadFixture(t, bootLog)
		if _, err := sw.Boot(fx.Log); err != nil {
			t.Fatalf("simtest: boot %s: %v", bootLog, err)
		}
	}
	return sw
}

// Logger returns an hclog logger writing to the test log: everything with
// -v, warnings and errors otherwise.
func Logger(t testing.TB) hclog.Logger {
	level := hclog.Warn
	if testing.Verbose() {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:   "test",
		Level:  level,
		Output: testWriter{t},
	})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Template returns the shared set-up state directory (see the package doc),
// for tests that call simulator.Start themselves: pass it as
// Options.Template.
func Template(t testing.TB) string {
	t.Helper()
	testutil.RequireTools(t, "swtpm", "swtpm_setup", "swtpm_ioctl", "swtpm_localca")
	dir, err := template()
	if err != nil {
		t.Fatalf("simtest: %v", err)
	}
	return dir
}

var (
	templateOnce sync.Once
	templateDir  string
	templateErr  error
)

// template returns a set-up state directory, creating it on first use under
// the user cache directory (keyed by the swtpm version and the banks) so
// swtpm_setup runs once, not once per test or per test binary. It is built
// in a temporary directory and renamed into place, so concurrent test
// binaries never see a half-made one.
func template() (string, error) {
	templateOnce.Do(func() {
		templateDir, templateErr = makeTemplate()
	})
	return templateDir, templateErr
}

func makeTemplate() (string, error) {
	ver, err := exec.Command("swtpm", "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("swtpm --version: %w", err)
	}
	key := sha256.Sum256([]byte(string(ver) + "|" + strings.Join(simulator.DefaultPCRBanks, ",") + "|v1"))
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	root := filepath.Join(base, "pulse-simtest")
	dir := filepath.Join(root, "swtpm-"+hex.EncodeToString(key[:8]))
	if simulator.IsSetUp(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", fmt.Errorf("template: %w", err)
	}
	tmp, err := os.MkdirTemp(root, "building-")
	if err != nil {
		return "", fmt.Errorf("template: %w", err)
	}
	if err := simulator.Setup(tmp, simulator.DefaultPCRBanks, nil); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("template: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another test binary won the race; use its template.
		os.RemoveAll(tmp)
		if simulator.IsSetUp(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("template: %w", err)
	}
	return dir, nil
}
