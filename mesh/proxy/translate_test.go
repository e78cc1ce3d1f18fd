package proxy

import (
	"strings"
	"testing"
	"time"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_config_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	envoy_extensions_filters_http_cors_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	envoy_extensions_filters_http_router_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	envoy_extensions_filters_network_http_connection_manager_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	envoy_type_matcher_v3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func ads() *envoy_config_core_v3.ConfigSource {
	return &envoy_config_core_v3.ConfigSource{ConfigSourceSpecifier: &envoy_config_core_v3.ConfigSource_Ads{Ads: &envoy_config_core_v3.AggregatedConfigSource{}}}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func testListener(t *testing.T, mut func(*envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager)) *envoy_config_listener_v3.Listener {
	hcm := &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager{
		StatPrefix: "outbound",
		RouteSpecifier: &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager_Rds{Rds: &envoy_extensions_filters_network_http_connection_manager_v3.Rds{
			RouteConfigName: "outbound", ConfigSource: ads()}},
		HttpFilters: []*envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter{{Name: "envoy.filters.http.router",
			ConfigType: &envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &envoy_extensions_filters_http_router_v3.Router{})}}},
	}
	if mut != nil {
		mut(hcm)
	}
	return &envoy_config_listener_v3.Listener{
		Name: "outbound_15001",
		Address: &envoy_config_core_v3.Address{Address: &envoy_config_core_v3.Address_SocketAddress{SocketAddress: &envoy_config_core_v3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &envoy_config_core_v3.SocketAddress_PortValue{PortValue: 15001}}}},
		FilterChains: []*envoy_config_listener_v3.FilterChain{{Filters: []*envoy_config_listener_v3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &envoy_config_listener_v3.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)}}}}},
	}
}

func testRoute(mut func(*envoy_config_route_v3.RouteAction)) *envoy_config_route_v3.RouteConfiguration {
	a := &envoy_config_route_v3.RouteAction{ClusterSpecifier: &envoy_config_route_v3.RouteAction_WeightedClusters{WeightedClusters: &envoy_config_route_v3.WeightedCluster{
		Clusters: []*envoy_config_route_v3.WeightedCluster_ClusterWeight{
			{Name: "test/podinfo-primary:9898", Weight: wrapperspb.UInt32(90)},
			{Name: "test/podinfo-canary:9898", Weight: wrapperspb.UInt32(10)},
		}}}}
	if mut != nil {
		mut(a)
	}
	return &envoy_config_route_v3.RouteConfiguration{Name: "outbound", VirtualHosts: []*envoy_config_route_v3.VirtualHost{{
		Name: "test/podinfo", Domains: []string{"podinfo", "podinfo:9898"},
		Routes: []*envoy_config_route_v3.Route{{
			Match:  &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &envoy_config_route_v3.Route_Route{Route: a},
		}},
	}}}
}

func testCluster(mut func(*envoy_config_cluster_v3.Cluster)) *envoy_config_cluster_v3.Cluster {
	c := &envoy_config_cluster_v3.Cluster{
		Name:                 "test/podinfo-primary:9898",
		ClusterDiscoveryType: &envoy_config_cluster_v3.Cluster_Type{Type: envoy_config_cluster_v3.Cluster_EDS},
		EdsClusterConfig:     &envoy_config_cluster_v3.Cluster_EdsClusterConfig{EdsConfig: ads()},
		ConnectTimeout:       durationpb.New(time.Second),
		OutlierDetection:     &envoy_config_cluster_v3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(5)},
	}
	if mut != nil {
		mut(c)
	}
	return c
}

// TestApplyRejects lists configs weir-proxy cannot honour: each is NACKed
// with a message that names the problem.
func TestApplyRejects(t *testing.T) {
	tests := []struct {
		name    string
		typeURL string
		res     func(t *testing.T) proto.Message
		wantErr string // "" means accepted
	}{
		{"valid listener", resource.ListenerType, func(t *testing.T) proto.Message { return testListener(t, nil) }, ""},
		{"unsupported http filter", resource.ListenerType, func(t *testing.T) proto.Message {
			return testListener(t, func(h *envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager) {
				h.HttpFilters = append([]*envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter{{Name: "envoy.filters.http.cors",
					ConfigType: &envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &envoy_extensions_filters_http_cors_v3.Cors{})}}}, h.HttpFilters...)
			})
		}, "only envoy.filters.http.router"},
		{"unsupported connection manager field", resource.ListenerType, func(t *testing.T) proto.Message {
			return testListener(t, func(h *envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager) {
				h.Tracing = &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager_Tracing{}
			})
		}, "unsupported field(s) tracing"},
		{"idle timeout and header limit", resource.ListenerType, func(t *testing.T) proto.Message {
			return testListener(t, func(h *envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager) {
				h.CommonHttpProtocolOptions = &envoy_config_core_v3.HttpProtocolOptions{IdleTimeout: durationpb.New(0)}
				h.MaxRequestHeadersKb = wrapperspb.UInt32(96)
			})
		}, ""},
		{"negative idle timeout", resource.ListenerType, func(t *testing.T) proto.Message {
			return testListener(t, func(h *envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager) {
				h.CommonHttpProtocolOptions = &envoy_config_core_v3.HttpProtocolOptions{IdleTimeout: durationpb.New(-time.Second)}
			})
		}, "idle_timeout"},
		{"other protocol options", resource.ListenerType, func(t *testing.T) proto.Message {
			return testListener(t, func(h *envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager) {
				h.CommonHttpProtocolOptions = &envoy_config_core_v3.HttpProtocolOptions{MaxConnectionDuration: durationpb.New(time.Minute)}
			})
		}, "unsupported field(s) max_connection_duration"},
		{"header limit out of range", resource.ListenerType, func(t *testing.T) proto.Message {
			return testListener(t, func(h *envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager) {
				h.MaxRequestHeadersKb = wrapperspb.UInt32(8193)
			})
		}, "max_request_headers_kb must be between 1 and 8192, got 8193"},
		{"valid weighted route", resource.RouteType, func(*testing.T) proto.Message { return testRoute(nil) }, ""},
		{"total_weight mismatch", resource.RouteType, func(*testing.T) proto.Message {
			return testRoute(func(a *envoy_config_route_v3.RouteAction) {
				a.GetWeightedClusters().TotalWeight = wrapperspb.UInt32(99)
			})
		}, "total_weight 99 does not match the sum of weights 100"},
		{"all-zero weights", resource.RouteType, func(*testing.T) proto.Message {
			return testRoute(func(a *envoy_config_route_v3.RouteAction) {
				for _, c := range a.GetWeightedClusters().GetClusters() {
					c.Weight = wrapperspb.UInt32(0)
				}
			})
		}, "sum of weights must be greater than 0"},
		{"redirect action", resource.RouteType, func(*testing.T) proto.Message {
			rc := testRoute(nil)
			rc.VirtualHosts[0].Routes[0].Action = &envoy_config_route_v3.Route_Redirect{Redirect: &envoy_config_route_v3.RedirectAction{}}
			return rc
		}, "unsupported field(s) redirect"},
		{"prefix_rewrite", resource.RouteType, func(*testing.T) proto.Message {
			return testRoute(func(a *envoy_config_route_v3.RouteAction) { a.PrefixRewrite = "/v2" })
		}, "unsupported field(s) prefix_rewrite"},
		{"unknown retry_on", resource.RouteType, func(*testing.T) proto.Message {
			return testRoute(func(a *envoy_config_route_v3.RouteAction) {
				a.RetryPolicy = &envoy_config_route_v3.RetryPolicy{RetryOn: "5xx,retriable-headers"}
			})
		}, `retry_on "retriable-headers" is not supported`},
		{"header match with unsupported matcher", resource.RouteType, func(*testing.T) proto.Message {
			rc := testRoute(nil)
			rc.VirtualHosts[0].Routes[0].Match.Headers = []*envoy_config_route_v3.HeaderMatcher{{Name: "x-canary",
				HeaderMatchSpecifier: &envoy_config_route_v3.HeaderMatcher_StringMatch{StringMatch: &envoy_type_matcher_v3.StringMatcher{
					MatchPattern: &envoy_type_matcher_v3.StringMatcher_Exact{Exact: "1"}}}}}
			return rc
		}, ""},
		{"duplicate domain", resource.RouteType, func(*testing.T) proto.Message {
			rc := testRoute(nil)
			rc.VirtualHosts = append(rc.VirtualHosts, &envoy_config_route_v3.VirtualHost{Name: "other", Domains: []string{"podinfo"}})
			return rc
		}, `domain "podinfo" appears in more than one virtual host`},
		{"valid EDS cluster", resource.ClusterType, func(*testing.T) proto.Message { return testCluster(nil) }, ""},
		{"STRICT_DNS cluster", resource.ClusterType, func(*testing.T) proto.Message {
			return testCluster(func(c *envoy_config_cluster_v3.Cluster) {
				c.ClusterDiscoveryType = &envoy_config_cluster_v3.Cluster_Type{Type: envoy_config_cluster_v3.Cluster_STRICT_DNS}
			})
		}, "unsupported cluster type STRICT_DNS"},
		{"ring hash", resource.ClusterType, func(*testing.T) proto.Message {
			return testCluster(func(c *envoy_config_cluster_v3.Cluster) { c.LbPolicy = envoy_config_cluster_v3.Cluster_RING_HASH })
		}, "unsupported lb_policy RING_HASH"},
		{"health checks", resource.ClusterType, func(*testing.T) proto.Message {
			return testCluster(func(c *envoy_config_cluster_v3.Cluster) {
				c.HealthChecks = []*envoy_config_core_v3.HealthCheck{{}}
			})
		}, "unsupported field(s) health_checks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Options{BindIP: "127.0.0.1"})
			t.Cleanup(p.Close)
			res := []*anypb.Any{mustAny(t, tt.res(t))}
			if tt.typeURL == resource.ListenerType {
				// Bind a free port rather than 15001.
				l := tt.res(t).(*envoy_config_listener_v3.Listener)
				l.Address.GetSocketAddress().PortSpecifier = &envoy_config_core_v3.SocketAddress_PortValue{PortValue: uint32(freeTestPort(t))}
				res = []*anypb.Any{mustAny(t, l)}
			}
			err := p.Apply(tt.typeURL, "1", res)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q, want it to contain %q", err, tt.wantErr)
			}
			if err != nil && p.Version(tt.typeURL) != "" {
				t.Errorf("rejected config changed the version to %q", p.Version(tt.typeURL))
			}
		})
	}
}
