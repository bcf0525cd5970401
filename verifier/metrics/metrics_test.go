package metrics

import (
	"strings"
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

func TestMetricsPolicyAndWebhook(t *testing.T) {
	m, reg := newTest(t)
	m.PolicyReload(true)
	m.SetPolicyFailing(true)
	m.PolicyReload(false)
	if got := testutil.ToFloat64(m.policyFail); got != 1 {
		t.Errorf("policy_failing = %v after a failed edit, want 1", got)
	}
	if got := testutil.ToFloat64(m.reloads.WithLabelValues("error")); got != 1 {
		t.Errorf("reload errors = %v", got)
	}
	if ts := testutil.ToFloat64(m.policyOKTime); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success timestamp %v not recent", ts)
	}
	m.PolicyReload(true)
	if got := testutil.ToFloat64(m.policyFail); got != 0 {
		t.Errorf("policy_failing = %v after a good reload, want 0", got)
	}
	m.SetPolicyFailing(true)
	m.SetPolicyFailing(false)
	if got := testutil.ToFloat64(m.policyFail); got != 0 {
		t.Errorf("policy_failing = %v after clearing", got)
	}

	m.WebhookDelivery(WebhookOK, 20*time.Millisecond)
	m.WebhookDelivery(WebhookFailed, 5*time.Second)
	m.WebhookDelivery("weird", time.Second)
	m.WebhookDelivery(WebhookDropped, 0)
	m.SetWebhookQueue(7)
	want := `
# HELP pulse_webhook_deliveries_total Alert webhook delivery attempts, by result (ok, failed, dropped).
# TYPE pulse_webhook_deliveries_total counter
pulse_webhook_deliveries_total{result="dropped"} 1
pulse_webhook_deliveries_total{result="failed"} 2
pulse_webhook_deliveries_total{result="ok"} 1
# HELP pulse_webhook_queue_length Alerts waiting for webhook delivery.
# TYPE pulse_webhook_queue_length gauge
pulse_webhook_queue_length 7
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pulse_webhook_deliveries_total", "pulse_webhook_queue_length"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.webhookTime); n != 1 {
		t.Errorf("webhook histogram series = %d", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP pulse_webhook_delivery_seconds Duration of alert webhook delivery attempts.
# TYPE pulse_webhook_delivery_seconds histogram
pulse_webhook_delivery_seconds_bucket{le="0.005"} 0
pulse_webhook_delivery_seconds_bucket{le="0.01"} 0
pulse_webhook_delivery_seconds_bucket{le="0.025"} 1
pulse_webhook_delivery_seconds_bucket{le="0.05"} 1
pulse_webhook_delivery_seconds_bucket{le="0.1"} 1
pulse_webhook_delivery_seconds_bucket{le="0.25"} 1
pulse_webhook_delivery_seconds_bucket{le="0.5"} 1
pulse_webhook_delivery_seconds_bucket{le="1"} 2
pulse_webhook_delivery_seconds_bucket{le="2.5"} 2
pulse_webhook_delivery_seconds_bucket{le="5"} 3
pulse_webhook_delivery_seconds_bucket{le="10"} 3
pulse_webhook_delivery_seconds_bucket{le="+Inf"} 3
pulse_webhook_delivery_seconds_sum 6.02
pulse_webhook_delivery_seconds_count 3
`), "pulse_webhook_delivery_seconds"); err != nil {
		t.Error(err)
	}
}

func TestMetricsNilIsNoop(t *testing.T) {
	var m *Metrics
	m.ObservePulse("TRUSTED", "OK", time.Millisecond)
	m.AlertRaised("x", 1)
	m.SetAgentsByStatus(map[string]int{"TRUSTED": 1})
	m.PolicyReload(true)
	m.SetPolicyFailing(true)
	m.WebhookDelivery(WebhookOK, time.Millisecond)
	m.SetWebhookQueue(1)
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
