package ebpf

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pulse-attest/pulse/agent"
	"github.com/pulse-attest/pulse/bpf"
	"github.com/pulse-attest/pulse/internal/sentinelrec"
	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
	"github.com/pulse-attest/pulse/tpm/cel"
)

var _ agent.SentinelSource = (*Adapter)(nil)

// measureSentinel binds Sentinel's configuration to the runtime log: the
// agent's tgid, the service manager's and the sentinel_cfg map's kernel
// ID, as configured by the load that just finished.
func measureSentinel(ctx context.Context, m *bpf.Manager, measure agent.MeasureFunc) error {
	want := m.Sentinel().Wanted()
	rec := &cel.Generic{Name: sentinelrec.RecordName, Data: sentinelrec.Encode(sentinelrec.Config{
		AgentTGID: want.AgentPID, ManagerTGID: want.ManagerPID, MapID: m.Sentinel().ConfigMapID(),
	})}
	if err := measure(ctx, rec); err != nil {
		return fmt.Errorf("measure sentinel configuration: %w", err)
	}
	return nil
}

// SentinelRead re-checks sentinel_cfg against what the agent wrote and reads
// up to max records (all when 0) after the agent's acknowledgement.
func (a *Adapter) SentinelRead(_ context.Context, max int) (agent.SentinelBatch, error) {
	s := a.m.Sentinel()
	rep := &pulsev1.SentinelReport{AgentTgid: uint32(os.Getpid())}
	cfg, err := s.Check()
	rep.CfgAgentTgid = cfg.AgentPID
	var tamper *bpf.SentinelTamperError
	switch {
	case errors.As(err, &tamper):
		rep.Error = tamper.Error()
		a.log.Warn("sentinel configuration changed behind the agent", "field", tamper.Field, "want", tamper.Want, "got", tamper.Got)
	case err != nil:
		rep.Error = "sentinel configuration unreadable: " + err.Error()
	}
	r, err := s.EventsUpTo(max)
	if err != nil {
		if rep.Error == "" {
			rep.Error = "sentinel ring unreadable: " + err.Error()
		}
		return agent.SentinelBatch{Report: rep}, err
	}
	rep.NextSeq, rep.Lost, rep.Truncated = r.NextSeq, r.Lost, r.Truncated
	return agent.SentinelBatch{Report: rep, Events: sentinelEvents(r.Events), Through: r.Through}, nil
}

// SentinelAck acknowledges the records up to through.
func (a *Adapter) SentinelAck(through uint64) error { return a.m.Sentinel().Ack(through) }

// sentinelEvents converts ring records to the pulse's events. For signals
// and Fortress refusals value carries the sender's uid.
func sentinelEvents(evs []bpf.Event) []*pulsev1.SentinelEvent {
	out := make([]*pulsev1.SentinelEvent, 0, len(evs))
	for _, e := range evs {
		se := &pulsev1.SentinelEvent{Seq: e.Seq, Time: timestamppb.New(e.Time), SenderPid: uint32(e.SenderPID), SenderComm: e.SenderComm,
			TargetPid: uint32(e.TargetPID), Signal: int32(e.Signal)}
		switch e.Kind {
		case bpf.EventSignal:
			se.Kind = pulsev1.SentinelEvent_KIND_SIGNAL
			se.Detail = fmt.Sprintf("%s %s uid %d", e.SignalName, e.Outcome, e.SenderUID)
			se.Value = e.SenderUID
		case bpf.EventBPFProgLoad:
			se.Kind = pulsev1.SentinelEvent_KIND_BPF_LOAD
			se.Detail = fmt.Sprintf("%s %s uid %d", e.ProgType, e.ProgName, e.SenderUID)
			if e.Outcome != "" {
				se.Detail += " " + e.Outcome
			}
		case bpf.EventFortressDenied:
			se.Kind = pulsev1.SentinelEvent_KIND_FORTRESS_DENIED
			se.Detail = fmt.Sprintf("%s denied uid %d", e.SignalName, e.SenderUID)
			se.Value = e.SenderUID
		case bpf.EventExit:
			se.Kind = pulsev1.SentinelEvent_KIND_EXIT
			se.Detail = e.Outcome
			se.Value = uint32(e.ExitCode)
		default:
			se.Detail = string(e.Kind)
		}
		out = append(out, se)
	}
	return out
}

// fortressStatus converts the kernel-derived status.
func fortressStatus(st bpf.FortressStatus) *pulsev1.FortressStatus {
	out := &pulsev1.FortressStatus{Active: st.Active, LsmListed: st.LSMListed, Loaded: st.Loaded, Attached: st.Attached, Reason: st.Reason,
		ProgramId: st.ProgramID, LinkId: st.LinkID}
	if tag, err := hex.DecodeString(st.Tag); err == nil && len(tag) == 8 {
		out.Tag = tag
	}
	return out
}
