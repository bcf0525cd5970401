package agent

import (
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// TestPlannedStopFinalPulse: a stop marked planned (SIGTERM) ends the
// agent with one more pulse, quoted and signed like every pulse (the test
// verifier checks both), carrying planned_stop with the signal number and
// the signal event Sentinel recorded for it; a stop that is not marked
// (the context ended, as for SIGKILL's silence) sends nothing more.
func TestPlannedStopFinalPulse(t *testing.T) {
	sigterm := &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, Time: timestamppb.Now(), SenderPid: 1,
		SenderComm: "systemd", TargetPid: 4242, Signal: int32(syscall.SIGTERM), Detail: "SIGTERM delivered", Seq: 9}
	sighup := &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, SenderPid: 77, SenderComm: "bash", Signal: int32(syscall.SIGHUP), Seq: 8}
	for _, c := range []struct {
		name     string
		planned  bool
		events   []*pulsev1.SentinelEvent
		wantComm string
	}{
		{"sigterm recorded by sentinel", true, []*pulsev1.SentinelEvent{sighup, sigterm}, "systemd"},
		{"sigterm without sentinel", true, nil, ""},
		{"not planned", false, []*pulsev1.SentinelEvent{sigterm}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			fb := &fakeBPF{}
			h := newHarness(t, harnessOpts{tpm: true, bpf: fb})
			a := h.start(nil)
			before := len(h.fv.waitPulses(t, 2, 60*time.Second))
			fb.mu.Lock()
			fb.events = append(fb.events, c.events...)
			fb.mu.Unlock()
			if c.planned {
				a.StopPlanned(syscall.SIGTERM)
			}
			h.stopAgent()
			rs := h.fv.received()
			requireAccepted(t, rs)
			last := rs[len(rs)-1].Payload
			if !c.planned {
				for _, r := range rs {
					if r.Payload.GetPlannedStop() != nil {
						t.Fatal("a pulse is marked as a planned stop without a stop signal")
					}
				}
				return
			}
			if len(rs) <= before {
				t.Fatalf("no final pulse: %d pulses before the stop, %d after", before, len(rs))
			}
			ps := last.GetPlannedStop()
			if ps == nil || ps.GetSigno() != int32(syscall.SIGTERM) {
				t.Fatalf("last pulse's planned_stop %v, want signo %d", ps, syscall.SIGTERM)
			}
			if got := ps.GetSignal().GetSenderComm(); got != c.wantComm {
				t.Fatalf("planned stop sender %q, want %q", got, c.wantComm)
			}
			if c.wantComm != "" && ps.GetSignal().GetSeq() != sigterm.GetSeq() {
				t.Fatalf("planned stop carries event %d, want the SIGTERM event %d", ps.GetSignal().GetSeq(), sigterm.GetSeq())
			}
			for _, r := range rs[:len(rs)-1] {
				if r.Payload.GetPlannedStop() != nil {
					t.Fatal("a pulse before the last is marked as a planned stop")
				}
			}
		})
	}
}

// TestPlannedStopPicksSignal: the mark takes the latest event for the
// stop signal and none for another signal.
func TestPlannedStopPicksSignal(t *testing.T) {
	ev := func(seq uint64, sig syscall.Signal, comm string) *pulsev1.SentinelEvent {
		return &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_SIGNAL, Seq: seq, Signal: int32(sig), SenderComm: comm}
	}
	bpfLoad := &pulsev1.SentinelEvent{Kind: pulsev1.SentinelEvent_KIND_BPF_LOAD, Seq: 5, Signal: int32(syscall.SIGTERM)}
	for _, c := range []struct {
		name    string
		signo   syscall.Signal
		events  []*pulsev1.SentinelEvent
		wantSeq uint64
		want    bool
	}{
		{"no stop", 0, []*pulsev1.SentinelEvent{ev(1, syscall.SIGTERM, "kill")}, 0, false},
		{"latest sigterm", syscall.SIGTERM, []*pulsev1.SentinelEvent{ev(1, syscall.SIGTERM, "kill"), ev(2, syscall.SIGTERM, "systemd"), ev(3, syscall.SIGHUP, "bash")}, 2, true},
		{"sigint", syscall.SIGINT, []*pulsev1.SentinelEvent{ev(1, syscall.SIGTERM, "kill"), ev(4, syscall.SIGINT, "bash")}, 4, true},
		{"only another kind", syscall.SIGTERM, []*pulsev1.SentinelEvent{bpfLoad}, 0, true},
		{"none recorded", syscall.SIGTERM, nil, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := &Agent{}
			if c.signo != 0 {
				a.StopPlanned(c.signo)
			}
			ps := a.plannedStop(c.events)
			if (ps != nil) != c.want {
				t.Fatalf("planned stop %v, want one: %v", ps, c.want)
			}
			if ps == nil {
				return
			}
			if ps.GetSigno() != int32(c.signo) || ps.GetSignal().GetSeq() != c.wantSeq {
				t.Fatalf("planned stop signo %d event %d, want %d and %d", ps.GetSigno(), ps.GetSignal().GetSeq(), c.signo, c.wantSeq)
			}
		})
	}
}
