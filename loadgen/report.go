package loadgen

import (
	"io"
	"math"
	"sync"
	"time"
)

// reporter prints a line every second and samples resource use: this
// process's, and the external verifiers' (summed) when their pids are
// known.
type reporter struct {
	r    *runner
	pids []int
	out  io.Writer

	t0, last          time.Time
	self0, selfLast   Usage
	verLast           Usage
	verOK             bool
	maxRSS, maxVerRSS float64

	mu      sync.Mutex
	samples []Sample
}

func newReporter(r *runner, pids []int, out io.Writer) *reporter {
	p := &reporter{r: r, pids: pids, out: out, t0: time.Now()}
	p.last = p.t0
	p.self0, _ = SelfUsage()
	p.selfLast = p.self0
	if len(pids) > 0 {
		if u, err := pidsUsage(pids); err == nil {
			p.verLast, p.verOK = u, true
			p.record(p.t0, u)
		}
	}
	return p
}

// pidsUsage sums the processes' usage (several verifier replicas).
func pidsUsage(pids []int) (Usage, error) {
	var sum Usage
	for _, pid := range pids {
		u, err := PIDUsage(pid)
		if err != nil {
			return sum, err
		}
		sum.RSSBytes += u.RSSBytes
		sum.PeakRSSBytes += u.PeakRSSBytes
		sum.UserSeconds += u.UserSeconds
		sum.SystemSeconds += u.SystemSeconds
		sum.Threads += u.Threads
	}
	return sum, nil
}

func (p *reporter) record(at time.Time, u Usage) {
	p.mu.Lock()
	p.samples = append(p.samples, Sample{AtMs: at.UnixMilli(), CPUSeconds: u.CPU().Seconds(), RSSBytes: u.RSSBytes})
	p.mu.Unlock()
}

// mark samples the verifiers now (a phase boundary).
func (p *reporter) mark() time.Time {
	now := time.Now()
	if p.verOK {
		if u, err := pidsUsage(p.pids); err == nil {
			p.record(now, u)
		}
	}
	return now
}

func (p *reporter) sampled() []Sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Sample(nil), p.samples...)
}

func mib(b uint64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

func pct(cpu time.Duration, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return math.Round(float64(cpu)/float64(wall)*1000) / 10
}

func (p *reporter) loop(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			rep := p.r.col.tick(now, p.r.connected.Load())
			wall := now.Sub(p.last)
			if u, err := SelfUsage(); err == nil {
				rep.CPUPercent = pct(u.CPU()-p.selfLast.CPU(), wall)
				rep.RSSMiB = mib(u.RSSBytes)
				p.selfLast = u
				p.maxRSS = math.Max(p.maxRSS, rep.RSSMiB)
			}
			if p.verOK {
				if u, err := pidsUsage(p.pids); err == nil {
					rep.VerifierCPUPercent = pct(u.CPU()-p.verLast.CPU(), wall)
					rep.VerifierRSSMiB = mib(u.RSSBytes)
					p.verLast = u
					p.maxVerRSS = math.Max(p.maxVerRSS, rep.VerifierRSSMiB)
					p.record(now, u)
				}
			}
			p.last = now
			if p.out != nil {
				writeLine(p.out, rep)
			}
			p.r.col.addSeries(rep)
		}
	}
}

// finish fills the summary's resource figures over [start, end].
func (p *reporter) finish(sum *Summary, start, end time.Time, embedded bool) {
	wall := end.Sub(start)
	if u, err := SelfUsage(); err == nil {
		cpu := u.CPU() - p.self0.CPU()
		note := "pulse-loadgen process: the virtual agents only"
		if embedded {
			note = "one process: the embedded verifier AND the virtual agents (run the verifier external to separate them)"
		}
		sum.Process = ProcessUse{Note: note, End: u, CPUSeconds: math.Round(cpu.Seconds()*100) / 100,
			AvgCPUPercent: pct(cpu, wall), MaxRSSMiB: math.Max(p.maxRSS, mib(u.RSSBytes))}
	}
	if p.verOK {
		ss := p.sampled()
		if u, err := pidsUsage(p.pids); err == nil {
			cpu := time.Duration((cpuAt(ss, end) - cpuAt(ss, start)) * float64(time.Second))
			sum.Verifier = &ProcessUse{Note: "external pulse-verifier process(es) by pid, summed", End: u,
				CPUSeconds: math.Round(cpu.Seconds()*100) / 100, AvgCPUPercent: pct(cpu, wall),
				MaxRSSMiB: math.Max(p.maxVerRSS, mib(u.RSSBytes))}
		}
	}
}
