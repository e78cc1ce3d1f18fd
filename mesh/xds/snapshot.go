package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	envoy_config_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	envoy_extensions_filters_network_http_connection_manager_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	k8stypes "k8s.io/apimachinery/pkg/types"
)

// validator is what protoc-gen-validate generates on every Envoy message.
type validator interface {
	ValidateAll() error
}

// Rejection is a resource that failed validation.
type Rejection struct {
	// Resource names the resource, e.g. "cluster test/podinfo-canary:9898".
	Resource string
	// Canary is the Canary whose spec shaped the resource, if any.
	Canary k8stypes.NamespacedName
	// Err is why it was rejected.
	Err error
}

func (r Rejection) Error() string { return fmt.Sprintf("%s: %v", r.Resource, r.Err) }

// Validate runs the generated ValidateAll of every resource in out, and of
// every virtual host on its own so that a failure can be pinned on the
// Canary that shaped it. It returns the rejections, sorted by resource.
func Validate(out *Output) []Rejection {
	var rej []Rejection
	check := func(kind, name string, m validator) {
		if err := m.ValidateAll(); err != nil {
			rej = append(rej, Rejection{Resource: kind + " " + name, Canary: out.Owners[name], Err: err})
		}
	}
	for _, l := range out.Listeners {
		check("listener", l.Name, l)
	}
	for _, rc := range out.Routes {
		bad := false
		for _, vh := range rc.VirtualHosts {
			if err := vh.ValidateAll(); err != nil {
				bad = true
				rej = append(rej, Rejection{Resource: "virtual host " + vh.Name, Canary: out.Owners[vh.Name], Err: err})
			}
		}
		if !bad {
			check("route configuration", rc.Name, rc)
		}
	}
	for _, c := range out.Clusters {
		check("cluster", c.Name, c)
	}
	for _, e := range out.Endpoints {
		check("cluster load assignment", e.ClusterName, e)
	}
	slices.SortFunc(rej, func(a, b Rejection) int { return compareStrings(a.Resource, b.Resource) })
	return rej
}

// Snapshot is one published configuration: the go-control-plane snapshot
// plus what weir needs to know about it.
type Snapshot struct {
	*cache.Snapshot
	// Output is the translation the snapshot was built from.
	Output *Output
	// Versions are the content hashes, by type URL.
	Versions map[string]string
}

// RouteVersion is the version of the snapshot's route configurations.
func (s *Snapshot) RouteVersion() string { return s.Versions[resource.RouteType] }

// NewSnapshot builds a snapshot of out whose version of each type is the
// hash of that type's resources, so that an unchanged type is never pushed
// again. It fails when the resources do not refer to each other
// consistently.
func NewSnapshot(out *Output) (*Snapshot, error) {
	byType := map[string][]types.Resource{
		resource.ListenerType: asResources(out.Listeners),
		resource.RouteType:    asResources(out.Routes),
		resource.ClusterType:  asResources(out.Clusters),
		resource.EndpointType: asResources(out.Endpoints),
	}
	s := &Snapshot{Snapshot: &cache.Snapshot{}, Output: out, Versions: map[string]string{}}
	for typ, rs := range byType {
		v, err := hashResources(rs)
		if err != nil {
			return nil, err
		}
		s.Versions[typ] = v
		wire := make([]types.Resource, len(rs))
		for i, r := range rs {
			if wire[i], err = premarshal(r); err != nil {
				return nil, err
			}
		}
		s.Resources[cache.GetResponseType(typ)] = cache.NewResources(v, wire)
	}
	if err := Consistent(out); err != nil {
		return nil, err
	}
	return s, nil
}

func asResources[T types.Resource](in []T) []types.Resource {
	out := make([]types.Resource, len(in))
	for i, r := range in {
		out[i] = r
	}
	return out
}

// hashResources is the content version of a sorted list of resources.
func hashResources(rs []types.Resource) (string, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	var buf []byte
	for _, r := range rs {
		var err error
		buf, err = opts.MarshalAppend(buf[:0], r)
		if err != nil {
			return "", fmt.Errorf("failed to hash %T: %w", r, err)
		}
		fmt.Fprintf(h, "%d:", len(buf))
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Consistent checks that the resources refer to each other the way Envoy
// needs: the listener's RDS name exists, every cluster a route names
// exists, every cluster has a load assignment of its name and every load
// assignment a cluster.
func Consistent(out *Output) error {
	routes := map[string]bool{}
	for _, rc := range out.Routes {
		routes[rc.Name] = true
	}
	clusters := map[string]bool{}
	for _, c := range out.Clusters {
		clusters[c.Name] = true
	}
	eds := map[string]bool{}
	for _, e := range out.Endpoints {
		eds[e.ClusterName] = true
		if !clusters[e.ClusterName] {
			return fmt.Errorf("load assignment %q has no cluster", e.ClusterName)
		}
	}
	var errs []error
	for _, c := range out.Clusters {
		name := c.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = c.Name
		}
		if !eds[name] {
			errs = append(errs, fmt.Errorf("cluster %q has no load assignment %q", c.Name, name))
		}
	}
	for _, l := range out.Listeners {
		for _, name := range listenerRouteNames(l) {
			if !routes[name] {
				errs = append(errs, fmt.Errorf("listener %q refers to missing route configuration %q", l.Name, name))
			}
		}
	}
	for _, rc := range out.Routes {
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routes {
				for _, name := range routeClusters(r) {
					if !clusters[name] {
						errs = append(errs, fmt.Errorf("virtual host %q refers to missing cluster %q", vh.Name, name))
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// routeClusters lists the clusters a route sends traffic to.
func routeClusters(r *envoy_config_route_v3.Route) []string {
	a := r.GetRoute()
	if a == nil {
		return nil
	}
	if c := a.GetCluster(); c != "" {
		return []string{c}
	}
	var out []string
	for _, wc := range a.GetWeightedClusters().GetClusters() {
		out = append(out, wc.Name)
	}
	return out
}

// listenerRouteNames lists the RDS names a listener's connection managers
// refer to.
func listenerRouteNames(l *envoy_config_listener_v3.Listener) []string {
	var out []string
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			hcm := &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager{}
			if f.GetTypedConfig() == nil || !f.GetTypedConfig().MessageIs(hcm) {
				continue
			}
			if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
				continue
			}
			if rds := hcm.GetRds(); rds != nil {
				out = append(out, rds.GetRouteConfigName())
			}
		}
	}
	return out
}
