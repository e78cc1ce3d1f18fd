package load

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names exported by Metrics.
const (
	MetricRequests = "loadgen_requests_total"
	MetricDuration = "loadgen_request_duration_seconds"
)

// Metrics exports results as Prometheus metrics: requests by version and
// code ("0" for no answer, version "" when the answer named none), and a
// latency histogram by version. Use Observe as Config.OnResult.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequests,
			Help: "Completed requests by version answered and status code (0: no answer).",
		}, []string{"version", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricDuration,
			Help:    "Request latency by version answered.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, .75, 1, 2.5, 5, 10},
		}, []string{"version"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("failed to register loadgen metrics: %w", err)
		}
	}
	return m, nil
}

// Observe counts one result.
func (m *Metrics) Observe(r Result) {
	m.requests.WithLabelValues(r.Version, strconv.Itoa(r.Code)).Inc()
	m.duration.WithLabelValues(r.Version).Observe(r.Latency.Seconds())
}
