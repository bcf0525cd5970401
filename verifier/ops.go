package verifier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pulse-attest/pulse/internal/directivesig"
	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/config"
	"github.com/pulse-attest/pulse/verifier/store"
)

// Alert kinds (docs/alerts.md): the alert.Kind vocabulary, as strings.
const (
	AlertCompromised      = string(alert.KindCompromised)
	AlertUntrusted        = string(alert.KindUntrusted)
	AlertBinaryChanged    = string(alert.KindBinaryChanged)
	AlertBPFChanged       = string(alert.KindBPFProgramChanged)
	AlertClockDesync      = string(alert.KindClockDesync)
	AlertIdentityTakeover = string(alert.KindIdentityTakeover)
	AlertIsolated         = string(alert.KindIsolated)
	AlertReleased         = string(alert.KindReleased)
	// AlertIsolationRefused: an isolation that would hit a protected or
	// shared address, refused.
	AlertIsolationRefused = string(alert.KindIsolationRefused)
	// AlertTransientStreak: transient failures in a row (configurable).
	AlertTransientStreak = string(alert.KindTransientStreak)
)

// AlertIsolationSuppressed: an operator's release hold kept an agent from
// being isolated (once per hold and reason).
const AlertIsolationSuppressed = string(alert.KindIsolationSuppressed)

// Alerter receives every alert this replica raised (after deduplication in
// the store): webhooks, audit log, metrics.
type Alerter interface {
	Alert(a *store.Alert)
}

// raise stores an alert (deduplicated across replicas by its key) and,
// when this replica raised it, hands it to the alerter and marks it
// dispatched. One stored but not dispatched (a crash in between, or the
// alerter refused it) is dispatched by the outbox (outbox.go).
func (v *Verifier) raise(ctx context.Context, a *store.Alert) {
	a.Replica = v.replica
	if a.CreatedAt.IsZero() {
		a.CreatedAt = v.now().UTC()
	}
	raised, err := v.store.RaiseAlert(ctx, a)
	if err != nil {
		v.log.Error("raising alert failed", "agent_id", a.AgentID, "kind", a.Kind, "error", err)
		return
	}
	if !raised {
		return
	}
	v.metrics.AlertRaised(a.Kind, a.Severity)
	v.log.Warn("alert raised", "alert_id", a.ID, "agent_id", a.AgentID, "kind", a.Kind, "severity", a.Severity, "reason", a.Reason, "detail", a.Message)
	v.dispatchStored(ctx, a)
}

// severityOf maps a failure to an alert kind and severity (1 most severe),
// or "" when its reason raises no verdict alert: alert.ReasonAlerts, with
// POLICY_DENIED at the most severe enforced finding's severity.
func severityOf(o *Outcome) (string, int) {
	kind, sev, ok := alert.ForVerdict(o.Reason, o.Findings)
	if !ok {
		return "", 0
	}
	return string(kind), sev
}

// findingsDigest names a set of enforced findings (rule and severity),
// whatever their order.
func findingsDigest(fs []*pulsev1.Finding) string {
	var parts []string
	for _, f := range fs {
		if f.GetEnforce() {
			parts = append(parts, fmt.Sprintf("%s@%d", f.GetRule(), f.GetSeverity()))
		}
	}
	sort.Strings(parts)
	h := sha256.Sum256([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(h[:8])
}

// orDefault is n, or def when n is unset (a Config built in code).
func orDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// transientReason: failures an honest agent recovers from at once.
func transientReason(r pulsev1.Reason) bool {
	return r == pulsev1.Reason_REASON_NONCE_EXPIRED || r == pulsev1.Reason_REASON_FIRMWARE_LOG_MISSING
}

func accepted(v pulsev1.Verdict) bool {
	return v == pulsev1.Verdict_VERDICT_TRUSTED || v == pulsev1.Verdict_VERDICT_DEGRADED
}

// settle applies step 8 (state) to the pulse's record, which commits
// next: the failure streaks and the next deadline of the verdict verify
// decided (settle never changes it, and writes nothing). Only an accepted
// pulse (TRUSTED, DEGRADED) moves the silence deadline: an agent that only
// ever fails, however it fails, ends BLINDED.
func (v *Verifier) settle(_ context.Context, o *Outcome) {
	now := v.now()
	pol := o.pol
	hb := policy.Heartbeat{Interval: policy.DefaultHeartbeatInterval, Missed: policy.DefaultMissedPulses}
	if pol != nil {
		hb = pol.Heartbeat
	}
	a := o.agent
	o.update.TransientStreak, o.update.DesyncStreak = a.TransientStreak, a.DesyncStreak
	if o.desync {
		o.update.DesyncStreak = a.DesyncStreak + 1
	}
	if !accepted(o.Verdict) {
		// Only an accepted pulse records where the device is: silence
		// isolates that address, not one a failing pulse came from.
		o.update.Address = ""
	}
	switch {
	case accepted(o.Verdict):
		// The deadline is counted on the database's clock (store.PulseUpdate).
		o.update.DeadlineIn, o.update.Interval = hb.Deadline(), hb.Interval
		o.update.TransientStreak, o.update.DesyncStreak = 0, 0
	case transientReason(o.Reason):
		o.update.TransientStreak = a.TransientStreak + 1
		if n := orDefault(v.cfg.Pulses.TransientAlertAfter, config.DefaultTransientAlertAfter); int(o.update.TransientStreak) == n {
			o.streakAlert = &store.Alert{DedupKey: fmt.Sprintf("transient_streak:%s:%d", a.ID, dedupBucket(now)), AgentID: a.ID,
				Kind: AlertTransientStreak, Severity: 2, Reason: o.Reason.String(),
				Message: fmt.Sprintf("%d transient failures in a row; last: %s", o.update.TransientStreak, o.Message)}
		}
	}
	if o.stopShelter > 0 {
		// A planned stop (stop.go): silent for its shelter, not BLINDED.
		o.update.DeadlineIn, o.update.Interval = o.stopShelter, hb.Interval
		o.update.TransientStreak, o.update.DesyncStreak = 0, 0
	}
}

// afterPulse applies the operations that follow a committed verdict:
// history, alerts, isolation. An accepted pulse's commit ended any release
// hold (store.PulseUpdate.DeadlineIn).
func (v *Verifier) afterPulse(ctx context.Context, p Peer, o *Outcome) {
	if o.agent == nil {
		return
	}
	now := v.now()
	pol := o.pol
	if o.lockoutAlert != nil {
		v.raise(ctx, o.lockoutAlert)
	}
	if o.lkgAlert != nil {
		// One alert per change (its dedup key names the change).
		v.raise(ctx, o.lkgAlert)
	}
	if l, prev := o.update.LKG, o.agent.LKG; l != nil && prev.BinarySHA256 != "" && (l.BinarySHA256 != prev.BinarySHA256 || l.BPF != prev.BPF) {
		// Logged once the commit that wrote it won (a losing copy says nothing).
		v.log.Info("approved update: new last-known-good", "agent_id", o.agent.ID, "agent_binary_sha256", l.BinarySHA256)
	}
	if o.streakAlert != nil {
		v.raise(ctx, o.streakAlert)
	}
	if o.stopAlert != nil {
		v.raise(ctx, o.stopAlert)
	}
	changed := pulsev1.Verdict(o.agent.LastVerdict) != o.Verdict || pulsev1.Reason(o.agent.LastReason) != o.Reason
	if changed {
		if err := v.store.AppendHistory(ctx, o.agent.ID, store.HistoryEntry{At: now, Verdict: int32(o.Verdict), Reason: int32(o.Reason), Message: o.Message}); err != nil {
			v.log.Error("recording history failed", "agent_id", o.agent.ID, "error", err)
		}
	}
	// A policy denial alerts for each distinct set of enforced findings
	// (one per set and hour, deduplicated in the store): every rule reports
	// the same reason, so a mild denial must not mask a severe one that
	// follows, within the hour or while the mild one persists. Other
	// failures alert when the verdict or reason changes, once per reason
	// and hour.
	denial := o.Reason == pulsev1.Reason_REASON_POLICY_DENIED
	if (changed || denial) && !accepted(o.Verdict) && o.lkgAlert == nil && o.stopAlert == nil {
		if kind, sev := severityOf(o); kind != "" {
			key := fmt.Sprintf("verdict:%s:%s:%d", o.agent.ID, o.Reason, dedupBucket(now))
			if denial {
				key = fmt.Sprintf("verdict:%s:%s:%s:%d", o.agent.ID, o.Reason, findingsDigest(o.Findings), dedupBucket(now))
			}
			v.raise(ctx, &store.Alert{DedupKey: key, AgentID: o.agent.ID, Kind: kind, Severity: sev, Reason: o.Reason.String(), Message: o.Message})
		}
	}
	if accepted(o.Verdict) {
		v.registerAddress(ctx, o.agent.ID, p.Addr)
	}
	v.sentinelComeback(ctx, o)
	if v.shouldIsolate(o, pol) && p.Addr != "" {
		v.isolate(ctx, o.agent.ID, p.Addr, o.Reason.String())
	}
}

// shouldIsolate: a policy denial isolates when its failed rule says so; any
// other UNTRUSTED verdict that raises an alert isolates when the policy's
// on_failure block says so. Transient reasons never isolate.
func (v *Verifier) shouldIsolate(o *Outcome, pol *policy.Policy) bool {
	if o.Verdict != pulsev1.Verdict_VERDICT_UNTRUSTED {
		return false
	}
	if o.Reason == pulsev1.Reason_REASON_POLICY_DENIED {
		return o.Isolate
	}
	if o.Reason == pulsev1.Reason_REASON_FIRMWARE_LOG_QUOTA {
		return false
	}
	kind, _ := severityOf(o)
	return kind != "" && pol != nil && pol.OnFailure.Isolate
}

// checkLastKnownGood compares the verified binaries and eBPF programs with
// the last-known-good. The first trusted pulse sets it. Every agent-binary
// record of the boot is judged, in order (none can be taken back out of
// the runtime PCR): the records already accepted in this boot are the
// log's accepted prefix (LKG.Boot: the boot, as the quote's reset and
// restart counts, how many records, and a digest of their digests); each
// record after it must be the build before it (a restart of the same
// build) or a change an open update window (store or policy) approves. So
// an approved update does not turn its predecessor's record into a
// finding once the window closes, while re-launching an older build — in
// the same boot, or in any later boot, even one whose log replays the old
// records first — is a change like any other. Otherwise the verdict turns
// UNTRUSTED with a severity 1 alert (raised after the commit) and the
// last-known-good stays as it was. It decides and writes nothing: the
// failure it returns is the verdict, and the new last-known-good
// (o.update.LKG) is written by the pulse's commit.
func (v *Verifier) checkLastKnownGood(ctx context.Context, o *Outcome, pol *policy.Policy, now time.Time) *Outcome {
	rt := o.evidence.Runtime
	lkg := o.agent.LKG
	seen := make([]string, 0, len(rt.AgentBinaries))
	for _, b := range rt.AgentBinaries {
		seen = append(seen, strings.ToLower(b.SHA256))
	}
	cur := store.LKG{BinarySHA256: rt.AgentBinarySHA256, BPF: bpfString(rt.BPFPrograms), At: now, Boot: acceptedPrefix(o.boot, seen)}
	if lkg.BinarySHA256 == "" {
		cur.BPFBuilds = bpfBuilds(nil).with(cur.BinarySHA256, cur.BPF).String()
		o.update.LKG = &cur
		return nil
	}
	if lkg.BinarySHA256 == cur.BinarySHA256 && lkg.BPF == cur.BPF && lkg.Boot == cur.Boot {
		// The steady state: every record of the log is in this boot's
		// accepted prefix and the programs are the last-known-good ones.
		return nil
	}
	prev := strings.ToLower(lkg.BinarySHA256)
	for _, d := range seen[acceptedCount(lkg.Boot, o.boot, seen):] {
		if d == prev {
			continue
		}
		if !v.updateApproved(ctx, o.agent.ID, prev, d, pol, now) {
			msg := fmt.Sprintf("agent binary changed from %s to %s outside any approved update window", shortHex(prev), shortHex(d))
			if d != strings.ToLower(cur.BinarySHA256) {
				msg += fmt.Sprintf(" (measured earlier in this boot; the running build is %s)", shortHex(cur.BinarySHA256))
			}
			o.untrusted(pulsev1.Reason_REASON_BINARY_CHANGED, "%s", msg)
			o.lkgAlert = &store.Alert{DedupKey: fmt.Sprintf("binary_changed:%s:%s:%s", o.agent.ID, prev, d),
				AgentID: o.agent.ID, Kind: AlertBinaryChanged, Severity: 1, Reason: o.Reason.String(), Message: o.Message}
			return o
		}
		prev = d
	}
	// eBPF programs: each build keeps the program set it was first
	// accepted with (the verifier's learned manifest). A build seen before
	// must bring the same programs, whatever window is open; a build not
	// seen before may bring a new set only as an update approved by a
	// window open now for it.
	binChanged := lkg.BinarySHA256 != cur.BinarySHA256
	learned := parseBPFBuilds(lkg.BPFBuilds)
	bpfOK := true
	if want, seenBuild := learned.get(cur.BinarySHA256); seenBuild {
		bpfOK = want == cur.BPF
	} else if lkg.BPF != cur.BPF {
		bpfOK = bpfChangeApproved(cur.BinarySHA256, rt, binChanged, pol, now)
	}
	if !bpfOK {
		o.untrusted(pulsev1.Reason_REASON_BPF_PROGRAM_CHANGED, "eBPF programs changed from %q to %q outside any approved update of the agent build", lkg.BPF, cur.BPF)
		o.lkgAlert = &store.Alert{DedupKey: fmt.Sprintf("bpf_changed:%s:%s", o.agent.ID, cur.BPF),
			AgentID: o.agent.ID, Kind: AlertBPFChanged, Severity: 1, Reason: o.Reason.String(), Message: o.Message}
		return o
	}
	cur.BPFBuilds = learned.with(cur.BinarySHA256, cur.BPF).String()
	if lkg.BinarySHA256 != cur.BinarySHA256 || lkg.BPF != cur.BPF || lkg.Boot != cur.Boot || lkg.BPFBuilds != cur.BPFBuilds {
		// Written by the commit; logged after it (afterPulse).
		o.update.LKG = &cur
	}
	return nil
}

// maxBPFBuilds bounds the builds whose program sets an agent's
// last-known-good remembers (the oldest is forgotten first).
const maxBPFBuilds = 16

// bpfBuild is one build and the eBPF program set it was accepted with.
type bpfBuild struct {
	Build string `json:"build"`
	BPF   string `json:"bpf"`
}

// bpfBuilds is the learned manifest: builds in the order they were
// accepted, most recent last.
type bpfBuilds []bpfBuild

func parseBPFBuilds(s string) bpfBuilds {
	var b bpfBuilds
	if s != "" {
		// Written only by the verifier; an unreadable value is treated as
		// empty, which makes every build new (and programs changes need a
		// window).
		_ = json.Unmarshal([]byte(s), &b)
	}
	return b
}

func (b bpfBuilds) get(build string) (string, bool) {
	for _, x := range b {
		if strings.EqualFold(x.Build, build) {
			return x.BPF, true
		}
	}
	return "", false
}

// with returns the list with build's program set recorded (moved last).
func (b bpfBuilds) with(build, bpf string) bpfBuilds {
	out := make(bpfBuilds, 0, len(b)+1)
	for _, x := range b {
		if !strings.EqualFold(x.Build, build) {
			out = append(out, x)
		}
	}
	out = append(out, bpfBuild{Build: strings.ToLower(build), BPF: bpf})
	if len(out) > maxBPFBuilds {
		out = out[len(out)-maxBPFBuilds:]
	}
	return out
}

func (b bpfBuilds) String() string {
	raw, err := json.Marshal(b)
	if err != nil {
		return ""
	}
	return string(raw)
}

// acceptedPrefix records the agent-binary digests accepted in one boot as
// "<boot>:<count>:<SHA-256 of the digests joined by commas>".
func acceptedPrefix(boot string, digests []string) string {
	h := sha256.Sum256([]byte(strings.Join(digests, ",")))
	return fmt.Sprintf("%s:%d:%s", boot, len(digests), hex.EncodeToString(h[:]))
}

// acceptedCount is how many of the log's agent-binary records (seen, in
// order) were accepted before in this boot: the length of the recorded
// accepted prefix when it was recorded in this boot and seen starts with
// it, else 0 (every record is judged again).
func acceptedCount(recorded, boot string, seen []string) int {
	rest, ok := strings.CutPrefix(recorded, boot+":")
	if !ok || boot == "" {
		return 0
	}
	n, _, ok := strings.Cut(rest, ":")
	if !ok {
		return 0
	}
	k, err := strconv.Atoi(n)
	if err != nil || k <= 0 || k > len(seen) || acceptedPrefix(boot, seen[:k]) != recorded {
		return 0
	}
	return k
}

// updateApproved reports whether an agent switching from one build to
// another now is approved: a policy whose agent_binary lists the new build
// (allow, or an update_window open now), or a window opened with
// pulsectl agents approve-update. A policy without an agent_binary section
// restricts nothing, but a change is still a change: only a window
// approves it then.
func (v *Verifier) updateApproved(ctx context.Context, agentID, from, to string, pol *policy.Policy, now time.Time) bool {
	if pol != nil && pol.AgentBinary != nil && pol.BinaryChangeApproved(from, to, now) {
		return true
	}
	return v.storeWindowOpen(ctx, agentID, to, now)
}

// storeWindowOpen reports whether an update window opened with the admin
// API (pulsectl agents approve-update) covers the agent and the build now.
func (v *Verifier) storeWindowOpen(ctx context.Context, agentID, digest string, now time.Time) bool {
	ws, err := v.store.UpdateWindows(ctx, now)
	if err != nil {
		v.log.Error("reading update windows failed", "error", err)
		return false
	}
	for _, w := range ws {
		if !strings.EqualFold(w.Digest, digest) {
			continue
		}
		for _, pat := range w.Agents {
			if policy.Glob(pat, agentID) {
				return true
			}
		}
	}
	return false
}

func bpfString(m map[string]string) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, n+"="+m[n])
	}
	return strings.Join(parts, ",")
}

func shortHex(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

// isolate quarantines an offender fleet-wide by identity: the addresses
// registered to it (isolationTargets, quarantine.go), each recorded in the
// store and published as a directive every replica delivers, signed, to
// its trusted agents. failedFrom is the address the failure came from (the
// last accepted one for a silence). An address that is protected, shared
// with other agents or not the offender's is never isolated: the operator
// is told instead (isolation_refused), and acts on the device.
func (v *Verifier) isolate(ctx context.Context, offender, failedFrom, reason string) {
	targets, refused := v.isolationTargets(ctx, offender, failedFrom)
	for _, r := range refused {
		v.raise(ctx, &store.Alert{DedupKey: fmt.Sprintf("isolation_refused:%s:%s:%d", offender, r.addr, dedupBucket(v.now())), AgentID: offender,
			Kind: AlertIsolationRefused, Severity: 2, Reason: reason,
			Message: fmt.Sprintf("address %s not isolated: %s; act on the device itself", r.addr, r.why)})
	}
	for _, addr := range targets {
		v.isolateAddress(ctx, offender, addr, reason)
	}
}

// isolateAddress quarantines one address of the offender. An operator's
// release hold on the offender refuses it in the same statement
// (store.AddQuarantine); the suppression raises an isolation_suppressed
// alert, once per hold and reason.
func (v *Verifier) isolateAddress(ctx context.Context, offender, addr, reason string) {
	isNew, err := v.store.AddQuarantine(ctx, store.Quarantine{Address: addr, Offender: offender, Reason: reason, Since: v.now()})
	var held *store.HoldError
	if errors.As(err, &held) {
		h := held.Hold
		v.raise(ctx, &store.Alert{DedupKey: fmt.Sprintf("isolation_suppressed:%s:%d:%s", offender, h.At.UnixNano(), reason), AgentID: offender,
			Kind: AlertIsolationSuppressed, Severity: 2, Reason: reason,
			Message: fmt.Sprintf("address %s not isolated: released by %s at %s; the hold lasts until an accepted pulse or %s",
				addr, h.By, h.At.Format(time.RFC3339), h.Until.Format(time.RFC3339))})
		return
	}
	if err != nil {
		v.log.Error("quarantine failed", "agent_id", offender, "error", err)
		return
	}
	if !isNew {
		// Already isolated: for this offender nothing changes; for another
		// the first isolation stands (its release is the operator's) and
		// the agents that miss it get it through reconciliation.
		v.log.Info("address already isolated", "agent_id", offender, "address", addr)
		return
	}
	d := &pulsev1.Directive{Kind: &pulsev1.Directive_Quarantine{Quarantine: &pulsev1.Quarantine{Addresses: []string{addr}, Offender: offender}}}
	v.publish(ctx, "*", "quarantine", d)
	v.raise(ctx, &store.Alert{DedupKey: fmt.Sprintf("isolated:%s:%s:%d", offender, addr, v.now().UnixNano()), AgentID: offender,
		Kind: AlertIsolated, Severity: 2, Reason: reason, Message: fmt.Sprintf("address %s isolated fleet-wide", addr)})
}

// Release lifts a quarantine and tells every agent. In the same
// transaction it holds off isolating the offender again until an accepted
// pulse of it is committed, or for the configured isolation_hold at most.
func (v *Verifier) Release(ctx context.Context, addr, by string) error {
	holdFor := v.cfg.IsolationHold
	if holdFor <= 0 {
		holdFor = config.DefaultIsolationHold
	}
	q, err := v.store.ReleaseQuarantine(ctx, addr, by, holdFor)
	if err != nil {
		return fmt.Errorf("release %s: %w", addr, err)
	}
	d := &pulsev1.Directive{Kind: &pulsev1.Directive_Release{Release: &pulsev1.Release{Addresses: []string{addr}, Offender: q.Offender}}}
	v.publish(ctx, "*", "release", d)
	v.raise(ctx, &store.Alert{DedupKey: fmt.Sprintf("released:%s:%d", addr, v.now().UnixNano()), AgentID: q.Offender,
		Kind: AlertReleased, Severity: 4, Message: fmt.Sprintf("address %s released by %s", addr, by)})
	return nil
}

func (v *Verifier) publish(ctx context.Context, target, kind string, d *pulsev1.Directive) {
	body, err := proto.Marshal(d)
	if err != nil {
		v.log.Error("encoding directive failed", "error", err)
		return
	}
	if err := v.store.PublishDirective(ctx, &store.Directive{Target: target, Kind: kind, Body: body, CreatedAt: v.now()}); err != nil {
		v.log.Error("publishing directive failed", "kind", kind, "error", err)
	}
}

// deliverDirectives polls the shared outbox and hands each directive to the
// agents whose stream this replica holds. Quarantine directives go to
// trusted agents only, never to the offender. The store's cursor returns
// every directive committed after it was made exactly once, whatever order
// replicas commit them in (store/directives.go).
func (v *Verifier) deliverDirectives(ctx context.Context, every time.Duration) {
	cur, err := v.store.NewDirectiveCursor(ctx)
	if err != nil {
		v.log.Error("reading directive outbox failed", "error", err)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur == nil {
			if cur, err = v.store.NewDirectiveCursor(ctx); err != nil {
				v.log.Warn("reading directive outbox failed", "error", err)
				continue
			}
		}
		ds, err := v.store.NextDirectives(ctx, cur, 256)
		if err != nil {
			v.log.Warn("reading directive outbox failed", "error", err)
			continue
		}
		for _, sd := range ds {
			d := &pulsev1.Directive{}
			if err := proto.Unmarshal(sd.Body, d); err != nil {
				v.log.Error("bad directive in outbox", "seq", sd.Seq, "error", err)
				continue
			}
			v.fanOut(ctx, sd.Target, d)
		}
	}
}

func (v *Verifier) fanOut(ctx context.Context, target string, d *pulsev1.Directive) {
	var offender string
	if q := d.GetQuarantine(); q != nil {
		offender = q.GetOffender()
	}
	for _, id := range v.hub.connected() {
		if target != "*" && target != id {
			continue
		}
		if id == offender {
			continue
		}
		if d.GetQuarantine() != nil && !v.isTrusted(ctx, id) {
			continue
		}
		out := proto.Clone(d).(*pulsev1.Directive)
		if q := d.GetQuarantine(); q != nil {
			// Never a recipient's own address (fan-out by identity).
			mine := v.quarantineFor(ctx, id, q)
			if mine == nil {
				continue
			}
			out.Kind = &pulsev1.Directive_Quarantine{Quarantine: mine}
		}
		if v.sendSigned(id, out) {
			v.log.Info("directive delivered", "agent_id", id, "directive", directivesig.Kind(d))
		}
	}
}

func (v *Verifier) isTrusted(ctx context.Context, id string) bool {
	a, err := v.store.GetAgent(ctx, id)
	if err != nil {
		return false
	}
	verdict := pulsev1.Verdict(a.LastVerdict)
	return verdict == pulsev1.Verdict_VERDICT_TRUSTED || verdict == pulsev1.Verdict_VERDICT_DEGRADED
}

// sweep marks silent agents BLINDED and confirms their silence. The
// store's conditional updates make exactly one replica raise each silence
// and exactly one confirm it.
func (v *Verifier) sweep(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v.sweepOnce(ctx)
	}
}

// sweepOnce finds silent agents by the database's clock, never this
// replica's (docs/operations.md, "One clock for deadlines"): a replica
// whose clock runs ahead does not find healthy agents overdue. A silent
// agent is marked BLINDED with a compromised alert at once; it is isolated
// only when a later sweep, of any replica, at least SweepInterval after the
// mark, confirms it is still overdue and unheard from.
func (v *Verifier) sweepOnce(ctx context.Context) {
	now := v.now()
	if v.metrics != nil && now.Sub(v.lastStatus) >= 10*time.Second {
		v.lastStatus = now
		if byVerdict, err := v.store.CountByVerdict(ctx); err == nil {
			counts := make(map[string]int, len(byVerdict))
			for verdict, n := range byVerdict {
				counts[pulsev1.Verdict(verdict).String()] += n
			}
			v.metrics.SetAgentsByStatus(counts)
		} else {
			v.log.Warn("counting agents by verdict failed", "error", err)
		}
	}
	v.collectFirmwareLogs(ctx, now)
	// A replica just (re)started gives every agent grace, counted on its
	// own clock from its own start (a difference, whatever its offset).
	inGrace := func(pol *policy.Policy) bool {
		grace := v.cfg.StartupGrace
		if pol != nil && pol.Heartbeat.Grace > 0 {
			grace = pol.Heartbeat.Grace
		}
		return now.Before(v.graceFrom().Add(grace))
	}
	over, err := v.store.Overdue(ctx)
	if err != nil {
		v.storeFault(storeOpSweep, err)
		v.log.Warn("sweep failed", "error", err)
		return
	}
	v.storeAnswered()
	for _, a := range over {
		if inGrace(v.selectPolicy(a.ID)) {
			continue
		}
		msg := "silent past its deadline"
		if !a.LastPulseAt.IsZero() {
			msg = fmt.Sprintf("silent past its deadline; last pulse at %s", a.LastPulseAt.Format(time.RFC3339))
		}
		won, err := v.store.MarkBlinded(ctx, a.ID, int32(pulsev1.Verdict_VERDICT_BLINDED), int32(pulsev1.Reason_REASON_SILENT), msg)
		if err != nil {
			v.storeFault(storeOpSweep, err)
			v.log.Warn("marking blinded failed", "agent_id", a.ID, "error", err)
			continue
		}
		if !won {
			continue
		}
		if err := v.store.AppendHistory(ctx, a.ID, store.HistoryEntry{At: now, Verdict: int32(pulsev1.Verdict_VERDICT_BLINDED), Reason: int32(pulsev1.Reason_REASON_SILENT), Message: msg}); err != nil {
			v.log.Error("recording history failed", "agent_id", a.ID, "error", err)
		}
		ops, _ := v.store.GetAgentOps(ctx, a.ID)
		v.raise(ctx, &store.Alert{DedupKey: fmt.Sprintf("blinded:%s:%d", a.ID, ops.BlindedAt.UnixNano()), AgentID: a.ID, Kind: AlertCompromised,
			Severity: 1, Reason: pulsev1.Reason_REASON_SILENT.String(), Message: "device compromised or cut off: " + msg})
	}
	pending, err := v.store.SilencesToConfirm(ctx, SweepInterval)
	if err != nil {
		v.log.Warn("sweep failed", "error", err)
		return
	}
	for _, a := range pending {
		pol := v.selectPolicy(a.ID)
		if inGrace(pol) {
			continue
		}
		won, err := v.store.ConfirmSilence(ctx, a.ID, SweepInterval)
		if err != nil {
			v.log.Warn("confirming silence failed", "agent_id", a.ID, "error", err)
			continue
		}
		if !won {
			continue
		}
		v.log.Info("silence confirmed", "agent_id", a.ID)
		if pol != nil && pol.OnFailure.Isolate && a.Address != "" {
			v.isolate(ctx, a.ID, a.Address, pulsev1.Reason_REASON_SILENT.String())
		}
	}
}

// startDeadline gives a newly enrolled agent its first deadline, so one that
// enrolls and never pulses is BLINDED too. A re-enrollment keeps the
// deadline it had: only an accepted pulse moves it, or re-enrolling in a
// loop would keep a silent device from ever being BLINDED. The policy is
// the one the operator's partition assignment selects; the partition
// argument is the one stored at enrollment and is not used for selection.
func (v *Verifier) startDeadline(ctx context.Context, agentID, _ string) {
	hb := policy.Heartbeat{Interval: policy.DefaultHeartbeatInterval, Missed: policy.DefaultMissedPulses}
	if pol := v.selectPolicy(agentID); pol != nil {
		hb = pol.Heartbeat
	}
	if err := v.store.SetFirstDeadline(ctx, agentID, hb.Interval, hb.Deadline()); err != nil {
		v.log.Error("setting first deadline failed", "agent_id", agentID, "error", err)
	}
}
