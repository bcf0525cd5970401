package loadgen

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	pulsev1 "github.com/pulse-attest/pulse/proto/pulse/v1"
)

// Role is how a virtual agent behaves.
type Role string

// Roles. An honest agent only sends good pulses; the others send good
// pulses too and, right after each, their misbehaviour (silent: nothing).
const (
	RoleHonest       Role = "honest"
	RoleReplay       Role = "replay"
	RoleBadSignature Role = "bad_signature"
	RoleStaleNonce   Role = "stale_nonce"
	RoleSilent       Role = "silent"
)

// Kind is what a pulse is: honest, or one of the attacks (named like the
// role that sends it).
type Kind string

// KindHonest is an honest pulse.
const KindHonest Kind = "honest"

// Expected reports whether a verdict is the one a pulse of this kind
// deserves.
func Expected(k Kind, v pulsev1.Verdict, r pulsev1.Reason) bool {
	switch Role(k) {
	case RoleReplay:
		return v == pulsev1.Verdict_VERDICT_UNTRUSTED && r == pulsev1.Reason_REASON_NONCE_REPLAYED
	case RoleBadSignature:
		return v == pulsev1.Verdict_VERDICT_UNTRUSTED && r == pulsev1.Reason_REASON_BAD_SIGNATURE
	case RoleStaleNonce:
		// A spent epoch is a replay; verifiers that pruned spent nonces
		// answered unknown, still accepted here.
		return v == pulsev1.Verdict_VERDICT_UNTRUSTED &&
			(r == pulsev1.Reason_REASON_NONCE_REPLAYED || r == pulsev1.Reason_REASON_NONCE_UNKNOWN)
	}
	return v == pulsev1.Verdict_VERDICT_TRUSTED && r == pulsev1.Reason_REASON_OK
}

// verdictKey names a verdict for reports: "TRUSTED" or "UNTRUSTED/NONCE_REPLAYED".
func verdictKey(v pulsev1.Verdict, r pulsev1.Reason) string {
	vs := strings.TrimPrefix(v.String(), "VERDICT_")
	if r == pulsev1.Reason_REASON_OK {
		return vs
	}
	return vs + "/" + strings.TrimPrefix(r.String(), "REASON_")
}

// Mismatch is a pulse that did not get the verdict it deserved.
type Mismatch struct {
	Agent   string `json:"agent"`
	Kind    Kind   `json:"kind"`
	Got     string `json:"got"`
	Message string `json:"message"`
	AtS     int    `json:"at_s"`
}

// KindCount counts pulses of one kind.
type KindCount struct {
	Sent       uint64 `json:"sent"`
	AsExpected uint64 `json:"as_expected"`
	Unexpected uint64 `json:"unexpected"`
	Errors     uint64 `json:"errors"`
}

// WireBytes is the proto.Size of pulse requests of one shape.
type WireBytes struct {
	Count uint64 `json:"count"`
	Bytes uint64 `json:"bytes"`
	Mean  uint64 `json:"mean"`
}

func (w *WireBytes) add(n int) {
	w.Count++
	w.Bytes += uint64(n)
	w.Mean = w.Bytes / w.Count
}

// SecondReport is one line of the per-second report.
type SecondReport struct {
	T         int               `json:"t_s"`
	Connected int64             `json:"connected"`
	Pulses    uint64            `json:"pulses"`
	Verdicts  map[string]uint64 `json:"verdicts"`
	Errors    uint64            `json:"errors"`
	P50Ms     float64           `json:"p50_ms"`
	P95Ms     float64           `json:"p95_ms"`
	P99Ms     float64           `json:"p99_ms"`
	// CPUPercent is this process's CPU over the second (100 = one core).
	CPUPercent float64 `json:"cpu_percent"`
	RSSMiB     float64 `json:"rss_mib"`
	// Verifier* are the external verifier's, when its pid is known.
	VerifierCPUPercent float64 `json:"verifier_cpu_percent,omitempty"`
	VerifierRSSMiB     float64 `json:"verifier_rss_mib,omitempty"`
}

type second struct {
	pulses   uint64
	verdicts map[string]uint64
	errors   uint64
	lat      Histogram
}

// Collector gathers what the virtual agents observe. Safe for concurrent use.
type Collector struct {
	mu      sync.Mutex
	start   time.Time
	rampEnd time.Time
	cur     second

	all, challenge Histogram
	// bySecond holds pulse latencies by the Unix second the pulse was
	// sent; the steady state and the ramp are cut from it at the end
	// (SteadyStart).
	bySecond map[int64]*Histogram
	// firstAnswered counts agents whose first pulse was answered;
	// lastFirst is when the latest of those answers came.
	firstAnswered        int
	lastFirst            time.Time
	verdicts             map[string]uint64
	kinds                map[Kind]*KindCount
	errors               map[string]uint64
	errorExamples        []string
	mismatches           []Mismatch
	mismatchN            uint64
	pulses, errorsN      uint64
	withLog, withRecords WireBytes
	steadyBytes          WireBytes
	series               []SecondReport
}

// NewCollector starts collecting; rampEnd is when the last agent is due
// to start (the steady state starts no earlier: SteadyStart).
func NewCollector(start, rampEnd time.Time) *Collector {
	return &Collector{start: start, rampEnd: rampEnd, cur: second{verdicts: map[string]uint64{}},
		verdicts: map[string]uint64{}, kinds: map[Kind]*KindCount{}, errors: map[string]uint64{},
		bySecond: map[int64]*Histogram{}}
}

// FirstPulse records that an agent's first pulse was answered at t.
func (c *Collector) FirstPulse(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.firstAnswered++
	if t.After(c.lastFirst) {
		c.lastFirst = t
	}
}

func (c *Collector) kind(k Kind) *KindCount {
	kc := c.kinds[k]
	if kc == nil {
		kc = &KindCount{}
		c.kinds[k] = kc
	}
	return kc
}

// Pulse records one Pulse RPC sent at sent: its kind, client-observed
// latency, request size and shape, and the answer or error.
func (c *Collector) Pulse(agent string, k Kind, sent time.Time, lat time.Duration, size int, hasLog, hasRecords bool, resp *pulsev1.PulseResponse, err error) {
	now := sent.Add(lat)
	c.mu.Lock()
	defer c.mu.Unlock()
	kc := c.kind(k)
	kc.Sent++
	if err != nil {
		kc.Errors++
		c.errorLocked("pulse", err)
		return
	}
	c.pulses++
	c.cur.pulses++
	c.cur.lat.Record(lat)
	c.all.Record(lat)
	sec := sent.Unix()
	h := c.bySecond[sec]
	if h == nil {
		h = &Histogram{}
		c.bySecond[sec] = h
	}
	h.Record(lat)
	key := verdictKey(resp.GetVerdict(), resp.GetReason())
	c.verdicts[key]++
	c.cur.verdicts[key]++
	switch {
	case hasLog:
		c.withLog.add(size)
	case hasRecords:
		c.withRecords.add(size)
	case k == KindHonest:
		c.steadyBytes.add(size)
	}
	if Expected(k, resp.GetVerdict(), resp.GetReason()) {
		kc.AsExpected++
		return
	}
	kc.Unexpected++
	c.mismatchN++
	if len(c.mismatches) < 20 {
		c.mismatches = append(c.mismatches, Mismatch{Agent: agent, Kind: k, Got: key, Message: resp.GetMessage(),
			AtS: int(now.Sub(c.start) / time.Second)})
	}
}

// Challenge records a Challenge RPC.
func (c *Collector) Challenge(lat time.Duration, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errorLocked("challenge", err)
		return
	}
	c.challenge.Record(lat)
}

// Error records an error outside an RPC (building a pulse, dialling).
func (c *Collector) Error(op string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errorLocked(op, err)
}

func (c *Collector) errorLocked(op string, err error) {
	key := op
	if s, ok := status.FromError(err); ok {
		key = op + "/" + s.Code().String()
	}
	c.errors[key]++
	c.errorsN++
	c.cur.errors++
	if len(c.errorExamples) < 10 {
		c.errorExamples = append(c.errorExamples, fmt.Sprintf("%s: %v", op, err))
	}
}

// tick closes the current second and returns its report line.
func (c *Collector) tick(now time.Time, connected int64) SecondReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.cur
	c.cur = second{verdicts: map[string]uint64{}}
	r := SecondReport{T: int(now.Sub(c.start).Round(time.Second) / time.Second), Connected: connected, Pulses: s.pulses,
		Verdicts: s.verdicts, Errors: s.errors,
		P50Ms: ms(s.lat.Quantile(0.5)), P95Ms: ms(s.lat.Quantile(0.95)), P99Ms: ms(s.lat.Quantile(0.99))}
	return r
}

func (c *Collector) addSeries(r SecondReport) {
	c.mu.Lock()
	c.series = append(c.series, r)
	c.mu.Unlock()
}

// writeLine prints a report line.
func writeLine(w io.Writer, r SecondReport) {
	keys := make([]string, 0, len(r.Verdicts))
	for k := range r.Verdicts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var vs []string
	for _, k := range keys {
		vs = append(vs, fmt.Sprintf("%s=%d", strings.ToLower(k), r.Verdicts[k]))
	}
	verd := strings.Join(vs, " ")
	if verd == "" {
		verd = "-"
	}
	line := fmt.Sprintf("t=%3ds agents=%d pulses=%d [%s] errors=%d p50=%.1fms p95=%.1fms p99=%.1fms cpu=%.0f%% rss=%.0fMiB",
		r.T, r.Connected, r.Pulses, verd, r.Errors, r.P50Ms, r.P95Ms, r.P99Ms, r.CPUPercent, r.RSSMiB)
	if r.VerifierRSSMiB > 0 {
		line += fmt.Sprintf(" verifier_cpu=%.0f%% verifier_rss=%.0fMiB", r.VerifierCPUPercent, r.VerifierRSSMiB)
	}
	fmt.Fprintln(w, line)
}
