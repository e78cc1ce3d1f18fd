package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestRequestHeaders(t *testing.T) {
	seen := make(chan http.Header, 2)
	be := addr(backend(t, "headers", func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	}))
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withEndpoints(primaryName, be)))
	p := startProxy(t, cp.addr)
	waitReady(t, p)
	c := newClient(t, port, "podinfo")

	tests := []struct {
		name    string
		in      map[string]string
		wantXFF string
		wantID  string // "" means a generated UUID
	}{
		{"generated", nil, "127.0.0.1", ""},
		{"kept and appended", map[string]string{"X-Request-Id": "abc", "X-Forwarded-For": "10.0.0.1", "Connection": "X-Hop", "X-Hop": "1"}, "10.0.0.1, 127.0.0.1", "abc"},
	}
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, c.base+"/", nil)
			req.Host = "podinfo"
			for k, v := range tt.in {
				req.Header.Set(k, v)
			}
			resp, err := c.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			h := <-seen
			if got := h.Get("X-Forwarded-For"); got != tt.wantXFF {
				t.Errorf("x-forwarded-for %q, want %q", got, tt.wantXFF)
			}
			id := h.Get("X-Request-Id")
			if (tt.wantID == "" && !uuid.MatchString(id)) || (tt.wantID != "" && id != tt.wantID) {
				t.Errorf("x-request-id %q, want %q (empty: a UUID v4)", id, tt.wantID)
			}
			if h.Get("X-Hop") != "" {
				t.Error("header named in Connection was forwarded")
			}
			if h.Get("X-Forwarded-Proto") != "http" {
				t.Errorf("x-forwarded-proto %q", h.Get("X-Forwarded-Proto"))
			}
		})
	}
}

// h2cClient speaks HTTP/2 with prior knowledge over cleartext.
func h2cClient(t *testing.T) *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos, TLSClientConfig: &tls.Config{}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestH2CBothSides(t *testing.T) {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Upstream-Proto", r.Proto)
		fmt.Fprintf(w, "%s", body)
	}))
	be.Config.Protocols = &protos
	be.Start()
	t.Cleanup(be.Close)

	tests := []struct {
		name           string
		clusterH2      bool
		downstreamH2   bool
		wantUpstream   string
		wantDownstream int
	}{
		{"h1 → h1", false, false, "HTTP/1.1", 1},
		{"h2c → h1", false, true, "HTTP/1.1", 2},
		{"h1 → h2c", true, false, "HTTP/2.0", 1},
		{"h2c → h2c", true, true, "HTTP/2.0", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := freePort(t)
			cp := startControlPlane(t, "")
			m := newMesh(port, withEndpoints(primaryName, addr(be)))
			if tt.clusterH2 {
				m.extra = func(c *envoy_config_cluster_v3.Cluster) {
					c.Http2ProtocolOptions = &envoy_config_core_v3.Http2ProtocolOptions{}
				}
			}
			cp.publish(t, m)
			p := startProxy(t, cp.addr)
			waitReady(t, p)
			hc := newClient(t, port, "podinfo").c
			if tt.downstreamH2 {
				hc = h2cClient(t)
			}
			req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/echo", port), strings.NewReader("ping"))
			req.Host = "podinfo"
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ping" {
				t.Fatalf("got %d %q, want 200 ping", resp.StatusCode, body)
			}
			if resp.ProtoMajor != tt.wantDownstream || resp.Header.Get("X-Upstream-Proto") != tt.wantUpstream {
				t.Errorf("downstream HTTP/%d upstream %s, want HTTP/%d and %s", resp.ProtoMajor, resp.Header.Get("X-Upstream-Proto"), tt.wantDownstream, tt.wantUpstream)
			}
		})
	}
}

func TestRequestBodiesAndRetries(t *testing.T) {
	var n atomic.Int64
	be := addr(backend(t, "echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if n.Add(1)%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write(body)
	}))
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withEndpoints(primaryName, be), withRetry("5xx", 1, 0)))
	p := startProxy(t, cp.addr)
	waitReady(t, p)
	c := newClient(t, port, "podinfo")
	tests := []struct {
		name string
		body io.Reader
	}{
		{"content-length", bytes.NewReader(bytes.Repeat([]byte("a"), 100_000))},
		{"chunked", io.MultiReader(strings.NewReader("chunk-1;"), strings.NewReader("chunk-2"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, _ := io.ReadAll(tt.body)
			var body io.Reader = bytes.NewReader(want)
			if tt.name == "chunked" {
				body = io.MultiReader(bytes.NewReader(want)) // unknown length: sent chunked
			}
			req, _ := http.NewRequest(http.MethodPost, c.base+"/", body)
			req.Host = "podinfo"
			resp, err := c.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(got, want) {
				t.Fatalf("got %d and %d bytes, want 200 and the %d bytes sent (replayed on retry)", resp.StatusCode, len(got), len(want))
			}
		})
	}
}

func TestAdminEndpoints(t *testing.T) {
	e := setup(t, withWeights(90, 10), withOutlier(&envoy_config_cluster_v3.OutlierDetection{Interval: durationpb.New(time.Second)}))
	if _, err := e.load(t, 20, 2); err != nil {
		t.Fatal(err)
	}
	if code, body := admin(t, e.p, "/ready"); code != 200 || strings.TrimSpace(body) != "LIVE" {
		t.Errorf("/ready %d %q", code, body)
	}
	_, dump := admin(t, e.p, "/config_dump")
	var cfg map[string][]struct {
		Name        string          `json:"name"`
		VersionInfo string          `json:"version_info"`
		Resource    json.RawMessage `json:"resource"`
	}
	if err := json.Unmarshal([]byte(dump), &cfg); err != nil {
		t.Fatalf("/config_dump is not JSON: %v", err)
	}
	for _, k := range []string{"listeners", "route_configs", "clusters", "endpoints"} {
		if len(cfg[k]) == 0 || cfg[k][0].VersionInfo != "1" || !bytes.Contains(cfg[k][0].Resource, []byte(`"@type"`)) {
			t.Errorf("/config_dump %s: %+v", k, cfg[k])
		}
	}
	_, clusters := admin(t, e.p, "/clusters")
	if !strings.Contains(clusters, primaryName+"::"+e.primary+"::health_flags::healthy") {
		t.Errorf("/clusters:\n%s", clusters)
	}
	_, stats := admin(t, e.p, "/stats/prometheus")
	for _, want := range []string{
		`envoy_cluster_upstream_rq{envoy_cluster_name="` + primaryName + `",envoy_response_code="200"}`,
		`envoy_cluster_upstream_rq_xx{envoy_cluster_name="` + primaryName + `",envoy_response_code_class="2"}`,
		`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="` + primaryName + `",le="0.5"}`,
		`envoy_cluster_outlier_detection_ejections_active{envoy_cluster_name="` + canaryName + `"} 0`,
	} {
		if !strings.Contains(stats, want) {
			t.Errorf("/stats/prometheus lacks %s", want)
		}
	}
}

func TestDrainFinishesInFlightRequests(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	be := addr(backend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "done")
	}))
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withEndpoints(primaryName, be)))
	p := startProxy(t, cp.addr)
	waitReady(t, p)
	c := newClient(t, port, "podinfo")
	result := make(chan int, 1)
	go func() { code, _, _ := c.get(context.Background(), "/"); result <- code }()
	<-started
	drained := make(chan error, 1)
	go func() { drained <- p.Drain(context.Background(), 50*time.Millisecond) }()
	eventually(t, "not ready while draining", func() bool { ok, _ := p.Ready(); return !ok })
	close(release)
	if code := <-result; code != 200 {
		t.Errorf("in-flight request got %d during drain, want 200", code)
	}
	if err := <-drained; err != nil {
		t.Errorf("drain: %v", err)
	}
	if _, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		t.Error("listener still accepts after drain")
	}
}

func TestNewClusterIsSubscribedOverEDS(t *testing.T) {
	e := setup(t)
	third := addr(backend(t, "third", nil))
	const thirdName = "test/other-primary:8080"
	m := e.mesh(withVersion("2"), withEndpoints(thirdName, third))
	m.weights = map[string]uint32{thirdName: 1}
	e.cp.publish(t, m)
	waitVersion(t, e.p, "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "2")
	eventually(t, "traffic on the new cluster", func() bool {
		_, be, err := e.client.get(context.Background(), "/")
		return err == nil && be == "third"
	})
}

func TestShortHTTP10Request(t *testing.T) {
	e := setup(t)
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", e.port), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// 18 bytes, shorter than the HTTP/2 preface; no Host: the "*" domain is absent, so 404.
	io.WriteString(conn, "GET / HTTP/1.0\r\n\r\n")
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 404 ") {
		t.Errorf("got %q, want a 404 response", b)
	}
}

func TestStalePooledConnectionIsReplaced(t *testing.T) {
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	}))
	be.Config.IdleTimeout = 20 * time.Millisecond // closes pooled connections behind the proxy's back
	be.Start()
	t.Cleanup(be.Close)
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withEndpoints(primaryName, addr(be))))
	p := startProxy(t, cp.addr)
	waitReady(t, p)
	c := newClient(t, port, "podinfo")
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodPost, c.base+"/", strings.NewReader("body"))
		req.Host = "podinfo"
		resp, err := c.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != "body" {
			t.Fatalf("request %d after the upstream closed the idle connection: %d %q", i, resp.StatusCode, got)
		}
		time.Sleep(60 * time.Millisecond)
	}
}
