package loadgen

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestSteadyStart(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name             string
		rampEnd, last    time.Time
		answered, agents int
		want             time.Time
		wantOK           bool
	}{
		{"ramp ends last", t0.Add(30 * time.Second), t0.Add(20 * time.Second), 10, 10, t0.Add(30 * time.Second), true},
		{"first pulses drain after the ramp", t0.Add(30 * time.Second), t0.Add(41200 * time.Millisecond), 10, 10, t0.Add(42 * time.Second), true},
		{"whole second kept", t0.Add(30 * time.Second), t0.Add(35 * time.Second), 10, 10, t0.Add(35 * time.Second), true},
		{"an agent never answered", t0.Add(30 * time.Second), t0.Add(20 * time.Second), 9, 10, time.Time{}, false},
		{"no agents", t0, t0, 0, 0, time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := SteadyStart(tc.rampEnd, tc.last, tc.answered, tc.agents)
			if ok != tc.wantOK || !got.Equal(tc.want) {
				t.Fatalf("SteadyStart = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func histOf(ds ...time.Duration) *Histogram {
	var h Histogram
	for _, d := range ds {
		h.Record(d)
	}
	return &h
}

// TestSplitLatency: pulses are steady by the second they were SENT, so a
// slow ramp pulse answered after the cut stays in the ramp.
func TestSplitLatency(t *testing.T) {
	by := map[int64]*Histogram{
		100: histOf(800 * time.Millisecond), // sent in the ramp, answered after the cut
		101: histOf(2*time.Millisecond, 3*time.Millisecond),
		102: histOf(4 * time.Millisecond),
	}
	steady, ramp := splitLatency(by, time.Unix(101, 0), true)
	if steady.Count() != 3 || ramp.Count() != 1 || steady.Max() != 4*time.Millisecond || ramp.Max() != 800*time.Millisecond {
		t.Fatalf("steady %d (max %v), ramp %d (max %v)", steady.Count(), steady.Max(), ramp.Count(), ramp.Max())
	}
	steady, ramp = splitLatency(by, time.Time{}, false)
	if steady.Count() != 0 || ramp.Count() != 4 {
		t.Fatalf("undrained: steady %d ramp %d", steady.Count(), ramp.Count())
	}
}

func TestHistDataRoundTrip(t *testing.T) {
	h := histOf(time.Microsecond, 3*time.Millisecond, 3*time.Millisecond, 2*time.Second)
	js, err := json.Marshal(h.Data())
	if err != nil {
		t.Fatal(err)
	}
	var d HistData
	if err := json.Unmarshal(js, &d); err != nil {
		t.Fatal(err)
	}
	g, err := d.Histogram()
	if err != nil {
		t.Fatal(err)
	}
	if g.Summary() != h.Summary() {
		t.Fatalf("round trip %+v != %+v", g.Summary(), h.Summary())
	}
	if _, err := (HistData{Buckets: [][2]uint64{{histBuckets, 1}}}).Histogram(); err == nil {
		t.Fatal("bucket out of range accepted")
	}
}

func FuzzHistData(f *testing.F) {
	js, _ := json.Marshal(histOf(time.Millisecond, time.Second).Data())
	f.Add(js)
	f.Add([]byte(`{"b":[[1899,1],[0,2]],"sum_ns":-5,"max_ns":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d HistData
		if json.Unmarshal(b, &d) != nil {
			return
		}
		h, err := d.Histogram()
		if err != nil {
			return
		}
		_ = h.Summary() // must not panic on any decoded input
	})
}

// samples builds a verifier that burns rate CPU-seconds per second in
// each phase and holds rss bytes from each phase's start.
func costSamples(t0 time.Time, phases []struct {
	until time.Duration
	rate  float64
	rss   uint64
}) []Sample {
	var ss []Sample
	cpu, at := 0.0, time.Duration(0)
	ss = append(ss, Sample{AtMs: t0.UnixMilli(), CPUSeconds: 0, RSSBytes: phases[0].rss})
	for _, p := range phases {
		for at < p.until {
			at += time.Second
			cpu += p.rate
			ss = append(ss, Sample{AtMs: t0.Add(at).UnixMilli(), CPUSeconds: cpu, RSSBytes: p.rss})
		}
	}
	return ss
}

func TestComputeCost(t *testing.T) {
	t0 := time.Unix(2_000_000, 0)
	const mb = 1 << 20
	// 10 s baseline at 1 % of a core and 100 MiB; load to t = 100 s at
	// 40 % with 1,000 agents (200 MiB more); the steady state from t = 40
	// s has 100 pulses/s; idle 30 s at 6 % (5 % above the baseline).
	ss := costSamples(t0, []struct {
		until time.Duration
		rate  float64
		rss   uint64
	}{{10 * time.Second, 0.01, 100 * mb}, {100 * time.Second, 0.40, 300 * mb}, {130 * time.Second, 0.06, 300 * mb}})
	ph := Phases{BaselineAt: t0, LoadAt: t0.Add(10 * time.Second), QuietAt: t0.Add(100 * time.Second), IdleEnd: t0.Add(130 * time.Second)}
	c := ComputeCost(ss, ph, t0.Add(40*time.Second), true, 6000, 1000, 1, 10*time.Second)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > math.Abs(want)*0.01+1e-9 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("baseline cpu %", c.BaselineCPUPercent, 1)
	near("rss per agent KiB", c.RSSPerAgentKiB, 200*1024/1000.0)
	near("cpu per pulse ms", c.CPUPerPulseMs, 0.40*60/6000*1000)            // 4 ms
	near("idle µs per agent per s", c.IdleCPUPerAgentUsPerS, 0.05/1000*1e6) // 50 µs
	near("net cpu per pulse ms", c.CPUPerPulseNetMs, (0.40-0.06)*60/6000*1000)
	// Agents per core at 10 s: 1 / (3.4 ms / 10 s + 50 µs) = 1 / (340 + 50) µs/s.
	near("agents per core", c.AgentsPerCore, math.Round(1/(0.0034/10+50e-6)))

	if ComputeCost(ss[:1], ph, t0, true, 1, 1, 1, time.Second) != nil {
		t.Error("cost from a single sample")
	}
	if c := ComputeCost(ss, ph, time.Time{}, false, 0, 1000, 1, 10*time.Second); c.CPUPerPulseMs != 0 || c.RSSPerAgentKiB == 0 {
		t.Errorf("undrained run: %+v", c)
	}
}

func mergeInput(t0 time.Time, agents int, lastFirst time.Duration, lat map[int64][]time.Duration) *Summary {
	by := map[int64]*Histogram{}
	var all Histogram
	for sec, ds := range lat {
		by[sec] = histOf(ds...)
		all.Merge(by[sec])
	}
	s := &Summary{Mode: "external", StoreEngine: "postgres", Agents: agents, Connected: agents, ConnectedAtEnd: agents,
		FirstAnswered: agents, IntervalS: 30, StartedAt: t0, RampEnd: t0.Add(30 * time.Second),
		LastFirstPulse: t0.Add(lastFirst), Roles: map[Role]int{RoleHonest: agents}, Pulses: all.Count(),
		Kinds: map[Kind]*KindCount{KindHonest: {Sent: all.Count(), AsExpected: all.Count()}}, SLOP99Ms: 50,
		HonestStore: StoreCheck{Checked: agents, Trusted: agents}, Replicas: []string{"a", "b"},
		Phases: Phases{LoadAt: t0, QuietAt: t0.Add(90 * time.Second)}, Pass: true}
	s.LatencyBySecond = secondsData(by)
	return s
}

func TestMergeSummaries(t *testing.T) {
	t0 := time.Unix(3_000_000, 0)
	// Process 0 drained at t = 31 s, process 1 at t = 44.5 s: the merged
	// steady state starts at t = 45 s for both, so process 0's slow pulse
	// sent at t = 40 s is ramp.
	a := mergeInput(t0, 100, 31*time.Second, map[int64][]time.Duration{
		t0.Unix() + 5: {300 * time.Millisecond}, t0.Unix() + 40: {200 * time.Millisecond}, t0.Unix() + 60: {2 * time.Millisecond}})
	b := mergeInput(t0.Add(50*time.Millisecond), 50, 44500*time.Millisecond, map[int64][]time.Duration{
		t0.Unix() + 44: {100 * time.Millisecond}, t0.Unix() + 70: {3 * time.Millisecond, 4 * time.Millisecond}})
	m, err := MergeSummaries([]*Summary{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if m.Agents != 150 || m.Pulses != 6 || m.HonestStore.Trusted != 150 || m.Kinds[KindHonest].AsExpected != 6 {
		t.Fatalf("counts: agents %d pulses %d trusted %d", m.Agents, m.Pulses, m.HonestStore.Trusted)
	}
	if !m.RampDrained || !m.SteadyFrom.Equal(t0.Add(45*time.Second)) {
		t.Fatalf("steady from %v (drained %v)", m.SteadyFrom, m.RampDrained)
	}
	if m.SteadyLatency.Count != 3 || m.RampLatency.Count != 3 || m.SteadyLatency.MaxMs > 5 {
		t.Fatalf("steady %+v ramp %+v", m.SteadyLatency, m.RampLatency)
	}
	if !m.Pass || !m.SLOMet {
		t.Fatalf("merged run judged pass %v slo %v: %v", m.Pass, m.SLOMet, m.Failures)
	}
	// Errors by phase: a second at t = 20 s is ramp, at t = 60 s steady.
	e := mergeInput(t0, 10, 20*time.Second, nil)
	e.Series = []SecondReport{{T: 20, Errors: 5}, {T: 60, Errors: 2}}
	m, err = MergeSummaries([]*Summary{a, e})
	if err != nil {
		t.Fatal(err)
	}
	if m.SteadyErrors != 2 {
		t.Fatalf("steady errors %d, want 2 (steady from t = %.0f s)", m.SteadyErrors, m.SteadyFromS)
	}

	// A process that did not drain leaves the fleet without a steady state.
	c := mergeInput(t0, 10, 20*time.Second, nil)
	c.FirstAnswered = 9
	m, err = MergeSummaries([]*Summary{a, c})
	if err != nil {
		t.Fatal(err)
	}
	if m.RampDrained || m.SteadyLatency.Count != 0 || m.SLOMet {
		t.Fatalf("undrained process: drained %v steady %d slo %v", m.RampDrained, m.SteadyLatency.Count, m.SLOMet)
	}
	// A failing process fails the merge, named.
	f := mergeInput(t0, 10, 20*time.Second, nil)
	f.Failures, f.Pass = []string{"3 errors"}, false
	if m, _ = MergeSummaries([]*Summary{a, f}); m.Pass || !strings.Contains(strings.Join(m.Failures, ";"), "process 1: 3 errors") {
		t.Fatalf("failing process: pass %v failures %v", m.Pass, m.Failures)
	}

	for name, mut := range map[string]func(*Summary){
		"another interval":  func(s *Summary) { s.IntervalS = 10 },
		"another store":     func(s *Summary) { s.StoreEngine = "sqlite" },
		"started apart":     func(s *Summary) { s.StartedAt = s.StartedAt.Add(time.Minute) },
		"corrupt histogram": func(s *Summary) { s.LatencyBySecond[0].Buckets[0][0] = histBuckets + 7 },
	} {
		o := mergeInput(t0, 10, 20*time.Second, map[int64][]time.Duration{t0.Unix() + 50: {time.Millisecond}})
		mut(o)
		if _, err := MergeSummaries([]*Summary{a, o}); err == nil {
			t.Errorf("%s: merged", name)
		}
	}
	if _, err := MergeSummaries(nil); err == nil {
		t.Error("nothing merged without error")
	}
}

func TestBusy(t *testing.T) {
	for _, tc := range []struct {
		err  string
		want bool
	}{
		{"store: enroll agent x: database is locked (5) (SQLITE_BUSY)", true},
		{"store: enroll agent x: database is locked (517)", true},
		{"store: enroll agent x: UNIQUE constraint failed", false},
	} {
		if got := busy(errors.New(tc.err)); got != tc.want {
			t.Errorf("busy(%q) = %v", tc.err, got)
		}
	}
}
