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
	fmt.Fprintf(w, "pulses       %d, steady state %.1f/s, errors %d\n", s.Pulses, s.SteadyPPS, s.ErrorCount)
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
	l := s.SteadyLatency
	fmt.Fprintf(w, "latency      steady p50 %.2fms p95 %.2fms p99 %.2fms max %.2fms (n=%d); whole run p99 %.2fms; challenge p99 %.2fms\n",
		l.P50Ms, l.P95Ms, l.P99Ms, l.MaxMs, l.Count, s.Latency.P99Ms, s.ChallengeLatency.P99Ms)
	fmt.Fprintf(w, "wire bytes   steady %d, with runtime records %d, with firmware log %d (mean proto.Size of PulseRequest)\n",
		s.Wire.Steady.Mean, s.Wire.WithRecords.Mean, s.Wire.WithFirmwareLog.Mean)
	fmt.Fprintf(w, "process      cpu %.1fs (avg %.0f%%), rss %.0f MiB (peak %.0f MiB) — %s\n", s.Process.CPUSeconds, s.Process.AvgCPUPercent,
		mib(s.Process.End.RSSBytes), mib(s.Process.End.PeakRSSBytes), s.Process.Note)
	if v := s.Verifier; v != nil {
		fmt.Fprintf(w, "verifier     cpu %.1fs (avg %.0f%%), rss %.0f MiB (peak %.0f MiB) — %s\n", v.CPUSeconds, v.AvgCPUPercent,
			mib(v.End.RSSBytes), mib(v.End.PeakRSSBytes), v.Note)
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
