package xds

import (
	"testing"
	"time"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_config_endpoint_v3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	envoy_config_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	envoy_extensions_filters_http_router_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	envoy_extensions_filters_network_http_connection_manager_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	weirv1alpha1 "github.com/weir-dev/weir/canary/v1alpha1"
)

// The expected protos below are written out in full; the few helpers only
// repeat what every cluster and endpoint shares.

var ads = &envoy_config_core_v3.ConfigSource{
	ConfigSourceSpecifier: &envoy_config_core_v3.ConfigSource_Ads{Ads: &envoy_config_core_v3.AggregatedConfigSource{}},
	ResourceApiVersion:    envoy_config_core_v3.ApiVersion_V3,
}

func wantCluster(name string, od *envoy_config_cluster_v3.OutlierDetection) *envoy_config_cluster_v3.Cluster {
	return &envoy_config_cluster_v3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &envoy_config_cluster_v3.Cluster_Type{Type: envoy_config_cluster_v3.Cluster_EDS},
		EdsClusterConfig:     &envoy_config_cluster_v3.Cluster_EdsClusterConfig{EdsConfig: ads},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LbPolicy:             envoy_config_cluster_v3.Cluster_ROUND_ROBIN,
		CircuitBreakers: &envoy_config_cluster_v3.CircuitBreakers{Thresholds: []*envoy_config_cluster_v3.CircuitBreakers_Thresholds{{
			MaxConnections:     wrapperspb.UInt32(1024),
			MaxPendingRequests: wrapperspb.UInt32(1024),
			MaxRequests:        wrapperspb.UInt32(1024),
			MaxRetries:         wrapperspb.UInt32(3),
		}}},
		OutlierDetection: od,
	}
}

func wantEndpoint(ip string, port uint32) *envoy_config_endpoint_v3.LbEndpoint {
	return &envoy_config_endpoint_v3.LbEndpoint{HostIdentifier: &envoy_config_endpoint_v3.LbEndpoint_Endpoint{Endpoint: &envoy_config_endpoint_v3.Endpoint{
		Address: &envoy_config_core_v3.Address{Address: &envoy_config_core_v3.Address_SocketAddress{SocketAddress: &envoy_config_core_v3.SocketAddress{
			Address: ip, PortSpecifier: &envoy_config_core_v3.SocketAddress_PortValue{PortValue: port},
		}}},
	}}}
}

func wantPlainRoute(cluster string) []*envoy_config_route_v3.Route {
	return []*envoy_config_route_v3.Route{{
		Match:  &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &envoy_config_route_v3.Route_Route{Route: &envoy_config_route_v3.RouteAction{ClusterSpecifier: &envoy_config_route_v3.RouteAction_Cluster{Cluster: cluster}}},
	}}
}

func wantWeighted(action *envoy_config_route_v3.RouteAction) []*envoy_config_route_v3.Route {
	return []*envoy_config_route_v3.Route{{
		Match:  &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &envoy_config_route_v3.Route_Route{Route: action},
	}}
}

func weights(cw ...*envoy_config_route_v3.WeightedCluster_ClusterWeight) *envoy_config_route_v3.RouteAction_WeightedClusters {
	return &envoy_config_route_v3.RouteAction_WeightedClusters{WeightedClusters: &envoy_config_route_v3.WeightedCluster{Clusters: cw}}
}

func cw(name string, w uint32) *envoy_config_route_v3.WeightedCluster_ClusterWeight {
	return &envoy_config_route_v3.WeightedCluster_ClusterWeight{Name: name, Weight: wrapperspb.UInt32(w)}
}

var defaultOutlier = &envoy_config_cluster_v3.OutlierDetection{
	Consecutive_5Xx:          wrapperspb.UInt32(5),
	EnforcingConsecutive_5Xx: wrapperspb.UInt32(100),
	EnforcingSuccessRate:     wrapperspb.UInt32(0),
	Interval:                 durationpb.New(10 * time.Second),
	BaseEjectionTime:         durationpb.New(30 * time.Second),
	MaxEjectionPercent:       wrapperspb.UInt32(50),
}

func TestTranslateServiceWithoutCanary(t *testing.T) {
	in := Input{
		Services: []*corev1.Service{service("test", "web", 8080)},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			slice("test", "web-b", "web", 8081, ep("10.0.0.9"), ep("10.0.0.3", notReady())),
			slice("test", "web-a", "web", 8081, ep("10.0.0.4"), ep("10.0.0.9")),
			slice("other", "web-a", "web", 8081, ep("10.9.9.9")),
		},
	}
	hcm := &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager{
		StatPrefix: "outbound",
		RouteSpecifier: &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager_Rds{Rds: &envoy_extensions_filters_network_http_connection_manager_v3.Rds{
			ConfigSource: ads, RouteConfigName: "outbound",
		}},
		HttpFilters: []*envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter_TypedConfig{TypedConfig: mustAny(&envoy_extensions_filters_http_router_v3.Router{})},
		}},
	}
	want := &Output{
		Listeners: []*envoy_config_listener_v3.Listener{{
			Name: "outbound",
			Address: &envoy_config_core_v3.Address{Address: &envoy_config_core_v3.Address_SocketAddress{SocketAddress: &envoy_config_core_v3.SocketAddress{
				Address: "0.0.0.0", PortSpecifier: &envoy_config_core_v3.SocketAddress_PortValue{PortValue: 15001},
			}}},
			TrafficDirection: envoy_config_core_v3.TrafficDirection_OUTBOUND,
			FilterChains: []*envoy_config_listener_v3.FilterChain{{Filters: []*envoy_config_listener_v3.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &envoy_config_listener_v3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
			}}}},
		}},
		Routes: []*envoy_config_route_v3.RouteConfiguration{{
			Name: "outbound",
			VirtualHosts: []*envoy_config_route_v3.VirtualHost{{
				Name: "test/web:8080",
				Domains: []string{
					"web", "web.test", "web.test.svc", "web.test.svc.cluster.local",
					"web.test.svc.cluster.local:8080", "web.test.svc:8080", "web.test:8080", "web:8080",
				},
				Routes: wantPlainRoute("test/web:8080"),
			}},
		}},
		Clusters: []*envoy_config_cluster_v3.Cluster{wantCluster("test/web:8080", nil)},
		Endpoints: []*envoy_config_endpoint_v3.ClusterLoadAssignment{{
			ClusterName: "test/web:8080",
			Endpoints: []*envoy_config_endpoint_v3.LocalityLbEndpoints{{LbEndpoints: []*envoy_config_endpoint_v3.LbEndpoint{
				wantEndpoint("10.0.0.4", 8081), wantEndpoint("10.0.0.9", 8081),
			}}},
		}},
		Weights: map[types.NamespacedName]int32{},
		Owners:  map[string]types.NamespacedName{},
	}
	got := Translate(in)
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Translate() mismatch (-want +got):\n%s", diff)
	}
	// The listener must decode (the Any above is compared byte-wise).
	if names := listenerRouteNames(got.Listeners[0]); !cmp.Equal(names, []string{"outbound"}) {
		t.Errorf("listener refers to routes %v, want [outbound]", names)
	}
}

func TestTranslateCanary(t *testing.T) {
	const (
		primaryCluster = "test/podinfo-primary:9898"
		canaryCluster  = "test/podinfo-canary:9898"
	)
	key := types.NamespacedName{Namespace: "test", Name: "podinfo"}
	for name, tc := range map[string]struct {
		in         Input
		wantRoute  []*envoy_config_route_v3.Route
		wantWeight map[types.NamespacedName]int32
		wantOD     *envoy_config_cluster_v3.OutlierDetection
	}{
		"weight 0 routes all to the primary": {
			in:         podinfo(withWeight(0)),
			wantRoute:  wantWeighted(&envoy_config_route_v3.RouteAction{ClusterSpecifier: weights(cw(primaryCluster, 100))}),
			wantWeight: map[types.NamespacedName]int32{key: 0},
			wantOD:     defaultOutlier,
		},
		"weight 10 from the status": {
			in:         podinfo(withWeight(10)),
			wantRoute:  wantWeighted(&envoy_config_route_v3.RouteAction{ClusterSpecifier: weights(cw(canaryCluster, 10), cw(primaryCluster, 90))}),
			wantWeight: map[types.NamespacedName]int32{key: 10},
			wantOD:     defaultOutlier,
		},
		"weight 50 from the router overrides the status": {
			in: func() Input {
				in := podinfo(withWeight(10))
				in.Weights = map[types.NamespacedName]int32{key: 50}
				return in
			}(),
			wantRoute:  wantWeighted(&envoy_config_route_v3.RouteAction{ClusterSpecifier: weights(cw(canaryCluster, 50), cw(primaryCluster, 50))}),
			wantWeight: map[types.NamespacedName]int32{key: 50},
			wantOD:     defaultOutlier,
		},
		"weight 100 routes all to the canary": {
			in:         podinfo(withWeight(100)),
			wantRoute:  wantWeighted(&envoy_config_route_v3.RouteAction{ClusterSpecifier: weights(cw(canaryCluster, 100))}),
			wantWeight: map[types.NamespacedName]int32{key: 100},
			wantOD:     defaultOutlier,
		},
		"timeout, retries and outlier detection are carried over": {
			in: podinfo(withWeight(10), withTimeout(5*time.Second), withRetries(2, time.Second, "5xx,reset"),
				withOutlier(3, 2*time.Second, 15*time.Second, 20)),
			wantRoute: wantWeighted(&envoy_config_route_v3.RouteAction{
				ClusterSpecifier: weights(cw(canaryCluster, 10), cw(primaryCluster, 90)),
				Timeout:          durationpb.New(5 * time.Second),
				RetryPolicy: &envoy_config_route_v3.RetryPolicy{
					RetryOn:       "5xx,reset",
					NumRetries:    wrapperspb.UInt32(2),
					PerTryTimeout: durationpb.New(time.Second),
				},
			}),
			wantWeight: map[types.NamespacedName]int32{key: 10},
			wantOD: &envoy_config_cluster_v3.OutlierDetection{
				Consecutive_5Xx:          wrapperspb.UInt32(3),
				EnforcingConsecutive_5Xx: wrapperspb.UInt32(100),
				EnforcingSuccessRate:     wrapperspb.UInt32(0),
				Interval:                 durationpb.New(2 * time.Second),
				BaseEjectionTime:         durationpb.New(15 * time.Second),
				MaxEjectionPercent:       wrapperspb.UInt32(20),
			},
		},
		"no weighted route before the primary and canary Services exist": {
			in: Input{
				Services: []*corev1.Service{service("test", "podinfo", 9898)},
				Canaries: []*weirv1alpha1.Canary{canary("test", "podinfo", "podinfo", 9898, withWeight(10))},
			},
			wantRoute:  wantPlainRoute("test/podinfo:9898"),
			wantWeight: map[types.NamespacedName]int32{},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got := Translate(tc.in)
			var route []*envoy_config_route_v3.Route
			for _, vh := range got.Routes[0].VirtualHosts {
				if vh.Name == "test/podinfo:9898" {
					route = vh.Routes
				}
			}
			if diff := cmp.Diff(tc.wantRoute, route, protocmp.Transform()); diff != "" {
				t.Errorf("route of podinfo (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantWeight, got.Weights); diff != "" {
				t.Errorf("Weights (-want +got):\n%s", diff)
			}
			for _, c := range got.Clusters {
				var want *envoy_config_cluster_v3.OutlierDetection
				if c.Name == primaryCluster || c.Name == canaryCluster {
					want = tc.wantOD
				}
				if diff := cmp.Diff(wantCluster(c.Name, want), c, protocmp.Transform()); diff != "" {
					t.Errorf("cluster %s (-want +got):\n%s", c.Name, diff)
				}
			}
			if rej := Validate(got); len(rej) > 0 {
				t.Errorf("Validate() = %v", rej)
			}
			if err := Consistent(got); err != nil {
				t.Errorf("Consistent() = %v", err)
			}
		})
	}
}

func TestTranslateMultiPortService(t *testing.T) {
	got := Translate(Input{Services: []*corev1.Service{service("test", "api", 9090, 80)}})
	want := []*envoy_config_route_v3.VirtualHost{
		{
			Name:    "test/api:80",
			Domains: []string{"api.test.svc.cluster.local:80", "api.test.svc:80", "api.test:80", "api:80"},
			Routes:  wantPlainRoute("test/api:80"),
		},
		{
			Name: "test/api:9090",
			Domains: []string{
				"api", "api.test", "api.test.svc", "api.test.svc.cluster.local",
				"api.test.svc.cluster.local:9090", "api.test.svc:9090", "api.test:9090", "api:9090",
			},
			Routes: wantPlainRoute("test/api:9090"),
		},
	}
	if diff := cmp.Diff(want, got.Routes[0].VirtualHosts, protocmp.Transform()); diff != "" {
		t.Errorf("virtual hosts (-want +got):\n%s", diff)
	}
}

func TestTranslateIsDeterministic(t *testing.T) {
	in := podinfo(withWeight(10))
	in.Services = append(in.Services, service("a", "z", 80), service("b", "y", 81))
	reversed := Input{}
	for i := len(in.Services) - 1; i >= 0; i-- {
		reversed.Services = append(reversed.Services, in.Services[i])
	}
	for i := len(in.EndpointSlices) - 1; i >= 0; i-- {
		reversed.EndpointSlices = append(reversed.EndpointSlices, in.EndpointSlices[i])
	}
	reversed.Canaries = in.Canaries
	a, err := NewSnapshot(Translate(in))
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSnapshot(Translate(reversed))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a.Versions, b.Versions); diff != "" {
		t.Errorf("versions depend on input order (-a +b):\n%s", diff)
	}
}

func TestValidateRejectsAndNamesTheCanary(t *testing.T) {
	out := Translate(podinfo(withWeight(10), withOutlier(5, 0, 30*time.Second, 50)))
	rej := Validate(out)
	if len(rej) != 2 {
		t.Fatalf("Validate() = %v, want the primary and canary clusters rejected", rej)
	}
	for _, r := range rej {
		if r.Canary != (types.NamespacedName{Namespace: "test", Name: "podinfo"}) {
			t.Errorf("rejection %v not pinned on the Canary", r)
		}
	}
}
