package agent

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// finalPulseTimeout bounds the last pulse of a planned stop: a service
// manager waits for the agent (systemd's TimeoutStopSec is 90 s by
// default) and the stop must not hang on an unreachable verifier.
const finalPulseTimeout = 10 * time.Second

// StopSignals are the signals that stop the agent in an orderly way: the
// agent sends a final pulse marked as a planned stop before it exits
// (docs/agent.md, "Planned stops"). SIGKILL cannot be caught and leaves
// the agent silent: BLINDED.
var StopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}

// StopPlanned records that the agent is being stopped by signal signo: the
// pulse Run sends as it returns is marked as a planned stop. The caller
// then ends Run's context.
func (a *Agent) StopPlanned(signo syscall.Signal) {
	a.stopSignal.Store(int32(signo))
}

// NotifyStop returns a context that ends at the first of StopSignals, after
// marking the stop as planned (StopPlanned). stop releases the signals.
func NotifyStop(parent context.Context, a *Agent, log hclog.Logger) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, StopSignals...)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			if s, ok := sig.(syscall.Signal); ok {
				log.Info("stop signal received: sending a final pulse marked as a planned stop", "signal", s.String(), "signo", int(s))
				a.StopPlanned(s)
			}
			cancel()
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}

// plannedStop is the planned-stop mark of a pulse, or nil when no stop
// signal was received. It carries the latest signal event Sentinel
// recorded for that signal among the pulse's events (the sender's pid and
// command name as the kernel saw them); without eBPF, or when Sentinel
// recorded none, only the signal number.
func (a *Agent) plannedStop(events []*pulsev1.SentinelEvent) *pulsev1.PlannedStop {
	signo := a.stopSignal.Load()
	if signo == 0 {
		return nil
	}
	ps := &pulsev1.PlannedStop{Signo: signo}
	for i := len(events) - 1; i >= 0; i-- {
		if e := events[i]; e.GetKind() == pulsev1.SentinelEvent_KIND_SIGNAL && e.GetSignal() == signo {
			ps.Signal = e
			break
		}
	}
	return ps
}

// finalPulse sends the last pulse of a planned stop on s: signed and
// quoted like every pulse, marked planned_stop. It does nothing unless a
// stop signal was received and the agent is enrolled; a failure is logged
// (the verifier then sees silence: BLINDED after the deadline).
func (a *Agent) finalPulse(s *session) {
	if a.stopSignal.Load() == 0 || s == nil || !a.enrolled(s) {
		return
	}
	log := a.log.Named("pulse")
	ctx, cancel := context.WithTimeout(context.Background(), finalPulseTimeout)
	defer cancel()
	resp, err := a.pulseAttempt(ctx, s)
	if err == nil && retryable(resp.GetReason()) {
		resp, err = a.pulseAttempt(ctx, s)
	}
	if err != nil {
		log.Warn("final pulse of the planned stop failed; the verifier will see silence", "error", err)
		return
	}
	log.Info("final pulse sent: planned stop", "verdict", resp.GetVerdict().String(), "reason", resp.GetReason().String(), "signo", a.stopSignal.Load())
}
