package xds

import (
	"cmp"
	"net"
	"slices"
	"strings"
	"time"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_config_endpoint_v3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	envoy_config_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	envoy_extensions_filters_http_router_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	envoy_extensions_filters_network_http_connection_manager_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	weirv1alpha1 "github.com/weir-dev/weir/canary/v1alpha1"
)

// Defaults of what a Canary leaves out, and of every cluster.
const (
	defaultConnectTimeout   = 5 * time.Second
	defaultRetryOn          = "5xx,reset,connect-failure"
	defaultConsecutive5xx   = 5
	defaultOutlierInterval  = 10 * time.Second
	defaultBaseEjectionTime = 30 * time.Second
	defaultMaxEjectionPct   = 50

	// Circuit-breaker thresholds of every cluster: Envoy's defaults,
	// written out so that weir-proxy and Envoy agree on them.
	maxConnections     = 1024
	maxPendingRequests = 1024
	maxRequests        = 1024
	maxRetries         = 3
)

// Input is everything the translator reads. The slices may be in any order.
type Input struct {
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Canaries       []*weirv1alpha1.Canary
	// Weights are the canary weights to route, by Canary. A Canary missing
	// here routes its status.canaryWeight, so that a restarted controller
	// keeps the traffic where it was.
	Weights map[types.NamespacedName]int32
	// ListenerPort is the outbound listener's port; DefaultListenerPort
	// when zero.
	ListenerPort uint32
}

// Output is the translated configuration. Every list is sorted by name.
type Output struct {
	Listeners []*envoy_config_listener_v3.Listener
	Routes    []*envoy_config_route_v3.RouteConfiguration
	Clusters  []*envoy_config_cluster_v3.Cluster
	Endpoints []*envoy_config_endpoint_v3.ClusterLoadAssignment
	// Weights are the canary weights carried by a weighted route, by
	// Canary. A Canary whose Services are not all there yet has no entry.
	Weights map[types.NamespacedName]int32
	// Owners maps the names of virtual hosts and clusters shaped by a
	// Canary's spec to that Canary, so a rejection can be reported on it.
	Owners map[string]types.NamespacedName
}

// Translate turns Services, EndpointSlices and Canaries into Envoy
// resources. It is a pure function: same input, same (sorted) output.
//
// Every TCP port of every Service other than ExternalName becomes an EDS
// cluster "<ns>/<name>:<port>" and a virtual host whose domains are the
// Service's names with ":<port>"; the first port (the Canary's port for a
// Service under a Canary) also gets the names without a port. A Service that
// is the target of a Canary, and whose "-primary" and "-canary" Services
// exist with the Canary's port, is routed to those two clusters by weight.
func Translate(in Input) *Output {
	out := &Output{
		Weights: map[types.NamespacedName]int32{},
		Owners:  map[string]types.NamespacedName{},
	}
	port := in.ListenerPort
	if port == 0 {
		port = DefaultListenerPort
	}

	services := slices.Clone(in.Services)
	slices.SortFunc(services, func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	servicePorts := map[string]bool{} // cluster names that exist
	for _, svc := range services {
		for _, p := range httpPorts(svc) {
			servicePorts[ClusterName(svc.Namespace, svc.Name, p.Port)] = true
		}
	}

	// The Canary routing each Service, by the Service's name; the
	// alphabetically first Canary wins when two name the same target.
	canaries := slices.Clone(in.Canaries)
	slices.SortFunc(canaries, func(a, b *weirv1alpha1.Canary) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	byService := map[types.NamespacedName]*weirv1alpha1.Canary{}
	// outlier is the outlier detection of the primary and canary clusters.
	outlier := map[string]*weirv1alpha1.Canary{}
	for _, c := range canaries {
		k := canaryServiceKey(c.Namespace, c.Spec.TargetRef.Name)
		if _, taken := byService[k]; taken {
			continue
		}
		byService[k] = c
		for _, suffix := range []string{primarySuffix, canarySuffix} {
			outlier[ClusterName(c.Namespace, k.Name+suffix, c.Spec.Service.Port)] = c
		}
	}

	var vhosts []*envoy_config_route_v3.VirtualHost
	for _, svc := range services {
		ports := httpPorts(svc)
		c := byService[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}]
		portless := int32(-1)
		if len(ports) > 0 {
			portless = ports[0].Port
		}
		if c != nil && slices.ContainsFunc(ports, func(p corev1.ServicePort) bool { return p.Port == c.Spec.Service.Port }) {
			portless = c.Spec.Service.Port
		}
		for _, p := range ports {
			name := ClusterName(svc.Namespace, svc.Name, p.Port)
			vh := &envoy_config_route_v3.VirtualHost{
				Name:    virtualHostName(svc.Namespace, svc.Name, p.Port),
				Domains: serviceDomains(svc.Namespace, svc.Name, p.Port, p.Port == portless),
				Routes:  []*envoy_config_route_v3.Route{plainRoute(name)},
			}
			if c != nil && p.Port == c.Spec.Service.Port {
				key := types.NamespacedName{Namespace: c.Namespace, Name: c.Name}
				primary := ClusterName(svc.Namespace, svc.Name+primarySuffix, p.Port)
				canary := ClusterName(svc.Namespace, svc.Name+canarySuffix, p.Port)
				if servicePorts[primary] && servicePorts[canary] {
					w := c.Status.CanaryWeight
					if dw, ok := in.Weights[key]; ok {
						w = dw
					}
					w = min(max(w, 0), 100)
					vh.Routes = []*envoy_config_route_v3.Route{weightedRoute(primary, canary, w, &c.Spec.Service)}
					out.Weights[key] = w
					out.Owners[vh.Name] = key
				}
			}
			vhosts = append(vhosts, vh)

			cl := cluster(name)
			if c := outlier[name]; c != nil {
				cl.OutlierDetection = outlierDetection(c.Spec.Service.OutlierDetection)
				out.Owners[name] = types.NamespacedName{Namespace: c.Namespace, Name: c.Name}
			}
			out.Clusters = append(out.Clusters, cl)
			out.Endpoints = append(out.Endpoints, loadAssignment(name, svc, p, in.EndpointSlices))
		}
	}
	slices.SortFunc(vhosts, func(a, b *envoy_config_route_v3.VirtualHost) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(out.Clusters, func(a, b *envoy_config_cluster_v3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(out.Endpoints, func(a, b *envoy_config_endpoint_v3.ClusterLoadAssignment) int {
		return cmp.Compare(a.ClusterName, b.ClusterName)
	})

	out.Routes = []*envoy_config_route_v3.RouteConfiguration{{Name: RouteConfigName, VirtualHosts: vhosts}}
	out.Listeners = []*envoy_config_listener_v3.Listener{outboundListener(port)}
	return out
}

// httpPorts returns the TCP ports of a Service in spec order; none for an
// ExternalName Service.
func httpPorts(svc *corev1.Service) []corev1.ServicePort {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	var out []corev1.ServicePort
	for _, p := range svc.Spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			out = append(out, p)
		}
	}
	return out
}

// adsConfigSource is how the sidecar fetches RDS and EDS: over the ADS stream.
func adsConfigSource() *envoy_config_core_v3.ConfigSource {
	return &envoy_config_core_v3.ConfigSource{
		ConfigSourceSpecifier: &envoy_config_core_v3.ConfigSource_Ads{Ads: &envoy_config_core_v3.AggregatedConfigSource{}},
		ResourceApiVersion:    envoy_config_core_v3.ApiVersion_V3,
	}
}

// outboundListener is the one HTTP listener of every sidecar.
func outboundListener(port uint32) *envoy_config_listener_v3.Listener {
	hcm := &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager{
		StatPrefix: ListenerName,
		CodecType:  envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager_AUTO,
		RouteSpecifier: &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager_Rds{
			Rds: &envoy_extensions_filters_network_http_connection_manager_v3.Rds{
				ConfigSource:    adsConfigSource(),
				RouteConfigName: RouteConfigName,
			},
		},
		HttpFilters: []*envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter{{
			Name: wellknown.Router,
			ConfigType: &envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter_TypedConfig{
				TypedConfig: mustAny(&envoy_extensions_filters_http_router_v3.Router{}),
			},
		}},
	}
	return &envoy_config_listener_v3.Listener{
		Name: ListenerName,
		Address: &envoy_config_core_v3.Address{Address: &envoy_config_core_v3.Address_SocketAddress{
			SocketAddress: &envoy_config_core_v3.SocketAddress{
				Protocol:      envoy_config_core_v3.SocketAddress_TCP,
				Address:       "0.0.0.0",
				PortSpecifier: &envoy_config_core_v3.SocketAddress_PortValue{PortValue: port},
			},
		}},
		TrafficDirection: envoy_config_core_v3.TrafficDirection_OUTBOUND,
		FilterChains: []*envoy_config_listener_v3.FilterChain{{
			Filters: []*envoy_config_listener_v3.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &envoy_config_listener_v3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
			}},
		}},
	}
}

// mustAny packs a message whose type is linked in; it cannot fail.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// catchAll matches every request.
func catchAll() *envoy_config_route_v3.RouteMatch {
	return &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}}
}

// plainRoute sends every request to one cluster.
func plainRoute(clusterName string) *envoy_config_route_v3.Route {
	return &envoy_config_route_v3.Route{
		Match: catchAll(),
		Action: &envoy_config_route_v3.Route_Route{Route: &envoy_config_route_v3.RouteAction{
			ClusterSpecifier: &envoy_config_route_v3.RouteAction_Cluster{Cluster: clusterName},
		}},
	}
}

// weightedRoute splits the traffic of a Canary's Service between the
// primary and the canary cluster. A cluster of weight zero is left out, so
// the weights never sum to zero, and no total_weight is set.
func weightedRoute(primary, canary string, canaryWeight int32, svc *weirv1alpha1.CanaryService) *envoy_config_route_v3.Route {
	var clusters []*envoy_config_route_v3.WeightedCluster_ClusterWeight
	if canaryWeight > 0 {
		clusters = append(clusters, &envoy_config_route_v3.WeightedCluster_ClusterWeight{Name: canary, Weight: wrapperspb.UInt32(uint32(canaryWeight))})
	}
	if canaryWeight < 100 {
		clusters = append(clusters, &envoy_config_route_v3.WeightedCluster_ClusterWeight{Name: primary, Weight: wrapperspb.UInt32(uint32(100 - canaryWeight))})
	}
	slices.SortFunc(clusters, func(a, b *envoy_config_route_v3.WeightedCluster_ClusterWeight) int {
		return cmp.Compare(a.Name, b.Name)
	})
	action := &envoy_config_route_v3.RouteAction{
		ClusterSpecifier: &envoy_config_route_v3.RouteAction_WeightedClusters{
			WeightedClusters: &envoy_config_route_v3.WeightedCluster{Clusters: clusters},
		},
	}
	if svc.Timeout != nil {
		action.Timeout = durationpb.New(svc.Timeout.Duration)
	}
	if r := svc.Retries; r != nil {
		p := &envoy_config_route_v3.RetryPolicy{
			RetryOn:    cmp.Or(strings.ReplaceAll(r.RetryOn, " ", ""), defaultRetryOn),
			NumRetries: wrapperspb.UInt32(uint32(max(r.Attempts, 0))),
		}
		if r.PerTryTimeout != nil {
			p.PerTryTimeout = durationpb.New(r.PerTryTimeout.Duration)
		}
		action.RetryPolicy = p
	}
	return &envoy_config_route_v3.Route{Match: catchAll(), Action: &envoy_config_route_v3.Route_Route{Route: action}}
}

// cluster is the EDS cluster of one Service port.
func cluster(name string) *envoy_config_cluster_v3.Cluster {
	return &envoy_config_cluster_v3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &envoy_config_cluster_v3.Cluster_Type{Type: envoy_config_cluster_v3.Cluster_EDS},
		EdsClusterConfig:     &envoy_config_cluster_v3.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource()},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		LbPolicy:             envoy_config_cluster_v3.Cluster_ROUND_ROBIN,
		CircuitBreakers: &envoy_config_cluster_v3.CircuitBreakers{
			Thresholds: []*envoy_config_cluster_v3.CircuitBreakers_Thresholds{{
				Priority:           envoy_config_core_v3.RoutingPriority_DEFAULT,
				MaxConnections:     wrapperspb.UInt32(maxConnections),
				MaxPendingRequests: wrapperspb.UInt32(maxPendingRequests),
				MaxRequests:        wrapperspb.UInt32(maxRequests),
				MaxRetries:         wrapperspb.UInt32(maxRetries),
			}},
		},
	}
}

// outlierDetection carries a Canary's outlier detection over; unset fields
// get the CRD's defaults, and a Canary without one still gets the defaults,
// so that a failing pod is ejected from either side. Only consecutive 5xx
// (local-origin failures included) eject; success-rate ejection is off.
func outlierDetection(od *weirv1alpha1.OutlierDetection) *envoy_config_cluster_v3.OutlierDetection {
	consecutive := int32(defaultConsecutive5xx)
	interval, base := defaultOutlierInterval, defaultBaseEjectionTime
	maxPct := int32(defaultMaxEjectionPct)
	if od != nil {
		if od.Consecutive5xxErrors > 0 {
			consecutive = od.Consecutive5xxErrors
		}
		if od.Interval != nil {
			interval = od.Interval.Duration
		}
		if od.BaseEjectionTime != nil {
			base = od.BaseEjectionTime.Duration
		}
		maxPct = od.MaxEjectionPercent
	}
	return &envoy_config_cluster_v3.OutlierDetection{
		Consecutive_5Xx:          wrapperspb.UInt32(uint32(consecutive)),
		EnforcingConsecutive_5Xx: wrapperspb.UInt32(100),
		EnforcingSuccessRate:     wrapperspb.UInt32(0),
		Interval:                 durationpb.New(interval),
		BaseEjectionTime:         durationpb.New(base),
		MaxEjectionPercent:       wrapperspb.UInt32(uint32(min(max(maxPct, 0), 100))),
	}
}

// loadAssignment gathers the ready endpoints of one Service port from the
// Service's EndpointSlices: sorted by address, each address once.
func loadAssignment(name string, svc *corev1.Service, port corev1.ServicePort, slices_ []*discoveryv1.EndpointSlice) *envoy_config_endpoint_v3.ClusterLoadAssignment {
	type hostPort struct {
		ip   string
		port uint32
	}
	seen := map[hostPort]bool{}
	var hosts []hostPort
	for _, es := range slices_ {
		if es.Namespace != svc.Namespace || es.Labels[discoveryv1.LabelServiceName] != svc.Name || es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		var target int32
		for _, p := range es.Ports {
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			if ptrString(p.Name) == port.Name && proto == corev1.ProtocolTCP && p.Port != nil {
				target = *p.Port
				break
			}
		}
		if target <= 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if net.ParseIP(a) == nil {
					continue
				}
				hp := hostPort{a, uint32(target)}
				if !seen[hp] {
					seen[hp] = true
					hosts = append(hosts, hp)
				}
			}
		}
	}
	slices.SortFunc(hosts, func(a, b hostPort) int { return cmp.Or(cmp.Compare(a.ip, b.ip), cmp.Compare(a.port, b.port)) })
	cla := &envoy_config_endpoint_v3.ClusterLoadAssignment{ClusterName: name}
	if len(hosts) == 0 {
		return cla
	}
	lle := &envoy_config_endpoint_v3.LocalityLbEndpoints{}
	for _, h := range hosts {
		lle.LbEndpoints = append(lle.LbEndpoints, &envoy_config_endpoint_v3.LbEndpoint{
			HostIdentifier: &envoy_config_endpoint_v3.LbEndpoint_Endpoint{Endpoint: &envoy_config_endpoint_v3.Endpoint{
				Address: &envoy_config_core_v3.Address{Address: &envoy_config_core_v3.Address_SocketAddress{
					SocketAddress: &envoy_config_core_v3.SocketAddress{
						Protocol:      envoy_config_core_v3.SocketAddress_TCP,
						Address:       h.ip,
						PortSpecifier: &envoy_config_core_v3.SocketAddress_PortValue{PortValue: h.port},
					},
				}},
			}},
		})
	}
	cla.Endpoints = []*envoy_config_endpoint_v3.LocalityLbEndpoints{lle}
	return cla
}

func ptrString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func sortStrings(s []string) { slices.Sort(s) }
