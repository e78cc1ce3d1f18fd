package xds

import (
	"context"
	"errors"
	"slices"
	"sync"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_config_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_service_discovery_v3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

// adsClient is a minimal sidecar speaking ADS state of the world over a raw
// gRPC stream: it subscribes to listeners and clusters, then to the routes
// and load assignments they name, and ACKs (or NACKs) every response.
type adsClient struct {
	node   string
	stream envoy_service_discovery_v3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	// reject, when set, returns a reason to NACK a response, or "".
	reject func(*envoy_service_discovery_v3.DiscoveryResponse) string
	// hold, when set, is waited on before a route response is ACKed.
	hold func()
	// resume, when set, are the versions (by type) and the route and
	// endpoint names the client says it holds when it connects, as a
	// sidecar does when it reconnects.
	resume map[string]string
	// onAck is called after an ACK of a response was sent.
	onAck func(*envoy_service_discovery_v3.DiscoveryResponse)

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every response
	latest   map[string]*envoy_service_discovery_v3.DiscoveryResponse
	received map[string][]*envoy_service_discovery_v3.DiscoveryResponse
	keep     bool // keep every response in received
	names    map[string][]string
	done     chan struct{}
	err      error
}

// dialADS opens an ADS stream on conn and starts the client's receive loop;
// it ends when ctx ends or the stream fails.
func dialADS(ctx context.Context, conn *grpc.ClientConn, node string, keep bool, configure ...func(*adsClient)) (*adsClient, error) {
	stream, err := envoy_service_discovery_v3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	c := &adsClient{
		node: node, stream: stream, keep: keep,
		changed:  make(chan struct{}),
		latest:   map[string]*envoy_service_discovery_v3.DiscoveryResponse{},
		received: map[string][]*envoy_service_discovery_v3.DiscoveryResponse{},
		names:    map[string][]string{},
		done:     make(chan struct{}),
	}
	for _, f := range configure {
		f(c)
	}
	first := []string{resource.ListenerType, resource.ClusterType}
	if c.resume != nil {
		first = append(first, resource.RouteType, resource.EndpointType)
	}
	for _, typ := range first {
		if err := c.send(typ, nil, nil); err != nil {
			return nil, err
		}
	}
	go c.loop()
	return c, nil
}

func (c *adsClient) send(typ string, last *envoy_service_discovery_v3.DiscoveryResponse, nack *status.Status) error {
	req := &envoy_service_discovery_v3.DiscoveryRequest{
		Node:          &envoy_config_core_v3.Node{Id: c.node, Cluster: "bench"},
		TypeUrl:       typ,
		ResourceNames: c.names[typ],
		ErrorDetail:   nack,
	}
	if last == nil && c.resume != nil {
		req.VersionInfo = c.resume[typ]
	}
	if last != nil {
		req.ResponseNonce = last.GetNonce()
		req.VersionInfo = last.GetVersionInfo()
		if nack != nil {
			req.VersionInfo = c.accepted(typ)
		}
	}
	return c.stream.Send(req)
}

// accepted is the last version of typ the client accepted.
func (c *adsClient) accepted(typ string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.latest[typ]; r != nil {
		return r.GetVersionInfo()
	}
	return ""
}

func (c *adsClient) loop() {
	defer close(c.done)
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			c.mu.Lock()
			c.err = err
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
			return
		}
		typ := resp.GetTypeUrl()
		if c.reject != nil {
			if reason := c.reject(resp); reason != "" {
				c.record(resp, false)
				if err := c.send(typ, resp, &status.Status{Code: 3, Message: reason}); err != nil {
					return
				}
				continue
			}
		}
		if typ == resource.RouteType && c.hold != nil {
			c.hold()
		}
		c.record(resp, true)
		if err := c.send(typ, resp, nil); err != nil {
			return
		}
		if c.onAck != nil {
			c.onAck(resp)
		}
		// Subscribe to what the listeners and clusters name.
		var dep string
		var names []string
		switch typ {
		case resource.ListenerType:
			dep = resource.RouteType
			for _, a := range resp.GetResources() {
				l := &envoy_config_listener_v3.Listener{}
				if a.UnmarshalTo(l) == nil {
					names = append(names, listenerRouteNames(l)...)
				}
			}
		case resource.ClusterType:
			dep = resource.EndpointType
			for _, a := range resp.GetResources() {
				cl := &envoy_config_cluster_v3.Cluster{}
				if a.UnmarshalTo(cl) == nil {
					names = append(names, cl.GetName())
				}
			}
		default:
			continue
		}
		slices.Sort(names)
		if _, subscribed := c.names[dep]; subscribed && slices.Equal(c.names[dep], names) {
			continue
		}
		c.names[dep] = names
		c.mu.Lock()
		last := c.latest[dep]
		c.mu.Unlock()
		if err := c.send(dep, last, nil); err != nil {
			return
		}
	}
}

func (c *adsClient) record(resp *envoy_service_discovery_v3.DiscoveryResponse, accepted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if accepted {
		c.latest[resp.GetTypeUrl()] = resp
	}
	if c.keep {
		c.received[resp.GetTypeUrl()] = append(c.received[resp.GetTypeUrl()], resp)
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// wait blocks until cond holds on the client's accepted responses, the
// stream fails or ctx ends.
func (c *adsClient) wait(ctx context.Context, cond func(latest map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool) error {
	for {
		c.mu.Lock()
		ok, err, ch := cond(c.latest), c.err, c.changed
		c.mu.Unlock()
		if ok {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return errors.New("timed out waiting for the client's condition")
		}
	}
}
