package verifier

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/audit"
)

// The fleet explorer's views (admin.ExplorerBackend): verdicts over time,
// the policy in force, a candidate's dry-run.

var _ admin.ExplorerBackend = AdminBackend{}

// VerdictSeries replays the recorded verdict changes over the last window.
func (b AdminBackend) VerdictSeries(ctx context.Context, window time.Duration, points int) (*admin.VerdictSeries, error) {
	now := b.V.now()
	pts, err := b.V.store.VerdictSeries(ctx, now.Add(-window), now, points)
	if err != nil {
		return nil, err
	}
	out := &admin.VerdictSeries{At: make([]int64, len(pts)), Counts: map[string][]int{}}
	for i, p := range pts {
		out.At[i] = p.At.Unix()
		for v := range p.Counts {
			name := pulsev1.Verdict(v).String()
			if _, ok := out.Counts[name]; !ok {
				out.Counts[name] = make([]int, len(pts))
			}
		}
	}
	for i, p := range pts {
		for v, n := range p.Counts {
			out.Counts[pulsev1.Verdict(v).String()][i] = n
		}
	}
	return out, nil
}

// PolicyStatus reports the policy set in force, the watcher's reload
// state and how many agents each policy selects.
func (b AdminBackend) PolicyStatus(ctx context.Context) (*admin.PolicyStatus, error) {
	set := b.V.policies.Current()
	out := &admin.PolicyStatus{}
	if set == nil {
		return out, nil
	}
	out.Digest, out.Files = set.Digest(), set.Files()
	if w, ok := b.V.policies.(*policy.Watcher); ok {
		st := w.Stats()
		out.LoadedAt, out.Loads, out.Failing, out.Rejected = st.LoadedAt, st.Loads, st.Failing, st.Rejected
		out.LastError, out.LastRejectedAt = st.LastError, st.LastRejectedAt
	}
	parts, err := b.V.store.AgentPartitions(ctx)
	if err != nil {
		return nil, err
	}
	count := map[string]int{}
	for id, part := range parts {
		if p := set.Select(id, part); p != nil {
			count[p.Name]++
		} else {
			out.Unselected++
		}
	}
	for _, p := range set.Policies() {
		out.Policies = append(out.Policies, admin.PolicyInForce{Name: p.Name, Where: p.Pos.String(), TPM: fmt.Sprint(p.TPM), Agents: count[p.Name]})
	}
	return out, nil
}

// DryRun loads the candidate files and evaluates them against every
// agent's stored evidence beside the set in force.
func (b AdminBackend) DryRun(ctx context.Context, files []admin.PolicyFile) (*admin.DryRunResult, error) {
	srcs := make([]policy.Source, 0, len(files))
	for _, f := range files {
		srcs = append(srcs, policy.Source{Name: f.Name, Bytes: []byte(f.Content)})
	}
	cand, diags := policy.Load(srcs)
	if diags.HasErrors() || cand == nil {
		return nil, fmt.Errorf("%w: candidate policy does not load:\n%s", admin.ErrInvalid, policy.DiagnosticsText(diagErrs(diags), srcs))
	}
	rep, err := DryRun(ctx, b.V.store, b.V.policies.Current(), cand, b.V.now())
	if err != nil {
		return nil, err
	}
	out := &admin.DryRunResult{InForceDigest: rep.InForceDigest, CandidateDigest: rep.CandidateDigest, Evaluated: rep.Evaluated,
		Unchanged: rep.Unchanged, Incomplete: rep.Incomplete, Unreadable: rep.Unreadable, WithoutEvidence: rep.WithoutEvidence}
	for _, c := range rep.Changed {
		why := c.Candidate.Reason
		for _, f := range c.Candidate.Findings {
			if f.Mode == policy.Enforce {
				why = f.String()
				break
			}
		}
		out.Changed = append(out.Changed, admin.DryRunChange{AgentID: c.AgentID, Partition: c.Partition, Current: c.Current,
			InForce: c.InForce.Verdict + "/" + c.InForce.Reason, Candidate: c.Candidate.Verdict + "/" + c.Candidate.Reason,
			Why: why, EvidenceAt: c.EvidenceAt, Incomplete: c.Incomplete})
	}
	return out, nil
}

func diagErrs(d hcl.Diagnostics) hcl.Diagnostics {
	if len(d) == 0 {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "no policy loaded"}}
	}
	return d
}

var _ admin.AuditStatuser = AdminBackend{}

// AuditStatus verifies the configured audit log's segments and links.
func (b AdminBackend) AuditStatus(ctx context.Context) (*admin.AuditStatus, error) {
	path := b.V.cfg.Alerts.AuditLog
	out := &admin.AuditStatus{Configured: path != ""}
	if path == "" {
		return out, nil
	}
	res, err := audit.VerifySegments(path, nil)
	if err != nil {
		return nil, fmt.Errorf("audit status: %w", err)
	}
	out.Segments, out.Whole = len(res), true
	for _, r := range res {
		if r.Summary.Records > 0 || r.Summary.LastSeq > 0 {
			out.VerifiedUpTo, out.LastHash = r.Summary.LastSeq, r.Summary.LastHash
		}
		switch {
		case r.Broken != nil:
			out.Whole = false
			if out.Problem == "" {
				out.Problem = fmt.Sprintf("segment %d: %v", r.N, r.Broken)
			}
		case r.Anchor != nil:
			out.Whole = false
			if out.Problem == "" {
				out.Problem = r.Anchor.Error()
			}
		}
		if !out.Whole {
			break
		}
	}
	return out, nil
}
