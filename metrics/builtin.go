package metrics

import "github.com/weir-dev/weir/canary/v1alpha1"

// The Envoy statistics the built-in metrics are computed from, as weir's
// sidecars (and Envoy) export them on the client side, per upstream cluster.
const (
	// envoyRequests counts requests per response code class ("2", "5", …).
	envoyRequests = "envoy_cluster_upstream_rq_xx"
	// envoyDurationBucket is the request-duration histogram, in milliseconds.
	envoyDurationBucket = "envoy_cluster_upstream_rq_time_bucket"
)

// builtinQueries are the PromQL templates of the built-in metrics, rendered
// like custom queries with the extra variable {{ cluster }}: the canary's
// Envoy cluster, <namespace>/<service>-canary:<port>.
//
// The ratios add "or vector(0)" to the numerator so that a canary whose
// requests all failed scores 0% success (100% errors) instead of no data,
// while zero requests in the window stay 0/0 = NaN, and a cluster without
// any series stays empty: both are NoData.
var builtinQueries = map[string]string{
	v1alpha1.MetricRequestSuccessRate: ratio(`envoy_response_code_class!="5"`),
	v1alpha1.MetricErrorRate:          ratio(`envoy_response_code_class="5"`),
	v1alpha1.MetricRequestDuration: `histogram_quantile(0.99, sum by (le) (rate(` + envoyDurationBucket +
		`{envoy_cluster_name="{{ cluster }}"}[{{ interval }}])))`,
}

// ratio is the percentage of the canary's requests whose response code class
// matches the given label matcher.
func ratio(classMatcher string) string {
	return `100 * (sum(rate(` + envoyRequests + `{envoy_cluster_name="{{ cluster }}",` + classMatcher + `}[{{ interval }}])) or vector(0))` +
		` / sum(rate(` + envoyRequests + `{envoy_cluster_name="{{ cluster }}"}[{{ interval }}]))`
}

// IsBuiltin reports whether name is a built-in metric.
func IsBuiltin(name string) bool {
	_, ok := builtinQueries[name]
	return ok
}
