package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsStore: store_up starts at 1 and every operation's error
// series at 0; an error counts under its operation (an unknown one under
// "other") and sets store_up to 0 until StoreUp.
func TestMetricsStore(t *testing.T) {
	m, _ := newTest(t)
	if got := testutil.ToFloat64(m.storeUp); got != 1 {
		t.Fatalf("store_up = %v at start, want 1", got)
	}
	if n := testutil.CollectAndCount(m.storeErrors, "pulse_store_errors_total"); n != len(StoreOps) {
		t.Fatalf("%d store error series at start, want %d", n, len(StoreOps))
	}
	steps := []struct {
		name   string
		do     func()
		up     float64
		counts map[string]float64
	}{
		{"sweep error", func() { m.StoreError(StoreOpSweep) }, 0, map[string]float64{"sweep": 1}},
		{"pulse errors", func() { m.StoreError(StoreOpPulse); m.StoreError(StoreOpPulse) }, 0, map[string]float64{"sweep": 1, "pulse": 2}},
		{"back", m.StoreUp, 1, map[string]float64{"sweep": 1, "pulse": 2, "challenge": 0}},
		{"unknown op", func() { m.StoreError("vacuum") }, 0, map[string]float64{"other": 1}},
	}
	for _, s := range steps {
		s.do()
		if got := testutil.ToFloat64(m.storeUp); got != s.up {
			t.Errorf("%s: store_up = %v, want %v", s.name, got, s.up)
		}
		for op, want := range s.counts {
			if got := testutil.ToFloat64(m.storeErrors.WithLabelValues(op)); got != want {
				t.Errorf("%s: store_errors_total{op=%q} = %v, want %v", s.name, op, got, want)
			}
		}
	}
	var nilM *Metrics
	nilM.StoreError(StoreOpSweep)
	nilM.StoreUp()
}
