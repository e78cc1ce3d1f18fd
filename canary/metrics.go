package canary

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/weir-dev/weir/canary/v1alpha1"
)

// The controller's own metrics, served on the manager's metrics endpoint.
var (
	statusGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "weir_canary_status",
		Help: "State of a Canary: 0 a rollout is in flight (Initializing, Waiting, Progressing, Promoting, Finalising), 1 the primary serves all traffic (Initialized, Succeeded), 2 the last rollout was rolled back (Failed).",
	}, []string{"namespace", "name"})
	weightGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "weir_canary_weight",
		Help: "Percentage of the traffic sent to the canary.",
	}, []string{"namespace", "name"})
	failedChecksGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "weir_canary_failed_checks",
		Help: "Failed checks of the current analysis.",
	}, []string{"namespace", "name"})
	durationHistogram = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "weir_canary_duration_seconds",
		Help:    "Time from the detection of a new revision to its promotion or rollback.",
		Buckets: []float64{10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400},
	}, []string{"namespace", "name"})
	resultsCounter = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weir_canary_results_total",
		Help: "Analyses that ended, by result: succeeded (promoted) or failed (rolled back).",
	}, []string{"namespace", "name", "result"})
)

func init() {
	metrics.Registry.MustRegister(statusGauge, weightGauge, failedChecksGauge, durationHistogram, resultsCounter)
}

// statusValue maps a phase to the value of weir_canary_status.
func statusValue(p v1alpha1.CanaryPhase) float64 {
	switch p {
	case v1alpha1.PhaseInitialized, v1alpha1.PhaseSucceeded:
		return 1
	case v1alpha1.PhaseFailed:
		return 2
	default:
		return 0
	}
}

// recordMetrics publishes a Canary's status; result is set when an
// analysis ended in this reconcile.
func recordMetrics(c *v1alpha1.Canary, result string, now time.Time) {
	ns, name := c.Namespace, c.Name
	statusGauge.WithLabelValues(ns, name).Set(statusValue(c.Status.Phase))
	weightGauge.WithLabelValues(ns, name).Set(float64(c.Status.CanaryWeight))
	failedChecksGauge.WithLabelValues(ns, name).Set(float64(c.Status.FailedChecks))
	if result == "" {
		return
	}
	resultsCounter.WithLabelValues(ns, name, result).Inc()
	if start := c.Status.AnalysisStartTime; start != nil {
		durationHistogram.WithLabelValues(ns, name).Observe(now.Sub(start.Time).Seconds())
	}
}

// forgetMetrics drops the series of a deleted Canary.
func forgetMetrics(namespace, name string) {
	labels := prometheus.Labels{"namespace": namespace, "name": name}
	statusGauge.DeletePartialMatch(labels)
	weightGauge.DeletePartialMatch(labels)
	failedChecksGauge.DeletePartialMatch(labels)
	durationHistogram.DeletePartialMatch(labels)
	resultsCounter.DeletePartialMatch(labels)
}
