package metrics

import (
	"context"
	"errors"
	"flag"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/metrics/promtest"
)

// canary builds a Canary test/podinfo on port 9898 with a 30s interval.
func canary(opts ...func(*v1alpha1.Canary)) *v1alpha1.Canary {
	c := &v1alpha1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "test"},
		Spec: v1alpha1.CanarySpec{
			TargetRef: v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			Service:   v1alpha1.CanaryService{Port: 9898},
			Analysis:  v1alpha1.CanaryAnalysis{Interval: &metav1.Duration{Duration: 30 * time.Second}},
		},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func withMetrics(ms ...v1alpha1.CanaryMetric) func(*v1alpha1.Canary) {
	return func(c *v1alpha1.Canary) { c.Spec.Analysis.Metrics = append(c.Spec.Analysis.Metrics, ms...) }
}

func withAnalysisInterval(d time.Duration) func(*v1alpha1.Canary) {
	return func(c *v1alpha1.Canary) { c.Spec.Analysis.Interval = &metav1.Duration{Duration: d} }
}

func withTarget(ns, name string, port int32) func(*v1alpha1.Canary) {
	return func(c *v1alpha1.Canary) {
		c.Namespace, c.Spec.TargetRef.Name, c.Spec.Service.Port = ns, name, port
	}
}

func withServiceName(name string) func(*v1alpha1.Canary) {
	return func(c *v1alpha1.Canary) { c.Spec.Service.Name = name }
}

// metric builds a CanaryMetric.
func metric(name string, opts ...func(*v1alpha1.CanaryMetric)) v1alpha1.CanaryMetric {
	m := v1alpha1.CanaryMetric{Name: name}
	for _, o := range opts {
		o(&m)
	}
	return m
}

func minimum(v float64) func(*v1alpha1.CanaryMetric) {
	return func(m *v1alpha1.CanaryMetric) { m.ThresholdRange.Min = &v }
}

func maximum(v float64) func(*v1alpha1.CanaryMetric) {
	return func(m *v1alpha1.CanaryMetric) { m.ThresholdRange.Max = &v }
}

func window(d time.Duration) func(*v1alpha1.CanaryMetric) {
	return func(m *v1alpha1.CanaryMetric) { m.Interval = &metav1.Duration{Duration: d} }
}

func query(q string) func(*v1alpha1.CanaryMetric) {
	return func(m *v1alpha1.CanaryMetric) { m.Query = q }
}

func TestBuildQuery(t *testing.T) {
	tests := []struct {
		name   string
		canary *v1alpha1.Canary
		want   string
	}{
		{
			name:   "request-success-rate over its own 1m window",
			canary: canary(withMetrics(metric("request-success-rate", minimum(99), window(time.Minute)))),
			want: `100 * (sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="test/podinfo-canary:9898",envoy_response_code_class!="5"}[1m])) or vector(0))` +
				` / sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="test/podinfo-canary:9898"}[1m]))`,
		},
		{
			name:   "error-rate over the analysis interval",
			canary: canary(withTarget("shop", "cart", 8080), withMetrics(metric("error-rate", maximum(1)))),
			want: `100 * (sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="shop/cart-canary:8080",envoy_response_code_class="5"}[30s])) or vector(0))` +
				` / sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="shop/cart-canary:8080"}[30s]))`,
		},
		{
			name:   "request-duration over 1500ms",
			canary: canary(withMetrics(metric("request-duration", maximum(500), window(1500*time.Millisecond)))),
			want:   `histogram_quantile(0.99, sum by (le) (rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="test/podinfo-canary:9898"}[1500ms])))`,
		},
		{
			name:   "request-duration over an analysis interval of 2h",
			canary: canary(withAnalysisInterval(2*time.Hour), withMetrics(metric("request-duration", maximum(500)))),
			want:   `histogram_quantile(0.99, sum by (le) (rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="test/podinfo-canary:9898"}[2h])))`,
		},
		{
			name: "custom query with all four variables",
			canary: canary(withAnalysisInterval(time.Minute), withMetrics(metric("queue-depth", maximum(2),
				query(`sum(rate(my_errors_total{namespace="{{ namespace }}",app="{{target}}",svc="{{   service }}"}[{{interval   }}]))`)))),
			want: `sum(rate(my_errors_total{namespace="test",app="podinfo",svc="podinfo"}[1m]))`,
		},
		{
			name:   "service.name names the canary's cluster",
			canary: canary(withServiceName("frontend"), withMetrics(metric("error-rate", maximum(1)))),
			want: `100 * (sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="test/frontend-canary:9898",envoy_response_code_class="5"}[30s])) or vector(0))` +
				` / sum(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name="test/frontend-canary:9898"}[30s]))`,
		},
		{
			name: "service and target differ when service.name is set",
			canary: canary(withServiceName("frontend"), withMetrics(metric("m", maximum(1),
				query(`x{svc="{{ service }}-canary",deploy="{{ target }}"}`)))),
			want: `x{svc="frontend-canary",deploy="podinfo"}`,
		},
		{
			name:   "a query overrides a built-in name",
			canary: canary(withMetrics(metric("request-duration", maximum(2), query(`max(x{ns="{{namespace}}"})`)))),
			want:   `max(x{ns="test"})`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BuildQuery(tt.canary, &tt.canary.Spec.Analysis.Metrics[0])
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("query:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestBuildQueryErrors(t *testing.T) {
	tests := []struct {
		name    string
		metric  v1alpha1.CanaryMetric
		wantErr string
	}{
		{"unknown variable", metric("m", maximum(1), query(`up{job="{{ job }}"}`)), "unknown variable {{ job }}"},
		{"cluster is for built-ins only", metric("m", maximum(1), query(`up{c="{{ cluster }}"}`)), "unknown variable {{ cluster }}"},
		{"empty variable", metric("m", maximum(1), query(`up{c="{{}}"}`)), "unknown variable {{  }}"},
		{"unclosed braces", metric("m", maximum(1), query(`up{c="{{ target"}`)), "unclosed {{ at offset 6"},
		{"not built-in and no query", metric("latency", maximum(1)), `metric "latency" is not built-in`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := canary(withMetrics(tt.metric))
			_, err := BuildQuery(c, &c.Spec.Analysis.Metrics[0])
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestPromDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{time.Minute, "1m"},
		{30 * time.Second, "30s"},
		{90 * time.Second, "90s"},
		{1500 * time.Millisecond, "1500ms"},
		{2 * time.Hour, "2h"},
		{90 * time.Minute, "90m"},
		{1500 * time.Microsecond, "2ms"},
		{time.Microsecond, "1ms"},
		{0, "1ms"},
	}
	for _, tt := range tests {
		if got := promDuration(tt.in); got != tt.want {
			t.Errorf("promDuration(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormat(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	values := map[float64]string{99.5: "99.5", 750: "750", 99.99999999: "100", 0.000123456789: "0.000123457", 1234567: "1234570", -2: "-2", math.NaN(): "NaN", math.Inf(1): "+Inf"}
	for v, want := range values {
		if got := formatValue(v); got != want {
			t.Errorf("formatValue(%v) = %q, want %q", v, got, want)
		}
	}
	bounds := []struct {
		r    v1alpha1.ThresholdRange
		want string
	}{
		{v1alpha1.ThresholdRange{Min: f(99)}, ">= 99"},
		{v1alpha1.ThresholdRange{Max: f(500)}, "<= 500"},
		{v1alpha1.ThresholdRange{Min: f(1), Max: f(5)}, "1 .. 5"},
		{v1alpha1.ThresholdRange{Min: f(0.5)}, ">= 0.5"},
	}
	for _, tt := range bounds {
		if got := formatBound(tt.r); got != tt.want {
			t.Errorf("formatBound = %q, want %q", got, tt.want)
		}
	}
	long := errors.New(strings.Repeat("é", 400))
	if got := verdictMessage(long); len(got) > maxMessage || !strings.HasSuffix(got, "é…") {
		t.Errorf("verdictMessage of %d bytes = %d bytes ending %q, want at most %d ending in é…", len(long.Error()), len(got), got[len(got)-8:], maxMessage)
	}
}

// ignoreMessage leaves a verdict's message, the text of Result.Err, to the
// checks of the error.
var ignoreMessage = cmpopts.IgnoreFields(v1alpha1.MetricVerdict{}, "Message")

// newChecker returns a Prometheus for the promtest server.
func newChecker(t *testing.T, o Options) *Prometheus {
	t.Helper()
	p, err := NewPrometheus(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	return p
}

func TestCheck(t *testing.T) {
	successRate := metric("request-success-rate", minimum(99))
	errorRate := metric("error-rate", maximum(1))
	duration := metric("request-duration", maximum(500))
	custom := metric("queue-depth", minimum(1), maximum(5), query(`sum(queue_depth{app="{{ target }}"})`))
	twoSeries := promtest.Vector(
		promtest.Sample{Labels: map[string]string{"pod": "a"}, Value: 1},
		promtest.Sample{Labels: map[string]string{"pod": "b"}, Value: 2})

	tests := []struct {
		name      string
		metric    v1alpha1.CanaryMetric
		answer    promtest.Answer
		want      v1alpha1.MetricVerdict
		wantErr   string // in Result.Err
		wantQuery string // substring of the query sent
	}{
		{"success rate above min", successRate, promtest.Value(99.5),
			v1alpha1.MetricVerdict{Metric: "request-success-rate", Value: "99.5", Bound: ">= 99", Passed: true}, "", `envoy_response_code_class!="5"`},
		{"success rate at min passes", successRate, promtest.Value(99),
			v1alpha1.MetricVerdict{Metric: "request-success-rate", Value: "99", Bound: ">= 99", Passed: true}, "", ""},
		{"success rate below min", successRate, promtest.Value(97),
			v1alpha1.MetricVerdict{Metric: "request-success-rate", Value: "97", Bound: ">= 99", Reason: ReasonOutOfRange}, "", ""},
		{"success rate zero (all 5xx)", successRate, promtest.Value(0),
			v1alpha1.MetricVerdict{Metric: "request-success-rate", Value: "0", Bound: ">= 99", Reason: ReasonOutOfRange}, "", ""},
		{"error rate below max", errorRate, promtest.Value(0.5),
			v1alpha1.MetricVerdict{Metric: "error-rate", Value: "0.5", Bound: "<= 1", Passed: true}, "", `envoy_response_code_class="5"`},
		{"error rate above max", errorRate, promtest.Value(3),
			v1alpha1.MetricVerdict{Metric: "error-rate", Value: "3", Bound: "<= 1", Reason: ReasonOutOfRange}, "", ""},
		{"p99 below max", duration, promtest.Value(120),
			v1alpha1.MetricVerdict{Metric: "request-duration", Value: "120", Bound: "<= 500", Passed: true}, "", "histogram_quantile(0.99"},
		{"p99 above max", duration, promtest.Value(750),
			v1alpha1.MetricVerdict{Metric: "request-duration", Value: "750", Bound: "<= 500", Reason: ReasonOutOfRange}, "", ""},
		{"custom in range", custom, promtest.Value(3),
			v1alpha1.MetricVerdict{Metric: "queue-depth", Value: "3", Bound: "1 .. 5", Passed: true}, "", `sum(queue_depth{app="podinfo"})`},
		{"custom below range", custom, promtest.Value(0.5),
			v1alpha1.MetricVerdict{Metric: "queue-depth", Value: "0.5", Bound: "1 .. 5", Reason: ReasonOutOfRange}, "", ""},
		{"custom above range", custom, promtest.Value(6),
			v1alpha1.MetricVerdict{Metric: "queue-depth", Value: "6", Bound: "1 .. 5", Reason: ReasonOutOfRange}, "", ""},
		{"scalar result", custom, promtest.Scalar(2),
			v1alpha1.MetricVerdict{Metric: "queue-depth", Value: "2", Bound: "1 .. 5", Passed: true}, "", ""},
		{"no data", successRate, promtest.Empty(),
			v1alpha1.MetricVerdict{Metric: "request-success-rate", Bound: ">= 99", Reason: ReasonNoData}, "no series", ""},
		{"NaN (zero requests)", successRate, promtest.NaN(),
			v1alpha1.MetricVerdict{Metric: "request-success-rate", Bound: ">= 99", Reason: ReasonNoData}, "returned NaN", ""},
		{"NaN passes no max bound", duration, promtest.NaN(),
			v1alpha1.MetricVerdict{Metric: "request-duration", Bound: "<= 500", Reason: ReasonNoData}, "returned NaN", ""},
		{"+Inf", duration, promtest.Value(math.Inf(1)),
			v1alpha1.MetricVerdict{Metric: "request-duration", Bound: "<= 500", Reason: ReasonNoData}, "returned +Inf", ""},
		{"several series", custom, twoSeries,
			v1alpha1.MetricVerdict{Metric: "queue-depth", Bound: "1 .. 5", Reason: ReasonQueryError}, `returned 2 series, want one: {pod="a"}, {pod="b"}`, ""},
		{"execution error envelope", errorRate, promtest.Error(promtest.ErrorExec, "many-to-many matching not allowed"),
			v1alpha1.MetricVerdict{Metric: "error-rate", Bound: "<= 1", Reason: ReasonQueryError}, "execution: many-to-many matching not allowed", ""},
		{"bad_data error envelope", custom, promtest.Error(promtest.ErrorBadData, "parse error"),
			v1alpha1.MetricVerdict{Metric: "queue-depth", Bound: "1 .. 5", Reason: ReasonQueryError}, "bad_data: parse error", ""},
		{"HTTP 500 without envelope", duration, promtest.HTTPStatus(http.StatusInternalServerError, "oops"),
			v1alpha1.MetricVerdict{Metric: "request-duration", Bound: "<= 500", Reason: ReasonQueryError}, "server error: 500: oops", ""},
		{"HTTP 503 timeout envelope", duration, promtest.Error(promtest.ErrorTimeout, "query timed out in expression evaluation"),
			v1alpha1.MetricVerdict{Metric: "request-duration", Bound: "<= 500", Reason: ReasonQueryError}, "query timed out", ""},
		{"unknown variable is never sent", metric("x", maximum(1), query(`up{job="{{ job }}"}`)), promtest.Value(0),
			v1alpha1.MetricVerdict{Metric: "x", Bound: "<= 1", Reason: ReasonQueryError}, "unknown variable {{ job }}", ""},
		{"no bound", metric("request-success-rate"), promtest.Value(100),
			v1alpha1.MetricVerdict{Metric: "request-success-rate", Reason: ReasonQueryError}, "needs min or max", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prom := promtest.New(t)
			prom.SetDefault(tt.answer)
			p := newChecker(t, Options{Address: prom.URL(), Timeout: 5 * time.Second})
			c := canary(withMetrics(tt.metric))

			results := p.Evaluate(t.Context(), c)
			if len(results) != 1 {
				t.Fatalf("got %d results, want 1", len(results))
			}
			r := results[0]
			if diff := cmp.Diff(tt.want, r.Verdict, ignoreMessage); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]v1alpha1.MetricVerdict{r.Verdict}, p.Check(t.Context(), c)); diff != "" {
				t.Errorf("Check differs from Evaluate (-evaluate +check):\n%s", diff)
			}
			switch {
			case tt.wantErr == "" && (r.Err != nil || r.Verdict.Message != ""):
				t.Errorf("Err = %v, Message %q; want none", r.Err, r.Verdict.Message)
			case tt.wantErr != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), tt.wantErr)):
				t.Errorf("Err = %v, want it to contain %q", r.Err, tt.wantErr)
			case tt.wantErr != "" && r.Verdict.Message != r.Err.Error():
				t.Errorf("Message = %q, want the error %q", r.Verdict.Message, r.Err)
			}
			queries := prom.Queries()
			if r.Query == "" {
				if len(queries) != 0 {
					t.Errorf("sent %q for a metric whose query could not be built", queries)
				}
				return
			}
			if len(queries) == 0 || queries[0] != r.Query {
				t.Errorf("server received %q, want %q", queries, r.Query)
			}
			if !strings.Contains(r.Query, tt.wantQuery) {
				t.Errorf("query %q does not contain %q", r.Query, tt.wantQuery)
			}
		})
	}
}

func TestCheckKeepsSpecOrder(t *testing.T) {
	prom := promtest.New(t)
	prom.Set(`envoy_response_code_class!="5"`, promtest.Value(99.9))
	prom.Set(`envoy_response_code_class="5"`, promtest.Value(0.1).After(50*time.Millisecond))
	prom.Set("histogram_quantile", promtest.Value(800))
	prom.Set("queue", promtest.Empty())
	c := canary(withMetrics(
		metric("error-rate", maximum(1)),
		metric("request-duration", maximum(500)),
		metric("queue-depth", maximum(10), query("sum(queue)")),
		metric("request-success-rate", minimum(99)),
	))
	got := newChecker(t, Options{Address: prom.URL()}).Check(t.Context(), c)
	want := []v1alpha1.MetricVerdict{
		{Metric: "error-rate", Value: "0.1", Bound: "<= 1", Passed: true},
		{Metric: "request-duration", Value: "800", Bound: "<= 500", Reason: ReasonOutOfRange},
		{Metric: "queue-depth", Bound: "<= 10", Reason: ReasonNoData},
		{Metric: "request-success-rate", Value: "99.9", Bound: ">= 99", Passed: true},
	}
	if diff := cmp.Diff(want, got, ignoreMessage); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	if got := newChecker(t, Options{Address: prom.URL()}).Check(t.Context(), canary()); len(got) != 0 {
		t.Errorf("no metrics: got %v, want no verdicts", got)
	}
}

func TestServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	p := newChecker(t, Options{Address: addr, Timeout: 5 * time.Second})
	r := p.Evaluate(t.Context(), canary(withMetrics(metric("request-success-rate", minimum(99)))))[0]
	if r.Err == nil || !strings.Contains(r.Err.Error(), "connection refused") {
		t.Fatalf("Err = %v, want connection refused", r.Err)
	}
	want := v1alpha1.MetricVerdict{Metric: "request-success-rate", Bound: ">= 99", Reason: ReasonQueryError, Message: r.Err.Error()}
	if diff := cmp.Diff(want, r.Verdict); diff != "" {
		t.Errorf("verdict (-want +got):\n%s", diff)
	}
}

func TestTimeout(t *testing.T) {
	prom := promtest.New(t)
	prom.SetDefault(promtest.Hang())
	const timeout = 300 * time.Millisecond
	p := newChecker(t, Options{Address: prom.URL(), Timeout: timeout})
	c := canary(withMetrics(metric("request-success-rate", minimum(99)), metric("request-duration", maximum(500))))

	// The test's own deadline is far away: only Options.Timeout can end
	// the hanging queries.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	start := time.Now()
	results := p.Evaluate(ctx, c)
	elapsed := time.Since(start)
	for _, r := range results {
		if r.Verdict.Passed || r.Verdict.Reason != ReasonQueryError {
			t.Errorf("%s: verdict %+v, want a QueryError", r.Verdict.Metric, r.Verdict)
		}
		if r.Err == nil || !strings.Contains(r.Err.Error(), "timed out after 300ms") || !errors.Is(r.Err, context.DeadlineExceeded) {
			t.Errorf("%s: Err = %v, want a timeout after 300ms", r.Verdict.Metric, r.Err)
		}
	}
	if elapsed < timeout {
		t.Errorf("returned after %s, before the timeout of %s", elapsed, timeout)
	}
	if n := len(prom.Queries()); n != 2 {
		t.Errorf("server received %d queries, want 2", n)
	}
	if got := prom.Requests()[0].Header; got.Get("Authorization") != "" {
		t.Errorf("Authorization sent without credentials: %q", got.Get("Authorization"))
	}
}

func TestAuth(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	token := write("token", "s3cr3t-token\n")
	password := write("password", "hunter2\n")

	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"none", Options{}, ""},
		{"bearer token", Options{BearerTokenFile: token}, "Bearer s3cr3t-token"},
		{"basic auth", Options{Username: "weir", PasswordFile: password}, "Basic d2VpcjpodW50ZXIy"},
		{"basic auth without password", Options{Username: "weir"}, "Basic d2Vpcjo="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prom := promtest.New(t)
			prom.SetDefault(promtest.Value(100))
			tt.opts.Address = prom.URL()
			p := newChecker(t, tt.opts)
			// Twice, so that a header added to a shared map would show.
			for range 2 {
				if v := p.Check(t.Context(), canary(withMetrics(metric("request-success-rate", minimum(99))))); !v[0].Passed {
					t.Fatalf("verdict %+v, want passed", v[0])
				}
			}
			for _, r := range prom.Requests() {
				if got := r.Header.Values("Authorization"); strings.Join(got, ",") != tt.want {
					t.Errorf("Authorization = %q, want %q", got, tt.want)
				}
			}
		})
	}

	t.Run("token rotation is picked up", func(t *testing.T) {
		prom := promtest.New(t)
		p := newChecker(t, Options{Address: prom.URL(), BearerTokenFile: write("rotating", "one")})
		_, _ = p.Query(t.Context(), "up")
		write("rotating", "two")
		_, _ = p.Query(t.Context(), "up")
		reqs := prom.Requests()
		if len(reqs) != 2 || reqs[0].Header.Get("Authorization") != "Bearer one" || reqs[1].Header.Get("Authorization") != "Bearer two" {
			t.Errorf("requests = %+v, want Bearer one then Bearer two", reqs)
		}
	})

	t.Run("the caller's request is not modified", func(t *testing.T) {
		var seen string
		rt := &authTransport{base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			seen = r.Header.Get("Authorization")
			return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Request: r}, nil
		}), bearerTokenFile: token}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://127.0.0.1:1/", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if seen != "Bearer s3cr3t-token" || req.Header.Get("Authorization") != "" {
			t.Errorf("sent %q, caller's header %q; want the token sent and the caller's header untouched", seen, req.Header.Get("Authorization"))
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestNewPrometheusRejects(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no address", Options{}, "invalid metrics server address"},
		{"no scheme", Options{Address: "prometheus:9090"}, "want http(s)://"},
		{"other scheme", Options{Address: "ftp://prometheus"}, "want http(s)://"},
		{"negative timeout", Options{Address: "http://p", Timeout: -time.Second}, "must not be negative"},
		{"bearer and basic", Options{Address: "http://p", BearerTokenFile: "/dev/null", Username: "u"}, "not both"},
		{"password without username", Options{Address: "http://p", PasswordFile: "/dev/null"}, "needs a username"},
		{"missing token file", Options{Address: "http://p", BearerTokenFile: "/nonexistent/token"}, "failed to read metrics server credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPrometheus(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestBindFlags(t *testing.T) {
	var o Options
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	o.BindFlags(fs)
	if diff := cmp.Diff(Options{Address: "http://prometheus:9090", Timeout: 5 * time.Second}, o); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	err := fs.Parse([]string{
		"--metrics-server=https://prom.example:9091/prefix", "--metrics-server-timeout=2s",
		"--metrics-server-username=weir", "--metrics-server-password-file=/etc/weir/password",
		"--metrics-server-bearer-token-file=/etc/weir/token", "--metrics-server-insecure-skip-verify",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Address: "https://prom.example:9091/prefix", Timeout: 2 * time.Second, Username: "weir",
		PasswordFile: "/etc/weir/password", BearerTokenFile: "/etc/weir/token", InsecureSkipVerify: true}
	if diff := cmp.Diff(want, o); diff != "" {
		t.Errorf("parsed (-want +got):\n%s", diff)
	}
}

func TestQueryHelper(t *testing.T) {
	prom := promtest.New(t)
	prom.Set("up", promtest.Scalar(1))
	if v, err := Query(t.Context(), prom.URL(), "up"); err != nil || v != 1 {
		t.Errorf("Query(up) = %v, %v; want 1", v, err)
	}
	if _, err := Query(t.Context(), prom.URL(), "absent"); !errors.Is(err, ErrNoData) {
		t.Errorf("Query(absent) err = %v, want ErrNoData", err)
	}
}
