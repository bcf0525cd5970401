package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func tpmPolicy(name, agents, tpm string) string {
	return `policy "` + name + `" {
  match {
    agents = ["` + agents + `"]
  }
  tpm = "` + tpm + `"
  measured_boot {
    secure_boot {}
  }
}
`
}

// TestPolicyWatcherVanishedFile: a file of the policy in force gone from its
// directory (deleted, renamed) fails the reload and kiosk-1 stays with the
// kiosk policy; the .removed marker, restoring the file or adding a file
// are not failures.
func TestPolicyWatcherVanishedFile(t *testing.T) {
	tests := []struct {
		name string
		// edit changes the directory after the first load.
		edit func(t *testing.T, dir string)
		// failing: the reload is refused and the first set stays in force.
		failing bool
		// then, when set, runs after the first Check and a second Check
		// must leave the watcher not failing.
		then func(t *testing.T, dir string)
		// policy kiosk-1 is judged by after all checks.
		want string
	}{
		{name: "deleted", edit: remove("10-kiosk.hcl"), failing: true, want: "kiosk"},
		{name: "renamed", edit: rename("10-kiosk.hcl", "95-kiosk.hcl"), failing: true, want: "kiosk"},
		{name: "renamed keeping order", edit: rename("10-kiosk.hcl", "20-kiosk.hcl"), failing: true, want: "kiosk"},
		{name: "deleted with marker", edit: func(t *testing.T, dir string) {
			touch(t, filepath.Join(dir, "10-kiosk.hcl.removed"))
			remove("10-kiosk.hcl")(t, dir)
		}, want: "default"},
		{name: "marker after the refusal", edit: remove("10-kiosk.hcl"), failing: true, then: func(t *testing.T, dir string) {
			touch(t, filepath.Join(dir, "10-kiosk.hcl.removed"))
		}, want: "default"},
		{name: "restored", edit: remove("10-kiosk.hcl"), failing: true, then: func(t *testing.T, dir string) {
			writeAtomic(t, filepath.Join(dir, "10-kiosk.hcl"), tpmPolicy("kiosk", "kiosk-*", "required"))
		}, want: "kiosk"},
		{name: "file added", edit: func(t *testing.T, dir string) {
			writeAtomic(t, filepath.Join(dir, "05-kiosk1.hcl"), tpmPolicy("kiosk-1", "kiosk-1", "required"))
		}, want: "kiosk-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeAtomic(t, filepath.Join(dir, "10-kiosk.hcl"), tpmPolicy("kiosk", "kiosk-*", "required"))
			writeAtomic(t, filepath.Join(dir, "90-default.hcl"), tpmPolicy("default", "*", "optional"))
			logs := &syncBuffer{}
			w, err := NewWatcher([]string{dir}, hclog.New(&hclog.LoggerOptions{Output: logs}), nil)
			if err != nil {
				t.Fatal(err)
			}
			var rejected []*LoadError
			w.OnReject(func(e *LoadError) { rejected = append(rejected, e) })
			first := w.Current()

			tc.edit(t, dir)
			changed, err := w.Check()
			st := w.Stats()
			if tc.failing {
				var le *LoadError
				if changed || !errors.As(err, &le) || w.Current() != first || !st.Failing || st.Rejected != 1 {
					t.Fatalf("changed=%v err=%v stats=%+v", changed, err, st)
				}
				wantText := filepath.Join(dir, "10-kiosk.hcl") + ": error: policy file disappeared"
				if !strings.Contains(st.LastError, wantText) || !strings.Contains(st.LastError, "10-kiosk.hcl.removed") {
					t.Errorf("LastError:\n%s\nwant %q and the marker's name", st.LastError, wantText)
				}
				if len(rejected) != 1 || rejected[0] != le {
					t.Errorf("OnReject got %v", rejected)
				}
				// Polling again neither recounts nor re-reports.
				if _, err := w.Check(); err == nil || w.Stats().Rejected != 1 || len(rejected) != 1 {
					t.Errorf("second poll: err=%v stats=%+v rejected=%d", err, w.Stats(), len(rejected))
				}
			} else if err != nil || !changed || st.Failing {
				t.Fatalf("changed=%v err=%v stats=%+v", changed, err, st)
			}
			if tc.then != nil {
				tc.then(t, dir)
				if _, err := w.Check(); err != nil || w.Stats().Failing || w.LastError() != nil {
					t.Fatalf("after fixing: err=%v stats=%+v", err, w.Stats())
				}
			}
			if p := w.Current().Select("kiosk-1", "default"); p == nil || p.Name != tc.want {
				t.Errorf("kiosk-1 is judged by %v, want %q", p, tc.want)
			}
			if tc.want == "default" && !strings.Contains(logs.String(), "policy file removed by its marker") {
				t.Errorf("marked removal not logged:\n%s", logs)
			}
		})
	}
}

// TestPolicyWatcherNamedFileGone: a file named directly (policy_files) that
// is gone is refused once, as unreadable, marker or not: dropping it takes
// a configuration change and a restart.
func TestPolicyWatcherNamedFileGone(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.hcl"), filepath.Join(dir, "b.hcl")
	writeAtomic(t, a, tpmPolicy("kiosk", "kiosk-*", "required"))
	writeAtomic(t, b, tpmPolicy("default", "*", "optional"))
	w, err := NewWatcher([]string{a, b}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	touch(t, a+RemovedMarker)
	remove("a.hcl")(t, dir)
	_, err = w.Check()
	if err == nil || !w.Stats().Failing || strings.Contains(w.Stats().LastError, "disappeared") ||
		!strings.Contains(w.Stats().LastError, "cannot read policy file") {
		t.Fatalf("err=%v stats=%+v", err, w.Stats())
	}
}

func remove(name string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		t.Helper()
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func rename(from, to string) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		t.Helper()
		if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
			t.Fatal(err)
		}
	}
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}
