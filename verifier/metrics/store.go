package metrics

import "github.com/prometheus/client_golang/prometheus"

// StoreOps are the operations pulse_store_errors_total counts, always
// exported (at zero before any error).
var StoreOps = []string{StoreOpSweep, StoreOpChallenge, StoreOpPulse}

// Store operations.
const (
	// StoreOpSweep: the sweeper's reads and writes (every SweepInterval).
	StoreOpSweep = "sweep"
	// StoreOpChallenge: reading the agent's row for a Challenge.
	StoreOpChallenge = "challenge"
	// StoreOpPulse: a pulse's reads or commit; the pulse was refused
	// with Unavailable and nothing of it was recorded.
	StoreOpPulse = "pulse"
)

func newStoreUp() prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "store_up",
		Help: "1 while this replica's store answers (the sweeper reads it every second and writes through it), 0 from a failed store operation until the next sweep that succeeds.",
	})
}

func newStoreErrors() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "store_errors_total",
		Help: "Failed store operations, by operation (pulse: a pulse refused with Unavailable because its store read or commit failed, nothing recorded).",
	}, []string{"op"})
}

func (m *Metrics) initStore() {
	m.storeUp.Set(1)
	for _, op := range StoreOps {
		m.storeErrors.WithLabelValues(op)
	}
}

// StoreError counts one failed store operation and sets store_up to 0. op
// is one of StoreOps (anything else counts as "other").
func (m *Metrics) StoreError(op string) {
	if m == nil {
		return
	}
	known := false
	for _, o := range StoreOps {
		known = known || o == op
	}
	if !known {
		op = "other"
	}
	m.storeErrors.WithLabelValues(op).Inc()
	m.storeUp.Set(0)
}

// StoreUp sets store_up to 1 (a store operation succeeded).
func (m *Metrics) StoreUp() {
	if m == nil {
		return
	}
	m.storeUp.Set(1)
}
