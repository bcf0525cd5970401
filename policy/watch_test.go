package policy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeAtomic replaces a file the way editors and git do.
func writeAtomic(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func fortressPolicy(mode string) string {
	return `policy "fleet" {
  match {
    agents = ["*"]
  }
  tpm = "required"
  fortress {
    mode = "` + mode + `"
  }
}
`
}

// TestPolicyWatcherReload: the verifier's view of a policy being edited. An
// invalid edit leaves the old policy in force (logged, counted, reported by
// LastError); a valid edit takes effect without a restart.
func TestPolicyWatcherReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fleet.hcl")
	writeAtomic(t, path, fortressPolicy("enforce"))

	logs := &syncBuffer{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "policy", Output: logs, Level: hclog.Info})
	changes := make(chan *Set, 4)
	w, err := NewWatcher([]string{dir}, logger, func(s *Set) { changes <- s })
	if err != nil {
		t.Fatal(err)
	}
	first := w.Current()
	ev := Evidence{AgentID: "gw-1", TPM: true, Runtime: &RuntimeEvidence{FortressActive: false}}
	if res := first.Evaluate(ev, time.Now()); !res.Denied || res.PolicyDigest != first.Digest() {
		t.Fatalf("initial policy: %+v", res)
	}
	if !strings.Contains(logs.String(), "policy loaded") || !strings.Contains(logs.String(), first.Digest()) {
		t.Errorf("initial load not logged with its digest:\n%s", logs)
	}
	if changed, err := w.Check(); changed || err != nil {
		t.Errorf("unchanged files: changed=%v err=%v", changed, err)
	}

	// An invalid edit: a typo in the mode.
	writeAtomic(t, path, fortressPolicy("warm"))
	changed, err := w.Check()
	var le *LoadError
	if changed || !errors.As(err, &le) || !strings.Contains(le.Text, "fleet.hcl:7:12: error: bad mode \"warm\"") {
		t.Fatalf("invalid edit: changed=%v err=%v", changed, err)
	}
	if w.Current() != first {
		t.Fatal("invalid edit replaced the policy")
	}
	st := w.Stats()
	if st.Rejected != 1 || !st.Failing || st.Loads != 1 || st.Digest != first.Digest() || !strings.Contains(st.LastError, "bad mode") {
		t.Errorf("stats after invalid edit: %+v", st)
	}
	if !errors.As(w.LastError(), &le) {
		t.Errorf("LastError = %v", w.LastError())
	}
	if l := logs.String(); !strings.Contains(l, "policy edit rejected; the previous policy stays in force") || !strings.Contains(l, `bad mode "warm"`) {
		t.Errorf("rejection not logged with its diagnostics:\n%s", l)
	}
	if res := w.Current().Evaluate(ev, time.Now()); !res.Denied {
		t.Error("old policy no longer enforced after an invalid edit")
	}
	// Polling the same bad files again neither recounts nor relogs.
	before := strings.Count(logs.String(), "policy edit rejected")
	if _, err := w.Check(); err == nil || w.Stats().Rejected != 1 || strings.Count(logs.String(), "policy edit rejected") != before {
		t.Errorf("second poll of the same bad files: err=%v stats=%+v", err, w.Stats())
	}

	// Emptying or deleting the file is also only a rejected edit.
	writeAtomic(t, path, "")
	if _, err := w.Check(); err == nil || w.Current() != first || w.Stats().Rejected != 2 {
		t.Errorf("emptied file: err=%v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Check(); err == nil || w.Current() != first || w.Stats().Rejected != 3 {
		t.Errorf("deleted file: err=%v", err)
	}

	// A valid edit takes effect.
	writeAtomic(t, path, fortressPolicy("warn"))
	changed, err = w.Check()
	if !changed || err != nil {
		t.Fatalf("valid edit: changed=%v err=%v", changed, err)
	}
	second := w.Current()
	if second == first || second.Digest() == first.Digest() {
		t.Fatal("valid edit not swapped in")
	}
	select {
	case s := <-changes:
		if s != second {
			t.Error("onChange got another set")
		}
	default:
		t.Error("onChange not called")
	}
	if res := second.Evaluate(ev, time.Now()); res.Denied || len(res.Findings) != 1 || res.Findings[0].Mode != Warn {
		t.Errorf("new policy: %+v", res)
	}
	st = w.Stats()
	if st.Loads != 2 || st.Failing || st.Digest != second.Digest() || w.LastError() != nil {
		t.Errorf("stats after valid edit: %+v, LastError %v", st, w.LastError())
	}
	if !strings.Contains(logs.String(), "policy reloaded") {
		t.Errorf("reload not logged:\n%s", logs)
	}
}

// TestPolicyWatcherRun: the polling loop picks up a valid edit by itself,
// while readers use Current concurrently.
func TestPolicyWatcherRun(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fleet.hcl")
	writeAtomic(t, path, fortressPolicy("enforce"))
	changes := make(chan *Set, 4)
	w, err := NewWatcher([]string{path}, nil, func(s *Set) { changes <- s })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.Run(ctx, 5*time.Millisecond)
	}()
	stop := make(chan struct{})
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					if s := w.Current(); s == nil || s.Select("x", "y") == nil {
						t.Error("reader saw no policy")
						return
					}
				}
			}
		}()
	}
	writeAtomic(t, path, fortressPolicy("warn"))
	select {
	case s := <-changes:
		if s.Policy("fleet").Fortress.Mode != Warn || w.Current() != s {
			t.Error("wrong set swapped in")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher never loaded the edit")
	}
	close(stop)
	cancel()
	wg.Wait()
}

// TestPolicyWatcherStartFailsClosed: a verifier cannot start on a bad,
// empty or missing policy.
func TestPolicyWatcherStartFailsClosed(t *testing.T) {
	dir := t.TempDir()
	for name, paths := range map[string][]string{
		"invalid": {write(t, dir, "bad.hcl", fortressPolicy("warm"))},
		"empty":   {write(t, dir, "empty.hcl", "")},
		"missing": {filepath.Join(dir, "missing.hcl")},
		"none":    nil,
	} {
		w, err := NewWatcher(paths, nil, nil)
		var le *LoadError
		if w != nil || !errors.As(err, &le) {
			t.Errorf("%s: watcher=%v err=%v", name, w != nil, err)
		}
	}
}
