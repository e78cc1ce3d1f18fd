// Package proxy is weir-proxy's core: it turns xDS resources (Envoy v3
// listeners, routes, clusters and endpoints) into a running HTTP proxy that
// honours each accepted field the way Envoy documents it, and NACKs the rest.
//
// Configuration is swapped RCU-style: every update builds new immutable
// tables and publishes them through atomic pointers, so the request path
// takes no lock and in-flight requests finish on the config they started
// with.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_endpoint_v3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	envoy_config_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weir-dev/weir/mesh/proxy/stats"
)

// Options configure a Proxy.
type Options struct {
	// BindIP, when set, replaces the IP of every listener address.
	BindIP string
	// Log receives listener and config events; slog.Default() when nil.
	Log *slog.Logger
	// Concurrency is the number of event loops (threads) serving each
	// listener, as Envoy's --concurrency; 0 means one per GOMAXPROCS.
	Concurrency int
	// DisableEventLoop serves every connection on the goroutine-per-
	// connection path (h1server.go) instead of the event loops.
	DisableEventLoop bool
}

// Proxy is the xDS-configured data plane. It implements xdsclient.Handler.
type Proxy struct {
	opts  Options
	log   *slog.Logger
	stats *stats.Registry

	clusters atomic.Pointer[map[string]*cluster]
	routes   atomic.Pointer[map[string]*routeTable]
	draining atomic.Bool

	mu        sync.Mutex // serialises Apply and Drain
	listeners map[string]*listenerRuntime
	endpoints map[string][]endpointSpec // EDS, by cluster_name
	applied   map[string]bool           // types applied at least once
	versions  map[string]string         // last accepted version per type
	dump      map[string]map[string]dumpedResource
}

type dumpedResource struct {
	version  string
	resource *anypb.Any
}

// New returns a proxy with no configuration.
func New(opts Options) *Proxy {
	p := &Proxy{
		opts:      opts,
		log:       opts.Log,
		stats:     stats.New(),
		listeners: map[string]*listenerRuntime{},
		endpoints: map[string][]endpointSpec{},
		applied:   map[string]bool{},
		versions:  map[string]string{},
		dump:      map[string]map[string]dumpedResource{},
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.clusters.Store(&map[string]*cluster{})
	p.routes.Store(&map[string]*routeTable{})
	return p
}

// Stats returns the metrics registry.
func (p *Proxy) Stats() *stats.Registry { return p.stats }

// References returns the EDS names the clusters need, or the RDS names the
// listeners need.
func (p *Proxy) References(typeURL string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.referencesLocked(typeURL)
}

func (p *Proxy) referencesLocked(typeURL string) []string {
	set := map[string]bool{}
	switch typeURL {
	case resource.EndpointType:
		for _, c := range *p.clusters.Load() {
			if n := c.cfg.Load().edsName; n != "" {
				set[n] = true
			}
		}
	case resource.RouteType:
		for _, l := range p.listeners {
			if n := l.cfg.Load().rdsName; n != "" {
				set[n] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// Apply takes all resources of one type or none of them.
func (p *Proxy) Apply(typeURL, version string, resources []*anypb.Any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	switch typeURL {
	case resource.ListenerType:
		err = p.applyListeners(version, resources)
	case resource.RouteType:
		err = p.applyRoutes(version, resources)
	case resource.ClusterType:
		err = p.applyClusters(version, resources)
	case resource.EndpointType:
		err = p.applyEndpoints(version, resources)
	default:
		err = fmt.Errorf("unsupported resource type %q", typeURL)
	}
	p.stats.XDSUpdate(typeURL, err == nil)
	if err != nil {
		return err
	}
	p.applied[typeURL] = true
	p.versions[typeURL] = version
	return nil
}

// decode unmarshals each resource into a new T, checking its type URL.
func decode[T proto.Message](typeURL string, resources []*anypb.Any, newT func() T, name func(T) string) ([]T, error) {
	out := make([]T, 0, len(resources))
	seen := map[string]bool{}
	for _, a := range resources {
		if a.GetTypeUrl() != typeURL {
			return nil, fmt.Errorf("resource of type %q in a %q response", a.GetTypeUrl(), typeURL)
		}
		m := newT()
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("failed to decode %s: %w", typeURL, err)
		}
		n := name(m)
		if seen[n] {
			return nil, fmt.Errorf("duplicate resource name %q", n)
		}
		seen[n] = true
		out = append(out, m)
	}
	return out, nil
}

// record keeps what /config_dump shows. full replaces the type's resources;
// otherwise the response's resources are merged into those still in keep.
func (p *Proxy) record(typeURL, version string, resources []*anypb.Any, names []string, full bool, keep func(string) bool) {
	m := map[string]dumpedResource{}
	if !full {
		for n, d := range p.dump[typeURL] {
			if keep(n) {
				m[n] = d
			}
		}
	}
	for i, a := range resources {
		m[names[i]] = dumpedResource{version: version, resource: a}
	}
	p.dump[typeURL] = m
}

func (p *Proxy) applyListeners(version string, resources []*anypb.Any) error {
	ls, err := decode(resource.ListenerType, resources, func() *envoy_config_listener_v3.Listener { return &envoy_config_listener_v3.Listener{} }, (*envoy_config_listener_v3.Listener).GetName)
	if err != nil {
		return err
	}
	configs := make([]*listenerConfig, 0, len(ls))
	addrs := map[string]string{}
	names := make([]string, 0, len(ls))
	for _, l := range ls {
		lc, err := buildListener(l, p.opts.BindIP)
		if err != nil {
			return fmt.Errorf("listener %q: %w", l.GetName(), err)
		}
		if other, dup := addrs[lc.address]; dup {
			return fmt.Errorf("listeners %q and %q both bind %s", other, l.GetName(), lc.address)
		}
		addrs[lc.address] = l.GetName()
		lc.version = version
		configs = append(configs, lc)
		names = append(names, l.GetName())
	}
	// Bind every new address first, so that a failure leaves everything as it was.
	bound := map[string]net.Listener{}
	reusable := func(lc *listenerConfig) *listenerRuntime {
		for _, rt := range p.listeners {
			if rt.address == lc.address {
				return rt
			}
		}
		return nil
	}
	for _, lc := range configs {
		if reusable(lc) != nil {
			continue
		}
		ln, err := net.Listen("tcp", lc.address)
		if err != nil {
			for _, b := range bound {
				b.Close()
			}
			return fmt.Errorf("listener %q: failed to bind %s: %w", lc.name, lc.address, err)
		}
		bound[lc.address] = ln
	}
	next := map[string]*listenerRuntime{}
	for _, lc := range configs {
		rt := reusable(lc)
		if rt == nil {
			rt = p.startListener(bound[lc.address], lc)
		}
		rt.cfg.Store(lc)
		rt.name = lc.name
		next[lc.name] = rt
	}
	for _, rt := range p.listeners {
		if !slices.Contains(slices.Collect(maps.Values(next)), rt) {
			go rt.stop(p.log)
		}
	}
	p.listeners = next
	p.record(resource.ListenerType, version, resources, names, true, nil)
	return nil
}

func (p *Proxy) applyRoutes(version string, resources []*anypb.Any) error {
	rcs, err := decode(resource.RouteType, resources, func() *envoy_config_route_v3.RouteConfiguration {
		return &envoy_config_route_v3.RouteConfiguration{}
	}, (*envoy_config_route_v3.RouteConfiguration).GetName)
	if err != nil {
		return err
	}
	var known map[string]bool
	next := map[string]*routeTable{}
	names := make([]string, 0, len(rcs))
	for _, rc := range rcs {
		var check map[string]bool
		if rc.GetValidateClusters().GetValue() {
			if known == nil {
				known = map[string]bool{}
				for n := range *p.clusters.Load() {
					known[n] = true
				}
			}
			check = known
		}
		rt, err := buildRouteTable(rc, check)
		if err != nil {
			return fmt.Errorf("route configuration %q: %w", rc.GetName(), err)
		}
		rt.version = version
		next[rc.GetName()] = rt
		names = append(names, rc.GetName())
	}
	// State of the world for RDS is per name: keep tables still referenced
	// that this response did not carry.
	for _, n := range p.referencesLocked(resource.RouteType) {
		if _, ok := next[n]; !ok {
			if old := (*p.routes.Load())[n]; old != nil {
				next[n] = old
			}
		}
	}
	p.routes.Store(&next)
	p.record(resource.RouteType, version, resources, names, false, func(n string) bool { return next[n] != nil })
	return nil
}

func (p *Proxy) applyClusters(version string, resources []*anypb.Any) error {
	cs, err := decode(resource.ClusterType, resources, func() *envoy_config_cluster_v3.Cluster { return &envoy_config_cluster_v3.Cluster{} }, (*envoy_config_cluster_v3.Cluster).GetName)
	if err != nil {
		return err
	}
	configs := make([]*clusterConfig, 0, len(cs))
	names := make([]string, 0, len(cs))
	for _, c := range cs {
		cc, err := buildCluster(c)
		if err != nil {
			return fmt.Errorf("cluster %q: %w", c.GetName(), err)
		}
		configs = append(configs, cc)
		names = append(names, c.GetName())
	}
	old := *p.clusters.Load()
	next := make(map[string]*cluster, len(configs))
	for _, cc := range configs {
		c := old[cc.name]
		if c == nil {
			c = newCluster(cc.name, p.stats.Cluster(cc.name))
		}
		c.configure(cc)
		switch {
		case cc.static != nil:
			eps, _ := buildEndpoints(cc.static) // validated in buildCluster
			c.setEndpoints(eps)
		default:
			if eps, ok := p.endpoints[cc.edsName]; ok {
				c.setEndpoints(eps)
			}
		}
		next[cc.name] = c
	}
	p.clusters.Store(&next)
	for name, c := range old {
		if _, ok := next[name]; !ok {
			c.close()
			p.stats.Remove(name)
		}
	}
	p.record(resource.ClusterType, version, resources, names, true, nil)
	return nil
}

func (p *Proxy) applyEndpoints(version string, resources []*anypb.Any) error {
	clas, err := decode(resource.EndpointType, resources, func() *envoy_config_endpoint_v3.ClusterLoadAssignment {
		return &envoy_config_endpoint_v3.ClusterLoadAssignment{}
	}, (*envoy_config_endpoint_v3.ClusterLoadAssignment).GetClusterName)
	if err != nil {
		return err
	}
	got := map[string][]endpointSpec{}
	names := make([]string, 0, len(clas))
	for _, cla := range clas {
		eps, err := buildEndpoints(cla)
		if err != nil {
			return fmt.Errorf("cluster load assignment %q: %w", cla.GetClusterName(), err)
		}
		got[cla.GetClusterName()] = eps
		names = append(names, cla.GetClusterName())
	}
	next := map[string][]endpointSpec{}
	for _, n := range p.referencesLocked(resource.EndpointType) {
		if eps, ok := got[n]; ok {
			next[n] = eps
		} else if eps, ok := p.endpoints[n]; ok {
			next[n] = eps
		}
	}
	for n, eps := range got {
		next[n] = eps
	}
	p.endpoints = next
	for _, c := range *p.clusters.Load() {
		if eps, ok := got[c.cfg.Load().edsName]; ok {
			c.setEndpoints(eps)
		}
	}
	p.record(resource.EndpointType, version, resources, names, false, func(n string) bool { _, ok := next[n]; return ok })
	return nil
}

// Ready reports whether listeners, clusters and everything they reference
// have arrived, and the proxy is not draining.
func (p *Proxy) Ready() (bool, string) {
	if p.draining.Load() {
		return false, "DRAINING"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.applied[resource.ClusterType] || !p.applied[resource.ListenerType] {
		return false, "INITIALIZING"
	}
	routes := *p.routes.Load()
	for _, n := range p.referencesLocked(resource.RouteType) {
		if routes[n] == nil {
			return false, "INITIALIZING"
		}
	}
	for _, n := range p.referencesLocked(resource.EndpointType) {
		if _, ok := p.endpoints[n]; !ok {
			return false, "INITIALIZING"
		}
	}
	return true, "LIVE"
}

// Drain answers with "Connection: close" for drainTime so clients move
// away, then shuts the listeners down, waiting for in-flight requests until
// ctx ends.
func (p *Proxy) Drain(ctx context.Context, drainTime time.Duration) error {
	p.draining.Store(true)
	p.mu.Lock()
	ls := slices.Collect(maps.Values(p.listeners))
	p.mu.Unlock()
	for _, l := range ls {
		l.srv.SetKeepAlivesEnabled(false)
	}
	select {
	case <-ctx.Done():
	case <-time.After(drainTime):
	}
	var errs []error
	for _, l := range ls {
		if err := l.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("failed to drain listener %q: %w", l.name, err))
		}
	}
	for _, c := range *p.clusters.Load() {
		c.close()
	}
	return errors.Join(errs...)
}

// Close stops every listener and cluster at once.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.listeners {
		l.srv.Close()
	}
	p.listeners = map[string]*listenerRuntime{}
	for _, c := range *p.clusters.Load() {
		c.close()
	}
}

// listenerServer serves one bound listener: the event-loop server
// (evloop_linux.go) or the goroutine-per-connection one (h1server.go).
type listenerServer interface {
	Serve(net.Listener) error
	SetKeepAlivesEnabled(bool)
	Shutdown(context.Context) error
	Close() error
}

// listenerRuntime is one bound listener; its config is swapped in place.
type listenerRuntime struct {
	name    string
	address string
	srv     listenerServer
	cfg     atomic.Pointer[listenerConfig]
}

func (p *Proxy) startListener(ln net.Listener, lc *listenerConfig) *listenerRuntime {
	rt := &listenerRuntime{name: lc.name, address: lc.address}
	rt.srv = newListenerServer(&handler{p: p, l: rt})
	go func() {
		if err := rt.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("listener stopped", "listener", lc.name, "address", lc.address, "error", err)
		}
	}()
	p.log.Info("listener started", "listener", lc.name, "address", lc.address)
	return rt
}

func (rt *listenerRuntime) stop(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.srv.Shutdown(ctx); err != nil {
		log.Info("listener drain cut short", "listener", rt.name, "error", err)
	}
}

// Version returns the version of the last accepted response of a type.
func (p *Proxy) Version(typeURL string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.versions[typeURL]
}
