package metrics

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

func newTest(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m, reg
}

func TestMetricsNewRefusesDoubleRegistration(t *testing.T) {
	_, reg := newTest(t)
	if _, err := New(reg); err == nil {
		t.Fatal("second New on the same registry succeeded")
	}
	if _, err := New(nil); err == nil {
		t.Fatal("New(nil) succeeded")
	}
}

func TestMetricsObservePulse(t *testing.T) {
	m, reg := newTest(t)
	m.ObservePulse("VERDICT_TRUSTED", "REASON_OK", 300*time.Microsecond)
	m.ObservePulse("TRUSTED", "OK", 2*time.Millisecond)
	m.ObservePulse("VERDICT_UNTRUSTED", "REASON_POLICY_DENIED", 40*time.Millisecond)
	m.ObservePulse("", "", time.Second)

	if got := testutil.ToFloat64(m.pulses.WithLabelValues("TRUSTED", "OK")); got != 2 {
		t.Errorf("trusted/ok = %v, want 2 (prefixed and short names must share a series)", got)
	}
	if got := testutil.ToFloat64(m.pulses.WithLabelValues("UNTRUSTED", "POLICY_DENIED")); got != 1 {
		t.Errorf("untrusted/policy_denied = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.pulses.WithLabelValues("UNSPECIFIED", "UNSPECIFIED")); got != 1 {
		t.Errorf("empty names = %v, want 1 under UNSPECIFIED", got)
	}
	if n := testutil.CollectAndCount(m.pulses, "pulse_pulses_total"); n != 3 {
		t.Errorf("pulse_pulses_total has %d series, want 3", n)
	}

	// The histogram places 300µs and 2ms in the right buckets.
	want := `pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.0001"} 0
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.00025"} 0
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.0005"} 1
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.001"} 1
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.0025"} 2
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.005"} 2
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.01"} 2
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.025"} 2
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.05"} 2
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.1"} 2
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.25"} 2
pulse_verification_seconds_bucket{verdict="TRUSTED",le="0.5"} 2
pulse_verification_seconds_bucket{verdict="TRUSTED",le="1"} 2
pulse_verification_seconds_bucket{verdict="TRUSTED",le="+Inf"} 2
pulse_verification_seconds_sum{verdict="TRUSTED"} 0.0023
pulse_verification_seconds_count{verdict="TRUSTED"} 2
`
	out, err := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "pulse_verification_seconds")
	if err != nil {
		t.Fatal(err)
	}
	var trusted strings.Builder
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, `verdict="TRUSTED"`) {
			trusted.WriteString(line + "\n")
		}
	}
	if trusted.String() != want {
		t.Errorf("TRUSTED histogram:\n%s\nwant:\n%s", trusted.String(), want)
	}
	if !strings.Contains(string(out), `pulse_verification_seconds_bucket{verdict="UNTRUSTED",le="0.025"} 0`) ||
		!strings.Contains(string(out), `pulse_verification_seconds_bucket{verdict="UNTRUSTED",le="0.05"} 1`) {
		t.Errorf("UNTRUSTED 40ms observation misplaced:\n%s", out)
	}
}

func TestMetricsBucketsSpanRange(t *testing.T) {
	if VerificationBuckets[0] != 0.0001 || VerificationBuckets[len(VerificationBuckets)-1] != 1 {
		t.Fatalf("buckets %v do not span 100µs..1s", VerificationBuckets)
	}
	for i := 1; i < len(VerificationBuckets); i++ {
		if VerificationBuckets[i] <= VerificationBuckets[i-1] {
			t.Fatalf("buckets not increasing at %d: %v", i, VerificationBuckets)
		}
	}
}

func TestMetricsAlertsAndAgents(t *testing.T) {
	m, reg := newTest(t)
	m.AlertRaised("binary_changed", 1)
	m.AlertRaised("binary_changed", 1)
	m.AlertRaised("silent", 2)
	m.AlertRaised("", 3)
	want := `
# HELP pulse_alerts_total Alerts raised, by kind and severity (1 is the most severe).
# TYPE pulse_alerts_total counter
pulse_alerts_total{kind="binary_changed",severity="1"} 2
pulse_alerts_total{kind="silent",severity="2"} 1
pulse_alerts_total{kind="unknown",severity="3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pulse_alerts_total"); err != nil {
		t.Error(err)
	}

	m.SetAgentsByStatus(map[string]int{"VERDICT_TRUSTED": 3, "UNTRUSTED": 1, "QUARANTINED": 2})
	m.SetAgentsByStatus(map[string]int{"TRUSTED": 4, "BLINDED": 1})
	want = `
# HELP pulse_agents Enrolled agents by current attestation status.
# TYPE pulse_agents gauge
pulse_agents{status="BLINDED"} 1
pulse_agents{status="CLOCK_DESYNC"} 0
pulse_agents{status="DEGRADED"} 0
pulse_agents{status="QUARANTINED"} 0
pulse_agents{status="TRUSTED"} 4
pulse_agents{status="UNSPECIFIED"} 0
pulse_agents{status="UNTRUSTED"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pulse_agents"); err != nil {
		t.Error(err)
	}
}

const policyHeader = `
# HELP pulse_policy_failing 1 while the policy files on disk do not validate and the last good policy stays in force.
# TYPE pulse_policy_failing gauge
pulse_policy_failing %d
# HELP pulse_policy_reloads_total Policy loads, by result: ok (put in force) or error (edit refused, the previous policy stays).
# TYPE pulse_policy_reloads_total counter
pulse_policy_reloads_total{result="error"} %d
pulse_policy_reloads_total{result="ok"} %d
`

func checkPolicy(t *testing.T, reg prometheus.Gatherer, failing, errors, oks int) {
	t.Helper()
	want := fmt.Sprintf(policyHeader, failing, errors, oks)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pulse_policy_failing", "pulse_policy_reloads_total"); err != nil {
		t.Error(err)
	}
}

func TestMetricsPolicy(t *testing.T) {
	m, reg := newTest(t)
	checkPolicy(t, reg, 0, 0, 0)
	if n, _ := testutil.GatherAndCount(reg, "pulse_policy_last_reload_success_timestamp_seconds", "pulse_policy_info"); n != 0 {
		t.Errorf("timestamp/info exported before any load: %d", n)
	}
	m.PolicyReload(true)
	m.SetPolicyFailing(true)
	m.PolicyReload(false)
	checkPolicy(t, reg, 1, 1, 1)
	out, err := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "pulse_policy_last_reload_success_timestamp_seconds")
	if err != nil || !strings.Contains(string(out), "pulse_policy_last_reload_success_timestamp_seconds 1.") {
		t.Errorf("timestamp after a load: %v\n%s", err, out)
	}
	m.PolicyReload(true)
	checkPolicy(t, reg, 0, 1, 2)
	m.SetPolicyFailing(true)
	m.SetPolicyFailing(false)
	checkPolicy(t, reg, 0, 1, 2)

	// Pulled from the watcher: pushes are ignored from then on.
	st := PolicyStatus{Loads: 5, Rejected: 3, Failing: true, Digest: "9a0b", LoadedAt: time.Unix(1700000000, 0)}
	m.WatchPolicy(func() PolicyStatus { return st })
	m.PolicyReload(true)
	checkPolicy(t, reg, 1, 3, 5)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP pulse_policy_info Always 1; the digest label names the policy in force.
# TYPE pulse_policy_info gauge
pulse_policy_info{digest="9a0b"} 1
# HELP pulse_policy_last_reload_success_timestamp_seconds Unix time the policy in force was loaded.
# TYPE pulse_policy_last_reload_success_timestamp_seconds gauge
pulse_policy_last_reload_success_timestamp_seconds 1.7e+09
`), "pulse_policy_info", "pulse_policy_last_reload_success_timestamp_seconds"); err != nil {
		t.Error(err)
	}
}

func TestMetricsAlertDispatch(t *testing.T) {
	m, reg := newTest(t)
	if err := m.WatchAlertDispatch(nil); err == nil {
		t.Error("nil stats function accepted")
	}
	var mu sync.Mutex
	counts := DispatchCounts{Rejected: 1, AuditFailed: 2, Webhooks: map[string]WebhookCounts{
		"pager": {Delivered: 10, Failed: 1, Dropped: 0, Retried: 3, Queued: 2},
	}}
	if err := m.WatchAlertDispatch(func() DispatchCounts {
		mu.Lock()
		defer mu.Unlock()
		return counts
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.WatchAlertDispatch(func() DispatchCounts { return DispatchCounts{} }); err == nil {
		t.Error("second dispatch collector registered")
	}
	want := `
# HELP pulse_alerts_rejected_total Alerts refused by validation (a verifier bug: each is logged).
# TYPE pulse_alerts_rejected_total counter
pulse_alerts_rejected_total 1
# HELP pulse_audit_failures_total Alerts the audit log could not record.
# TYPE pulse_audit_failures_total counter
pulse_audit_failures_total 2
# HELP pulse_webhook_deliveries_total Alerts per webhook by final result: delivered (2xx), failed (given up), dropped (queue full).
# TYPE pulse_webhook_deliveries_total counter
pulse_webhook_deliveries_total{result="delivered",webhook="pager"} 10
pulse_webhook_deliveries_total{result="dropped",webhook="pager"} 0
pulse_webhook_deliveries_total{result="failed",webhook="pager"} 1
# HELP pulse_webhook_queue_length Alerts waiting for delivery to a webhook.
# TYPE pulse_webhook_queue_length gauge
pulse_webhook_queue_length{webhook="pager"} 2
# HELP pulse_webhook_retries_total Webhook delivery retries scheduled (attempts after the first).
# TYPE pulse_webhook_retries_total counter
pulse_webhook_retries_total{webhook="pager"} 3
`
	names := []string{"pulse_alerts_rejected_total", "pulse_audit_failures_total", "pulse_webhook_deliveries_total",
		"pulse_webhook_queue_length", "pulse_webhook_retries_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// Values are read at scrape time.
	mu.Lock()
	counts.Webhooks = map[string]WebhookCounts{"pager": {Delivered: 11, Queued: 0}, "siem": {Delivered: 4}}
	mu.Unlock()
	out, err := testutil.GatherAndFormat(reg, expfmt.TypeTextPlain, "pulse_webhook_deliveries_total", "pulse_webhook_queue_length")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{`pulse_webhook_deliveries_total{result="delivered",webhook="pager"} 11`,
		`pulse_webhook_deliveries_total{result="delivered",webhook="siem"} 4`, `pulse_webhook_queue_length{webhook="pager"} 0`} {
		if !strings.Contains(string(out), line) {
			t.Errorf("after change, missing %s in:\n%s", line, out)
		}
	}
}

func TestMetricsNilIsNoop(t *testing.T) {
	var m *Metrics
	m.ObservePulse("TRUSTED", "OK", time.Millisecond)
	m.AlertRaised("x", 1)
	m.SetAgentsByStatus(map[string]int{"TRUSTED": 1})
	m.PolicyReload(true)
	m.SetPolicyFailing(true)
	m.WatchPolicy(func() PolicyStatus { return PolicyStatus{} })
	if err := m.WatchAlertDispatch(func() DispatchCounts { return DispatchCounts{} }); err != nil {
		t.Error(err)
	}
}

func TestMetricsRegistryLint(t *testing.T) {
	m, reg := newTest(t)
	m.ObservePulse("TRUSTED", "OK", time.Millisecond)
	m.AlertRaised("silent", 2)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	full := NewRegistry()
	if _, err := New(full); err != nil {
		t.Fatal(err)
	}
	mfs, err := full.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var goSeen, pulseSeen bool
	for _, mf := range mfs {
		goSeen = goSeen || strings.HasPrefix(mf.GetName(), "go_")
		pulseSeen = pulseSeen || strings.HasPrefix(mf.GetName(), "pulse_")
	}
	if !goSeen || !pulseSeen {
		t.Errorf("NewRegistry gathers go_=%v pulse_=%v", goSeen, pulseSeen)
	}
}

func TestMetricsRefused(t *testing.T) {
	m, err := New(NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	m.InitRefused("agent", "no_certificate", "wrong_role")
	m.Refused("agent", "wrong_role")
	m.Refused("agent", "wrong_role")
	m.Refused("agent", "")
	tests := []struct {
		listener, cause string
		want            float64
	}{
		{"agent", "no_certificate", 0},
		{"agent", "wrong_role", 2},
		{"agent", "unknown", 1},
	}
	for _, tc := range tests {
		if got := testutil.ToFloat64(m.refused.WithLabelValues(tc.listener, tc.cause)); got != tc.want {
			t.Errorf("refused{%s,%s} = %v, want %v", tc.listener, tc.cause, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.refused, "pulse_refused_total"); n != 3 {
		t.Errorf("%d series, want 3", n)
	}
	var nilM *Metrics
	nilM.Refused("agent", "expired")
	nilM.InitRefused("agent", "expired")
}
