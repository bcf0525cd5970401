package loadgen

import (
	"fmt"
	"math"
	"time"
)

// Histogram records durations in log-spaced buckets 1% wide, from 1µs to
// about 100s: bounded memory, percentiles within 1%.
type Histogram struct {
	counts []uint64
	n      uint64
	sum    time.Duration
	max    time.Duration
}

const (
	histGrowth  = 1.01
	histBuckets = 1900 // 1.01^1900 µs ≈ 1.6e8 µs
)

var logGrowth = math.Log(histGrowth)

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us < 1 {
		return 0
	}
	i := int(math.Log(us) / logGrowth)
	if i >= histBuckets {
		i = histBuckets - 1
	}
	return i
}

// Record adds one observation.
func (h *Histogram) Record(d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint64, histBuckets)
	}
	h.counts[bucketOf(d)]++
	h.n++
	h.sum += d
	if d > h.max {
		h.max = d
	}
}

// Merge adds o's observations to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, histBuckets)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

// Count is the number of observations.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest observation.
func (h *Histogram) Max() time.Duration { return h.max }

// Mean is the average observation.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// Quantile returns the q-quantile (0 < q ≤ 1): the geometric middle of the
// bucket holding it, never more than the largest observation.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			us := math.Pow(histGrowth, float64(i)+0.5)
			d := time.Duration(us * float64(time.Microsecond))
			if d > h.max {
				d = h.max
			}
			return d
		}
	}
	return h.max
}

// LatencySummary is a histogram's digest in milliseconds.
type LatencySummary struct {
	Count  uint64  `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P95Ms  float64 `json:"p95_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*1000) / 1000 }

// Summary digests the histogram.
func (h *Histogram) Summary() LatencySummary {
	return LatencySummary{Count: h.n, MeanMs: ms(h.Mean()), P50Ms: ms(h.Quantile(0.50)), P95Ms: ms(h.Quantile(0.95)),
		P99Ms: ms(h.Quantile(0.99)), MaxMs: ms(h.max)}
}

// HistData is a Histogram as JSON carries it: the non-empty buckets, so
// that summaries written by several processes can be merged exactly
// (MergeSummaries).
type HistData struct {
	// Buckets are [bucket index, count] pairs in index order.
	Buckets [][2]uint64 `json:"b"`
	SumNs   int64       `json:"sum_ns"`
	MaxNs   int64       `json:"max_ns"`
}

// Data exports the histogram.
func (h *Histogram) Data() HistData {
	d := HistData{SumNs: int64(h.sum), MaxNs: int64(h.max)}
	for i, c := range h.counts {
		if c > 0 {
			d.Buckets = append(d.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return d
}

// Histogram rebuilds the histogram; it refuses a bucket index out of range.
func (d HistData) Histogram() (Histogram, error) {
	var h Histogram
	if len(d.Buckets) == 0 {
		return h, nil
	}
	h.counts = make([]uint64, histBuckets)
	for _, b := range d.Buckets {
		if b[0] >= histBuckets {
			return Histogram{}, fmt.Errorf("loadgen: histogram bucket %d out of range", b[0])
		}
		h.counts[b[0]] += b[1]
		h.n += b[1]
	}
	h.sum, h.max = time.Duration(d.SumNs), time.Duration(d.MaxNs)
	return h, nil
}
