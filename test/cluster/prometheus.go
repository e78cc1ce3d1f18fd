package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// prometheusConfig scrapes, through the pod discovery of discovery.go,, every second, the pods annotated
// prometheus.io/scrape: "true", on their pod IP and prometheus.io/port, at
// prometheus.io/path (default /metrics), labelled namespace, pod and app.
const prometheusConfig = `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: kubernetes-pods
  http_sd_configs:
  - url: %q
    refresh_interval: 1s
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
    action: keep
    regex: "true"
  - source_labels: [__meta_kubernetes_pod_phase]
    action: keep
    regex: Running
  - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
    action: replace
    regex: (.+);([0-9]+)
    replacement: $1:$2
    target_label: __address__
  - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
    action: replace
    regex: (.+)
    target_label: __metrics_path__
  - source_labels: [__meta_kubernetes_namespace]
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    target_label: pod
  - source_labels: [__meta_kubernetes_pod_label_app]
    target_label: app
`

// startPrometheus writes the scrape configuration and starts Prometheus on a
// free loopback port, waiting until it is ready.
func (c *Cluster) startPrometheus(ctx context.Context) error {
	bin := c.opts.PrometheusBin
	if bin == "" {
		bin = "prometheus"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return fmt.Errorf("prometheus not found (run 'make tools'): %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	dir := filepath.Join(c.dir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("failed to create %s: %w", dir, err)
	}
	d, err := startDiscovery(ctx, c.client)
	if err != nil {
		return err
	}
	c.discovery = d
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, fmt.Appendf(nil, prometheusConfig, d.URL()), 0o644); err != nil {
		return fmt.Errorf("failed to write the Prometheus config: %w", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := []string{
		"--config.file=" + config,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=1d",
		"--web.listen-address=" + addr,
		"--web.enable-lifecycle",
		"--log.level=info",
	}
	p, err := c.startChild("prometheus", path, args)
	if err != nil {
		return err
	}
	c.prometheusURL = "http://" + addr
	return waitHealthy(ctx, p, plainClient(), c.prometheusURL+"/-/ready", "")
}
