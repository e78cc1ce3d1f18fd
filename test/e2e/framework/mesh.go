package framework

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// SetAppConfig changes the faults of one demo-app pod at run time through
// its admin endpoint, e.g. `{"errorRate":1}`.
func SetAppConfig(ctx context.Context, podIP, config string) error {
	url := "http://" + net.JoinHostPort(podIP, strconv.Itoa(AppPort)) + "/admin/config"
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(config))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("failed to configure %s: %w", podIP, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("configuring %s answered %s: %s", podIP, resp.Status, body)
	}
	return nil
}

// ProxyStat reads one sample of a sidecar's /stats/prometheus: the value of
// metric whose labels include every label in want ("" when absent).
func ProxyStat(ctx context.Context, podIP, metric string, want map[string]string) (float64, bool, error) {
	url := "http://" + net.JoinHostPort(podIP, strconv.Itoa(ProxyAdminPort)) + "/stats/prometheus"
	return scrape(ctx, url, metric, want)
}

// WaitEjected waits until the sidecar at podIP reports an active ejection
// in cluster, and returns when it saw it.
func WaitEjected(ctx context.Context, podIP, cluster string, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var at time.Time
	err := poll(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		v, ok, err := ProxyStat(ctx, podIP, "envoy_cluster_outlier_detection_ejections_active", map[string]string{"envoy_cluster_name": cluster})
		if err == nil && ok && v >= 1 {
			at = time.Now()
			return true, nil
		}
		return false, nil
	})
	return at, err
}

// WaitConnectedProxies waits until the controller reports at least n
// connected sidecars.
func (e *Env) WaitConnectedProxies(ctx context.Context, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last float64
	err := poll(ctx, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		v, _, err := scrape(ctx, "http://"+e.MetricsAddress+"/metrics", "weir_xds_connected_proxies", nil)
		last = v
		return err == nil && v >= float64(n), nil
	})
	if err != nil {
		return fmt.Errorf("want %d connected sidecars, the controller reports %v: %w", n, last, err)
	}
	return nil
}

// scrape reads a Prometheus text endpoint and sums the samples of metric
// (a counter or gauge) whose labels include want.
func scrape(ctx context.Context, url, metric string, want map[string]string) (float64, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, false, fmt.Errorf("failed to parse %s: %w", url, err)
	}
	mf, ok := families[metric]
	if !ok {
		return 0, false, nil
	}
	var sum float64
	found := false
	for _, m := range mf.GetMetric() {
		if !labelsMatch(m.GetLabel(), want) {
			continue
		}
		switch {
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		default:
			continue
		}
		found = true
	}
	return sum, found, nil
}

func labelsMatch(labels []*dto.LabelPair, want map[string]string) bool {
	n := 0
	for _, l := range labels {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}
