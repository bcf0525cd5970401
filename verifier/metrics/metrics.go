// Package metrics holds the verifier's Prometheus metrics. The verifier calls
// the methods of Metrics from its pipeline, alerting, sweeper, policy watcher
// and webhook sender; the admin listener serves the registry on /metrics.
//
// Every method is safe for concurrent use and a no-op on a nil *Metrics, so
// components can hold a nil when metrics are disabled (and tests need not
// build a registry).
//
// Label values come from closed sets (verdict and reason enums, alert kinds,
// configured webhook names), never from agent-supplied strings, so the number of
// series stays bounded however large the fleet.
package metrics

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric name.
const Namespace = "pulse"

// VerificationBuckets are the bounds (seconds) of pulse_verification_seconds:
// from 100µs (a pulse refused at the signature or nonce step) to 1s (a full
// firmware log replay on a loaded replica), 1-2.5-5 steps.
var VerificationBuckets = []float64{
	0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05,
	0.1, 0.25, 0.5,
	1,
}

// Statuses are the agent statuses SetAgentsByStatus always reports (at zero
// when no agent is in them), so dashboards and alert rules see a series
// rather than an absent one.
var Statuses = []string{"TRUSTED", "DEGRADED", "UNTRUSTED", "CLOCK_DESYNC", "BLINDED", "UNSPECIFIED"}

// Metrics is the verifier's set of collectors, registered on one registry.
type Metrics struct {
	pulses       *prometheus.CounterVec
	verification *prometheus.HistogramVec
	alerts       *prometheus.CounterVec
	agents       *prometheus.GaugeVec
	policy       *policyCollector
	divergent    prometheus.Gauge
	refused      *prometheus.CounterVec
	storeUp      prometheus.Gauge
	storeErrors  *prometheus.CounterVec

	reg prometheus.Registerer

	mu         sync.Mutex
	seenStatus map[string]bool
}

// New creates the verifier's metrics and registers them on reg. It fails
// when reg already holds collectors of the same names (create Metrics once
// per registry).
func New(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, fmt.Errorf("metrics: nil registerer")
	}
	m := &Metrics{
		pulses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "pulses_total",
			Help: "Pulses handled, by verdict and typed reason.",
		}, []string{"verdict", "reason"}),
		verification: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "verification_seconds",
			Help:    "Time to verify one pulse (pipeline steps 1-8), by verdict.",
			Buckets: VerificationBuckets,
		}, []string{"verdict"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "alerts_total",
			Help: "Alerts raised, by kind and severity (1 is the most severe).",
		}, []string{"kind", "severity"}),
		agents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "agents",
			Help: "Enrolled agents by current attestation status.",
		}, []string{"status"}),
		policy: newPolicyCollector(),
		divergent: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "policy_divergent",
			Help: "1 while another live replica enforces a policy set with another digest than this one (pulse_policy_info names this one's).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "refused_total",
			Help: "Refused TLS handshakes and undecodable requests, by listener and cause (docs/operations.md, probes).",
		}, []string{"listener", "cause"}),
		storeUp:     newStoreUp(),
		storeErrors: newStoreErrors(),
		seenStatus:  map[string]bool{},
		reg:         reg,
	}
	for _, c := range []prometheus.Collector{m.pulses, m.verification, m.alerts, m.agents, m.policy, m.divergent, m.refused, m.storeUp, m.storeErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	for _, s := range Statuses {
		m.agents.WithLabelValues(s).Set(0)
		m.seenStatus[s] = true
	}
	m.initStore()
	return m, nil
}

// NewRegistry returns a registry holding the Go runtime and process
// collectors, for the verifier to pass to New and to the admin listener.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// VerdictLabel normalises a verdict name for a label: the proto enum's
// String() ("VERDICT_TRUSTED") and the short form ("TRUSTED") both give
// "TRUSTED"; empty gives "UNSPECIFIED".
func VerdictLabel(v string) string {
	v = strings.TrimPrefix(v, "VERDICT_")
	if v == "" {
		return "UNSPECIFIED"
	}
	return v
}

// ReasonLabel normalises a reason name: "REASON_POLICY_DENIED" and
// "POLICY_DENIED" both give "POLICY_DENIED"; empty gives "UNSPECIFIED".
func ReasonLabel(r string) string {
	r = strings.TrimPrefix(r, "REASON_")
	if r == "" {
		return "UNSPECIFIED"
	}
	return r
}

// ObservePulse counts one handled pulse and its verification time. verdict
// and reason are the enum names (pulsev1.Verdict.String(), with or without
// the VERDICT_/REASON_ prefix).
func (m *Metrics) ObservePulse(verdict, reason string, d time.Duration) {
	if m == nil {
		return
	}
	v := VerdictLabel(verdict)
	m.pulses.WithLabelValues(v, ReasonLabel(reason)).Inc()
	m.verification.WithLabelValues(v).Observe(d.Seconds())
}

// AlertRaised counts one alert of a kind (e.g. "binary_changed",
// "identity_takeover", "silent") and severity.
func (m *Metrics) AlertRaised(kind string, severity int) {
	if m == nil {
		return
	}
	if kind == "" {
		kind = "unknown"
	}
	m.alerts.WithLabelValues(kind, strconv.Itoa(severity)).Inc()
}

// Refused counts one refused handshake or request on a listener ("agent")
// for a cause (tlsconfig.Cause: "no_certificate", "wrong_role", ...).
// Both come from closed sets; an empty cause counts as "unknown".
func (m *Metrics) Refused(listener, cause string) {
	if m == nil {
		return
	}
	if cause == "" {
		cause = "unknown"
	}
	m.refused.WithLabelValues(listener, cause).Inc()
}

// InitRefused reports a listener's causes at zero before any refusal, so
// rate() and alert rules see a series rather than an absent one.
func (m *Metrics) InitRefused(listener string, causes ...string) {
	if m == nil {
		return
	}
	for _, c := range causes {
		m.refused.WithLabelValues(listener, c)
	}
}

// SetAgentsByStatus replaces the per-status agent counts. Statuses absent
// from counts (including ones reported earlier) are set to zero, so an
// emptied status reads 0 rather than its stale count.
func (m *Metrics) SetAgentsByStatus(counts map[string]int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	norm := make(map[string]int, len(counts))
	for s, n := range counts {
		norm[VerdictLabel(s)] += n
	}
	for s := range m.seenStatus {
		if _, ok := norm[s]; !ok {
			m.agents.WithLabelValues(s).Set(0)
		}
	}
	for s, n := range norm {
		m.seenStatus[s] = true
		m.agents.WithLabelValues(s).Set(float64(n))
	}
}

// PolicyReload records the outcome of one policy load or reload attempt. A
// successful load also clears the failing flag. (Or use WatchPolicy.)
func (m *Metrics) PolicyReload(ok bool) {
	if m == nil {
		return
	}
	p := m.policy
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		p.loads++
		p.loadedAtTime = time.Now()
		p.failingNow = false
	} else {
		p.rejected++
	}
}

// SetPolicyFailing says whether the policy on disk currently fails to
// validate (the verifier keeps serving the last good one).
func (m *Metrics) SetPolicyFailing(failing bool) {
	if m == nil {
		return
	}
	m.policy.mu.Lock()
	m.policy.failingNow = failing
	m.policy.mu.Unlock()
}

// SetPolicyDivergent says whether another live replica enforces a policy
// set with another digest than this replica.
func (m *Metrics) SetPolicyDivergent(divergent bool) {
	if m == nil {
		return
	}
	v := 0.0
	if divergent {
		v = 1
	}
	m.divergent.Set(v)
}

// PolicyStatus is the policy watcher's state (policy.WatcherStats).
type PolicyStatus struct {
	Loads, Rejected uint64
	Failing         bool
	Digest          string
	LoadedAt        time.Time
}

// WatchPolicy makes the policy metrics read the watcher's state at every
// scrape (e.g. from policy.Watcher.Stats), instead of PolicyReload and
// SetPolicyFailing calls, which are then ignored. The watcher sees rejected
// edits that no callback reports, so prefer this.
func (m *Metrics) WatchPolicy(stats func() PolicyStatus) {
	if m == nil {
		return
	}
	m.policy.mu.Lock()
	m.policy.pull = stats
	m.policy.mu.Unlock()
}

// policyCollector exports the policy state, pushed or pulled:
//
//	pulse_policy_reloads_total{result="ok|error"}
//	pulse_policy_failing
//	pulse_policy_last_reload_success_timestamp_seconds
//	pulse_policy_info{digest}  (when the digest is known)
type policyCollector struct {
	reloads, failing, loadedAt, info *prometheus.Desc

	mu              sync.Mutex
	loads, rejected uint64
	failingNow      bool
	loadedAtTime    time.Time
	pull            func() PolicyStatus
}

func newPolicyCollector() *policyCollector {
	return &policyCollector{
		reloads: prometheus.NewDesc(Namespace+"_policy_reloads_total",
			"Policy loads, by result: ok (put in force) or error (edit refused, the previous policy stays).", []string{"result"}, nil),
		failing: prometheus.NewDesc(Namespace+"_policy_failing",
			"1 while the policy files on disk do not validate and the last good policy stays in force.", nil, nil),
		loadedAt: prometheus.NewDesc(Namespace+"_policy_last_reload_success_timestamp_seconds",
			"Unix time the policy in force was loaded.", nil, nil),
		info: prometheus.NewDesc(Namespace+"_policy_info",
			"Always 1; the digest label names the policy in force.", []string{"digest"}, nil),
	}
}

func (c *policyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.reloads, c.failing, c.loadedAt, c.info} {
		ch <- d
	}
}

func (c *policyCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	st := PolicyStatus{Loads: c.loads, Rejected: c.rejected, Failing: c.failingNow, LoadedAt: c.loadedAtTime}
	pull := c.pull
	c.mu.Unlock()
	if pull != nil {
		st = pull()
	}
	ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue, float64(st.Loads), "ok")
	ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue, float64(st.Rejected), "error")
	failing := 0.0
	if st.Failing {
		failing = 1
	}
	ch <- prometheus.MustNewConstMetric(c.failing, prometheus.GaugeValue, failing)
	if !st.LoadedAt.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.loadedAt, prometheus.GaugeValue, float64(st.LoadedAt.UnixNano())/1e9)
	}
	if st.Digest != "" {
		ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, st.Digest)
	}
}

// WebhookCounts are one webhook's cumulative counters and queue length
// (the alert dispatcher's WebhookStats).
type WebhookCounts struct {
	Delivered, Failed, Dropped, Retried uint64
	Queued                              int
	// DroppedBySeverity splits Dropped by the dropped alert's severity
	// (1 to 4; a missing severity reads as zero).
	DroppedBySeverity map[int]uint64
}

// DispatchCounts are the alert dispatcher's cumulative counters.
type DispatchCounts struct {
	// Rejected: alerts refused by validation.
	Rejected uint64
	// AuditFailed: alerts the audit log could not record.
	AuditFailed uint64
	// Webhooks by configured name.
	Webhooks map[string]WebhookCounts
}

// WatchAlertDispatch registers a collector that reads the alert
// dispatcher's counters at every scrape through stats (which must be cheap
// and safe for concurrent use):
//
//	pulse_webhook_deliveries_total{webhook,result="delivered|failed|dropped"}
//	pulse_webhook_retries_total{webhook}
//	pulse_webhook_dropped_total{webhook,severity="1|2|3|4"}
//	pulse_webhook_queue_length{webhook}
//	pulse_alerts_rejected_total
//	pulse_audit_failures_total
//
// Call it once per Metrics.
func (m *Metrics) WatchAlertDispatch(stats func() DispatchCounts) error {
	if m == nil {
		return nil
	}
	if stats == nil {
		return fmt.Errorf("metrics: nil dispatch stats function")
	}
	c := &dispatchCollector{
		stats: stats,
		deliveries: prometheus.NewDesc(Namespace+"_webhook_deliveries_total",
			"Alerts per webhook by final result: delivered (2xx), failed (given up), dropped (queue full).", []string{"webhook", "result"}, nil),
		dropped: prometheus.NewDesc(Namespace+"_webhook_dropped_total",
			"Alerts a full webhook queue shed, by the shed alert's severity (1 is the most severe).", []string{"webhook", "severity"}, nil),
		retries: prometheus.NewDesc(Namespace+"_webhook_retries_total",
			"Webhook delivery retries scheduled (attempts after the first).", []string{"webhook"}, nil),
		queue: prometheus.NewDesc(Namespace+"_webhook_queue_length",
			"Alerts waiting for delivery to a webhook.", []string{"webhook"}, nil),
		rejected: prometheus.NewDesc(Namespace+"_alerts_rejected_total",
			"Alerts refused by validation (a verifier bug: each is logged).", nil, nil),
		audit: prometheus.NewDesc(Namespace+"_audit_failures_total",
			"Alerts the audit log could not record.", nil, nil),
	}
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("metrics: register dispatch collector: %w", err)
	}
	return nil
}

type dispatchCollector struct {
	stats                                                func() DispatchCounts
	deliveries, dropped, retries, queue, rejected, audit *prometheus.Desc
}

func (c *dispatchCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.deliveries, c.dropped, c.retries, c.queue, c.rejected, c.audit} {
		ch <- d
	}
}

func (c *dispatchCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(s.Rejected))
	ch <- prometheus.MustNewConstMetric(c.audit, prometheus.CounterValue, float64(s.AuditFailed))
	for name, w := range s.Webhooks {
		ch <- prometheus.MustNewConstMetric(c.deliveries, prometheus.CounterValue, float64(w.Delivered), name, "delivered")
		ch <- prometheus.MustNewConstMetric(c.deliveries, prometheus.CounterValue, float64(w.Failed), name, "failed")
		ch <- prometheus.MustNewConstMetric(c.deliveries, prometheus.CounterValue, float64(w.Dropped), name, "dropped")
		for sev := 1; sev <= 4; sev++ {
			ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(w.DroppedBySeverity[sev]), name, strconv.Itoa(sev))
		}
		ch <- prometheus.MustNewConstMetric(c.retries, prometheus.CounterValue, float64(w.Retried), name)
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(w.Queued), name)
	}
}
