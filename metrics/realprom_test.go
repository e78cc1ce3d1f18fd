package metrics

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weir-dev/weir/canary/v1alpha1"
)

// envoyStats serves Envoy-named statistics as weir's sidecars export them.
// Every scrape adds the same requests, so every rate over any window has
// the same proportions:
//   - test/podinfo-canary:9898: 95 2xx, 2 4xx, 3 5xx; 98 take 20ms and 2
//     take 700ms, so success is 97%, errors 3% and p99 is 750ms
//     (interpolated in the 500..1000 bucket);
//   - test/broken-canary:80: 10 5xx, nothing else;
//   - test/idle-canary:80: series that exist but never change.
type envoyStats struct {
	mu       sync.Mutex
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	handler  http.Handler
}

// Envoy's default histogram buckets, in milliseconds.
var envoyBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

func newEnvoyStats() *envoyStats {
	reg := prometheus.NewRegistry()
	s := &envoyStats{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_upstream_rq_xx", Help: "Upstream requests by response code class.",
		}, []string{"envoy_cluster_name", "envoy_response_code_class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "envoy_cluster_upstream_rq_time", Help: "Upstream request time in milliseconds.", Buckets: envoyBuckets,
		}, []string{"envoy_cluster_name"}),
	}
	reg.MustRegister(s.requests, s.duration)
	for _, class := range []string{"2", "4", "5"} {
		s.requests.WithLabelValues("test/idle-canary:80", class)
	}
	s.duration.WithLabelValues("test/idle-canary:80")
	s.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	return s
}

func (s *envoyStats) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	const podinfo = "test/podinfo-canary:9898"
	s.requests.WithLabelValues(podinfo, "2").Add(95)
	s.requests.WithLabelValues(podinfo, "4").Add(2)
	s.requests.WithLabelValues(podinfo, "5").Add(3)
	h := s.duration.WithLabelValues(podinfo)
	for i := range 100 {
		if i < 98 {
			h.Observe(20)
		} else {
			h.Observe(700)
		}
	}
	s.requests.WithLabelValues("test/broken-canary:80", "5").Add(10)
	s.handler.ServeHTTP(w, r)
}

// startPrometheus runs the real Prometheus on a free loopback port, scraping
// target every second, and stops it (its whole process group) in t.Cleanup.
// It returns the server's base URL once the server is ready.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("the prometheus binary is needed (Debian's package, installed by `make tools`): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	err = os.WriteFile(config, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: sidecars
  static_configs:
  - targets: [%q]
`, target)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "prometheus.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(bin,
		"--config.file="+config,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=info",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("prometheus log:\n%s", b)
			}
		}
	})

	base := "http://" + addr
	hc := &http.Client{Transport: &http.Transport{}, Timeout: time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	for deadline := time.Now().Add(30 * time.Second); ; {
		select {
		case <-exited:
			t.Fatalf("prometheus exited before it was ready")
		default:
		}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/-/ready", nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus at %s not ready after 30s", base)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestRealPrometheus(t *testing.T) {
	stats := httptest.NewServer(newEnvoyStats())
	t.Cleanup(stats.Close)
	base := startPrometheus(t, strings.TrimPrefix(stats.URL, "http://"))
	p := newChecker(t, Options{Address: base, Timeout: 5 * time.Second})

	// Wait until the 10s window holds enough scrapes for rate().
	const enough = `count_over_time(envoy_cluster_upstream_rq_xx{envoy_cluster_name="test/podinfo-canary:9898",envoy_response_code_class="2"}[10s])`
	for deadline := time.Now().Add(60 * time.Second); ; {
		n, err := p.Query(t.Context(), enough)
		if err == nil && n >= 5 {
			break
		}
		if err != nil && !errors.Is(err, ErrNoData) {
			t.Fatalf("waiting for data: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no data after 60s: %v samples, err %v", n, err)
		}
		time.Sleep(500 * time.Millisecond)
	}

	podinfo := []func(*v1alpha1.Canary){withAnalysisInterval(10 * time.Second)}
	tests := []struct {
		name   string
		canary []func(*v1alpha1.Canary)
		metric v1alpha1.CanaryMetric
		want   float64 // ignored unless reason is "" or OutOfRange
		reason string
	}{
		{"success rate", podinfo, metric("request-success-rate", minimum(99)), 97, ReasonOutOfRange},
		{"success rate passes a lower bound", podinfo, metric("request-success-rate", minimum(95)), 97, ""},
		{"error rate", podinfo, metric("error-rate", maximum(5)), 3, ""},
		{"p99", podinfo, metric("request-duration", maximum(500)), 750, ReasonOutOfRange},
		{"p99 over a 20s metric window", podinfo, metric("request-duration", maximum(1000), window(20*time.Second)), 750, ""},
		{"custom query with all variables", podinfo, metric("requests", minimum(1), query(
			`sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="{{ namespace }}/{{ service }}-canary:9898",job!="{{ target }}"}[{{ interval }}]))`)), 0, ""},
		{"all requests failed: 0% success, not no data", []func(*v1alpha1.Canary){withTarget("test", "broken", 80), withAnalysisInterval(10 * time.Second)},
			metric("request-success-rate", minimum(99)), 0, ReasonOutOfRange},
		{"all requests failed: 100% errors", []func(*v1alpha1.Canary){withTarget("test", "broken", 80), withAnalysisInterval(10 * time.Second)},
			metric("error-rate", maximum(1)), 100, ReasonOutOfRange},
		{"zero requests in the window: success rate", []func(*v1alpha1.Canary){withTarget("test", "idle", 80), withAnalysisInterval(10 * time.Second)},
			metric("request-success-rate", minimum(99)), 0, ReasonNoData},
		{"zero requests in the window: p99", []func(*v1alpha1.Canary){withTarget("test", "idle", 80), withAnalysisInterval(10 * time.Second)},
			metric("request-duration", maximum(500)), 0, ReasonNoData},
		{"unknown cluster", []func(*v1alpha1.Canary){withTarget("test", "absent", 80), withAnalysisInterval(10 * time.Second)},
			metric("error-rate", maximum(1)), 0, ReasonNoData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := canary(append(tt.canary, withMetrics(tt.metric))...)
			r := p.Evaluate(t.Context(), c)[0]
			t.Logf("%s -> %+v (err %v)", r.Query, r.Verdict, r.Err)
			if r.Verdict.Reason != tt.reason || r.Verdict.Passed != (tt.reason == "") {
				t.Fatalf("verdict %+v (err %v), want reason %q", r.Verdict, r.Err, tt.reason)
			}
			if tt.reason == ReasonNoData || tt.name == "custom query with all variables" {
				return
			}
			v, err := p.Query(t.Context(), r.Query)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(v-tt.want) > 1e-6 {
				t.Errorf("value = %v, want %v", v, tt.want)
			}
			if r.Verdict.Value != formatValue(tt.want) {
				t.Errorf("verdict value = %q, want %q", r.Verdict.Value, formatValue(tt.want))
			}
		})
	}
}
