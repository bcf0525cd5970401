package verifier

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/audit"
	"github.com/pulse-attest/pulse/verifier/store"
)

// AdminBackend serves the admin API (verifier/admin) from the store and this
// replica's directive streams.
type AdminBackend struct{ V *Verifier }

var _ admin.Backend = AdminBackend{}

// notFound maps store.ErrNotFound to admin.ErrNotFound with an operator's
// message (the admin API sends 404 with it).
func notFound(err error, format string, args ...any) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf(format+": %w", append(args, admin.ErrNotFound)...)
	}
	return err
}

func statusOf(a *store.Agent, open int, connected bool) admin.AgentStatus {
	trust := admin.TrustTPM
	if !a.TPM {
		trust = admin.TrustMTLSOnly
	}
	return admin.AgentStatus{ID: a.ID, Partition: a.Partition, Trust: trust,
		Verdict: pulsev1.Verdict(a.LastVerdict).String(), Reason: pulsev1.Reason(a.LastReason).String(), Message: a.LastMessage,
		LastPulse: a.LastPulseAt, Connected: connected, OpenAlerts: open, PolicyDigest: a.PolicyDigest, Address: a.Address,
		AgentVersion: a.AgentVersion}
}

// connected says which agents have a directive stream open on any replica
// (from the store), or on this one (its hub knows first).
func (b AdminBackend) connected(agents []*store.Agent) map[string]bool {
	m := map[string]bool{}
	for _, a := range agents {
		if a.StreamReplica != "" {
			m[a.ID] = true
		}
	}
	for _, id := range b.V.hub.connected() {
		m[id] = true
	}
	return m
}

func (b AdminBackend) ListAgents(ctx context.Context) ([]admin.AgentStatus, error) {
	agents, err := b.V.store.ListAgents(ctx)
	if err != nil {
		return nil, err
	}
	open, err := b.V.store.CountOpenAlerts(ctx)
	if err != nil {
		return nil, err
	}
	conn := b.connected(agents)
	out := make([]admin.AgentStatus, 0, len(agents))
	for _, a := range agents {
		out = append(out, statusOf(a, open[a.ID], conn[a.ID]))
	}
	return out, nil
}

func (b AdminBackend) GetAgent(ctx context.Context, id string) (*admin.AgentDetail, error) {
	a, err := b.V.store.GetAgent(ctx, id)
	if err != nil {
		return nil, notFound(err, "agent %s is not enrolled", id)
	}
	open, err := b.V.store.ListAlerts(ctx, store.AlertFilter{AgentID: id, OpenOnly: true, Limit: admin.MaxAlertLimit})
	if err != nil {
		return nil, err
	}
	hist, err := b.V.store.History(ctx, id, 50)
	if err != nil {
		return nil, err
	}
	d := &admin.AgentDetail{AgentStatus: statusOf(a, len(open), b.connected([]*store.Agent{a})[id]),
		EKSHA256: hex.EncodeToString(a.EKSHA256), AKName: hex.EncodeToString(a.AKName), EnrolledAt: a.EnrolledAt, AgentVersion: a.AgentVersion}
	if d.SentinelEvents, err = sentinelEventsOf(ctx, b.V.store, id); err != nil {
		return nil, err
	}
	for _, h := range hist {
		d.History = append(d.History, admin.HistoryEntry{At: h.At, Verdict: pulsev1.Verdict(h.Verdict).String(),
			Reason: pulsev1.Reason(h.Reason).String(), Message: h.Message})
	}
	now := b.V.now()
	if err := explain(ctx, b.V.store, id, d, now); err != nil {
		return nil, err
	}
	if d.UpdateWindows, err = b.V.agentWindows(ctx, id, now); err != nil {
		return nil, err
	}
	return d, nil
}

// explain adds the agent's stored findings, evidence, certificate and
// kernel summary to d (the certificate judged at now).
func explain(ctx context.Context, s *store.Store, id string, d *admin.AgentDetail, now time.Time) error {
	x, err := s.GetExplanation(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	d.Certificate = certificateOf(x, now)
	if x.Kernel != nil {
		if d.Kernel, err = DecodeKernel(x.Kernel); err != nil {
			return fmt.Errorf("agent %s: %w", id, err)
		}
	}
	fs, err := DecodeFindings(x.Findings)
	if err != nil {
		return fmt.Errorf("agent %s: %w", id, err)
	}
	d.FindingsAt, d.Policy = x.At, x.Policy
	for _, f := range fs {
		d.Findings = append(d.Findings, admin.Finding{Rule: f.Rule, File: f.File, Line: f.Line, Enforce: f.Enforce,
			Severity: f.Severity, Message: f.Message, Expected: f.Expected, Seen: f.Seen})
	}
	if x.Evidence == nil {
		return nil
	}
	se, err := DecodeEvidence(x.Evidence)
	if err != nil {
		return fmt.Errorf("agent %s: %w", id, err)
	}
	raw, err := json.Marshal(se.Evidence)
	if err != nil {
		return fmt.Errorf("agent %s: evidence: %w", id, err)
	}
	d.Evidence, d.EvidenceAt, d.EvidenceComplete, d.EvidenceDropped = raw, x.EvidenceAt, se.Complete, se.Dropped
	return nil
}

func (b AdminBackend) ListAlerts(ctx context.Context, f admin.AlertFilter) ([]admin.Alert, error) {
	alerts, err := b.V.store.ListAlerts(ctx, store.AlertFilter{AgentID: f.AgentID, OpenOnly: f.OpenOnly, Limit: f.Limit})
	if err != nil {
		return nil, err
	}
	out := make([]admin.Alert, 0, len(alerts))
	for _, a := range alerts {
		out = append(out, admin.Alert{ID: a.ID, AgentID: a.AgentID, Kind: a.Kind, Severity: a.Severity, Reason: a.Reason,
			Message: a.Message, CreatedAt: a.CreatedAt, AckedAt: a.AckedAt, AckedBy: a.AckedBy})
	}
	return out, nil
}

func (b AdminBackend) AckAlert(ctx context.Context, id, by string) error {
	// store.AckAlert answers ErrNotFound for unknown and already acknowledged alerts alike (404).
	return notFound(b.V.store.AckAlert(ctx, id, by, time.Now()), "alert %s is unknown or already acknowledged", id)
}

func (b AdminBackend) ApproveUpdate(ctx context.Context, u admin.UpdateApproval) error {
	return b.V.approveUpdate(ctx, &store.UpdateWindow{ID: u.ID, Digest: u.Digest, Agents: u.Agents, Start: u.Start, End: u.End, CreatedBy: u.By})
}

func (b AdminBackend) ListUpdates(ctx context.Context) ([]admin.UpdateApproval, error) {
	ws, err := b.V.store.UpdateWindowsNotEnded(ctx, b.V.now())
	if err != nil {
		return nil, err
	}
	out := make([]admin.UpdateApproval, 0, len(ws))
	for _, w := range ws {
		out = append(out, admin.UpdateApproval{ID: w.ID, Digest: w.Digest, Agents: w.Agents, Start: w.Start, End: w.End, By: w.CreatedBy})
	}
	return out, nil
}

func (b AdminBackend) RecordAction(ctx context.Context, rec audit.Record) error {
	return b.V.RecordOperatorAction(ctx, rec)
}

func (b AdminBackend) Release(ctx context.Context, address, by string) error {
	return notFound(b.V.Release(ctx, address, by), "%s is not quarantined", address)
}

func (b AdminBackend) Quarantined(ctx context.Context) ([]admin.Quarantine, error) {
	qs, err := b.V.store.ListQuarantine(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]admin.Quarantine, 0, len(qs))
	for _, q := range qs {
		out = append(out, admin.Quarantine{Address: q.Address, Offender: q.Offender, Reason: q.Reason, Since: q.Since})
	}
	return out, nil
}

var _ admin.FleetBackend = AdminBackend{}

// QueryAgents pages the fleet in the store (store.QueryAgents).
func (b AdminBackend) QueryAgents(ctx context.Context, q admin.AgentQuery) (*admin.AgentPage, error) {
	sq := store.AgentQuery{Partition: q.Partition, Version: q.Version, Trust: q.Trust, Quarantined: q.Quarantined,
		OpenAlerts: q.OpenAlerts, Search: q.Search, Sort: q.Sort, Desc: q.Desc, After: q.After, Limit: q.Limit}
	for _, n := range q.Verdicts {
		v, ok := pulsev1.Verdict_value["VERDICT_"+n]
		if !ok {
			return nil, fmt.Errorf("unknown verdict %q: %w", n, admin.ErrInvalid)
		}
		sq.Verdicts = append(sq.Verdicts, v)
	}
	for _, n := range q.Reasons {
		v, ok := pulsev1.Reason_value["REASON_"+n]
		if !ok {
			return nil, fmt.Errorf("unknown reason %q: %w", n, admin.ErrInvalid)
		}
		sq.Reasons = append(sq.Reasons, v)
	}
	p, err := b.V.store.QueryAgents(ctx, sq)
	if errors.Is(err, store.ErrBadQuery) {
		return nil, fmt.Errorf("%w: %w", admin.ErrInvalid, err)
	}
	if err != nil {
		return nil, err
	}
	here := map[string]bool{}
	for _, id := range b.V.hub.connected() {
		here[id] = true
	}
	out := &admin.AgentPage{Total: p.Total, Next: p.Next, Agents: make([]admin.AgentRow, 0, len(p.Agents))}
	for _, a := range p.Agents {
		trust := admin.TrustTPM
		if !a.TPM {
			trust = admin.TrustMTLSOnly
		}
		out.Agents = append(out.Agents, admin.AgentRow{AgentStatus: admin.AgentStatus{ID: a.ID, Partition: a.Partition, Trust: trust,
			Verdict: pulsev1.Verdict(a.Verdict).String(), Reason: pulsev1.Reason(a.Reason).String(), Message: a.Message,
			LastPulse: a.LastPulseAt, Connected: a.StreamReplica != "" || here[a.ID], OpenAlerts: a.OpenAlerts,
			PolicyDigest: a.PolicyDigest, Address: a.Address}, AgentVersion: a.AgentVersion, Quarantined: a.Quarantined})
	}
	return out, nil
}

// CountFleet counts the fleet in one statement (store.CountFleet).
func (b AdminBackend) CountFleet(ctx context.Context) (*admin.FleetCounts, error) {
	c, err := b.V.store.CountFleet(ctx)
	if err != nil {
		return nil, err
	}
	out := &admin.FleetCounts{Total: c.Total, ByVerdict: map[string]int{}, ByReason: map[string]int{},
		ByPartition: c.ByPartition, ByVersion: c.ByVersion, ByTrust: c.ByTrust, Quarantined: c.Quarantined, OpenAlerts: c.OpenAlerts}
	for v, n := range c.ByVerdict {
		out.ByVerdict[pulsev1.Verdict(v).String()] += n
	}
	for r, n := range c.ByReason {
		out.ByReason[pulsev1.Reason(r).String()] += n
	}
	return out, nil
}
