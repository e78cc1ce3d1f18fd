package proxy_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/mesh/proxy"
)

// setup starts a control plane, a proxy and a primary and canary backend.
type env struct {
	cp      *controlPlane
	p       *proxy.Proxy
	port    int
	primary string
	canary  string
	client  *client
}

func setup(t *testing.T, opts ...meshOption) *env {
	t.Helper()
	e := &env{port: freePort(t)}
	e.primary = addr(backend(t, "primary", nil))
	e.canary = addr(backend(t, "canary", nil))
	e.cp = startControlPlane(t, "")
	base := []meshOption{withEndpoints(primaryName, e.primary), withEndpoints(canaryName, e.canary)}
	e.cp.publish(t, newMesh(e.port, append(base, opts...)...))
	e.p = startProxy(t, e.cp.addr)
	waitReady(t, e.p)
	e.client = newClient(t, e.port, "podinfo")
	return e
}

func (e *env) mesh(opts ...meshOption) *mesh {
	base := []meshOption{withEndpoints(primaryName, e.primary), withEndpoints(canaryName, e.canary)}
	return newMesh(e.port, append(base, opts...)...)
}

// load sends n requests from workers goroutines and counts responses by
// backend; any error or non-200 is returned.
func (e *env) load(t *testing.T, n, workers int) (map[string]int, error) {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	var firstErr error
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				code, be, err := e.client.get(context.Background(), "/")
				mu.Lock()
				if err == nil && code != 200 {
					err = fmt.Errorf("status %d from %q", code, be)
				}
				if err != nil && firstErr == nil {
					firstErr = err
				}
				counts[be]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return counts, firstErr
}

func TestWeightedClustersSplitTraffic(t *testing.T) {
	e := setup(t)
	tests := []struct {
		name            string
		primary, canary uint32
	}{
		{"90/10", 90, 10},
		{"0/100", 0, 100},
		{"50/50", 50, 50},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := fmt.Sprint(i + 2)
			e.cp.publish(t, e.mesh(withWeights(tt.primary, tt.canary), withVersion(v)))
			waitVersion(t, e.p, resource.RouteType, v)
			const n = 10000
			counts, err := e.load(t, n, 8)
			if err != nil {
				t.Fatal(err)
			}
			got := 100 * float64(counts["canary"]) / n
			want := 100 * float64(tt.canary) / float64(tt.primary+tt.canary)
			if math.Abs(got-want) > 2 {
				t.Errorf("canary got %.2f%% of %d requests, want %.0f%% ± 2 (counts %v)", got, n, want, counts)
			}
		})
	}
}

func TestWeightChangeUnderLoadDropsNothing(t *testing.T) {
	e := setup(t, withWeights(100, 0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var total, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && total.Load() < 200000 {
				code, _, err := e.client.get(context.Background(), "/")
				total.Add(1)
				if err != nil || code != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("code %d err %v", code, err))
				}
			}
		}()
	}
	for i, w := range []uint32{10, 50, 90, 0, 100, 30, 70, 0} {
		v := fmt.Sprint(i + 2)
		e.cp.publish(t, e.mesh(withWeights(100-w, w), withVersion(v)))
		waitVersion(t, e.p, resource.RouteType, v)
		before := total.Load()
		eventually(t, "traffic on the new weights", func() bool { return total.Load() > before+500 })
	}
	cancel()
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during weight changes, first: %v", failed.Load(), total.Load(), firstErr.Load())
	}
	t.Logf("%d requests across 8 weight changes, none failed", total.Load())
}

// scrape returns the value of one Prometheus sample from /stats/prometheus.
func scrape(t *testing.T, p *proxy.Proxy, series string) string {
	t.Helper()
	rec := &responseRecorder{header: http.Header{}}
	req, _ := http.NewRequest(http.MethodGet, "/stats/prometheus", nil)
	p.AdminHandler().ServeHTTP(rec, req)
	for _, line := range strings.Split(rec.body.String(), "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimPrefix(line, series+" ")
		}
	}
	return ""
}

func admin(t *testing.T, p *proxy.Proxy, path string) (int, string) {
	t.Helper()
	rec := &responseRecorder{header: http.Header{}, code: 200}
	req, _ := http.NewRequest(http.MethodGet, path, nil)
	p.AdminHandler().ServeHTTP(rec, req)
	return rec.code, rec.body.String()
}

type responseRecorder struct {
	header http.Header
	code   int
	body   strings.Builder
}

func (r *responseRecorder) Header() http.Header         { return r.header }
func (r *responseRecorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *responseRecorder) WriteHeader(code int)        { r.code = code }

func TestOutlierEjectsFailingHostAndBringsItBack(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	good := addr(backend(t, "good", nil))
	bad := addr(backend(t, "bad", func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
		io.WriteString(w, "bad")
	}))
	const base = 300 * time.Millisecond
	e := &env{port: freePort(t)}
	e.cp = startControlPlane(t, "")
	e.cp.publish(t, newMesh(e.port, withEndpoints(primaryName, good, bad), withOutlier(&envoy_config_cluster_v3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(3),
		Interval:           durationpb.New(20 * time.Millisecond),
		BaseEjectionTime:   durationpb.New(base),
		MaxEjectionPercent: wrapperspb.UInt32(50),
	})))
	e.p = startProxy(t, e.cp.addr)
	waitReady(t, e.p)
	e.client = newClient(t, e.port, "podinfo")
	gauge := `envoy_cluster_outlier_detection_ejections_active{envoy_cluster_name="` + primaryName + `"}`

	// Round robin over two hosts: the bad host sees every other request.
	var firstFailure time.Time
	for i := 0; i < 6 && scrape(t, e.p, gauge) != "1"; i++ {
		code, _, err := e.client.get(context.Background(), "/")
		if err != nil {
			t.Fatal(err)
		}
		if code == 500 && firstFailure.IsZero() {
			firstFailure = time.Now()
		}
	}
	if got := scrape(t, e.p, gauge); got != "1" {
		t.Fatalf("ejections_active = %q after 3 consecutive 5xx, want 1", got)
	}
	ejectedSeen := time.Now()
	_, clusters := admin(t, e.p, "/clusters")
	if !strings.Contains(clusters, bad+"::health_flags::/failed_outlier_check") {
		t.Errorf("/clusters does not show %s ejected:\n%s", bad, clusters)
	}
	// While ejected, everything goes to the good host.
	failing.Store(false)
	for range 20 {
		if time.Since(ejectedSeen) > base/2 {
			break
		}
		if _, be, err := e.client.get(context.Background(), "/"); err != nil || be != "good" {
			if time.Since(firstFailure) < base {
				t.Fatalf("request went to %q (err %v) while bad host was ejected", be, err)
			}
		}
	}
	eventually(t, "un-ejection", func() bool { return scrape(t, e.p, gauge) == "0" })
	if held := time.Since(firstFailure); held < base {
		t.Errorf("host came back after %v, before base_ejection_time %v", held, base)
	}
	counts, err := e.load(t, 40, 1)
	if err != nil {
		t.Fatal(err)
	}
	if counts["bad"] == 0 {
		t.Errorf("un-ejected host gets no traffic: %v", counts)
	}
}

func TestMaxEjectionPercentHolds(t *testing.T) {
	tests := []struct {
		name        string
		hosts       int
		maxPercent  uint32
		wantEjected string
	}{
		{"4 hosts at 50% eject 2", 4, 50, "2"},
		{"3 hosts at 34% eject 1", 3, 34, "1"},
		{"2 hosts at Envoy's default 10% eject none", 2, 10, "0"},
		{"3 hosts at 100% eject all", 3, 100, "3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var addrs []string
			for i := range tt.hosts {
				addrs = append(addrs, addr(backend(t, fmt.Sprint("bad", i), func(w http.ResponseWriter, _ *http.Request) {
					w.WriteHeader(http.StatusInternalServerError)
				})))
			}
			port := freePort(t)
			cp := startControlPlane(t, "")
			cp.publish(t, newMesh(port, withEndpoints(primaryName, addrs...), withOutlier(&envoy_config_cluster_v3.OutlierDetection{
				Consecutive_5Xx:    wrapperspb.UInt32(2),
				Interval:           durationpb.New(time.Hour),
				BaseEjectionTime:   durationpb.New(time.Hour),
				MaxEjectionPercent: wrapperspb.UInt32(tt.maxPercent),
			})))
			p := startProxy(t, cp.addr)
			waitReady(t, p)
			c := newClient(t, port, "podinfo")
			for range 20 * tt.hosts {
				code, _, err := c.get(context.Background(), "/")
				if err != nil {
					t.Fatal(err)
				}
				if code != 500 && code != 503 {
					t.Fatalf("status %d, want 500 (or 503 once every host is ejected)", code)
				}
			}
			gauge := `envoy_cluster_outlier_detection_ejections_active{envoy_cluster_name="` + primaryName + `"}`
			if got := scrape(t, p, gauge); got != tt.wantEjected {
				t.Errorf("ejections_active = %s, want %s", got, tt.wantEjected)
			}
		})
	}
}

func TestPanicRoutingWhenAllHostsEjected(t *testing.T) {
	var calls atomic.Int64
	bad := addr(backend(t, "bad", func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withEndpoints(primaryName, bad), withOutlier(&envoy_config_cluster_v3.OutlierDetection{
		Consecutive_5Xx: wrapperspb.UInt32(1), Interval: durationpb.New(time.Hour), BaseEjectionTime: durationpb.New(time.Hour), MaxEjectionPercent: wrapperspb.UInt32(100),
	})))
	p := startProxy(t, cp.addr)
	waitReady(t, p)
	c := newClient(t, port, "podinfo")
	for range 5 {
		if code, be, err := c.get(context.Background(), "/"); err != nil || code != 500 || be != "bad" {
			t.Fatalf("got %d from %q (%v), want the ejected host's 500 (panic routing)", code, be, err)
		}
	}
	if calls.Load() != 5 {
		t.Errorf("backend saw %d requests, want 5", calls.Load())
	}
}

func TestRetriesTurnFlaky5xxInto200(t *testing.T) {
	tests := []struct {
		name       string
		failEvery  int64 // the backend fails all but every failEvery-th request
		numRetries uint32
		wantAll200 bool
	}{
		{"2 of 3 fail, 2 retries", 3, 2, true},
		{"1 of 2 fail, 1 retry", 2, 1, true},
		{"2 of 3 fail, 1 retry", 3, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits atomic.Int64
			flaky := addr(backend(t, "flaky", func(w http.ResponseWriter, _ *http.Request) {
				if hits.Add(1)%tt.failEvery != 0 {
					w.WriteHeader(http.StatusServiceUnavailable)
				}
			}))
			port := freePort(t)
			cp := startControlPlane(t, "")
			cp.publish(t, newMesh(port, withEndpoints(primaryName, flaky), withRetry("5xx", tt.numRetries, 0)))
			p := startProxy(t, cp.addr)
			waitReady(t, p)
			c := newClient(t, port, "podinfo")
			const n = 100
			ok := 0
			for range n {
				code, _, err := c.get(context.Background(), "/")
				if err != nil {
					t.Fatal(err)
				}
				if code == 200 {
					ok++
				}
			}
			if tt.wantAll200 && ok != n {
				t.Errorf("%d of %d requests were 200, want all", ok, n)
			}
			if !tt.wantAll200 && ok == n {
				t.Errorf("all requests were 200 with too few retries")
			}
			if max := int64(n) * int64(tt.numRetries+1); hits.Load() > max {
				t.Errorf("backend saw %d attempts, more than %d (num_retries %d)", hits.Load(), max, tt.numRetries)
			}
		})
	}
}

func TestRetriesOnConnectFailureAndReset(t *testing.T) {
	good := addr(backend(t, "good", nil))
	reset := addr(backend(t, "reset", func(w http.ResponseWriter, _ *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	// A closed backend: connections to it are refused.
	deadServer := backend(t, "dead", nil)
	deadPort := addr(deadServer)
	deadServer.Close()
	tests := []struct {
		name  string
		on    string
		other string
	}{
		{"connect-failure", "connect-failure", deadPort},
		{"reset", "reset", reset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := freePort(t)
			cp := startControlPlane(t, "")
			m := newMesh(port, withEndpoints(primaryName, tt.other, good), withRetry(tt.on, 3, 0))
			m.retry.RetryHostPredicate = previousHosts(t)
			m.retry.HostSelectionRetryMaxAttempts = 5
			cp.publish(t, m)
			p := startProxy(t, cp.addr)
			waitReady(t, p)
			c := newClient(t, port, "podinfo")
			for range 30 {
				code, be, err := c.get(context.Background(), "/")
				if err != nil || code != 200 || be != "good" {
					t.Fatalf("got %d from %q (%v), want 200 from the good host after a retry", code, be, err)
				}
			}
		})
	}
}

func TestRouteTimeoutAnswers504(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := addr(backend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withEndpoints(primaryName, slow), withTimeout(100*time.Millisecond)))
	p := startProxy(t, cp.addr)
	waitReady(t, p)
	c := newClient(t, port, "podinfo")
	req, _ := http.NewRequest(http.MethodGet, c.base+"/", nil)
	req.Host = "podinfo"
	resp, err := c.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || string(body) != "upstream request timeout" {
		t.Fatalf("got %d %q, want 504 upstream request timeout", resp.StatusCode, body)
	}
	if got := scrape(t, p, `envoy_cluster_upstream_rq{envoy_cluster_name="`+primaryName+`",envoy_response_code="504"}`); got != "1" {
		t.Errorf("upstream_rq 504 = %q, want 1", got)
	}
}

func TestPerTryTimeoutRetries(t *testing.T) {
	var n atomic.Int64
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	be := addr(backend(t, "sometimes-slow", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withEndpoints(primaryName, be), withRetry("5xx", 1, 100*time.Millisecond)))
	p := startProxy(t, cp.addr)
	waitReady(t, p)
	c := newClient(t, port, "podinfo")
	if code, _, err := c.get(context.Background(), "/"); err != nil || code != 200 {
		t.Fatalf("got %d (%v), want 200 after a per-try timeout and a retry", code, err)
	}
}

func TestInvalidConfigIsNACKedAndOldConfigServes(t *testing.T) {
	e := setup(t, withWeights(0, 100))
	e.cp.publish(t, e.mesh(withWeights(50, 50), withTotalWeight(99), withVersion("bad")))
	eventually(t, "a NACK", func() bool { return len(e.cp.nacked()) > 0 })
	nack := e.cp.nacked()[0]
	if nack.GetTypeUrl() != resource.RouteType || !strings.Contains(nack.GetErrorDetail().GetMessage(), "total_weight 99 does not match the sum of weights 100") {
		t.Errorf("NACK %s %q, want a route NACK naming the total_weight mismatch", nack.GetTypeUrl(), nack.GetErrorDetail().GetMessage())
	}
	if nack.GetVersionInfo() != "1" {
		t.Errorf("NACK version_info %q, want the last accepted version 1", nack.GetVersionInfo())
	}
	counts, err := e.load(t, 200, 4)
	if err != nil {
		t.Fatal(err)
	}
	// go-control-plane resends a NACKed version at once; the client backs
	// off its repeated NACKs instead of spinning.
	time.Sleep(300 * time.Millisecond)
	if n := len(e.cp.nacked()); n > 10 {
		t.Errorf("%d NACKs within ~300ms: the NACK loop is not backed off", n)
	}
	if counts["canary"] != 200 {
		t.Errorf("traffic after the NACK: %v, want all 200 on the old 0/100 route", counts)
	}
	// A good config afterwards is taken.
	e.cp.publish(t, e.mesh(withWeights(100, 0), withVersion("3")))
	waitVersion(t, e.p, resource.RouteType, "3")
	if _, be, _ := e.client.get(context.Background(), "/"); be != "primary" {
		t.Errorf("after a good update traffic went to %q", be)
	}
}

func TestControlPlaneStopKeepsTrafficFlowing(t *testing.T) {
	e := setup(t, withWeights(0, 100))
	addr := e.cp.addr
	e.cp.stop()
	counts, err := e.load(t, 500, 4)
	if err != nil {
		t.Fatal(err)
	}
	if counts["canary"] != 500 {
		t.Errorf("with the control plane away: %v, want 500 on canary", counts)
	}
	if ok, _ := e.p.Ready(); !ok {
		t.Error("proxy not ready while the control plane is away")
	}
	// The control plane comes back on the same address with new weights.
	cp := &controlPlane{cache: e.cp.cache}
	cp.start(t, addr)
	cp.publish(t, e.mesh(withWeights(100, 0), withVersion("2")))
	waitVersion(t, e.p, resource.RouteType, "2")
	if _, be, _ := e.client.get(context.Background(), "/"); be != "primary" {
		t.Errorf("after reconnect traffic went to %q", be)
	}
}
