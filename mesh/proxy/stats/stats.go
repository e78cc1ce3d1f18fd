// Package stats exports weir-proxy's counters under Envoy's Prometheus names
// and labels, so the same PromQL works for weir-proxy and Envoy.
package stats

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// rqTimeBuckets are Envoy's default histogram buckets, in milliseconds.
var rqTimeBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

const labelCluster = "envoy_cluster_name"

// Registry holds the metric families and the per-cluster handles.
type Registry struct {
	reg          *prometheus.Registry
	rq           *prometheus.CounterVec
	rqXX         *prometheus.CounterVec
	rqTime       *prometheus.HistogramVec
	rqTotal      *prometheus.CounterVec
	rqRetry      *prometheus.CounterVec
	rqTimeout    *prometheus.CounterVec
	rqOverflow   *prometheus.CounterVec
	cxFail       *prometheus.CounterVec
	noneHealthy  *prometheus.CounterVec
	ejActive     *prometheus.GaugeVec
	ejEnforced   *prometheus.CounterVec
	updateOK     *prometheus.CounterVec
	updateReject *prometheus.CounterVec

	mu       sync.Mutex
	clusters map[string]*Cluster
}

// New returns a registry with every family registered.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry(), clusters: map[string]*Cluster{}}
	counter := func(name string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: name}, append([]string{labelCluster}, labels...))
		r.reg.MustRegister(v)
		return v
	}
	r.rq = counter("envoy_cluster_upstream_rq", "envoy_response_code")
	r.rqXX = counter("envoy_cluster_upstream_rq_xx", "envoy_response_code_class")
	r.rqTotal = counter("envoy_cluster_upstream_rq_total")
	r.rqRetry = counter("envoy_cluster_upstream_rq_retry")
	r.rqTimeout = counter("envoy_cluster_upstream_rq_timeout")
	r.rqOverflow = counter("envoy_cluster_upstream_rq_pending_overflow")
	r.cxFail = counter("envoy_cluster_upstream_cx_connect_fail")
	r.noneHealthy = counter("envoy_cluster_upstream_cx_none_healthy")
	r.ejEnforced = counter("envoy_cluster_outlier_detection_ejections_enforced_total")
	r.rqTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "envoy_cluster_upstream_rq_time", Help: "envoy_cluster_upstream_rq_time", Buckets: rqTimeBuckets}, []string{labelCluster})
	r.ejActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "envoy_cluster_outlier_detection_ejections_active", Help: "envoy_cluster_outlier_detection_ejections_active"}, []string{labelCluster})
	r.updateOK = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_proxy_xds_update_success", Help: "xDS responses accepted"}, []string{"type_url"})
	r.updateReject = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weir_proxy_xds_update_rejected", Help: "xDS responses rejected (NACKed)"}, []string{"type_url"})
	r.reg.MustRegister(r.rqTime, r.ejActive, r.updateOK, r.updateReject)
	return r
}

// Handler serves the registry in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
}

// Gatherer exposes the registry for tests.
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// XDSUpdate counts an accepted or rejected xDS response.
func (r *Registry) XDSUpdate(typeURL string, accepted bool) {
	if accepted {
		r.updateOK.WithLabelValues(typeURL).Inc()
	} else {
		r.updateReject.WithLabelValues(typeURL).Inc()
	}
}

// Cluster returns the handles of one cluster, creating them once.
func (r *Registry) Cluster(name string) *Cluster {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.clusters[name]; ok {
		return c
	}
	c := &Cluster{
		r:           r,
		name:        name,
		rqTime:      r.rqTime.WithLabelValues(name),
		Total:       r.rqTotal.WithLabelValues(name),
		Retry:       r.rqRetry.WithLabelValues(name),
		Timeout:     r.rqTimeout.WithLabelValues(name),
		Overflow:    r.rqOverflow.WithLabelValues(name),
		ConnectFail: r.cxFail.WithLabelValues(name),
		NoneHealthy: r.noneHealthy.WithLabelValues(name),
		Ejections:   r.ejActive.WithLabelValues(name),
		Enforced:    r.ejEnforced.WithLabelValues(name),
	}
	for i := range c.xx {
		c.xx[i] = r.rqXX.WithLabelValues(name, strconv.Itoa(i+1))
	}
	r.clusters[name] = c
	return c
}

// Remove drops a cluster's series.
func (r *Registry) Remove(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.clusters, name)
	for _, v := range []*prometheus.CounterVec{r.rqTotal, r.rqRetry, r.rqTimeout, r.rqOverflow, r.cxFail, r.noneHealthy, r.ejEnforced} {
		v.DeleteLabelValues(name)
	}
	r.rq.DeletePartialMatch(prometheus.Labels{labelCluster: name})
	r.rqXX.DeletePartialMatch(prometheus.Labels{labelCluster: name})
	r.rqTime.DeleteLabelValues(name)
	r.ejActive.DeleteLabelValues(name)
}

type counterBox struct{ c prometheus.Counter }

// Cluster holds one cluster's metric handles, resolved once so that the
// request path does no label lookups.
type Cluster struct {
	r      *Registry
	name   string
	codes  [600]atomic.Pointer[counterBox]
	xx     [5]prometheus.Counter
	rqTime prometheus.Observer

	Total, Retry, Timeout, Overflow, ConnectFail, NoneHealthy, Enforced prometheus.Counter
	Ejections                                                           prometheus.Gauge
}

// Response charges one upstream response code (or local reply standing in
// for one, such as a 503 or 504) and, when elapsed ≥ 0, its time.
func (c *Cluster) Response(code int, elapsed time.Duration) {
	if code < 100 || code >= 600 {
		code = 599
	}
	b := c.codes[code].Load()
	if b == nil {
		b = &counterBox{c.r.rq.WithLabelValues(c.name, strconv.Itoa(code))}
		c.codes[code].Store(b)
	}
	b.c.Inc()
	c.xx[code/100-1].Inc()
	if elapsed >= 0 {
		c.rqTime.Observe(float64(elapsed) / float64(time.Millisecond))
	}
}
