package app

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names the demo app exports on /metrics.
const (
	MetricRequests  = "demo_app_requests_total"
	MetricDuration  = "demo_app_request_duration_seconds"
	MetricInfo      = "demo_app_version_info"
	MetricErrorRate = "demo_app_error_rate"
	MetricLatency   = "demo_app_latency_seconds"
	MetricReady     = "demo_app_ready"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry, version string, behaviour func() Behaviour) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricRequests,
			Help: "Requests answered, by handler and status code.",
		}, []string{"handler", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricDuration,
			Help:    "Time to answer a request, added latency included, by handler.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, .75, 1, 2.5, 5, 10},
		}, []string{"handler"}),
	}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricInfo,
		Help: "Always 1; the version label is the app's VERSION.",
	}, []string{"version"})
	info.WithLabelValues(version).Set(1)
	reg.MustRegister(m.requests, m.duration, info,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricErrorRate, Help: "Fraction of requests to / answered 500 on purpose."},
			func() float64 { return behaviour().ErrorRate }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricLatency, Help: "Latency added to every request to /."},
			func() float64 { return behaviour().Latency.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricReady, Help: "1 when /readyz answers 200."},
			func() float64 {
				if behaviour().Ready {
					return 1
				}
				return 0
			}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) instrument(name string, h http.Handler) http.Handler {
	labels := prometheus.Labels{"handler": name}
	return promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(labels),
		promhttp.InstrumentHandlerDuration(m.duration.MustCurryWith(labels), h))
}
