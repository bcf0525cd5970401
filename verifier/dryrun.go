package verifier

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/store"
)

// A fleet-wide policy dry-run: a candidate policy set is evaluated against
// every agent's stored evidence of its last verified pulse (dryrun_evidence.go),
// beside the policy set in force on the same evidence, and the agents
// whose verdict would change are reported, before anything is deployed.
// The evaluation is the pipeline's policy step (evaluate): the policy
// selected for the agent's partition and ID, tpm = "required" against
// mTLS-only evidence, enforced findings deny. What the policy does not
// decide (quote, logs, clock, Sentinel, last-known-good) is not re-judged:
// the agent's current verdict is shown beside it.

// dryRunPage is how many agents' evidence a dry-run reads at a time.
const dryRunPage = 500

// PolicyVerdict is what a policy set decides on one agent's evidence.
type PolicyVerdict struct {
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	// Policy is the policy that selected the agent ("" when none).
	Policy string `json:"policy"`
	// Findings are the policy's findings (enforced and warn).
	Findings []policy.Finding `json:"findings"`
}

// DryRunAgent is one agent whose verdict the candidate would change.
type DryRunAgent struct {
	AgentID   string `json:"agent_id"`
	Partition string `json:"partition"`
	// Current is the agent's verdict and reason now (its row).
	Current    string        `json:"current"`
	InForce    PolicyVerdict `json:"in_force"`
	Candidate  PolicyVerdict `json:"candidate"`
	EvidenceAt time.Time     `json:"evidence_at"`
	// Incomplete: the stored evidence lost its boot events to its bound,
	// so boot component rules were judged without them.
	Incomplete bool `json:"incomplete,omitempty"`
}

// DryRunReport is a dry-run's outcome.
type DryRunReport struct {
	InForceDigest   string    `json:"in_force_digest"`
	CandidateDigest string    `json:"candidate_digest"`
	At              time.Time `json:"at"`
	// Evaluated agents had stored evidence; Changed are those whose
	// verdict or reason would change, Unchanged the rest.
	Evaluated int           `json:"evaluated"`
	Changed   []DryRunAgent `json:"changed"`
	Unchanged int           `json:"unchanged"`
	// Incomplete counts evaluated agents whose evidence lost its boot
	// events; Unreadable agents whose stored evidence did not decode (not
	// evaluated, named in UnreadableAgents, at most 100).
	Incomplete       int      `json:"incomplete"`
	Unreadable       int      `json:"unreadable"`
	UnreadableAgents []string `json:"unreadable_agents,omitempty"`
	// WithoutEvidence counts enrolled agents the store holds no verified
	// evidence for (never verified since the store kept it).
	WithoutEvidence int `json:"without_evidence"`
}

// judge is the pipeline's policy step on evidence ev: the verdict and
// reason set decides.
func judge(set *policy.Set, ev policy.Evidence, now time.Time) PolicyVerdict {
	res := set.Evaluate(ev, now)
	out := PolicyVerdict{Policy: res.Policy, Findings: res.Findings}
	var pol *policy.Policy
	if set != nil {
		pol = set.Select(ev.AgentID, ev.Partition)
	}
	v, r := pulsev1.Verdict_VERDICT_TRUSTED, pulsev1.Reason_REASON_OK
	switch {
	case pol == nil:
		v, r = pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_NO_POLICY
	case !ev.TPM && pol.TPM == policy.TPMRequired:
		v, r = pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_TPM_REQUIRED
	case res.Denied:
		v, r = pulsev1.Verdict_VERDICT_UNTRUSTED, pulsev1.Reason_REASON_POLICY_DENIED
	case !ev.TPM:
		v = pulsev1.Verdict_VERDICT_DEGRADED
	}
	out.Verdict = strings.TrimPrefix(v.String(), "VERDICT_")
	out.Reason = strings.TrimPrefix(r.String(), "REASON_")
	return out
}

// DryRun evaluates candidate and inForce against every agent's stored
// evidence at now.
func DryRun(ctx context.Context, st *store.Store, inForce, candidate *policy.Set, now time.Time) (*DryRunReport, error) {
	if candidate == nil {
		return nil, fmt.Errorf("dry-run: no candidate policy set")
	}
	rep := &DryRunReport{CandidateDigest: candidate.Digest(), At: now, Changed: []DryRunAgent{}}
	if inForce != nil {
		rep.InForceDigest = inForce.Digest()
	}
	after := ""
	for {
		page, err := st.ListEvidence(ctx, after, dryRunPage)
		if err != nil {
			return nil, fmt.Errorf("dry-run: %w", err)
		}
		for _, ae := range page {
			after = ae.AgentID
			se, err := DecodeEvidence(ae.Explanation.Evidence)
			if err != nil {
				rep.Unreadable++
				if len(rep.UnreadableAgents) < 100 {
					rep.UnreadableAgents = append(rep.UnreadableAgents, ae.AgentID)
				}
				continue
			}
			ev := se.Evidence
			// The verifier's records decide identity and partition, not
			// what was stored with the evidence.
			ev.AgentID, ev.Partition = ae.AgentID, ae.Partition
			rep.Evaluated++
			if !se.Complete {
				rep.Incomplete++
			}
			was, will := judge(inForce, ev, now), judge(candidate, ev, now)
			if was.Verdict == will.Verdict && was.Reason == will.Reason {
				rep.Unchanged++
				continue
			}
			rep.Changed = append(rep.Changed, DryRunAgent{AgentID: ae.AgentID, Partition: ae.Partition,
				Current: strings.TrimPrefix(pulsev1.Verdict(ae.Verdict).String(), "VERDICT_") + "/" + strings.TrimPrefix(pulsev1.Reason(ae.Reason).String(), "REASON_"),
				InForce: was, Candidate: will, EvidenceAt: ae.Explanation.EvidenceAt, Incomplete: !se.Complete})
		}
		if len(page) < dryRunPage {
			break
		}
	}
	counts, err := st.CountFleet(ctx)
	if err != nil {
		return nil, fmt.Errorf("dry-run: %w", err)
	}
	rep.WithoutEvidence = max(counts.Total-rep.Evaluated-rep.Unreadable, 0)
	return rep, nil
}

// EncodeEvidence is the stored form of verified evidence (bounded by
// budget bytes), as the pulse's commit writes it: for tools and tests
// that seed a store.
func EncodeEvidence(ev policy.Evidence, budget int) ([]byte, error) {
	return encodeEvidence(ev, budget)
}
