package notifier

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Results of weir_notifications_total.
const (
	// ResultSent: the sink accepted the message.
	ResultSent = "sent"
	// ResultRetried: an attempt failed and will be retried.
	ResultRetried = "retried"
	// ResultFailed: the message was given up, rejected by the sink or out
	// of attempts.
	ResultFailed = "failed"
	// ResultDropped: the provider's queue was full and the oldest message
	// made room for a new one.
	ResultDropped = "dropped"
	// ResultInvalid: an alert refers to a provider or Secret that is
	// missing or unusable; nothing could be sent to it.
	ResultInvalid = "invalid"
)

// notificationsTotal counts notifications by provider and result.
var notificationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "weir_notifications_total",
	Help: "Notifications by provider (namespace/name of the AlertProvider, or default) and result (sent, retried, failed, dropped, invalid).",
}, []string{"provider", "result"})

func init() {
	metrics.Registry.MustRegister(notificationsTotal)
}
