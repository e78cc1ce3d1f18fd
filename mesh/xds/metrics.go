package xds

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the xDS server's Prometheus metrics.
type Metrics struct {
	// ConnectedProxies is the number of open xDS streams.
	ConnectedProxies prometheus.Gauge
	// Pushes counts responses sent, by resource type.
	Pushes *prometheus.CounterVec
	// PushDuration is how long handing a new snapshot to every open watch took.
	PushDuration prometheus.Histogram
	// BuildDuration is how long reading, translating, validating and
	// hashing a snapshot took.
	BuildDuration prometheus.Histogram
	// Convergence is the time from publishing a route version until every
	// sidecar subscribed to routes acknowledged it.
	Convergence prometheus.Histogram
	// NACKs counts rejected responses, by resource type.
	NACKs *prometheus.CounterVec
	// Rejected counts translations that failed validation and were not
	// published.
	Rejected prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg, when reg is
// not nil (the controller passes controller-runtime's metrics.Registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		ConnectedProxies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weir_xds_connected_proxies", Help: "Open xDS streams from sidecars (one ADS stream per sidecar).",
		}),
		Pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_xds_pushes_total", Help: "xDS responses sent to sidecars, by resource type.",
		}, []string{"type"}),
		PushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weir_xds_push_duration_seconds", Help: "Time to hand a new snapshot to every open xDS watch.", Buckets: buckets,
		}),
		BuildDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weir_xds_snapshot_build_duration_seconds", Help: "Time to read, translate, validate and hash a snapshot.", Buckets: buckets,
		}),
		Convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weir_xds_route_convergence_seconds", Help: "Time from publishing a route version until every sidecar acknowledged it.", Buckets: buckets,
		}),
		NACKs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_xds_nacks_total", Help: "xDS responses rejected by sidecars, by resource type.",
		}, []string{"type"}),
		Rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weir_xds_rejected_snapshots_total", Help: "Translations that failed validation and were not published.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.ConnectedProxies, m.Pushes, m.PushDuration, m.BuildDuration, m.Convergence, m.NACKs, m.Rejected)
	}
	return m
}
