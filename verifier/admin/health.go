package admin

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The verifier's own health for the overview: counters read from the
// Prometheus registry the listener serves on /metrics (this replica's),
// and the replicas alive. The page samples it and charts rates between
// samples (pulses/s, p99 verification latency, refused handshakes).

// HealthBucket is one cumulative bucket of the verification histogram.
type HealthBucket struct {
	LE    float64 `json:"le"`
	Count uint64  `json:"count"`
}

// HealthSummary is the body of GET /api/v1/health/summary.
type HealthSummary struct {
	Now time.Time `json:"now"`
	// Pulses is pulse_pulses_total summed; Refused pulse_refused_total.
	Pulses  float64 `json:"pulses"`
	Refused float64 `json:"refused"`
	// Verification is pulse_verification_seconds summed over verdicts:
	// count and cumulative buckets (seconds).
	VerificationCount uint64         `json:"verification_count"`
	Buckets           []HealthBucket `json:"buckets"`
	// Replicas is how many replicas were seen within the last minute (0
	// when the backend does not report replicas).
	Replicas int `json:"replicas"`
}

func (h *handler) healthRoutes(reg *prometheus.Registry) {
	h.mux.HandleFunc("GET /api/v1/health/summary", func(w http.ResponseWriter, r *http.Request) { h.healthSummary(w, r, reg) })
}

func (h *handler) healthSummary(w http.ResponseWriter, r *http.Request, reg *prometheus.Registry) {
	out := HealthSummary{Now: h.now().UTC(), Buckets: []HealthBucket{}}
	if reg != nil {
		mfs, err := reg.Gather()
		if err != nil {
			h.backendError(w, r, err)
			return
		}
		buckets := map[float64]uint64{}
		for _, mf := range mfs {
			switch mf.GetName() {
			case "pulse_pulses_total":
				out.Pulses = sumCounters(mf)
			case "pulse_refused_total":
				out.Refused = sumCounters(mf)
			case "pulse_verification_seconds":
				for _, m := range mf.GetMetric() {
					hg := m.GetHistogram()
					out.VerificationCount += hg.GetSampleCount()
					for _, b := range hg.GetBucket() {
						buckets[b.GetUpperBound()] += b.GetCumulativeCount()
					}
				}
			}
		}
		for le, n := range buckets {
			out.Buckets = append(out.Buckets, HealthBucket{LE: le, Count: n})
		}
		sort.Slice(out.Buckets, func(i, j int) bool { return out.Buckets[i].LE < out.Buckets[j].LE })
	}
	if rl, ok := h.backend.(ReplicaLister); ok {
		if list, err := rl.Replicas(r.Context()); err == nil && list != nil {
			out.Replicas = len(list.Replicas)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func sumCounters(mf *dto.MetricFamily) float64 {
	var s float64
	for _, m := range mf.GetMetric() {
		s += m.GetCounter().GetValue()
	}
	return s
}

// HealthSummary returns the serving replica's health counters.
func (c *Client) HealthSummary(ctx context.Context) (*HealthSummary, error) {
	var s HealthSummary
	if err := c.do(ctx, http.MethodGet, "/api/v1/health/summary", nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
