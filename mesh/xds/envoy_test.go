package xds

import (
	"context"
	"os"
	"testing"
	"time"

	envoy_config_bootstrap_v3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_config_endpoint_v3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	envoy_config_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"sigs.k8s.io/yaml"
)

// TestEnvoyBootstrapParses checks that config/envoy/bootstrap.yaml is a
// valid Envoy v3 Bootstrap that takes listeners and clusters from ADS.
func TestEnvoyBootstrapParses(t *testing.T) {
	raw, err := os.ReadFile("../../config/envoy/bootstrap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatalf("bootstrap.yaml is not YAML: %v", err)
	}
	b := &envoy_config_bootstrap_v3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatalf("bootstrap.yaml is not an Envoy Bootstrap: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("bootstrap.yaml fails validation: %v", err)
	}
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads.GetApiType().String() != "GRPC" || ads.GetTransportApiVersion().String() != "V3" {
		t.Errorf("ads_config = %v, want GRPC over API v3", ads)
	}
	if b.GetDynamicResources().GetLdsConfig().GetAds() == nil || b.GetDynamicResources().GetCdsConfig().GetAds() == nil {
		t.Error("listeners and clusters must come from ADS")
	}
	xdsCluster := ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName()
	found := false
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == xdsCluster {
			found = true
			port := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
			if port != 18000 {
				t.Errorf("xDS cluster port = %d, want 18000 (--xds-address)", port)
			}
		}
	}
	if !found {
		t.Errorf("ADS refers to cluster %q, which the bootstrap does not define", xdsCluster)
	}
	if got := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != 15000 {
		t.Errorf("admin port = %d, want 15000", got)
	}
}

// TestPublishedResourcesAreSelfConsistent reads what the server published
// for the fleet and checks what Envoy needs: every resource validates, the
// RDS names the listener refers to exist, every cluster a route names
// exists, every EDS cluster has its load assignment and every load
// assignment its cluster.
func TestPublishedResourcesAreSelfConsistent(t *testing.T) {
	in := podinfo(withWeight(10), withTimeout(time.Second), withRetries(1, 0, ""))
	in.Services = append(in.Services, service("test", "web", 80, 8080))
	srv := NewServer(&fixedSource{in: in}, nil, nil, Options{})
	if !srv.Rebuild(context.Background()) {
		t.Fatal("nothing published")
	}
	snap, err := srv.cache.GetSnapshot(fleetHash{}.ID(&envoy_config_core_v3.Node{Id: "any-node-id"}))
	if err != nil {
		t.Fatalf("the fleet snapshot is not served to an arbitrary node: %v", err)
	}
	listeners := onTheWire(t, snap.GetResources(resource.ListenerType))
	routes := onTheWire(t, snap.GetResources(resource.RouteType))
	clusters := onTheWire(t, snap.GetResources(resource.ClusterType))
	endpoints := onTheWire(t, snap.GetResources(resource.EndpointType))
	if len(listeners) != 1 || len(routes) != 1 || len(clusters) != 5 || len(endpoints) != 5 {
		t.Fatalf("published %d listeners, %d routes, %d clusters, %d endpoints", len(listeners), len(routes), len(clusters), len(endpoints))
	}
	for _, typ := range []map[string]resourceValidator{
		asValidators(listeners), asValidators(routes), asValidators(clusters), asValidators(endpoints),
	} {
		for name, r := range typ {
			if err := r.ValidateAll(); err != nil {
				t.Errorf("%s fails validation: %v", name, err)
			}
		}
	}
	for _, r := range listeners {
		for _, name := range listenerRouteNames(r.(*envoy_config_listener_v3.Listener)) {
			if _, ok := routes[name]; !ok {
				t.Errorf("listener refers to route configuration %q, which is not published", name)
			}
		}
	}
	domains := map[string]string{}
	for _, r := range routes {
		for _, vh := range r.(*envoy_config_route_v3.RouteConfiguration).GetVirtualHosts() {
			for _, d := range vh.GetDomains() {
				if other, dup := domains[d]; dup {
					t.Errorf("domain %q is in virtual hosts %q and %q; Envoy rejects duplicates", d, other, vh.GetName())
				}
				domains[d] = vh.GetName()
			}
			for _, rt := range vh.GetRoutes() {
				for _, c := range routeClusters(rt) {
					if _, ok := clusters[c]; !ok {
						t.Errorf("virtual host %q routes to cluster %q, which is not published", vh.GetName(), c)
					}
				}
				if wc := rt.GetRoute().GetWeightedClusters(); wc != nil {
					var sum uint32
					for _, c := range wc.GetClusters() {
						sum += c.GetWeight().GetValue()
					}
					if sum == 0 || wc.GetTotalWeight() != nil {
						t.Errorf("virtual host %q: weights sum to %d, total_weight %v", vh.GetName(), sum, wc.GetTotalWeight())
					}
				}
			}
		}
	}
	for name, r := range clusters {
		c := r.(*envoy_config_cluster_v3.Cluster)
		if c.GetType() != envoy_config_cluster_v3.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
			t.Errorf("cluster %q is not EDS over ADS", name)
		}
		if _, ok := endpoints[name]; !ok {
			t.Errorf("cluster %q has no load assignment", name)
		}
	}
	for name, r := range endpoints {
		if r.(*envoy_config_endpoint_v3.ClusterLoadAssignment).GetClusterName() != name {
			t.Errorf("load assignment %q is named differently inside", name)
		}
		if _, ok := clusters[name]; !ok {
			t.Errorf("load assignment %q has no cluster", name)
		}
	}
}

type resourceValidator interface{ ValidateAll() error }

func asValidators[T any](in map[string]T) map[string]resourceValidator {
	out := map[string]resourceValidator{}
	for k, v := range in {
		out[k] = any(v).(resourceValidator)
	}
	return out
}

// TestPremarshalledResourcesDecodeToTheOriginals checks that what the cache
// sends decodes to exactly the translated resources, names included.
func TestPremarshalledResourcesDecodeToTheOriginals(t *testing.T) {
	out := Translate(podinfo(withWeight(10), withTimeout(time.Second), withRetries(2, time.Second, "5xx")))
	snap, err := NewSnapshot(out)
	if err != nil {
		t.Fatal(err)
	}
	originals := map[string]proto.Message{}
	for _, ms := range [][]proto.Message{asMessages(out.Listeners), asMessages(out.Routes), asMessages(out.Clusters), asMessages(out.Endpoints)} {
		for _, m := range ms {
			originals[string(m.ProtoReflect().Descriptor().Name())+"/"+cache.GetResourceName(m)] = m
		}
	}
	n := 0
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		for name, r := range snap.GetResources(typ) {
			n++
			want := originals[string(r.ProtoReflect().Descriptor().Name())+"/"+name]
			if want == nil {
				t.Errorf("%s %q is not a translated resource", shortType(typ), name)
				continue
			}
			wire, err := cache.MarshalResource(r)
			if err != nil {
				t.Fatal(err)
			}
			got := want.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(wire, got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("%s %q on the wire differs (-want +got):\n%s", shortType(typ), name, diff)
			}
		}
	}
	if n != len(originals) {
		t.Errorf("snapshot holds %d resources, translated %d", n, len(originals))
	}
}

// onTheWire encodes resources as the cache sends them and decodes them as a
// sidecar does.
func onTheWire(t *testing.T, in map[string]types.Resource) map[string]types.Resource {
	t.Helper()
	out := map[string]types.Resource{}
	for name, r := range in {
		wire, err := cache.MarshalResource(r)
		if err != nil {
			t.Fatal(err)
		}
		m := r.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(wire, m); err != nil {
			t.Fatal(err)
		}
		out[name] = m
	}
	return out
}
