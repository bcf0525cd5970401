package verifier

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/pulse-attest/pulse/internal/sentinelrec"
	"github.com/pulse-attest/pulse/policy"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
	"github.com/pulse-attest/pulse/verifier/admin"
	"github.com/pulse-attest/pulse/verifier/alert"
	"github.com/pulse-attest/pulse/verifier/store"
)

// Sentinel and Fortress as the verifier judges them (docs/ebpf.md,
// "Sentinel and Fortress"). What the TPM binds: the runtime log measured
// Sentinel's programs and, after each load, a sentinelrec record naming the
// agent's tgid, the service manager's and the sentinel_cfg map's kernel ID;
// it measured Fortress's program (its tag). What the pulse claims, signed
// and quoted by the measured agent: the Sentinel report read from the
// kernel this pulse (sentinel_cfg's agent_tgid, the sequence counter, lost
// records), the records after the agent's acknowledgement, and Fortress's
// link and program IDs and tag as the kernel lists them. The verifier holds
// the report to the measured configuration, the records to its own cursor
// (a gap is a finding), and derives "Fortress active" only from the
// kernel's IDs matching the measured program: never from the runtime log's
// Fortress records, which any root process able to extend the runtime PCR
// can append.

// fortressProgram is the name Fortress's program is measured under.
const fortressProgram = "fortress_task_kill"

// sentinelLog is what the replayed runtime log says about Sentinel.
type sentinelLog struct {
	// has: the log holds a sentinelrec record; latest is the last one
	// (err when it did not decode) and agents every agent tgid measured
	// in this boot's log (the processes whose own eBPF loads are the
	// measured ones).
	has    bool
	latest sentinelrec.Config
	err    error
	agents []uint32
}

// readSentinelLog folds verified runtime records into a sentinelLog.
func readSentinelLog(records []cel.Record) sentinelLog {
	var sl sentinelLog
	for _, r := range records {
		g, ok := r.Content.(*cel.Generic)
		if !ok || g.Name != sentinelrec.RecordName {
			continue
		}
		sl.has = true
		c, err := sentinelrec.Decode(g.Data)
		sl.latest, sl.err = c, err
		if err == nil && c.AgentTGID != 0 {
			sl.agents = append(sl.agents, c.AgentTGID)
		}
	}
	return sl
}

// fortressJudgement is whether Fortress is in force, and why not.
type fortressJudgement struct {
	active bool
	why    string
}

// judgeFortress derives Fortress's state from the kernel's IDs and tag in
// the pulse and the program the runtime log measured: active only when the
// kernel lists an attached link running a program whose tag is the
// measured Fortress program's.
func judgeFortress(fs *pulsev1.FortressStatus, rt *runtimeEvidence) fortressJudgement {
	switch {
	case fs == nil:
		return fortressJudgement{why: "the pulse reports no Fortress status"}
	case !fs.GetActive():
		why := fs.GetReason()
		if why == "" {
			why = "not active"
		}
		return fortressJudgement{why: "the agent reports Fortress inactive: " + why}
	case fs.GetProgramId() == 0 || fs.GetLinkId() == 0:
		return fortressJudgement{why: "Fortress claims active but the kernel lists no link or program for it"}
	}
	if rt == nil {
		return fortressJudgement{why: "no verified runtime log measured Fortress's program"}
	}
	m, ok := rt.bpf[fortressProgram]
	if !ok || len(m.tag) == 0 {
		return fortressJudgement{why: "the runtime log never measured Fortress's program"}
	}
	if !bytes.Equal(m.tag, fs.GetTag()) {
		return fortressJudgement{why: fmt.Sprintf("the kernel's Fortress program %d has tag %x, not the measured %x", fs.GetProgramId(), fs.GetTag(), m.tag)}
	}
	return fortressJudgement{active: true}
}

// sentinelOutcome is what checkSentinel decided to record after the commit.
type sentinelOutcome struct {
	cursor store.SentinelCursor
	events []store.SentinelEvent
	// write: there is something to record (new events, or a cursor other
	// than the stored one); the steady state writes nothing.
	write bool
}

// checkSentinel judges Fortress and Sentinel (TPM agents: rt is the verified
// runtime log). Enforced violations turn the verdict UNTRUSTED with their
// own reason; violations of a rule in warn mode become findings.
func (v *Verifier) checkSentinel(ctx context.Context, o *Outcome, p *pulsev1.PulsePayload, rt *runtimeEvidence) *Outcome {
	pol := o.pol
	// A policy's fortress rule judges Fortress in the policy step (from
	// the kernel-derived state buildEvidence puts in the evidence); without
	// one, Fortress not in force on an agent running eBPF (its runtime log
	// measured Sentinel) is a warning.
	if fj := judgeFortress(p.GetFortress(), rt); !fj.active && rt != nil && rt.sentinel.has {
		if pol != nil && pol.Fortress == nil {
			o.Findings = append(o.Findings, &pulsev1.Finding{Rule: "fortress", Severity: uint32(policy.SeverityMedium),
				Message: "Fortress is not in force (warning: the policy does not require it): " + fj.why})
		}
	}
	var cursor *store.SentinelCursor
	switch st, err := v.sentinelState(ctx, o); {
	case err != nil:
		return o.fail(pulsev1.Verdict_VERDICT_UNSPECIFIED, pulsev1.Reason_REASON_INTERNAL, "sentinel cursor: %v", err)
	case st.Found:
		cursor = &store.SentinelCursor{Boot: st.Cursor.Boot, LastSeq: st.Cursor.LastSeq}
	}
	var sl sentinelLog
	if rt != nil {
		sl = rt.sentinel
	}
	res := judgeSentinel(pol.SentinelRule(), p, sl, cursor, o.boot)
	o.sentinel = &res.record
	if len(res.findings) == 0 {
		return nil
	}
	rule := pol.SentinelRule()
	for _, f := range res.findings {
		enforce := rule.Mode == policy.Enforce && !(f.lost && rule.AllowLost)
		if enforce {
			return o.untrusted(f.reason, "sentinel: %s", f.msg)
		}
	}
	for _, f := range res.findings {
		o.Findings = append(o.Findings, &pulsev1.Finding{Rule: rule.Name, File: rule.Pos.File, Line: uint32(rule.Pos.Line),
			Severity: uint32(rule.Severity), Message: fmt.Sprintf("%s (%s)", f.msg, f.reason)})
	}
	return nil
}

// sentinelResult is judgeSentinel's decision.
type sentinelResult struct {
	findings []judgedFinding
	record   sentinelOutcome
}

type judgedFinding struct {
	reason pulsev1.Reason
	msg    string
	// lost: a gap or lost records (policy allow_lost may make it a warning).
	lost bool
}

// judgeSentinel is the pure judgement of checkSentinel: the report against
// the measured configuration, the records against the verifier's cursor
// (boot names the quote's boot; a cursor of another boot is not used),
// and the new records against the rule. Findings come in order: tampering
// and gaps, then signals, then eBPF loads.
func judgeSentinel(rule policy.Sentinel, p *pulsev1.PulsePayload, sl sentinelLog, cursor *store.SentinelCursor, boot string) sentinelResult {
	var res sentinelResult
	add := func(r pulsev1.Reason, lost bool, format string, args ...any) {
		res.findings = append(res.findings, judgedFinding{reason: r, msg: fmt.Sprintf(format, args...), lost: lost})
	}
	rep := p.GetSentinel()
	evs := p.GetSentinelEvents()
	if sl.has {
		switch {
		case sl.err != nil:
			add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, false, "the runtime log's Sentinel configuration record does not decode: %v", sl.err)
		case rep == nil:
			add(pulsev1.Reason_REASON_KERNEL_EVIDENCE_MISSING, false, "the runtime log measured Sentinel but the pulse carries no Sentinel report")
		case rep.GetError() != "":
			add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, false, "the agent reports %s", rep.GetError())
		case rep.GetCfgAgentTgid() != sl.latest.AgentTGID:
			add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, false, "sentinel_cfg names agent tgid %d; the agent measured %d", rep.GetCfgAgentTgid(), sl.latest.AgentTGID)
		case rep.GetAgentTgid() != sl.latest.AgentTGID:
			add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, false, "the pulse comes from agent tgid %d; the runtime log measured Sentinel configured for %d", rep.GetAgentTgid(), sl.latest.AgentTGID)
		}
		if sl.err == nil && sl.latest.MapID != 0 {
			for _, m := range p.GetBpf().GetMaps() {
				if m.GetName() == "sentinel_cfg" && m.GetId() != sl.latest.MapID {
					add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, false, "sentinel_cfg is map %d; the agent measured configuring map %d", m.GetId(), sl.latest.MapID)
				}
			}
		}
	}
	if rep.GetLost() > 0 {
		add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, true, "Sentinel lost %d records before they were read", rep.GetLost())
	}
	// The records must be consecutive, and (unless the agent says more
	// follow) run up to the kernel's counter.
	var last uint64
	for i, e := range evs {
		if i > 0 && e.GetSeq() != last+1 {
			add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, true, "Sentinel records jump from %d to %d", last, e.GetSeq())
			break
		}
		last = e.GetSeq()
	}
	through := last
	if cursor != nil && cursor.Boot == boot && cursor.LastSeq > through {
		through = cursor.LastSeq
	}
	known := cursor != nil && cursor.Boot == boot
	if rep != nil {
		next := rep.GetNextSeq()
		switch {
		case known && next < cursor.LastSeq:
			add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, false, "Sentinel's counter went back from %d to %d in one boot (its maps were replaced)", cursor.LastSeq, next)
		case !rep.GetTruncated() && (len(evs) > 0 || known) && through != next:
			add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, true, "Sentinel handed out records up to %d but the pulse brings them only up to %d", next, through)
		}
	}
	var fresh []*pulsev1.SentinelEvent
	for _, e := range evs {
		if known && e.GetSeq() <= cursor.LastSeq {
			continue // already held (a resent pulse)
		}
		fresh = append(fresh, e)
	}
	if known && len(fresh) > 0 && fresh[0].GetSeq() != cursor.LastSeq+1 {
		add(pulsev1.Reason_REASON_SENTINEL_TAMPERED, true, "Sentinel records %d to %d are missing", cursor.LastSeq+1, fresh[0].GetSeq()-1)
	}
	in := make([]policy.SentinelEvent, 0, len(fresh))
	for _, e := range fresh {
		in = append(in, policyEvent(e))
	}
	ctx := policy.SentinelContext{AgentPIDs: sl.agents}
	if sl.err == nil {
		ctx.ManagerPID = sl.latest.ManagerTGID
		ctx.CurrentAgent = sl.latest.AgentTGID
	}
	viol := rule.JudgeEvents(in, ctx)
	bySeq := map[uint64]pulsev1.Reason{}
	for _, class := range []policy.SentinelClass{policy.SentinelSignalled, policy.SentinelForeignLoad} {
		for _, vi := range viol {
			if vi.Class != class {
				continue
			}
			r := pulsev1.Reason_REASON_AGENT_SIGNALLED
			if class == policy.SentinelForeignLoad {
				r = pulsev1.Reason_REASON_FOREIGN_BPF_LOAD
			}
			bySeq[vi.Event.Seq] = r
			add(r, false, "record %d: %s", vi.Event.Seq, vi.Message)
		}
	}
	for _, e := range fresh {
		se := storedEvent(boot, e)
		if r, ok := bySeq[e.GetSeq()]; ok {
			se.Finding = r.String()
		}
		res.record.events = append(res.record.events, se)
	}
	if boot != "" {
		res.record.cursor = store.SentinelCursor{Boot: boot, LastSeq: through}
		if rep != nil && !rep.GetTruncated() && rep.GetNextSeq() > through && (len(evs) > 0 || known) {
			res.record.cursor.LastSeq = rep.GetNextSeq()
		}
		if rep != nil && ((!known && len(evs) == 0) || (known && rep.GetNextSeq() < cursor.LastSeq)) {
			// First sight of this boot's ring, or a ring whose counter
			// started over (reported once): go on from its counter.
			res.record.cursor.LastSeq = rep.GetNextSeq()
		}
	}
	res.record.write = len(res.record.events) > 0 ||
		(res.record.cursor.Boot != "" && (rep != nil || len(evs) > 0) && (cursor == nil || *cursor != res.record.cursor))
	return res
}

// eventKind names a SentinelEvent kind as the store and the policy do.
func eventKind(k pulsev1.SentinelEvent_Kind) string {
	switch k {
	case pulsev1.SentinelEvent_KIND_SIGNAL:
		return "signal"
	case pulsev1.SentinelEvent_KIND_BPF_LOAD:
		return "bpf_load"
	case pulsev1.SentinelEvent_KIND_FORTRESS_DENIED:
		return "fortress_denied"
	case pulsev1.SentinelEvent_KIND_EXIT:
		return "exit"
	}
	return "unknown"
}

// senderUID is the sender's uid: carried in value for signals and
// Fortress refusals.
func senderUID(e *pulsev1.SentinelEvent) uint32 {
	switch e.GetKind() {
	case pulsev1.SentinelEvent_KIND_SIGNAL, pulsev1.SentinelEvent_KIND_FORTRESS_DENIED:
		return e.GetValue()
	}
	return 0
}

func policyEvent(e *pulsev1.SentinelEvent) policy.SentinelEvent {
	return policy.SentinelEvent{Seq: e.GetSeq(), Kind: eventKind(e.GetKind()), SenderPID: e.GetSenderPid(), SenderUID: senderUID(e),
		SenderComm: e.GetSenderComm(), Signal: int(e.GetSignal()), Detail: e.GetDetail()}
}

// maxStoredText bounds the agent-chosen text kept per record.
const maxStoredText = 128

func storedEvent(boot string, e *pulsev1.SentinelEvent) store.SentinelEvent {
	return store.SentinelEvent{Boot: boot, Seq: e.GetSeq(), Kind: eventKind(e.GetKind()), At: e.GetTime().AsTime(),
		SenderPID: e.GetSenderPid(), SenderUID: senderUID(e), SenderComm: clipText(e.GetSenderComm(), 16),
		TargetPID: e.GetTargetPid(), Signal: e.GetSignal(), Detail: clipText(e.GetDetail(), maxStoredText)}
}

func clipText(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "")
	}
	return s
}

// sentinelWrite decides what a pulse's commit records of Sentinel: its
// records, the agent's cursor and host program state (nil: nothing to
// write, the steady state). A pulse committed by a step before
// checkSentinel (the agent will acknowledge the records) keeps them too,
// judged for the record only, so none is lost from the verifier's view.
// Written in the commit's transaction (store.PulseUpdate.Sentinel), so the
// agent's next pulse, on any replica, is judged against it.
func (v *Verifier) sentinelWrite(ctx context.Context, o *Outcome) *store.SentinelWrite {
	if o.agent == nil || o.payload == nil {
		return nil
	}
	if o.sentinel == nil {
		if o.payload.GetSentinel() == nil && len(o.payload.GetSentinelEvents()) == 0 {
			return nil
		}
		var cursor *store.SentinelCursor
		if st, err := v.sentinelState(ctx, o); err == nil && st.Found {
			cursor = &store.SentinelCursor{Boot: st.Cursor.Boot, LastSeq: st.Cursor.LastSeq}
		}
		res := judgeSentinel(o.pol.SentinelRule(), o.payload, sentinelLog{}, cursor, o.boot)
		o.sentinel = &res.record
	}
	o.withHostState(o.sentinel)
	if !o.sentinel.write {
		return nil
	}
	return &store.SentinelWrite{Cursor: o.sentinel.cursor, Events: o.sentinel.events, At: v.now()}
}

// rememberSentinel remembers the Sentinel state the store holds after the
// pulse's commit won, for the row version it gave the agent (the state it
// was judged against, with what the commit wrote).
func (v *Verifier) rememberSentinel(o *Outcome, version int64) {
	if o.sentState == nil {
		return
	}
	next := *o.sentState
	if w := o.update.Sentinel; w != nil && w.Cursor.Boot != "" {
		next.Found = true
		next.Cursor = store.SentinelCursor{Boot: w.Cursor.Boot, LastSeq: w.Cursor.LastSeq}
		if w.Cursor.HostPrograms != nil {
			next.HostPrograms = *w.Cursor.HostPrograms
		}
	}
	v.agents.putSentinel(o.agent.ID, version, next)
}

// sentinelComeback raises, when the agent comes back from BLINDED with a
// recorded signal the verdict's own alert does not name, an alert naming
// it (the records were written by the pulse's commit).
func (v *Verifier) sentinelComeback(ctx context.Context, o *Outcome) {
	if o.agent == nil || o.sentinel == nil {
		return
	}
	if pulsev1.Verdict(o.agent.LastVerdict) != pulsev1.Verdict_VERDICT_BLINDED || o.Reason == pulsev1.Reason_REASON_AGENT_SIGNALLED {
		return
	}
	var sig, exit *store.SentinelEvent
	for i := range o.sentinel.events {
		switch e := &o.sentinel.events[i]; e.Kind {
		case "signal", "fortress_denied":
			sig = e
		case "exit":
			exit = e
		}
	}
	if sig == nil {
		return
	}
	msg := "agent back from BLINDED: " + describeSignal(*sig)
	if exit != nil && exit.Seq > sig.Seq {
		msg += "; then the agent exited (" + exit.Detail + ")"
	}
	kind, sev := alert.KindAgentSignalled, alert.SeverityLow
	v.raise(ctx, &store.Alert{DedupKey: fmt.Sprintf("comeback:%s:%s:%d", o.agent.ID, sig.Boot, sig.Seq), AgentID: o.agent.ID,
		Kind: string(kind), Severity: sev, Reason: o.Reason.String(), Message: msg})
}

// sentinelState is the agent's stored Sentinel state (cursor and host
// program state) the pulse is judged against: read once per pulse, from
// what this process recorded for the row version the pulse was judged
// against (agentcache.go, versioned) or else from the store.
func (v *Verifier) sentinelState(ctx context.Context, o *Outcome) (store.SentinelState, error) {
	if o.sentState != nil {
		return *o.sentState, nil
	}
	st, ok := v.agents.sentinelAt(o.agent.ID, o.agent.RowVersion)
	if !ok {
		var err error
		if st, err = v.store.GetSentinelState(ctx, o.agent.ID); err != nil {
			return store.SentinelState{}, err
		}
	}
	o.sentState = &st
	return st, nil
}

// describeSignal names a recorded signal and its sender.
func describeSignal(e store.SentinelEvent) string {
	verb := "sent it"
	if e.Kind == "fortress_denied" {
		verb = "tried to send it (Fortress refused)"
	}
	return fmt.Sprintf("Sentinel recorded %s: pid %d (%q, uid %d) %s at %s", policy.SignalName(int(e.Signal)), e.SenderPID, e.SenderComm, e.SenderUID, verb, e.At.UTC().Format("2006-01-02T15:04:05Z"))
}

// sentinelEventsOf is the admin API's view of the agent's stored records.
func sentinelEventsOf(ctx context.Context, st *store.Store, id string) ([]admin.SentinelEvent, error) {
	evs, err := st.SentinelEvents(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make([]admin.SentinelEvent, 0, len(evs))
	for _, e := range evs {
		ae := admin.SentinelEvent{Seq: e.Seq, Kind: e.Kind, At: e.At, SenderPID: e.SenderPID, SenderUID: e.SenderUID,
			SenderComm: e.SenderComm, Detail: e.Detail, Finding: e.Finding}
		if e.Kind == "signal" || e.Kind == "fortress_denied" {
			ae.Signal = policy.SignalName(int(e.Signal))
		}
		out = append(out, ae)
	}
	return out, nil
}
