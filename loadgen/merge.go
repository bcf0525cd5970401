package loadgen

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// MergeSummaries merges the summaries of the pulse-loadgen processes of
// one multi-process run (same verifiers, same start: --go-file) into one:
// counts add up; latencies are merged from the per-second histograms and
// the steady state is cut again by SteadyRule over the whole fleet (from
// the latest ramp end and last first pulse); the verifiers' samples and
// phases are the first summary's (every process samples the same pids);
// the per-second series adds pulses, errors and connections and keeps
// the largest percentiles of any process (an upper bound, not a merged
// percentile), and so does the challenge latency.
func MergeSummaries(sums []*Summary) (*Summary, error) {
	if len(sums) == 0 {
		return nil, errors.New("loadgen: no summaries to merge")
	}
	if len(sums) == 1 {
		return sums[0], nil
	}
	first := sums[0]
	m := &Summary{Mode: fmt.Sprintf("%s, %d processes merged", first.Mode, len(sums)), StoreEngine: first.StoreEngine,
		Roles: map[Role]int{}, IntervalS: first.IntervalS, DurationS: first.DurationS, RampS: first.RampS, Jitter: first.Jitter,
		FirmwareLog: first.FirmwareLog, Preregister: first.Preregister, StartedAt: first.StartedAt,
		Verdicts: map[string]uint64{}, Kinds: map[Kind]*KindCount{}, Errors: map[string]uint64{},
		SLOP99Ms: first.SLOP99Ms, Replicas: first.Replicas, VerifierPIDs: first.VerifierPIDs,
		VerifierSamples: first.VerifierSamples, Phases: first.Phases, Setup: first.Setup, Verifier: first.Verifier,
		SteadyRule: SteadyRule}
	by := map[int64]*Histogram{}
	var all Histogram
	var ch LatencySummary // challenges: counts add, quantiles the largest of any process
	rampEnd, lastFirst := first.RampEnd, first.LastFirstPulse
	series := map[int]*SecondReport{}
	for i, s := range sums {
		if s.IntervalS != first.IntervalS || s.StoreEngine != first.StoreEngine {
			return nil, fmt.Errorf("loadgen: summary %d is of another run (interval %.0fs, store %s)", i, s.IntervalS, s.StoreEngine)
		}
		if d := s.StartedAt.Sub(first.StartedAt); math.Abs(d.Seconds()) > 5 {
			return nil, fmt.Errorf("loadgen: summary %d started %s apart from the first: not one run (use --go-file)", i, d)
		}
		m.Agents += s.Agents
		m.Connected += s.Connected
		m.ConnectedAtEnd += s.ConnectedAtEnd
		m.DirectiveStreams += s.DirectiveStreams
		m.DirectivesRecv += s.DirectivesRecv
		m.FirstAnswered += s.FirstAnswered
		m.Pulses += s.Pulses
		m.ErrorCount += s.ErrorCount
		m.MismatchCount += s.MismatchCount
		m.LoadSeconds = math.Max(m.LoadSeconds, s.LoadSeconds)
		m.ExtendedS = math.Max(m.ExtendedS, s.ExtendedS)
		for r, n := range s.Roles {
			m.Roles[r] += n
		}
		for k, n := range s.Verdicts {
			m.Verdicts[k] += n
		}
		for k, n := range s.Errors {
			m.Errors[k] += n
		}
		for k, c := range s.Kinds {
			mc := m.Kinds[k]
			if mc == nil {
				mc = &KindCount{}
				m.Kinds[k] = mc
			}
			mc.Sent += c.Sent
			mc.AsExpected += c.AsExpected
			mc.Unexpected += c.Unexpected
			mc.Errors += c.Errors
		}
		m.ErrorExamples = append(m.ErrorExamples, s.ErrorExamples...)
		m.Mismatches = append(m.Mismatches, s.Mismatches...)
		m.Failures = append(m.Failures, prefixAll(fmt.Sprintf("process %d: ", i), s.Failures)...)
		m.Silent.Agents += s.Silent.Agents
		m.Silent.Blinded += s.Silent.Blinded
		m.Silent.Pending += s.Silent.Pending
		m.Silent.Failed += s.Silent.Failed
		m.Silent.Details = append(m.Silent.Details, s.Silent.Details...)
		m.HonestStore.Checked += s.HonestStore.Checked
		m.HonestStore.Trusted += s.HonestStore.Trusted
		m.HonestStore.NotTrusted = append(m.HonestStore.NotTrusted, s.HonestStore.NotTrusted...)
		addWire(&m.Wire.Steady, s.Wire.Steady)
		addWire(&m.Wire.WithRecords, s.Wire.WithRecords)
		addWire(&m.Wire.WithFirmwareLog, s.Wire.WithFirmwareLog)
		m.Process.CPUSeconds += s.Process.CPUSeconds
		m.Process.AvgCPUPercent += s.Process.AvgCPUPercent
		m.Process.MaxRSSMiB += s.Process.MaxRSSMiB
		m.Process.End.RSSBytes += s.Process.End.RSSBytes
		m.Process.End.PeakRSSBytes += s.Process.End.PeakRSSBytes
		m.Process.Note = "pulse-loadgen processes, summed"
		for _, sh := range s.LatencyBySecond {
			h, err := sh.Histogram()
			if err != nil {
				return nil, fmt.Errorf("loadgen: summary %d: %w", i, err)
			}
			if by[sh.Unix] == nil {
				by[sh.Unix] = &Histogram{}
			}
			by[sh.Unix].Merge(&h)
			all.Merge(&h)
		}
		cl := s.ChallengeLatency
		ch.Count += cl.Count
		ch.MeanMs, ch.P50Ms, ch.P95Ms = math.Max(ch.MeanMs, cl.MeanMs), math.Max(ch.P50Ms, cl.P50Ms), math.Max(ch.P95Ms, cl.P95Ms)
		ch.P99Ms, ch.MaxMs = math.Max(ch.P99Ms, cl.P99Ms), math.Max(ch.MaxMs, cl.MaxMs)
		if s.RampEnd.After(rampEnd) {
			rampEnd = s.RampEnd
		}
		if s.LastFirstPulse.After(lastFirst) {
			lastFirst = s.LastFirstPulse
		}
		if s.Phases.QuietAt.Before(m.Phases.QuietAt) {
			m.Phases.QuietAt = s.Phases.QuietAt
		}
		for _, r := range s.Series {
			mr := series[r.T]
			if mr == nil {
				mr = &SecondReport{T: r.T, Verdicts: map[string]uint64{}, VerifierCPUPercent: r.VerifierCPUPercent, VerifierRSSMiB: r.VerifierRSSMiB}
				series[r.T] = mr
			}
			mr.Connected += r.Connected
			mr.Pulses += r.Pulses
			mr.Errors += r.Errors
			for k, n := range r.Verdicts {
				mr.Verdicts[k] += n
			}
			mr.P50Ms, mr.P95Ms, mr.P99Ms = math.Max(mr.P50Ms, r.P50Ms), math.Max(mr.P95Ms, r.P95Ms), math.Max(mr.P99Ms, r.P99Ms)
			mr.CPUPercent += r.CPUPercent
			mr.RSSMiB += r.RSSMiB
		}
	}
	m.Latency = all.Summary()
	m.ChallengeLatency = ch
	for t := 0; len(series) > 0; t++ {
		if r, ok := series[t]; ok {
			m.Series = append(m.Series, *r)
			delete(series, t)
		}
	}
	m.RampEnd, m.LastFirstPulse = rampEnd, lastFirst
	from, ok := SteadyStart(rampEnd, lastFirst, m.FirstAnswered, m.Agents)
	steady, ramp := splitLatency(by, from, ok)
	setSteady(m, from, ok, steady, ramp, m.StartedAt, m.Phases.QuietAt)
	m.LatencyBySecond = secondsData(by)
	m.Cost = ComputeCost(m.VerifierSamples, m.Phases, m.SteadyFrom, m.RampDrained, m.SteadyLatency.Count,
		m.ConnectedAtEnd, len(m.Replicas), time.Duration(m.IntervalS*float64(time.Second)))
	m.Pass = len(m.Failures) == 0
	m.SLOMet = m.Pass && m.SteadyLatency.Count > 0 && m.SteadyLatency.P99Ms < m.SLOP99Ms
	return m, nil
}

func addWire(w *WireBytes, o WireBytes) {
	w.Count += o.Count
	w.Bytes += o.Bytes
	if w.Count > 0 {
		w.Mean = w.Bytes / w.Count
	}
}

func prefixAll(p string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = p + s
	}
	return out
}
