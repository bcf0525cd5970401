package loadgen

import (
	"io"
	"math"
	"time"
)

// reporter prints a line every second and samples resource use: this
// process's, and the external verifier's when its pid is known.
type reporter struct {
	r   *runner
	pid int
	out io.Writer

	t0, last          time.Time
	self0, selfLast   Usage
	ver0, verLast     Usage
	verOK             bool
	maxRSS, maxVerRSS float64
}

func newReporter(r *runner, pid int, out io.Writer) *reporter {
	p := &reporter{r: r, pid: pid, out: out, t0: time.Now()}
	p.last = p.t0
	p.self0, _ = SelfUsage()
	p.selfLast = p.self0
	if pid > 0 {
		if u, err := PIDUsage(pid); err == nil {
			p.ver0, p.verLast, p.verOK = u, u, true
		}
	}
	return p
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
				if u, err := PIDUsage(p.pid); err == nil {
					rep.VerifierCPUPercent = pct(u.CPU()-p.verLast.CPU(), wall)
					rep.VerifierRSSMiB = mib(u.RSSBytes)
					p.verLast = u
					p.maxVerRSS = math.Max(p.maxVerRSS, rep.VerifierRSSMiB)
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
func (p *reporter) finish(sum *Summary, end time.Time, embedded bool) {
	wall := end.Sub(p.t0)
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
		if u, err := PIDUsage(p.pid); err == nil {
			cpu := u.CPU() - p.ver0.CPU()
			sum.Verifier = &ProcessUse{Note: "external pulse-verifier process (by pid)", End: u,
				CPUSeconds: math.Round(cpu.Seconds()*100) / 100, AvgCPUPercent: pct(cpu, wall),
				MaxRSSMiB: math.Max(p.maxVerRSS, mib(u.RSSBytes))}
		}
	}
}
