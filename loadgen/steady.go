package loadgen

import (
	"math"
	"sort"
	"time"
)

// SteadyRule is the documented rule that separates the ramp from the
// steady state (docs/performance.md, "Honest steady state").
const SteadyRule = "steady state = pulses sent from the first whole second at or after both the ramp's end and " +
	"the answer to the last agent's first pulse (every agent connected, challenged and through its first, " +
	"firmware-log-carrying pulse); everything sent before is the ramp. A fleet in which some agent never " +
	"had its first pulse answered has no steady state (the ramp never drained)."

// SteadyStart applies SteadyRule: rampEnd is when the last agent was due
// to start, lastFirst when the last first pulse was answered, answered how
// many agents had their first pulse answered out of agents. ok is false
// when the ramp never drained.
func SteadyStart(rampEnd, lastFirst time.Time, answered, agents int) (time.Time, bool) {
	if answered < agents || agents == 0 {
		return time.Time{}, false
	}
	t := rampEnd
	if lastFirst.After(t) {
		t = lastFirst
	}
	sec := t.Truncate(time.Second)
	if sec.Before(t) {
		sec = sec.Add(time.Second)
	}
	return sec, true
}

// SecondHist is the latency of the pulses sent in one Unix second.
type SecondHist struct {
	Unix int64 `json:"unix"`
	HistData
}

// splitLatency cuts per-second histograms at from (Unix seconds ≥ from are
// steady; with ok false everything is ramp).
func splitLatency(by map[int64]*Histogram, from time.Time, ok bool) (steady, ramp Histogram) {
	for sec, h := range by {
		if ok && sec >= from.Unix() {
			steady.Merge(h)
		} else {
			ramp.Merge(h)
		}
	}
	return steady, ramp
}

func secondsData(by map[int64]*Histogram) []SecondHist {
	out := make([]SecondHist, 0, len(by))
	for sec, h := range by {
		out = append(out, SecondHist{Unix: sec, HistData: h.Data()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Unix < out[j].Unix })
	return out
}

// Sample is the verifier processes' resource use (summed over their pids)
// at one moment.
type Sample struct {
	AtMs       int64   `json:"at_unix_ms"`
	CPUSeconds float64 `json:"cpu_s"`
	RSSBytes   uint64  `json:"rss_bytes"`
}

// Phases are the moments that delimit a run's phases.
type Phases struct {
	// Baseline: the verifiers with their agents in the store but none
	// connected, from BaselineAt to LoadAt.
	BaselineAt time.Time `json:"baseline_at"`
	// Load: agents connect over the ramp and pulse, from LoadAt to
	// QuietAt (every agent has stopped pulsing).
	LoadAt  time.Time `json:"load_at"`
	QuietAt time.Time `json:"quiet_at"`
	// Idle: every agent still connected (directive stream open), none
	// pulsing, from QuietAt to IdleEnd.
	IdleEnd time.Time `json:"idle_end"`
}

// Cost is the cost model's inputs, measured on the verifier processes
// (docs/performance.md, "Cost per agent").
type Cost struct {
	Replicas int `json:"replicas"`
	// Connected is the agents holding a connection at the end of the load
	// phase (silent agents have gone).
	Connected          int     `json:"connected"`
	BaselineRSSMiB     float64 `json:"baseline_rss_mib"`
	BaselineCPUPercent float64 `json:"baseline_cpu_percent"`
	LoadEndRSSMiB      float64 `json:"load_end_rss_mib"`
	// RSSPerAgentKiB is (RSS at the end of the load − baseline RSS) /
	// Connected: what each connected agent costs, garbage not yet
	// collected included.
	RSSPerAgentKiB float64 `json:"rss_per_agent_kib"`
	// Steady window: verifier CPU over it and the pulses sent in it.
	SteadyWindowS    float64 `json:"steady_window_s"`
	SteadyCPUSeconds float64 `json:"steady_cpu_s"`
	SteadyPulses     uint64  `json:"steady_pulses"`
	// CPUPerPulseMs is the verifiers' CPU over the steady window per pulse:
	// everything the process does (TLS, gRPC, background loops, idle
	// connections) charged to the pulses.
	CPUPerPulseMs float64 `json:"cpu_per_pulse_ms"`
	// Idle phase: CPU per connected agent per second beyond the baseline.
	IdleS                 float64 `json:"idle_s"`
	IdleCPUSeconds        float64 `json:"idle_cpu_s"`
	IdleCPUPerAgentUsPerS float64 `json:"idle_cpu_per_agent_us_per_s"`
	// CPUPerPulseNetMs is CPUPerPulseMs less the baseline and the idle
	// connections' share over the window: what one more pulse costs.
	CPUPerPulseNetMs float64 `json:"cpu_per_pulse_net_ms"`
	// AgentsPerCore is 1 / (net CPU per pulse / interval + idle CPU per
	// agent) at the run's interval.
	IntervalS     float64 `json:"interval_s"`
	AgentsPerCore float64 `json:"agents_per_core"`
}

// cpuAt interpolates the samples' cumulative CPU at t.
func cpuAt(ss []Sample, t time.Time) float64 {
	if len(ss) == 0 {
		return 0
	}
	ms := t.UnixMilli()
	if ms <= ss[0].AtMs {
		return ss[0].CPUSeconds
	}
	for i := 1; i < len(ss); i++ {
		if ms <= ss[i].AtMs {
			a, b := ss[i-1], ss[i]
			if b.AtMs == a.AtMs {
				return b.CPUSeconds
			}
			f := float64(ms-a.AtMs) / float64(b.AtMs-a.AtMs)
			return a.CPUSeconds + f*(b.CPUSeconds-a.CPUSeconds)
		}
	}
	return ss[len(ss)-1].CPUSeconds
}

// rssAt is the RSS of the last sample at or before t (the first sample
// when none is).
func rssAt(ss []Sample, t time.Time) uint64 {
	if len(ss) == 0 {
		return 0
	}
	r := ss[0].RSSBytes
	for _, s := range ss {
		if s.AtMs > t.UnixMilli() {
			break
		}
		r = s.RSSBytes
	}
	return r
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// ComputeCost derives the cost model's figures from the verifiers'
// samples (in time order), the phases, the steady state's start and pulse
// count, the agents connected at the end of the load and the interval.
// It returns nil without samples.
func ComputeCost(ss []Sample, ph Phases, steadyFrom time.Time, steadyOK bool, steadyPulses uint64, connected, replicas int, interval time.Duration) *Cost {
	if len(ss) < 2 {
		return nil
	}
	c := &Cost{Replicas: replicas, Connected: connected, IntervalS: interval.Seconds()}
	base := ph.LoadAt.Sub(ph.BaselineAt).Seconds()
	baseRate := 0.0
	if base > 0 {
		baseRate = (cpuAt(ss, ph.LoadAt) - cpuAt(ss, ph.BaselineAt)) / base
	}
	c.BaselineCPUPercent = round(baseRate*100, 2)
	c.BaselineRSSMiB = mib(rssAt(ss, ph.LoadAt))
	endRSS := rssAt(ss, ph.QuietAt)
	c.LoadEndRSSMiB = mib(endRSS)
	if connected > 0 {
		c.RSSPerAgentKiB = round((float64(endRSS)-float64(rssAt(ss, ph.LoadAt)))/float64(connected)/1024, 1)
	}
	if idle := ph.IdleEnd.Sub(ph.QuietAt).Seconds(); idle > 0 && connected > 0 {
		c.IdleS = round(idle, 1)
		c.IdleCPUSeconds = round(cpuAt(ss, ph.IdleEnd)-cpuAt(ss, ph.QuietAt), 3)
		c.IdleCPUPerAgentUsPerS = round((c.IdleCPUSeconds/idle-baseRate)/float64(connected)*1e6, 2)
	}
	if steadyOK && ph.QuietAt.After(steadyFrom) && steadyPulses > 0 {
		w := ph.QuietAt.Sub(steadyFrom).Seconds()
		cpu := cpuAt(ss, ph.QuietAt) - cpuAt(ss, steadyFrom)
		c.SteadyWindowS, c.SteadyCPUSeconds, c.SteadyPulses = round(w, 1), round(cpu, 3), steadyPulses
		c.CPUPerPulseMs = round(cpu/float64(steadyPulses)*1000, 3)
		fixed := (baseRate + c.IdleCPUPerAgentUsPerS/1e6*float64(connected)) * w
		c.CPUPerPulseNetMs = round((cpu-fixed)/float64(steadyPulses)*1000, 3)
		if per := c.CPUPerPulseNetMs/1000/interval.Seconds() + c.IdleCPUPerAgentUsPerS/1e6; per > 0 && interval > 0 {
			c.AgentsPerCore = math.Round(1 / per)
		}
	}
	return c
}
