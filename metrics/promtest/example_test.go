package promtest_test

import (
	"context"
	"fmt"

	"github.com/weir-dev/weir/metrics"
	"github.com/weir-dev/weir/metrics/promtest"
)

func Example() {
	prom := promtest.NewServer() // in a test: promtest.New(t), closed by t.Cleanup
	defer prom.Close()
	prom.Set("envoy_cluster_upstream_rq_xx", promtest.Value(99.5))
	prom.Set("envoy_cluster_upstream_rq_time_bucket", promtest.NaN())

	v, err := metrics.Query(context.Background(), prom.URL(), `sum(rate(envoy_cluster_upstream_rq_xx[1m]))`)
	fmt.Println(v, err)
	_, err = metrics.Query(context.Background(), prom.URL(), `histogram_quantile(0.99, envoy_cluster_upstream_rq_time_bucket)`)
	fmt.Println(err)
	fmt.Println(prom.Count("envoy_cluster"))
	// Output:
	// 99.5 <nil>
	// no data: the query returned NaN (no requests in the window?)
	// 2
}
