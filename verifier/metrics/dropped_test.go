package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsWebhookDroppedBySeverity: every webhook exports its shed
// alerts under all four severities, zero where none were shed.
func TestMetricsWebhookDroppedBySeverity(t *testing.T) {
	m, reg := newTest(t)
	if err := m.WatchAlertDispatch(func() DispatchCounts {
		return DispatchCounts{Webhooks: map[string]WebhookCounts{
			"pager": {Dropped: 5, DroppedBySeverity: map[int]uint64{3: 1, 4: 4}},
			"siem":  {},
		}}
	}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP pulse_webhook_dropped_total Alerts a full webhook queue shed, by the shed alert's severity (1 is the most severe).
# TYPE pulse_webhook_dropped_total counter
pulse_webhook_dropped_total{severity="1",webhook="pager"} 0
pulse_webhook_dropped_total{severity="2",webhook="pager"} 0
pulse_webhook_dropped_total{severity="3",webhook="pager"} 1
pulse_webhook_dropped_total{severity="4",webhook="pager"} 4
pulse_webhook_dropped_total{severity="1",webhook="siem"} 0
pulse_webhook_dropped_total{severity="2",webhook="siem"} 0
pulse_webhook_dropped_total{severity="3",webhook="siem"} 0
pulse_webhook_dropped_total{severity="4",webhook="siem"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pulse_webhook_dropped_total"); err != nil {
		t.Error(err)
	}
}
