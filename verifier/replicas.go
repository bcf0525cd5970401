package verifier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pulse-attest/pulse/policy"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/store"
)

// Alert kinds of the policy loop.
const (
	AlertPolicyReloadFailed = "policy_reload_failed"
	AlertPolicyDivergence   = "policy_divergence"
)

var (
	// ReplicaInterval is how often a replica records the digest of the
	// policy set it enforces and compares it with the other replicas'.
	ReplicaInterval = 2 * time.Second
	// ReplicaLiveWindow: replicas that recorded themselves within it are
	// compared; older rows are replicas that stopped.
	ReplicaLiveWindow = time.Minute
)

// divergenceGrace is how long digests may differ before the alert: a
// reload interval for every replica to load an edit, plus two replica
// intervals for the rows to catch up.
func divergenceGrace() time.Duration { return PolicyPollInterval + 2*ReplicaInterval }

// policyFleet raises policy_reload_failed whenever the watcher refuses a
// reload, and records this replica's policy digest every ReplicaInterval,
// raising policy_divergence when live replicas enforce different policy
// sets for longer than divergenceGrace. It returns when ctx is done.
func (v *Verifier) policyFleet(ctx context.Context, w *policy.Watcher) {
	w.OnReject(func(err *policy.LoadError) { v.raiseReloadFailed(ctx, err) })
	defer w.OnReject(nil)
	if le, ok := w.LastError().(*policy.LoadError); ok && le != nil {
		v.raiseReloadFailed(ctx, le)
	}
	var d divergence
	d.check(ctx, v)
	t := time.NewTicker(ReplicaInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.check(ctx, v)
		}
	}
}

func (v *Verifier) raiseReloadFailed(ctx context.Context, err *policy.LoadError) {
	v.raise(ctx, &store.Alert{
		DedupKey: fmt.Sprintf("%s:%s:%d", AlertPolicyReloadFailed, v.replica, v.now().UnixNano()),
		Kind:     AlertPolicyReloadFailed, Severity: 3,
		Message: fmt.Sprintf("replica %s refused a policy reload and keeps policy %s: %s",
			v.replica, v.policies.Current().Digest(), err.Error()),
	})
}

// divergence is the replica loop's state.
type divergence struct {
	since  time.Time // database clock; zero while digests agree
	raised bool      // the alert for this episode went out
}

func (d *divergence) check(ctx context.Context, v *Verifier) {
	digest := v.policies.Current().Digest()
	if err := v.store.RecordReplica(ctx, v.replica, digest); err != nil {
		v.log.Error("recording this replica's policy digest failed", "error", err)
		return
	}
	rs, now, err := v.store.Replicas(ctx, ReplicaLiveWindow)
	if err != nil {
		v.log.Error("reading the replicas' policy digests failed", "error", err)
		return
	}
	var differ []store.Replica
	for _, r := range rs {
		if r.ID != v.replica && r.PolicyDigest != digest {
			differ = append(differ, r)
		}
	}
	v.metrics.SetPolicyDivergent(len(differ) > 0)
	if len(differ) == 0 {
		if !d.since.IsZero() {
			v.log.Info("replicas enforce the same policy again", "policy_digest", digest)
		}
		*d = divergence{}
		return
	}
	if d.since.IsZero() {
		d.since = now
		v.log.Warn("another replica enforces a different policy", "policy_digest", digest, "replicas", describeReplicas(differ))
	}
	if d.raised || now.Sub(d.since) <= divergenceGrace() {
		return
	}
	d.raised = true
	// One alert per situation (the same replicas and digests) and hour,
	// whichever replica raises it first.
	pairs := make([]string, 0, len(rs))
	for _, r := range rs {
		pairs = append(pairs, r.ID+"="+r.PolicyDigest)
	}
	sort.Strings(pairs)
	sum := sha256.Sum256([]byte(strings.Join(pairs, "\n")))
	v.raise(ctx, &store.Alert{
		DedupKey: fmt.Sprintf("%s:%s:%d", AlertPolicyDivergence, hex.EncodeToString(sum[:8]), now.Truncate(time.Hour).Unix()),
		Kind:     AlertPolicyDivergence, Severity: 2,
		Message: fmt.Sprintf("replicas judge agents with different policies for %s: %s enforces policy %s, %s",
			now.Sub(d.since).Round(time.Second), v.replica, digest, describeReplicas(differ)),
	})
}

func describeReplicas(rs []store.Replica) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%s enforces policy %s", r.ID, r.PolicyDigest)
	}
	return strings.Join(parts, ", ")
}

var _ admin.ReplicaLister = AdminBackend{}

// Replicas implements admin.ReplicaLister: the replicas seen within
// ReplicaLiveWindow and the digest each enforces.
func (b AdminBackend) Replicas(ctx context.Context) (*admin.ReplicaList, error) {
	v := b.V
	rs, now, err := v.store.Replicas(ctx, ReplicaLiveWindow)
	if err != nil {
		return nil, err
	}
	digest := v.policies.Current().Digest()
	out := &admin.ReplicaList{Now: now, Self: v.replica, PolicyDigest: digest}
	for _, r := range rs {
		out.Replicas = append(out.Replicas, admin.ReplicaStatus{ID: r.ID, PolicyDigest: r.PolicyDigest, SeenAt: r.SeenAt,
			Divergent: r.PolicyDigest != digest})
	}
	return out, nil
}
