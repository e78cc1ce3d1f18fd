package xds

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_endpoint_v3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	envoy_service_discovery_v3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/testing/protocmp"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	weirv1alpha1 "github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/mesh/traffic"
)

// fixedSource is a Source tests change at will.
type fixedSource struct {
	mu sync.Mutex
	in Input
}

func (f *fixedSource) Input(context.Context) (Input, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.in, nil
}

func (f *fixedSource) set(in Input) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.in = in
}

// recordedEvent is an Event a test recorder saw.
type recordedEvent struct{ object, eventType, reason, note string }

type fakeRecorder struct {
	mu     sync.Mutex
	events []recordedEvent
}

func (r *fakeRecorder) Eventf(regarding runtime.Object, _ runtime.Object, eventtype, reason, _, note string, args ...any) {
	c := regarding.(*weirv1alpha1.Canary)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, recordedEvent{c.Namespace + "/" + c.Name, eventtype, reason, fmt.Sprintf(note, args...)})
}

func (r *fakeRecorder) list() []recordedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedEvent(nil), r.events...)
}

// harness is a Server on a loopback port with a client connection to it;
// both are stopped when the test ends.
type harness struct {
	srv      *Server
	src      *fixedSource
	recorder *fakeRecorder
	metrics  *Metrics
	conn     *grpc.ClientConn
}

func startServer(t testing.TB, in Input, opts Options) *harness {
	t.Helper()
	h := &harness{src: &fixedSource{in: in}, recorder: &fakeRecorder{}, metrics: NewMetrics(prometheus.NewRegistry())}
	h.srv = NewServer(h.src, h.recorder, h.metrics, opts)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve() = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return")
		}
	})
	h.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.conn.Close() })
	return h
}

// client opens an ADS stream that is closed when the test ends.
func (h *harness) client(t *testing.T, node string, configure ...func(*adsClient)) *adsClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := dialADS(ctx, h.conn, node, true, configure...)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		<-c.done
	})
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// routeWeights decodes the weighted clusters of a virtual host in an RDS
// response.
func routeWeights(resp *envoy_service_discovery_v3.DiscoveryResponse, vhost string) map[string]uint32 {
	for _, a := range resp.GetResources() {
		rc := &envoy_config_route_v3.RouteConfiguration{}
		if a.UnmarshalTo(rc) != nil {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			if vh.GetName() != vhost {
				continue
			}
			out := map[string]uint32{}
			for _, r := range vh.GetRoutes() {
				if c := r.GetRoute().GetCluster(); c != "" {
					out[c] = 100
				}
				for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
					out[wc.GetName()] = wc.GetWeight().GetValue()
				}
			}
			return out
		}
	}
	return nil
}

func endpointsOf(resp *envoy_service_discovery_v3.DiscoveryResponse, cluster string) []string {
	for _, a := range resp.GetResources() {
		cla := &envoy_config_endpoint_v3.ClusterLoadAssignment{}
		if a.UnmarshalTo(cla) != nil || cla.GetClusterName() != cluster {
			continue
		}
		var out []string
		for _, le := range cla.GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
		}
		return out
	}
	return nil
}

var podinfoKey = types.NamespacedName{Namespace: "test", Name: "podinfo"}

func TestWeightChangeReachesClientAsNewRouteVersion(t *testing.T) {
	h := startServer(t, podinfo(withWeight(0)), Options{})
	c := h.client(t, "sidecar-1")
	ctx := testContext(t)
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return l[resource.RouteType] != nil && l[resource.EndpointType] != nil
	}); err != nil {
		t.Fatal(err)
	}
	first := c.accepted(resource.RouteType)
	if diff := cmp.Diff(map[string]uint32{"test/podinfo-primary:9898": 100}, routeWeights(c.latest[resource.RouteType], "test/podinfo:9898")); diff != "" {
		t.Errorf("initial weights (-want +got):\n%s", diff)
	}

	if _, err := h.srv.SetWeight(ctx, podinfoKey, 10); err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{"test/podinfo-canary:9898": 10, "test/podinfo-primary:9898": 90}
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return cmp.Equal(want, routeWeights(l[resource.RouteType], "test/podinfo:9898"))
	}); err != nil {
		t.Fatal(err)
	}
	if v := c.accepted(resource.RouteType); v == first {
		t.Errorf("route version stayed %q after a weight change", v)
	}
	// Only the routes changed, so only the routes were sent again.
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, typ := range []string{resource.ListenerType, resource.ClusterType, resource.EndpointType} {
		if n := len(c.received[typ]); n != 1 {
			t.Errorf("%s sent %d times, want once", shortType(typ), n)
		}
	}
}

func TestEndpointSliceChangeReachesClientAsEDS(t *testing.T) {
	in := podinfo()
	h := startServer(t, in, Options{})
	c := h.client(t, "sidecar-1")
	ctx := testContext(t)
	const cluster = "test/podinfo-canary:9898"
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return cmp.Equal(endpointsOf(l[resource.EndpointType], cluster), []string{"10.0.0.2"})
	}); err != nil {
		t.Fatal(err)
	}
	routes := c.accepted(resource.RouteType)

	in.EndpointSlices = append([]*discoveryv1.EndpointSlice(nil), in.EndpointSlices...)
	in.EndpointSlices[2] = slice("test", "podinfo-canary-abc", "podinfo-canary", 9898, ep("10.0.0.2"), ep("10.0.0.3"), ep("10.0.0.4", notReady()))
	h.src.set(in)
	h.srv.Trigger()
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return cmp.Equal(endpointsOf(l[resource.EndpointType], cluster), []string{"10.0.0.2", "10.0.0.3"})
	}); err != nil {
		t.Fatal(err)
	}
	if got := c.accepted(resource.RouteType); got != routes {
		t.Errorf("route version changed from %q to %q on an endpoint change", routes, got)
	}
}

func TestInvalidConfigIsNeverSent(t *testing.T) {
	in := podinfo(withWeight(10))
	h := startServer(t, in, Options{})
	c := h.client(t, "sidecar-1")
	ctx := testContext(t)
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return l[resource.ClusterType] != nil
	}); err != nil {
		t.Fatal(err)
	}
	good := c.accepted(resource.ClusterType)

	// An outlier interval of 0s fails Envoy's validation (it must be > 0).
	bad := podinfo(withWeight(10), withOutlier(5, 0, 30*time.Second, 50))
	h.src.set(bad)
	if h.srv.Rebuild(ctx) {
		t.Fatal("Rebuild() published an invalid configuration")
	}
	if got := value(h.metrics.Rejected); got != 1 {
		t.Errorf("weir_xds_rejected_snapshots_total = %v, want 1", got)
	}
	events := h.recorder.list()
	if len(events) == 0 || events[0].reason != weirv1alpha1.EventXDSRejected || events[0].object != "test/podinfo" ||
		!strings.Contains(events[0].note, "Interval") {
		t.Errorf("events = %+v, want an XDSRejected Warning on test/podinfo naming Interval", events)
	}

	// A valid change goes through again, and nothing invalid was ever sent.
	fixed := podinfo(withWeight(10), withOutlier(5, time.Second, 30*time.Second, 50))
	h.src.set(fixed)
	h.srv.Trigger()
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return l[resource.ClusterType].GetVersionInfo() != good
	}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, resp := range c.received[resource.ClusterType] {
		for _, a := range resp.GetResources() {
			cl := &envoy_config_cluster_v3.Cluster{}
			if err := a.UnmarshalTo(cl); err != nil {
				t.Fatal(err)
			}
			if err := cl.ValidateAll(); err != nil {
				t.Errorf("client received an invalid cluster %s: %v", cl.GetName(), err)
			}
		}
	}
}

func TestNACKIsRecordedAndNotResentInALoop(t *testing.T) {
	h := startServer(t, podinfo(withWeight(0)), Options{})
	rejectWeight := func(resp *envoy_service_discovery_v3.DiscoveryResponse) string {
		if resp.GetTypeUrl() == resource.RouteType && routeWeights(resp, "test/podinfo:9898")["test/podinfo-canary:9898"] == 50 {
			return "weight 50 refused by test/podinfo:9898"
		}
		return ""
	}
	c := h.client(t, "sidecar-1", func(c *adsClient) { c.reject = rejectWeight })
	ctx := testContext(t)
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return l[resource.RouteType] != nil
	}); err != nil {
		t.Fatal(err)
	}
	good := c.accepted(resource.RouteType)
	if _, err := h.srv.SetWeight(ctx, podinfoKey, 50); err != nil {
		t.Fatal(err)
	}
	// Wait for the NACK to be counted.
	for value(h.metrics.NACKs.WithLabelValues("RouteConfiguration")) < 1 {
		select {
		case <-ctx.Done():
			t.Fatal("the NACK was not recorded")
		case <-time.After(5 * time.Millisecond):
		}
	}
	// A resend loop would send thousands of responses in this time.
	time.Sleep(300 * time.Millisecond)
	c.mu.Lock()
	routesSent := len(c.received[resource.RouteType])
	c.mu.Unlock()
	if routesSent != 2 {
		t.Errorf("%d route responses, want 2 (the first and the rejected one, no resend)", routesSent)
	}
	if got := value(h.metrics.NACKs.WithLabelValues("RouteConfiguration")); got != 1 {
		t.Errorf("weir_xds_nacks_total = %v, want 1", got)
	}
	if got := c.accepted(resource.RouteType); got != good {
		t.Errorf("client's accepted routes = %q, want the last good %q", got, good)
	}
	conf, err := h.srv.SetWeight(ctx, podinfoKey, 50)
	if err != nil {
		t.Fatal(err)
	}
	if conf.Confirmed || conf.Acked != 0 || conf.Total != 1 {
		t.Errorf("confirmation of a NACKed weight = %+v, want unconfirmed 0/1", conf)
	}
	events := h.recorder.list()
	if len(events) != 1 || events[0].reason != weirv1alpha1.EventXDSRejected || !strings.Contains(events[0].note, "sidecar-1") {
		t.Errorf("events = %+v, want one XDSRejected naming sidecar-1", events)
	}

	// The next version is sent and accepted.
	if _, err := h.srv.SetWeight(ctx, podinfoKey, 60); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return routeWeights(l[resource.RouteType], "test/podinfo:9898")["test/podinfo-canary:9898"] == 60
	}); err != nil {
		t.Fatal(err)
	}
}

func TestConfirmationFlipsOnlyAfterACK(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock sync.Mutex
	h := startServer(t, podinfo(withWeight(0)), Options{Now: func() time.Time {
		clock.Lock()
		defer clock.Unlock()
		return now
	}, ConfirmTimeout: time.Minute})
	release := make(chan struct{})
	var holding sync.Once
	held := make(chan struct{})
	c := h.client(t, "sidecar-1", func(c *adsClient) {
		c.hold = func() {
			if c.latest[resource.RouteType] == nil {
				return // the first routes are ACKed at once
			}
			holding.Do(func() { close(held) })
			<-release
		}
	})
	ctx := testContext(t)
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return l[resource.RouteType] != nil
	}); err != nil {
		t.Fatal(err)
	}
	conf := waitConfirmed(ctx, t, h.srv, 0)
	if conf.Acked != 1 || conf.Total != 1 {
		t.Errorf("weight 0, ACKed = %+v, want confirmed 1/1", conf)
	}

	conf, err := h.srv.SetWeight(ctx, podinfoKey, 10)
	if err != nil {
		t.Fatal(err)
	}
	if conf.Confirmed || conf.Total != 1 {
		t.Errorf("right after SetWeight(10): %+v, want unconfirmed", conf)
	}
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("the client did not receive the new routes")
	}
	conf, _ = h.srv.SetWeight(ctx, podinfoKey, 10)
	if conf.Confirmed || conf.Acked != 0 {
		t.Errorf("received but not ACKed: %+v, want unconfirmed 0/1", conf)
	}
	clock.Lock()
	now = now.Add(2 * time.Minute)
	clock.Unlock()
	conf, _ = h.srv.SetWeight(ctx, podinfoKey, 10)
	if !conf.TimedOut {
		t.Errorf("after the timeout: %+v, want TimedOut", conf)
	}
	close(release)
	conf = waitConfirmed(ctx, t, h.srv, 10)
	if conf.Acked != 1 || conf.Total != 1 || !conf.Since.Equal(now) || conf.TimedOut {
		t.Errorf("after the ACK: %+v, want confirmed 1/1 since %v", conf, now)
	}
}

func TestNoSidecarsConfirmsOncePublished(t *testing.T) {
	h := startServer(t, podinfo(withWeight(0)), Options{})
	conf := waitConfirmed(testContext(t), t, h.srv, 10)
	if conf.Total != 0 || !strings.Contains(conf.Message, "no sidecar") {
		t.Errorf("confirmation = %+v, want Total 0 and a message", conf)
	}
}

// waitConfirmed calls SetWeight until the weight is confirmed.
func waitConfirmed(ctx context.Context, t testing.TB, srv *Server, w int32) traffic.Confirmation {
	t.Helper()
	for {
		conf, err := srv.SetWeight(ctx, podinfoKey, w)
		if err != nil {
			t.Fatal(err)
		}
		if conf.Confirmed {
			return conf
		}
		select {
		case <-ctx.Done():
			t.Fatalf("weight %d never confirmed: %+v", w, conf)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func TestDisconnectedStreamsAreReleased(t *testing.T) {
	h := startServer(t, podinfo(), Options{})
	ctx := testContext(t)
	cctx, cancel := context.WithCancel(ctx)
	c, err := dialADS(cctx, h.conn, "sidecar-1", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return l[resource.RouteType] != nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := value(h.metrics.ConnectedProxies); got != 1 {
		t.Errorf("connected proxies = %v, want 1", got)
	}
	cancel()
	<-c.done
	for {
		h.srv.mu.Lock()
		n, rds, acks := len(h.srv.streams), h.srv.rdsStreams, len(h.srv.routeAcks)
		h.srv.mu.Unlock()
		if n == 0 && rds == 0 && acks == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("state of a closed stream kept: streams %d, rds %d, acks %d", n, rds, acks)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if got := value(h.metrics.ConnectedProxies); got != 0 {
		t.Errorf("connected proxies = %v, want 0", got)
	}
}

func TestRebuildsAreCoalesced(t *testing.T) {
	in := podinfo()
	h := startServer(t, in, Options{Debounce: 50 * time.Millisecond, MaxDelay: 5 * time.Second})
	c := h.client(t, "sidecar-1")
	ctx := testContext(t)
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return l[resource.EndpointType] != nil
	}); err != nil {
		t.Fatal(err)
	}
	// A burst of endpoint changes, each well inside the quiet time.
	for i := 1; i <= 20; i++ {
		next := in
		next.EndpointSlices = append([]*discoveryv1.EndpointSlice(nil), in.EndpointSlices...)
		next.EndpointSlices[2] = slice("test", "podinfo-canary-abc", "podinfo-canary", 9898, ep(fmt.Sprintf("10.0.1.%d", i)))
		h.src.set(next)
		h.srv.Trigger()
		time.Sleep(time.Millisecond)
	}
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return cmp.Equal(endpointsOf(l[resource.EndpointType], "test/podinfo-canary:9898"), []string{"10.0.1.20"})
	}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The first snapshot, then at most a few for twenty changes (a slow
	// machine may split the burst once or twice), never twenty.
	if n := len(c.received[resource.EndpointType]); n > 4 {
		t.Errorf("%d EDS responses for a burst of 20 changes, want them coalesced", n)
	}
}

// TestDebugHandler checks that /debug/xds serves the snapshot as JSON.
func TestDebugHandler(t *testing.T) {
	h := startServer(t, podinfo(withWeight(10)), Options{})
	ctx := testContext(t)
	for h.srv.Rebuild(ctx) == false {
		h.srv.mu.Lock()
		published := h.srv.current != nil
		h.srv.mu.Unlock()
		if published {
			break
		}
	}
	rec := newRecorder()
	h.srv.DebugHandler().ServeHTTP(rec, nil)
	body := rec.String()
	for _, want := range []string{`"test/podinfo-canary:9898"`, `"weightedClusters"`, `"test/podinfo": 10`} {
		if !strings.Contains(body, want) {
			t.Errorf("/debug/xds lacks %s:\n%.2000s", want, body)
		}
	}
	_ = protocmp.Transform
}

// newRecorder is an httptest.ResponseRecorder.
func newRecorder() *responseRecorder { return &responseRecorder{header: http.Header{}} }

type responseRecorder struct {
	strings.Builder
	header http.Header
}

func (r *responseRecorder) Header() http.Header { return r.header }
func (r *responseRecorder) WriteHeader(int)     {}

// value reads a gauge or counter.
func value(m prometheus.Metric) float64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		panic(err)
	}
	if g := out.GetGauge(); g != nil {
		return g.GetValue()
	}
	return out.GetCounter().GetValue()
}

func TestConfirmFraction(t *testing.T) {
	h := startServer(t, podinfo(withWeight(0)), Options{ConfirmFraction: 0.5})
	ctx := testContext(t)
	release := make(chan struct{})
	defer close(release)
	fast := h.client(t, "fast")
	slow := h.client(t, "slow", func(c *adsClient) {
		c.hold = func() {
			if c.latest[resource.RouteType] != nil {
				<-release
			}
		}
	})
	for _, c := range []*adsClient{fast, slow} {
		if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
			return l[resource.RouteType] != nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitConfirmed(ctx, t, h.srv, 0)
	conf := waitConfirmed(ctx, t, h.srv, 30)
	if conf.Acked != 1 || conf.Total != 2 {
		t.Errorf("confirmation = %+v, want 1 of 2 (half the fleet)", conf)
	}
}

func TestForgetDropsTheWeight(t *testing.T) {
	h := startServer(t, podinfo(withWeight(0)), Options{})
	c := h.client(t, "sidecar-1")
	ctx := testContext(t)
	waitConfirmed(ctx, t, h.srv, 40)
	h.srv.Forget(podinfoKey)
	// Back to the status weight (0) once the Canary is forgotten.
	if err := c.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return cmp.Equal(routeWeights(l[resource.RouteType], "test/podinfo:9898"), map[string]uint32{"test/podinfo-primary:9898": 100})
	}); err != nil {
		t.Fatal(err)
	}
	h.srv.mu.Lock()
	defer h.srv.mu.Unlock()
	if len(h.srv.desired) != 0 {
		t.Errorf("desired weights after Forget: %v", h.srv.desired)
	}
}

// TestReconnectingSidecarCounts: a sidecar that reconnects holding the
// current versions (content hashes survive a controller restart) counts as
// having the weight. (go-control-plane's cache sends the resources to a
// new stream even then; the sidecar ACKs the same version.)
func TestReconnectingSidecarCounts(t *testing.T) {
	h := startServer(t, podinfo(withWeight(20)), Options{})
	ctx := testContext(t)
	waitConfirmed(ctx, t, h.srv, 20)
	h.srv.mu.Lock()
	versions := h.srv.current.Versions
	var clusters []string
	for _, c := range h.srv.current.Output.Clusters {
		clusters = append(clusters, c.Name)
	}
	h.srv.mu.Unlock()

	h.client(t, "sidecar-1", func(c *adsClient) {
		c.resume = versions
		c.names[resource.RouteType] = []string{RouteConfigName}
		c.names[resource.EndpointType] = clusters
	})
	for {
		conf, err := h.srv.SetWeight(ctx, podinfoKey, 20)
		if err != nil {
			t.Fatal(err)
		}
		if conf.Total == 1 && conf.Acked == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the reconnected sidecar does not count: %+v", conf)
		case <-time.After(2 * time.Millisecond):
		}
	}
}
