package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_config_endpoint_v3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	envoy_config_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	envoy_extensions_filters_http_router_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	envoy_extensions_filters_network_http_connection_manager_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	envoy_extensions_retry_host_previous_hosts_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	envoy_service_discovery_v3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/internal/testenv"
	"github.com/weir-dev/weir/mesh/proxy"
	"github.com/weir-dev/weir/mesh/proxy/xdsclient"
)

const (
	nodeID      = "test-node"
	primaryName = "test/podinfo-primary:9898"
	canaryName  = "test/podinfo-canary:9898"
	routeName   = "outbound"
)

// controlPlane is a go-control-plane ADS server on loopback.
type controlPlane struct {
	cache cachev3.SnapshotCache
	addr  string
	srv   *grpc.Server

	mu    sync.Mutex
	nacks []*envoy_service_discovery_v3.DiscoveryRequest
}

func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	cp := &controlPlane{cache: cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)}
	cp.start(t, addr)
	return cp
}

func (cp *controlPlane) start(t *testing.T, addr string) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("control plane listen: %v", err)
	}
	cp.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, req *envoy_service_discovery_v3.DiscoveryRequest) error {
		if req.GetErrorDetail() != nil {
			cp.mu.Lock()
			cp.nacks = append(cp.nacks, req)
			cp.mu.Unlock()
		}
		return nil
	}}
	srv := grpc.NewServer()
	envoy_service_discovery_v3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(ctx, cp.cache, cb))
	cp.srv = srv
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Stop(); cancel() })
}

func (cp *controlPlane) stop() { cp.srv.Stop() }

func (cp *controlPlane) nacked() []*envoy_service_discovery_v3.DiscoveryRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]*envoy_service_discovery_v3.DiscoveryRequest(nil), cp.nacks...)
}

// mesh describes the resources the controller would publish.
type mesh struct {
	version  string
	port     int
	domains  []string
	weights  map[string]uint32 // cluster → weight; one entry makes a plain route
	total    uint32            // weighted_clusters.total_weight when set
	timeout  time.Duration
	retry    *envoy_config_route_v3.RetryPolicy
	clusters map[string][]string // cluster → endpoint addresses
	outlier  *envoy_config_cluster_v3.OutlierDetection
	lb       envoy_config_cluster_v3.Cluster_LbPolicy
	h2       map[string]bool
	extra    func(*envoy_config_cluster_v3.Cluster)
	hcm      func(*envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager)
}

type meshOption func(*mesh)

func withWeights(primary, canary uint32) meshOption {
	return func(m *mesh) { m.weights = map[string]uint32{primaryName: primary, canaryName: canary} }
}
func withTimeout(d time.Duration) meshOption { return func(m *mesh) { m.timeout = d } }
func withRetry(on string, n uint32, perTry time.Duration) meshOption {
	return func(m *mesh) {
		m.retry = &envoy_config_route_v3.RetryPolicy{RetryOn: on, NumRetries: wrapperspb.UInt32(n),
			RetryBackOff: &envoy_config_route_v3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
		if perTry > 0 {
			m.retry.PerTryTimeout = durationpb.New(perTry)
		}
	}
}
func withEndpoints(cluster string, addrs ...string) meshOption {
	return func(m *mesh) { m.clusters[cluster] = addrs }
}
func withOutlier(od *envoy_config_cluster_v3.OutlierDetection) meshOption {
	return func(m *mesh) { m.outlier = od }
}
func withVersion(v string) meshOption { return func(m *mesh) { m.version = v } }
func withHCM(f func(*envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager)) meshOption {
	return func(m *mesh) { m.hcm = f }
}
func withTotalWeight(n uint32) meshOption { return func(m *mesh) { m.total = n } }

func newMesh(port int, opts ...meshOption) *mesh {
	m := &mesh{
		version:  "1",
		port:     port,
		domains:  []string{"podinfo", "podinfo:9898", "podinfo.test", "podinfo.test.svc.cluster.local:9898"},
		weights:  map[string]uint32{primaryName: 100},
		clusters: map[string][]string{},
		timeout:  5 * time.Second,
		h2:       map[string]bool{},
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

func (m *mesh) listener(t testing.TB) *envoy_config_listener_v3.Listener {
	router, err := anypb.New(&envoy_extensions_filters_http_router_v3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	cm := &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager{
		StatPrefix: "outbound",
		RouteSpecifier: &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager_Rds{Rds: &envoy_extensions_filters_network_http_connection_manager_v3.Rds{
			RouteConfigName: routeName,
			ConfigSource:    &envoy_config_core_v3.ConfigSource{ConfigSourceSpecifier: &envoy_config_core_v3.ConfigSource_Ads{Ads: &envoy_config_core_v3.AggregatedConfigSource{}}},
		}},
		HttpFilters:      []*envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter_TypedConfig{TypedConfig: router}}},
		UseRemoteAddress: wrapperspb.Bool(true),
	}
	if m.hcm != nil {
		m.hcm(cm)
	}
	hcm, err := anypb.New(cm)
	if err != nil {
		t.Fatal(err)
	}
	return &envoy_config_listener_v3.Listener{
		Name: "outbound_15001",
		Address: &envoy_config_core_v3.Address{Address: &envoy_config_core_v3.Address_SocketAddress{SocketAddress: &envoy_config_core_v3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &envoy_config_core_v3.SocketAddress_PortValue{PortValue: uint32(m.port)}}}},
		FilterChains: []*envoy_config_listener_v3.FilterChain{{Filters: []*envoy_config_listener_v3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &envoy_config_listener_v3.Filter_TypedConfig{TypedConfig: hcm}}}}},
	}
}

func (m *mesh) route() *envoy_config_route_v3.RouteConfiguration {
	action := &envoy_config_route_v3.RouteAction{Timeout: durationpb.New(m.timeout), RetryPolicy: m.retry}
	if len(m.weights) == 1 {
		for c := range m.weights {
			action.ClusterSpecifier = &envoy_config_route_v3.RouteAction_Cluster{Cluster: c}
		}
	} else {
		wc := &envoy_config_route_v3.WeightedCluster{}
		for _, c := range []string{primaryName, canaryName} {
			wc.Clusters = append(wc.Clusters, &envoy_config_route_v3.WeightedCluster_ClusterWeight{Name: c, Weight: wrapperspb.UInt32(m.weights[c])})
		}
		if m.total > 0 {
			wc.TotalWeight = wrapperspb.UInt32(m.total)
		}
		action.ClusterSpecifier = &envoy_config_route_v3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	return &envoy_config_route_v3.RouteConfiguration{
		Name: routeName,
		VirtualHosts: []*envoy_config_route_v3.VirtualHost{{
			Name:    "test/podinfo",
			Domains: m.domains,
			Routes: []*envoy_config_route_v3.Route{{
				Match:  &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &envoy_config_route_v3.Route_Route{Route: action},
			}},
		}},
	}
}

func (m *mesh) resources(t testing.TB) map[resource.Type][]types.Resource {
	out := map[resource.Type][]types.Resource{
		resource.ListenerType: {m.listener(t)},
		resource.RouteType:    {m.route()},
	}
	for name, addrs := range m.clusters {
		c := &envoy_config_cluster_v3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &envoy_config_cluster_v3.Cluster_Type{Type: envoy_config_cluster_v3.Cluster_EDS},
			EdsClusterConfig: &envoy_config_cluster_v3.Cluster_EdsClusterConfig{EdsConfig: &envoy_config_core_v3.ConfigSource{
				ConfigSourceSpecifier: &envoy_config_core_v3.ConfigSource_Ads{Ads: &envoy_config_core_v3.AggregatedConfigSource{}}}},
			ConnectTimeout:   durationpb.New(time.Second),
			LbPolicy:         m.lb,
			OutlierDetection: m.outlier,
		}
		if m.extra != nil {
			m.extra(c)
		}
		out[resource.ClusterType] = append(out[resource.ClusterType], c)
		out[resource.EndpointType] = append(out[resource.EndpointType], cla(t, name, addrs...))
	}
	return out
}

func cla(t testing.TB, name string, addrs ...string) *envoy_config_endpoint_v3.ClusterLoadAssignment {
	var eps []*envoy_config_endpoint_v3.LbEndpoint
	for _, a := range addrs {
		h, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(p)
		eps = append(eps, &envoy_config_endpoint_v3.LbEndpoint{HostIdentifier: &envoy_config_endpoint_v3.LbEndpoint_Endpoint{Endpoint: &envoy_config_endpoint_v3.Endpoint{
			Address: &envoy_config_core_v3.Address{Address: &envoy_config_core_v3.Address_SocketAddress{SocketAddress: &envoy_config_core_v3.SocketAddress{
				Address: h, PortSpecifier: &envoy_config_core_v3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}}})
	}
	return &envoy_config_endpoint_v3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*envoy_config_endpoint_v3.LocalityLbEndpoints{{LbEndpoints: eps}}}
}

// publish sets the snapshot (without consistency checks, so tests can send
// what a faulty controller would).
func (cp *controlPlane) publish(t testing.TB, m *mesh) {
	t.Helper()
	snap, err := cachev3.NewSnapshot(m.version, m.resources(t))
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		t.Fatalf("set snapshot: %v", err)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProxy runs a proxy and its ADS client until the test ends.
func startProxy(t *testing.T, xdsAddr string) *proxy.Proxy {
	t.Helper()
	// WEIR_PROXY_EVENT_LOOP=off runs the suite on the general path (make test does both).
	return startProxyWith(t, xdsAddr, proxy.Options{DisableEventLoop: os.Getenv("WEIR_PROXY_EVENT_LOOP") == "off"})
}

func startProxyWith(t *testing.T, xdsAddr string, opts proxy.Options) *proxy.Proxy {
	t.Helper()
	opts.Log = slog.New(slog.DiscardHandler)
	p := proxy.New(opts)
	stop := runXDS(t, p, xdsAddr)
	t.Cleanup(func() { stop(); p.Close() })
	return p
}

// runXDS runs p's ADS client until the returned stop is called (or the
// test ends).
func runXDS(t *testing.T, p *proxy.Proxy, xdsAddr string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &xdsclient.Client{Address: xdsAddr, Node: &envoy_config_core_v3.Node{Id: nodeID}, Handler: p, Log: slog.New(slog.DiscardHandler), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// eventually polls cond every 10ms for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, context.Background(), 10*time.Second, 10*time.Millisecond, what, testenv.Holds(cond))
}

func waitReady(t *testing.T, p *proxy.Proxy) {
	t.Helper()
	eventually(t, "proxy ready", func() bool { ok, _ := p.Ready(); return ok })
}

func waitVersion(t *testing.T, p *proxy.Proxy, typeURL, version string) {
	t.Helper()
	eventually(t, typeURL+" version "+version, func() bool { return p.Version(typeURL) == version })
}

// backend is an HTTP server on loopback that names itself in X-Backend.
func backend(t *testing.T, name string, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return s
}

func addr(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// client sends requests to the proxy listener with a given Host.
type client struct {
	c    *http.Client
	base string
	host string
}

func newClient(t *testing.T, port int, host string) *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{c: &http.Client{Transport: tr, Timeout: 20 * time.Second}, base: fmt.Sprintf("http://127.0.0.1:%d", port), host: host}
}

// get returns the status and the X-Backend header.
func (c *client) get(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = c.host
	resp, err := c.c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Backend"), nil
}

func previousHosts(t testing.TB) []*envoy_config_route_v3.RetryPolicy_RetryHostPredicate {
	a, err := anypb.New(&envoy_extensions_retry_host_previous_hosts_v3.PreviousHostsPredicate{})
	if err != nil {
		t.Fatal(err)
	}
	return []*envoy_config_route_v3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts", ConfigType: &envoy_config_route_v3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: a}}}
}
