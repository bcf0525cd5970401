package loadgen

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// PrintSummary writes a human-readable digest of a run.
func PrintSummary(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "\n== pulse-loadgen summary (%s, store %s)\n", s.Mode, s.StoreEngine)
	roles := make([]string, 0, len(s.Roles))
	for r, n := range s.Roles {
		roles = append(roles, fmt.Sprintf("%s=%d", r, n))
	}
	sort.Strings(roles)
	fmt.Fprintf(w, "agents       %d (%s), connected %d\n", s.Agents, strings.Join(roles, " "), s.Connected)
	fmt.Fprintf(w, "schedule     interval %.0fs, ramp %.0fs, jitter %.2f, load %.0fs (extended %.0fs for silent agents)\n",
		s.IntervalS, s.RampS, s.Jitter, s.LoadSeconds, s.ExtendedS)
	fmt.Fprintf(w, "setup        certificates %.1fs, pre-registration (%s) %.1fs, verifier (and PostgreSQL) start %.1fs\n",
		s.Setup.MintS, s.Preregister, s.Setup.PreregisterS, s.Setup.VerifierS)
	fmt.Fprintf(w, "pulses       %d, steady state %.1f/s, errors %d (%d in the ramp, %d in the steady state)\n", s.Pulses, s.SteadyPPS,
		s.ErrorCount, s.ErrorCount-min(s.SteadyErrors, s.ErrorCount), s.SteadyErrors)
	vs := make([]string, 0, len(s.Verdicts))
	for k, n := range s.Verdicts {
		vs = append(vs, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(vs)
	fmt.Fprintf(w, "verdicts     %s\n", strings.Join(vs, " "))
	ks := make([]string, 0, len(s.Kinds))
	for k, c := range s.Kinds {
		ks = append(ks, fmt.Sprintf("%s %d/%d as expected", k, c.AsExpected, c.Sent))
	}
	sort.Strings(ks)
	fmt.Fprintf(w, "expectations %s\n", strings.Join(ks, ", "))
	fmt.Fprintf(w, "silent       %d agents: %d BLINDED, %d not yet due, %d wrong\n", s.Silent.Agents, s.Silent.Blinded, s.Silent.Pending, s.Silent.Failed)
	fmt.Fprintf(w, "honest       %d/%d TRUSTED in the store at the end\n", s.HonestStore.Trusted, s.HonestStore.Checked)
	l, rl := s.SteadyLatency, s.RampLatency
	if s.RampDrained {
		fmt.Fprintf(w, "steady state from t=%.0fs (ramp end t=%.0fs, last first pulse answered t=%.1fs)\n", s.SteadyFromS,
			s.RampEnd.Sub(s.StartedAt).Seconds(), s.LastFirstPulse.Sub(s.StartedAt).Seconds())
	} else {
		fmt.Fprintf(w, "steady state NONE: the ramp never drained (%d of %d agents had a first pulse answered)\n", s.FirstAnswered, s.Agents)
	}
	fmt.Fprintf(w, "latency      steady p50 %.2fms p95 %.2fms p99 %.2fms max %.2fms (n=%d); ramp p50 %.2fms p99 %.2fms max %.2fms (n=%d); challenge p99 %.2fms\n",
		l.P50Ms, l.P95Ms, l.P99Ms, l.MaxMs, l.Count, rl.P50Ms, rl.P99Ms, rl.MaxMs, rl.Count, s.ChallengeLatency.P99Ms)
	if len(s.Replicas) > 1 || s.DirectiveStreams > 0 {
		fmt.Fprintf(w, "connections  %d replicas %v; %d agents connected at the end, %d directive streams, %d directives received\n",
			len(s.Replicas), s.Replicas, s.ConnectedAtEnd, s.DirectiveStreams, s.DirectivesRecv)
	}
	fmt.Fprintf(w, "wire bytes   steady %d, with runtime records %d, with firmware log %d (mean proto.Size of PulseRequest)\n",
		s.Wire.Steady.Mean, s.Wire.WithRecords.Mean, s.Wire.WithFirmwareLog.Mean)
	fmt.Fprintf(w, "process      cpu %.1fs (avg %.0f%%), rss %.0f MiB (peak %.0f MiB) — %s\n", s.Process.CPUSeconds, s.Process.AvgCPUPercent,
		mib(s.Process.End.RSSBytes), mib(s.Process.End.PeakRSSBytes), s.Process.Note)
	if v := s.Verifier; v != nil {
		fmt.Fprintf(w, "verifier     cpu %.1fs (avg %.0f%%), rss %.0f MiB (peak %.0f MiB) — %s\n", v.CPUSeconds, v.AvgCPUPercent,
			mib(v.End.RSSBytes), mib(v.End.PeakRSSBytes), v.Note)
	}
	if c := s.Cost; c != nil {
		fmt.Fprintf(w, "cost         verifier RSS %.0f MiB before agents, %.0f MiB with %d connected = %.1f KiB per agent\n",
			c.BaselineRSSMiB, c.LoadEndRSSMiB, c.Connected, c.RSSPerAgentKiB)
		fmt.Fprintf(w, "cost         steady: %.3f CPU-s over %.0fs for %d pulses = %.3f ms per pulse (net of idle and baseline %.3f ms)\n",
			c.SteadyCPUSeconds, c.SteadyWindowS, c.SteadyPulses, c.CPUPerPulseMs, c.CPUPerPulseNetMs)
		fmt.Fprintf(w, "cost         idle: %.3f CPU-s over %.0fs = %.2f µs per connected agent per second; baseline %.2f%% of a core\n",
			c.IdleCPUSeconds, c.IdleS, c.IdleCPUPerAgentUsPerS, c.BaselineCPUPercent)
		fmt.Fprintf(w, "cost         model: %.0f agents per core at a %.0fs interval\n", c.AgentsPerCore, c.IntervalS)
	}
	for _, e := range s.ErrorExamples {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	for _, m := range s.Mismatches {
		fmt.Fprintf(w, "  unexpected: %s %s pulse got %s at %ds: %s\n", m.Agent, m.Kind, m.Got, m.AtS, m.Message)
	}
	for _, d := range s.Silent.Details {
		fmt.Fprintf(w, "  silent: %s\n", d)
	}
	for _, d := range s.HonestStore.NotTrusted {
		fmt.Fprintf(w, "  honest not trusted: %s\n", d)
	}
	verdict := "PASS"
	if !s.Pass {
		verdict = "FAIL: " + strings.Join(s.Failures, "; ")
	}
	slo := "held"
	if !s.SLOMet {
		slo = "NOT held"
	}
	fmt.Fprintf(w, "result       %s; SLO (steady p99 < %.0fms, no errors) %s\n", verdict, s.SLOP99Ms, slo)
}
