package load

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// versionServer plays two versions of the demo app: every tenth request is
// answered by v2, every failEvery-th (when set) with a 500.
type versionServer struct {
	failEvery int64
	delay     time.Duration

	n        atomic.Int64
	mu       sync.Mutex
	versions map[string]int
	codes    map[int]int
	hosts    map[string]int
	uris     map[string]int
}

func newVersionServer(t *testing.T, vs *versionServer) *httptest.Server {
	t.Helper()
	vs.versions, vs.codes, vs.hosts, vs.uris = map[string]int{}, map[int]int{}, map[string]int{}, map[string]int{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := vs.n.Add(1)
		if vs.delay > 0 {
			time.Sleep(vs.delay)
		}
		version, code := "v1", http.StatusOK
		if n%10 == 0 {
			version = "v2"
		}
		if vs.failEvery > 0 && n%vs.failEvery == 0 {
			code = http.StatusInternalServerError
		}
		vs.mu.Lock()
		vs.versions[version]++
		vs.codes[code]++
		vs.hosts[r.Host]++
		vs.uris[r.RequestURI]++
		vs.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"version":%q,"pod":"p","namespace":"test","hostname":"h"}`, version)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (vs *versionServer) snapshot() (versions map[string]int, codes map[int]int, hosts, uris map[string]int) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return clone(vs.versions), clone(vs.codes), clone(vs.hosts), clone(vs.uris)
}

func clone[K comparable](m map[K]int) map[K]int {
	c := map[K]int{}
	for k, v := range m {
		c[k] = v
	}
	return c
}

func equalCounts[K comparable](a, b map[K]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// startUntil starts a generator, waits until it completed at least n
// requests and stops it; the generator is stopped on failure too.
func startUntil(t *testing.T, cfg Config, n int) *Generator {
	t.Helper()
	g, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for g.Snapshot().Requests < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests completed within 30s", g.Snapshot().Requests, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g
}

func TestSharesMatchWhatAnswered(t *testing.T) {
	vs := &versionServer{}
	ts := newVersionServer(t, vs)
	g := startUntil(t, Config{URL: ts.URL + "/", Rate: 400}, 200)
	s := g.Snapshot()
	versions, _, _, _ := vs.snapshot()
	if !equalCounts(s.Versions, versions) {
		t.Fatalf("generator counted %v, the server answered %v", s.Versions, versions)
	}
	if s.Requests != int(vs.n.Load()) || s.Failures != 0 || s.InFlight != 0 {
		t.Errorf("requests %d (server saw %d), failures %d, in flight %d", s.Requests, vs.n.Load(), s.Failures, s.InFlight)
	}
	if p := s.Percent("v2"); p < 9 || p > 10.01 {
		t.Errorf("v2 share %.2f%%, want 9..10%% (every tenth of %d)", p, s.Requests)
	}
	if got := s.Percent("v1") + s.Percent("v2"); got < 99.99 || got > 100.01 {
		t.Errorf("shares add up to %.2f", got)
	}
	if s.P50 <= 0 || s.P99 < s.P50 || s.Max < s.P99/2 {
		t.Errorf("latencies p50 %s p99 %s max %s", s.P50, s.P99, s.Max)
	}
}

func TestFailuresCounted(t *testing.T) {
	vs := &versionServer{failEvery: 4}
	ts := newVersionServer(t, vs)
	g := startUntil(t, Config{URL: ts.URL + "/", Rate: 400}, 100)
	s := g.Snapshot()
	_, codes, _, _ := vs.snapshot()
	if !equalCounts(s.Codes, codes) {
		t.Fatalf("generator counted codes %v, the server answered %v", s.Codes, codes)
	}
	if s.Failures != codes[500] || s.Errors != 0 {
		t.Errorf("failures %d errors %d, want %d and 0", s.Failures, s.Errors, codes[500])
	}
	if s.Versioned() != s.Requests {
		t.Errorf("a 500 that names its version must count for it: %d of %d", s.Versioned(), s.Requests)
	}
}

func TestNoAnswerCounted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	g := startUntil(t, Config{URL: "http://" + addr + "/", Rate: 200, Timeout: time.Second}, 5)
	s := g.Snapshot()
	if s.Errors != s.Requests || s.Failures != s.Requests || s.Codes[0] != s.Requests || s.Versioned() != 0 {
		t.Errorf("to a closed port: requests %d errors %d failures %d codes %v versions %v",
			s.Requests, s.Errors, s.Failures, s.Codes, s.Versions)
	}
	if !strings.Contains(s.LastError, "refused") {
		t.Errorf("last error %q does not say the connection was refused", s.LastError)
	}
	if w := g.Window(time.Hour); w.LastError == "" || w.Errors != s.Errors {
		t.Errorf("window: errors %d last error %q", w.Errors, w.LastError)
	}
}

func TestProxyMode(t *testing.T) {
	vs := &versionServer{}
	ts := newVersionServer(t, vs)
	proxy := strings.TrimPrefix(ts.URL, "http://")
	tests := []struct {
		name     string
		cfg      Config
		wantHost string
		wantURI  string
	}{
		{name: "proxy and host", cfg: Config{Proxy: proxy, Host: "podinfo.test:9898"},
			wantHost: "podinfo.test:9898", wantURI: "/"},
		{name: "proxy and URL", cfg: Config{Proxy: proxy, URL: "http://podinfo.test:9898/api?x=1"},
			wantHost: "podinfo.test:9898", wantURI: "/api?x=1"},
		{name: "host wins over URL", cfg: Config{Proxy: proxy, URL: "http://ignored/p", Host: "podinfo"},
			wantHost: "podinfo", wantURI: "/p"},
		{name: "plain URL", cfg: Config{URL: ts.URL + "/x"}, wantHost: proxy, wantURI: "/x"},
		{name: "plain URL with host", cfg: Config{URL: ts.URL + "/", Host: "podinfo.test"},
			wantHost: "podinfo.test", wantURI: "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs.mu.Lock()
			clear(vs.hosts)
			clear(vs.uris)
			vs.mu.Unlock()
			tt.cfg.Rate = 200
			g := startUntil(t, tt.cfg, 5)
			_, _, hosts, uris := vs.snapshot()
			n := g.Snapshot().Requests
			if !equalCounts(hosts, map[string]int{tt.wantHost: n}) || !equalCounts(uris, map[string]int{tt.wantURI: n}) {
				t.Errorf("server saw hosts %v and URIs %v, want %d× %q %q", hosts, uris, n, tt.wantHost, tt.wantURI)
			}
		})
	}
}

func TestConfigRejected(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"nothing", Config{}, "URL, or a proxy address with a host"},
		{"proxy without host", Config{Proxy: "127.0.0.1:15001"}, "URL, or a proxy address with a host"},
		{"relative URL", Config{URL: "/x"}, "must be absolute"},
		{"other scheme", Config{URL: "ftp://127.0.0.1/"}, "http or https"},
		{"proxy without port", Config{Proxy: "127.0.0.1", Host: "podinfo"}, "host:port"},
		{"negative rate", Config{URL: "http://127.0.0.1/", Rate: -1}, "rate"},
		{"huge rate", Config{URL: "http://127.0.0.1/", Rate: 1e6}, "rate"},
		{"negative duration", Config{URL: "http://127.0.0.1/", Duration: -time.Second}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := Start(t.Context(), tt.cfg)
			if err == nil {
				g.Stop()
				t.Fatalf("accepted %+v", tt.cfg)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestStopStops(t *testing.T) {
	vs := &versionServer{delay: 100 * time.Millisecond}
	ts := newVersionServer(t, vs)
	g := startUntil(t, Config{URL: ts.URL + "/", Rate: 100}, 3)
	select {
	case <-g.Done():
	default:
		t.Fatal("Done is open after Stop")
	}
	s := g.Snapshot()
	if s.InFlight != 0 || int64(s.Requests) != s.Sent || s.Errors != 0 {
		t.Fatalf("after Stop: sent %d completed %d in flight %d errors %d (%s): requests in flight must be finished, not cancelled",
			s.Sent, s.Requests, s.InFlight, s.Errors, s.LastError)
	}
	served := vs.n.Load()
	time.Sleep(300 * time.Millisecond)
	if now := vs.n.Load(); now != served {
		t.Errorf("the server got %d more requests after Stop", now-served)
	}
	g.Stop() // a second Stop returns at once
	if later := g.Snapshot(); later.To != s.To || later.RPS != s.RPS {
		t.Errorf("a stopped generator's totals must not age: %v/%v then %v/%v", s.To, s.RPS, later.To, later.RPS)
	}
}

func TestDurationAndRate(t *testing.T) {
	vs := &versionServer{}
	ts := newVersionServer(t, vs)
	start := time.Now()
	g, err := Start(t.Context(), Config{URL: ts.URL + "/", Rate: 50, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	select {
	case <-g.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the generator did not end after its duration")
	}
	elapsed := time.Since(start).Seconds()
	sent := g.Snapshot().Sent
	// A ticker never fires early; a busy machine may make it fire late.
	if float64(sent) > 50*elapsed+2 || sent < 15 {
		t.Errorf("sent %d in %.2fs at 50/s", sent, elapsed)
	}
}

func TestContextEndsSending(t *testing.T) {
	vs := &versionServer{}
	ts := newVersionServer(t, vs)
	ctx, cancel := context.WithCancel(t.Context())
	g, err := Start(ctx, Config{URL: ts.URL + "/", Rate: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case <-g.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the generator did not end with its context")
	}
}

func TestMaxInFlightSkips(t *testing.T) {
	vs := &versionServer{delay: 300 * time.Millisecond}
	ts := newVersionServer(t, vs)
	g, err := Start(t.Context(), Config{URL: ts.URL + "/", Rate: 200, MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	g.Stop()
	s := g.Snapshot()
	if s.Sent != 2 || s.Skipped == 0 || s.Requests != 2 {
		t.Errorf("sent %d skipped %d completed %d, want 2, some, 2", s.Sent, s.Skipped, s.Requests)
	}
}

func TestStatsOverHTTP(t *testing.T) {
	vs := &versionServer{failEvery: 5}
	ts := newVersionServer(t, vs)
	g := startUntil(t, Config{URL: ts.URL + "/", Rate: 400}, 50)
	stats := httptest.NewServer(StatsHandler(g))
	defer stats.Close()
	client := stats.Client()

	got, err := FetchStats(t.Context(), client, stats.URL+"/stats", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := g.Snapshot()
	if got.Requests != want.Requests || !equalCounts(got.Versions, want.Versions) || !equalCounts(got.Codes, want.Codes) ||
		got.Failures != want.Failures || got.Sent != want.Sent || !got.From.Equal(want.From) {
		t.Errorf("fetched %+v, want %+v", got, want)
	}
	if d := got.P99 - want.P99; d > time.Microsecond || d < -time.Microsecond {
		t.Errorf("p99 %s, want %s", got.P99, want.P99)
	}
	if w, err := FetchStats(t.Context(), client, stats.URL+"/stats", time.Hour); err != nil || w.Requests != want.Requests {
		t.Errorf("window of an hour: %d requests, %v", w.Requests, err)
	}

	resp, err := client.Get(stats.URL + "/stats?window=soon")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad window answered %d, want 400", resp.StatusCode)
	}

	var raw map[string]any
	b, _ := json.Marshal(want)
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if pct := raw["percent"].(map[string]any)["v2"].(float64); pct != want.Percent("v2") {
		t.Errorf("percent v2 in JSON %v, want %v", pct, want.Percent("v2"))
	}
}
