// Package xdsclient is weir-proxy's ADS client: state of the world over one
// aggregated stream, CDS and LDS first, then EDS and RDS by the names they
// reference; every response is ACKed or NACKed with the handler's error, and
// the stream is re-established with back-off while the last good config stays
// in force.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_service_discovery_v3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

// Handler applies the resources of one type. Apply either takes all of them
// or none and returns why; References says which names of a type the current
// config needs (EDS from CDS, RDS from LDS).
type Handler interface {
	Apply(typeURL, version string, resources []*anypb.Any) error
	References(typeURL string) []string
}

// Client is an ADS client. Fields must be set before Run.
type Client struct {
	// Address is the control plane's host:port.
	Address string
	// Node identifies this proxy.
	Node *envoy_config_core_v3.Node
	// Handler receives the resources.
	Handler Handler
	// Log receives connection and NACK events.
	Log *slog.Logger
	// MinBackoff and MaxBackoff bound the reconnect delay.
	MinBackoff, MaxBackoff time.Duration
	// OnResult, when set, is called after each ACK (err == nil) or NACK.
	OnResult func(typeURL string, err error)

	mu       sync.Mutex
	accepted map[string]string // type URL → last accepted version
}

// order is the order in which types are applied and first requested.
var wildcardTypes = []string{resource.ClusterType, resource.ListenerType}

// dependents maps a type to the type whose names it references.
var dependents = map[string]string{
	resource.ClusterType:  resource.EndpointType,
	resource.ListenerType: resource.RouteType,
}

// Run keeps an ADS stream open until ctx ends, reconnecting with jittered
// exponential back-off. It returns ctx's error.
func (c *Client) Run(ctx context.Context) error {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	minB, maxB := c.MinBackoff, c.MaxBackoff
	if minB <= 0 {
		minB = 250 * time.Millisecond
	}
	if maxB <= 0 {
		maxB = 30 * time.Second
	}
	c.mu.Lock()
	if c.accepted == nil {
		c.accepted = map[string]string{}
	}
	c.mu.Unlock()
	conn, err := grpc.NewClient(c.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("failed to create xDS client for %s: %w", c.Address, err)
	}
	defer conn.Close()
	backoff := minB
	for {
		received, err := c.stream(ctx, conn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if received {
			backoff = minB
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.Log.Info("xDS stream ended, reconnecting", "address", c.Address, "error", err, "after", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxB)
	}
}

// streamState is per stream: nonces and subscriptions.
type streamState struct {
	mu     sync.Mutex
	s      envoy_service_discovery_v3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	nonce  map[string]string
	names  map[string][]string
	nacked map[string]string // type → version last NACKed
	delay  map[string]time.Duration
	timer  map[string]*time.Timer
}

func (c *Client) stream(ctx context.Context, conn *grpc.ClientConn) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := envoy_service_discovery_v3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("failed to open ADS stream: %w", err)
	}
	st := &streamState{s: s, nonce: map[string]string{}, names: map[string][]string{}, nacked: map[string]string{}, delay: map[string]time.Duration{}, timer: map[string]*time.Timer{}}
	defer func() {
		st.mu.Lock()
		for _, t := range st.timer {
			t.Stop()
		}
		st.mu.Unlock()
	}()
	for _, t := range wildcardTypes {
		if err := c.send(st, t, c.version(t), nil); err != nil {
			return false, err
		}
		if err := c.subscribe(st, dependents[t]); err != nil {
			return false, err
		}
	}
	received := false
	for {
		resp, err := s.Recv()
		if err != nil {
			return received, fmt.Errorf("ADS stream receive failed: %w", err)
		}
		received = true
		if err := c.handle(st, resp); err != nil {
			return received, err
		}
	}
}

func (c *Client) version(typeURL string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accepted[typeURL]
}

// send writes one DiscoveryRequest; detail non-nil makes it a NACK.
func (c *Client) send(st *streamState, typeURL, version string, detail error) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	req := &envoy_service_discovery_v3.DiscoveryRequest{
		VersionInfo:   version,
		Node:          c.Node,
		ResourceNames: st.names[typeURL],
		TypeUrl:       typeURL,
		ResponseNonce: st.nonce[typeURL],
	}
	if detail != nil {
		req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: detail.Error()}
	}
	if err := st.s.Send(req); err != nil {
		return fmt.Errorf("failed to send %s request: %w", typeURL, err)
	}
	return nil
}

// subscribe (re)requests typeURL when the names the config references
// changed. Nothing is requested while no name is referenced.
func (c *Client) subscribe(st *streamState, typeURL string) error {
	names := c.Handler.References(typeURL)
	slices.Sort(names)
	st.mu.Lock()
	old, had := st.names[typeURL]
	same := had && slices.Equal(old, names)
	if !same {
		st.names[typeURL] = names
	}
	st.mu.Unlock()
	if same || (!had && len(names) == 0) {
		return nil
	}
	return c.send(st, typeURL, c.version(typeURL), nil)
}

func (c *Client) handle(st *streamState, resp *envoy_service_discovery_v3.DiscoveryResponse) error {
	t := resp.GetTypeUrl()
	st.mu.Lock()
	st.nonce[t] = resp.GetNonce()
	if tm := st.timer[t]; tm != nil {
		tm.Stop()
		delete(st.timer, t)
	}
	st.mu.Unlock()
	if _, known := dependents[t]; !known && t != resource.EndpointType && t != resource.RouteType {
		err := fmt.Errorf("unsupported resource type %q", t)
		c.report(t, err)
		return c.send(st, t, c.version(t), err)
	}
	applyErr := c.Handler.Apply(t, resp.GetVersionInfo(), resp.GetResources())
	c.report(t, applyErr)
	if applyErr != nil {
		c.Log.Error("rejected xDS update", "type", t, "version", resp.GetVersionInfo(), "error", applyErr)
		return c.nack(st, t, resp.GetVersionInfo(), applyErr)
	}
	c.mu.Lock()
	c.accepted[t] = resp.GetVersionInfo()
	c.mu.Unlock()
	st.mu.Lock()
	delete(st.nacked, t)
	delete(st.delay, t)
	st.mu.Unlock()
	if err := c.send(st, t, resp.GetVersionInfo(), nil); err != nil {
		return err
	}
	if dep, ok := dependents[t]; ok {
		return c.subscribe(st, dep)
	}
	return nil
}

// nack answers a rejected response. A control plane that resends the same
// rejected version at once (go-control-plane's snapshot cache does) gets its
// repeated NACKs after a growing delay rather than in a tight loop.
func (c *Client) nack(st *streamState, typeURL, version string, cause error) error {
	st.mu.Lock()
	repeat := st.nacked[typeURL] == version
	st.nacked[typeURL] = version
	d := st.delay[typeURL]
	if repeat {
		d = min(max(2*d, 100*time.Millisecond), 10*time.Second)
	} else {
		d = 0
	}
	st.delay[typeURL] = d
	if d > 0 {
		st.timer[typeURL] = time.AfterFunc(d, func() {
			if err := c.send(st, typeURL, c.version(typeURL), cause); err != nil && !errors.Is(err, context.Canceled) {
				c.Log.Info("delayed NACK not sent", "type", typeURL, "error", err)
			}
		})
		st.mu.Unlock()
		return nil
	}
	st.mu.Unlock()
	return c.send(st, typeURL, c.version(typeURL), cause)
}

func (c *Client) report(typeURL string, err error) {
	if c.OnResult != nil {
		c.OnResult(typeURL, err)
	}
}
