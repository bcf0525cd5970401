package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
)

// DefaultPollInterval is how often Run looks at the policy files.
const DefaultPollInterval = 2 * time.Second

// Watcher keeps the verifier's policy current: it polls the policy files
// and swaps in a new Set only when the edited files validate. An invalid
// edit (or a deleted, renamed, unreadable or emptied file) keeps the policy
// in force, logs the diagnostics and counts a rejection; fixing the files
// swaps the new policy in without a restart.
//
// A file of the policy in force that is gone from its directory (deleted or
// renamed) fails the reload like an invalid edit: the set must not shrink
// silently, letting agents fall through to a laxer policy. To remove a file
// on purpose, put a marker NAME.hcl.removed (any content) beside it in the
// same directory: the next poll loads the set without NAME.hcl (see
// RemovedMarker and docs/policy.md). A restart loads whatever the files
// hold, so restarting is also a way to drop a file.
//
// Write policy files atomically (write a temporary file and rename it, as
// git and most editors do): a poll that reads a half-written file rejects it,
// and the next poll loads the complete one.
type Watcher struct {
	paths    []string
	logger   hclog.Logger
	onChange func(*Set)

	current atomic.Pointer[Set]

	checkMu sync.Mutex // one Check at a time, including its onChange call

	mu           sync.Mutex // guards the fields below
	stats        WatcherStats
	lastErr      error
	lastRejected string
	onReject     func(*LoadError)
}

// RemovedMarker is the suffix of the marker file that says a policy file
// was removed from its directory on purpose: NAME.hcl.removed.
const RemovedMarker = ".removed"

// OnReject sets a function called (outside the watcher's locks, once per
// distinct rejected state of the files) whenever a reload is refused, e.g.
// to raise an alert. It replaces any earlier one; nil removes it.
func (w *Watcher) OnReject(f func(*LoadError)) {
	w.mu.Lock()
	w.onReject = f
	w.mu.Unlock()
}

// vanished compares the files of the set in force with the sources just
// read. A file of the set that is gone from its directory is an error,
// unless its RemovedMarker exists; the marked ones are returned in removed.
// Files named directly in the watched paths are skipped: ReadSources already
// reports them missing.
func (w *Watcher) vanished(cur *Set, srcs []Source) (diags hcl.Diagnostics, removed []string) {
	present := make(map[string]bool, len(srcs))
	for _, s := range srcs {
		present[s.Name] = true
	}
	named := make(map[string]bool, len(w.paths))
	for _, p := range w.paths {
		named[p] = true
	}
	for _, f := range cur.Files() {
		if present[f] || named[f] {
			continue
		}
		if _, err := os.Stat(f + RemovedMarker); err == nil {
			removed = append(removed, f)
			continue
		}
		diags = append(diags, fileDiag(f, "policy file disappeared",
			fmt.Sprintf("%s is part of the policy in force and is gone from its directory (deleted or renamed); "+
				"the policy in force keeps it, so no agent falls through to another policy. "+
				"To remove it on purpose, create %s (see docs/policy.md); to rename it, create the marker too",
				filepath.Base(f), filepath.Base(f)+RemovedMarker)))
	}
	return diags, removed
}

// WatcherStats are the counters and state a verifier exports as metrics.
type WatcherStats struct {
	// Loads counts policies put in force, including the first.
	Loads uint64
	// Rejected counts edits that did not validate and were not loaded.
	Rejected uint64
	// Failing is true while the files on disk do not validate: the policy
	// in force is an older one (export it as a gauge and alert on it).
	Failing bool
	// Digest is the digest of the policy in force.
	Digest string
	// LoadedAt is when the policy in force was loaded.
	LoadedAt time.Time
	// LastRejectedAt and LastError describe the latest rejected edit;
	// LastError holds its formatted diagnostics.
	LastRejectedAt time.Time
	LastError      string
}

// NewWatcher loads the policy files (a directory stands for its *.hcl
// files) and fails when they do not validate: a verifier must not start
// without a policy. onChange, when not nil, is called with each new Set
// swapped in after the initial load.
func NewWatcher(paths []string, logger hclog.Logger, onChange func(*Set)) (*Watcher, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	w := &Watcher{paths: append([]string(nil), paths...), logger: logger, onChange: onChange}
	srcs, diags := ReadSources(paths...)
	var set *Set
	if !diags.HasErrors() {
		more := diags
		set, diags = Load(srcs)
		diags = append(more, diags...)
	}
	if set == nil {
		err := &LoadError{Diags: diags, Text: DiagnosticsText(diags, srcs)}
		logger.Error("policy does not load; refusing to start without a policy", "files", strings.Join(paths, ","), "diagnostics", err.Text)
		return nil, err
	}
	if len(diags) > 0 {
		logger.Warn("policy warnings", "diagnostics", DiagnosticsText(diags, srcs))
	}
	w.current.Store(set)
	w.stats = WatcherStats{Loads: 1, Digest: set.Digest(), LoadedAt: time.Now()}
	logger.Info("policy loaded", "policy_digest", set.Digest(), "files", strings.Join(set.Files(), ","), "policies", len(set.policies))
	return w, nil
}

// Current returns the policy in force. It is safe for concurrent use and
// never nil.
func (w *Watcher) Current() *Set { return w.current.Load() }

// Stats returns a snapshot of the counters.
func (w *Watcher) Stats() WatcherStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// LastError returns why the files on disk are not in force (a *LoadError),
// or nil when the policy in force is what the files say.
func (w *Watcher) LastError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

// Check reads the files once. It swaps in their policy when they changed
// and validate, and returns whether it did; when they changed and do not
// validate it keeps the policy in force and returns the *LoadError.
func (w *Watcher) Check() (bool, error) {
	w.checkMu.Lock()
	defer w.checkMu.Unlock()

	srcs, diags := ReadSources(w.paths...)
	cur := w.current.Load()
	gone, removed := w.vanished(cur, srcs)
	diags = append(diags, gone...)
	var key string
	if diags.HasErrors() {
		key = "unreadable:" + DiagnosticsText(diags, nil)
	} else {
		key = digestSources(srcs)
		if len(removed) > 0 {
			// A marker appearing changes the outcome, not the sources.
			key += "\x00removed:" + strings.Join(removed, "\x00")
		}
	}

	w.mu.Lock()
	if key == cur.Digest() {
		if w.stats.Failing {
			w.logger.Info("policy files are back to the policy in force", "policy_digest", cur.Digest())
		}
		w.stats.Failing = false
		w.lastErr = nil
		w.lastRejected = ""
		w.mu.Unlock()
		return false, nil
	}
	if key == w.lastRejected {
		err := w.lastErr
		w.mu.Unlock()
		return false, err
	}
	w.mu.Unlock()

	var set *Set
	if !diags.HasErrors() {
		more := diags
		set, diags = Load(srcs)
		diags = append(more, diags...)
	}
	if set == nil {
		err := &LoadError{Diags: diags, Text: DiagnosticsText(diags, srcs)}
		w.mu.Lock()
		w.stats.Rejected++
		w.stats.Failing = true
		w.stats.LastRejectedAt = time.Now()
		w.stats.LastError = err.Text
		w.lastErr = err
		w.lastRejected = key
		onReject := w.onReject
		w.mu.Unlock()
		w.logger.Error("policy edit rejected; the previous policy stays in force",
			"policy_digest", cur.Digest(), "diagnostics", err.Text)
		if onReject != nil {
			onReject(err)
		}
		return false, err
	}
	if len(diags) > 0 {
		w.logger.Warn("policy warnings", "diagnostics", DiagnosticsText(diags, srcs))
	}
	w.current.Store(set)
	w.mu.Lock()
	w.stats.Loads++
	w.stats.Failing = false
	w.stats.Digest = set.Digest()
	w.stats.LoadedAt = time.Now()
	w.lastErr = nil
	w.lastRejected = ""
	w.mu.Unlock()
	for _, f := range removed {
		w.logger.Warn("policy file removed by its marker; delete the marker now", "file", f, "marker", f+RemovedMarker)
	}
	w.logger.Info("policy reloaded", "policy_digest", set.Digest(), "previous_digest", cur.Digest(),
		"files", strings.Join(set.Files(), ","), "policies", len(set.policies))
	if w.onChange != nil {
		w.onChange(set)
	}
	return true, nil
}

// Run polls every interval (DefaultPollInterval when 0) until ctx is done.
func (w *Watcher) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = w.Check()
		}
	}
}
