package xds

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_service_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	envoy_service_discovery_v3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	envoy_service_endpoint_v3 "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	envoy_service_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	envoy_service_route_v3 "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	weirv1alpha1 "github.com/weir-dev/weir/canary/v1alpha1"
)

// fleetKey is the one snapshot-cache key: every sidecar gets the same
// configuration, so the cache holds one snapshot and one status entry, not
// one per pod.
const fleetKey = "fleet"

// fleetHash maps every node to fleetKey.
type fleetHash struct{}

// ID implements cache.NodeHash.
func (fleetHash) ID(*envoy_config_core_v3.Node) string { return fleetKey }

// Source gives the server the objects to translate. The manager's cache is
// the source in the controller; tests use a fixed one.
type Source interface {
	// Input returns the current Services, EndpointSlices and Canaries.
	Input(ctx context.Context) (Input, error)
}

// EventRecorder records Events on a Canary; client-go's events.EventRecorder
// (the manager's GetEventRecorder) is one.
type EventRecorder interface {
	Eventf(regarding runtime.Object, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// Options configure a Server.
type Options struct {
	// Address is the gRPC listen address, e.g. ":18000".
	Address string
	// ListenerPort is the port of the sidecars' outbound listener.
	ListenerPort uint32
	// ConfirmFraction is the share of the sidecars (0..1] that must have
	// acknowledged a weight for it to count as in effect; 1 when zero.
	ConfirmFraction float64
	// ConfirmTimeout is how long a weight may wait for its confirmation
	// before the Confirmation says TimedOut; 30s when zero.
	ConfirmTimeout time.Duration
	// Debounce is the quiet time a rebuild waits for further changes, and
	// MaxDelay the longest it waits in all; 20ms and 250ms when zero.
	Debounce, MaxDelay time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger is used when the context of Start carries none.
	Logger logr.Logger
}

func (o *Options) defaults() {
	if o.ListenerPort == 0 {
		o.ListenerPort = DefaultListenerPort
	}
	if o.ConfirmFraction <= 0 || o.ConfirmFraction > 1 {
		o.ConfirmFraction = 1
	}
	if o.ConfirmTimeout <= 0 {
		o.ConfirmTimeout = 30 * time.Second
	}
	if o.Debounce <= 0 {
		o.Debounce = 20 * time.Millisecond
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 250 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Server is weir's xDS management server and its traffic.Router. It
// translates the cluster's objects into one snapshot for the whole fleet,
// serves it over ADS (state of the world), and tracks per stream which
// versions were acknowledged or rejected.
type Server struct {
	opts     Options
	source   Source
	recorder EventRecorder
	metrics  *Metrics
	cache    cache.SnapshotCache
	trigger  chan struct{}
	// rebuildMu serialises rebuilds, so snapshots are published in order.
	rebuildMu sync.Mutex

	mu sync.Mutex
	// current is the last published snapshot; nil before the first.
	current     *Snapshot
	publishedAt time.Time
	// routesAt is when the current route version was published, and
	// converged whether every route subscriber has acknowledged it.
	routesAt  time.Time
	converged bool
	// canaries are the Canaries of the last translation, for Events.
	canaries map[types.NamespacedName]*weirv1alpha1.Canary
	// rejected remembers the Events already recorded, so a rebuild or a
	// thousand sidecars NACKing one version record one Event.
	rejected map[string]bool
	desired  map[types.NamespacedName]*desiredWeight
	streams  map[int64]*streamState
	// rdsStreams counts the streams subscribed to routes; they are the
	// sidecars a weight must reach.
	rdsStreams int
	// routeAcks counts the streams whose last acknowledged route version
	// is the key; routeWeights are the canary weights of those versions.
	routeAcks    map[string]int
	routeWeights map[string]map[types.NamespacedName]int32
}

// desiredWeight is a weight the controller asked for.
type desiredWeight struct {
	weight      int32
	setAt       time.Time
	confirmedAt time.Time
	acked       int
	total       int
}

// streamState is what the server tracks of one xDS stream; it is dropped
// when the stream closes.
type streamState struct {
	node     string
	opened   time.Time
	rds      bool
	sent     map[string]sentResponse
	acked    map[string]string
	nacks    int
	lastNack string
}

type sentResponse struct{ nonce, version string }

// NewServer returns a Server reading from source. recorder and metrics may
// be nil.
func NewServer(source Source, recorder EventRecorder, metrics *Metrics, opts Options) *Server {
	opts.defaults()
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	return &Server{
		opts:         opts,
		source:       source,
		recorder:     recorder,
		metrics:      metrics,
		cache:        cache.NewSnapshotCache(false, fleetHash{}, cacheLogger(opts.Logger)),
		trigger:      make(chan struct{}, 1),
		canaries:     map[types.NamespacedName]*weirv1alpha1.Canary{},
		rejected:     map[string]bool{},
		desired:      map[types.NamespacedName]*desiredWeight{},
		streams:      map[int64]*streamState{},
		routeAcks:    map[string]int{},
		routeWeights: map[string]map[types.NamespacedName]int32{},
	}
}

// cacheLogger passes go-control-plane's warnings and errors to log.
func cacheLogger(log logr.Logger) gcplog.Logger {
	log = log.WithName("xds-cache")
	return gcplog.LoggerFuncs{
		WarnFunc:  func(f string, args ...any) { log.Info(fmt.Sprintf(f, args...)) },
		ErrorFunc: func(f string, args ...any) { log.Error(nil, fmt.Sprintf(f, args...)) },
	}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica serves its share of the sidecars.
func (s *Server) NeedLeaderElection() bool { return false }

// Trigger asks for a rebuild. Triggers that arrive while one waits are
// coalesced into it.
func (s *Server) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Register adds the ADS service and the per-type services to g.
func (s *Server) Register(ctx context.Context, g *grpc.Server) {
	srv := serverv3.NewServer(ctx, s.cache, s.callbacks(ctx))
	envoy_service_discovery_v3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	envoy_service_listener_v3.RegisterListenerDiscoveryServiceServer(g, srv)
	envoy_service_route_v3.RegisterRouteDiscoveryServiceServer(g, srv)
	envoy_service_cluster_v3.RegisterClusterDiscoveryServiceServer(g, srv)
	envoy_service_endpoint_v3.RegisterEndpointDiscoveryServiceServer(g, srv)
}

// Start serves xDS on opts.Address until ctx ends. It implements
// manager.Runnable.
func (s *Server) Start(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.opts.Address)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", s.opts.Address, err)
	}
	return s.Serve(ctx, lis)
}

// Serve serves xDS on lis and rebuilds the snapshot on every trigger until
// ctx ends; then it stops the gRPC server and returns.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	log, noLogger := logr.FromContext(ctx)
	if noLogger != nil {
		log = s.opts.Logger
	}
	log = log.WithName("xds")
	ctx, cancel := context.WithCancel(logr.NewContext(ctx, log))
	defer cancel()
	g := grpc.NewServer(
		grpc.MaxConcurrentStreams(1<<20),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	s.Register(ctx, g)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.rebuildLoop(ctx)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- g.Serve(lis) }()
	log.Info("serving xDS", "address", lis.Addr().String())

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("xDS server failed: %w", err)
	}
	cancel() // ends the ADS streams and the rebuild loop
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		g.Stop()
		<-stopped
	}
	wg.Wait()
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// rebuildLoop builds a first snapshot, then one per burst of triggers.
func (s *Server) rebuildLoop(ctx context.Context) {
	s.Rebuild(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.trigger:
		}
		quiet := time.NewTimer(s.opts.Debounce)
		deadline := time.NewTimer(s.opts.MaxDelay)
	wait:
		for {
			select {
			case <-ctx.Done():
				quiet.Stop()
				deadline.Stop()
				return
			case <-s.trigger:
				quiet.Reset(s.opts.Debounce)
			case <-quiet.C:
				break wait
			case <-deadline.C:
				break wait
			}
		}
		quiet.Stop()
		deadline.Stop()
		s.Rebuild(ctx)
	}
}

// Rebuild translates the current objects and publishes the result, unless
// it fails validation or equals what is published. It reports whether a new
// snapshot was published.
func (s *Server) Rebuild(ctx context.Context) bool {
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	log := logr.FromContextOrDiscard(ctx)
	start := time.Now()
	in, err := s.source.Input(ctx)
	if err != nil {
		log.Error(err, "failed to read the objects to translate; retrying in a second")
		time.AfterFunc(time.Second, s.Trigger)
		return false
	}
	s.mu.Lock()
	in.Weights = make(map[types.NamespacedName]int32, len(s.desired))
	for k, d := range s.desired {
		in.Weights[k] = d.weight
	}
	s.canaries = make(map[types.NamespacedName]*weirv1alpha1.Canary, len(in.Canaries))
	for _, c := range in.Canaries {
		s.canaries[types.NamespacedName{Namespace: c.Namespace, Name: c.Name}] = c
	}
	s.mu.Unlock()
	in.ListenerPort = s.opts.ListenerPort

	out := Translate(in)
	rejections := Validate(out)
	var snap *Snapshot
	if len(rejections) == 0 {
		snap, err = NewSnapshot(out)
		if err != nil {
			rejections = append(rejections, Rejection{Resource: "snapshot", Err: err})
		}
	}
	s.metrics.BuildDuration.Observe(time.Since(start).Seconds())
	if len(rejections) > 0 {
		s.metrics.Rejected.Inc()
		s.reject(ctx, rejections)
		return false
	}

	s.mu.Lock()
	if s.current != nil && sameVersions(s.current.Versions, snap.Versions) {
		s.mu.Unlock()
		return false
	}
	now := s.opts.Now()
	if s.current == nil || s.current.RouteVersion() != snap.RouteVersion() {
		s.routesAt, s.converged = now, false
	}
	s.current, s.publishedAt = snap, now
	s.routeWeights[snap.RouteVersion()] = out.Weights
	s.pruneLocked()
	clear(s.rejected)
	s.evaluateLocked(now)
	s.mu.Unlock()

	pushStart := time.Now()
	if err := s.cache.SetSnapshot(ctx, fleetKey, snap.Snapshot); err != nil {
		log.Error(err, "failed to publish the snapshot")
		return false
	}
	s.metrics.PushDuration.Observe(time.Since(pushStart).Seconds())
	log.V(1).Info("published snapshot", "versions", snap.Versions, "weights", len(out.Weights))
	return true
}

func sameVersions(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// reject logs rejected resources and records one XDSRejected Event per
// Canary and reason; the published snapshot stays.
func (s *Server) reject(ctx context.Context, rejections []Rejection) {
	log := logr.FromContextOrDiscard(ctx)
	for _, r := range rejections {
		log.Error(r.Err, "configuration failed validation; the last good configuration stays", "resource", r.Resource, "canary", r.Canary.String())
		if r.Canary.Name == "" {
			continue
		}
		s.event(r.Canary, "validation:"+r.Error(), "Publish", "xDS configuration for %s failed validation and was not published; the last good configuration stays: %v", r.Resource, r.Err)
	}
}

// event records a Warning XDSRejected Event on a Canary once per key.
func (s *Server) event(c types.NamespacedName, key, action, format string, args ...any) {
	s.mu.Lock()
	obj := s.canaries[c]
	seen := s.rejected[c.String()+"/"+key]
	s.rejected[c.String()+"/"+key] = true
	s.mu.Unlock()
	if seen || obj == nil || s.recorder == nil {
		return
	}
	s.recorder.Eventf(obj, nil, corev1.EventTypeWarning, weirv1alpha1.EventXDSRejected, action, format, args...)
}

// callbacks track streams, ACKs and NACKs.
func (s *Server) callbacks(ctx context.Context) serverv3.Callbacks {
	log := logr.FromContextOrDiscard(ctx)
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, typeURL string) error {
			s.mu.Lock()
			s.streams[id] = &streamState{opened: s.opts.Now(), sent: map[string]sentResponse{}, acked: map[string]string{}}
			n := len(s.streams)
			s.mu.Unlock()
			s.metrics.ConnectedProxies.Set(float64(n))
			return nil
		},
		StreamClosedFunc: func(id int64, _ *envoy_config_core_v3.Node) {
			s.mu.Lock()
			if st, ok := s.streams[id]; ok {
				delete(s.streams, id)
				if st.rds {
					s.rdsStreams--
				}
				if v, ok := st.acked[resource.RouteType]; ok {
					s.routeAcks[v]--
				}
				s.pruneLocked()
				s.evaluateLocked(s.opts.Now())
			}
			n := len(s.streams)
			s.mu.Unlock()
			s.metrics.ConnectedProxies.Set(float64(n))
		},
		StreamRequestFunc: func(id int64, req *envoy_service_discovery_v3.DiscoveryRequest) error {
			s.mu.Lock()
			events := s.onRequestLocked(log, id, req)
			s.mu.Unlock()
			for _, record := range events {
				record()
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, req *envoy_service_discovery_v3.DiscoveryRequest, resp *envoy_service_discovery_v3.DiscoveryResponse) {
			typ := resp.GetTypeUrl()
			s.mu.Lock()
			if st, ok := s.streams[id]; ok {
				st.sent[typ] = sentResponse{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
			}
			s.mu.Unlock()
			s.metrics.Pushes.WithLabelValues(shortType(typ)).Inc()
		},
	}
}

// onRequestLocked classifies a request as a first request, an ACK or a NACK.
//
// A NACK's version_info is the last version the sidecar accepted, which
// differs from the snapshot's; go-control-plane would answer it at once
// with the rejected version again, and again. So the request is rewritten
// to carry the rejected version: the cache then holds the watch until a
// new snapshot exists.
//
// It returns the Events to record once s.mu is released.
func (s *Server) onRequestLocked(log logr.Logger, id int64, req *envoy_service_discovery_v3.DiscoveryRequest) (events []func()) {
	typ := req.GetTypeUrl()
	st, ok := s.streams[id]
	if !ok {
		return nil
	}
	if n := req.GetNode(); n != nil && n.GetId() != "" {
		st.node = n.GetId()
	}
	if typ == resource.RouteType && !st.rds {
		st.rds = true
		s.rdsStreams++
	}
	sent, ok := st.sent[typ]
	if !ok {
		// The first request of a stream carries the version the sidecar
		// already holds, e.g. after it reconnected to a restarted
		// controller. Versions are content hashes, so when it equals the
		// snapshot's nothing is sent, and this is the only word that the
		// sidecar has the configuration.
		if v := req.GetVersionInfo(); v != "" && req.GetErrorDetail() == nil && req.GetResponseNonce() == "" {
			s.ackLocked(st, typ, v)
		}
		return nil
	}
	if req.GetResponseNonce() != sent.nonce {
		return nil // about an older response
	}
	if detail := req.GetErrorDetail(); detail != nil {
		st.nacks++
		st.lastNack = detail.GetMessage()
		s.metrics.NACKs.WithLabelValues(shortType(typ)).Inc()
		req.VersionInfo = sent.version
		first := !s.rejected["nack/"+typ+"/"+sent.version]
		s.rejected["nack/"+typ+"/"+sent.version] = true
		if first {
			log.Error(errors.New(detail.GetMessage()), "sidecar rejected configuration", "node", st.node, "type", shortType(typ), "version", sent.version)
			node, version, msg := st.node, sent.version, detail.GetMessage()
			for _, c := range s.nackedCanariesLocked(typ, msg) {
				events = append(events, func() {
					s.event(c, "nack/"+typ+"/"+version, "Apply", "sidecar %s rejected %s version %s: %s", node, shortType(typ), version, msg)
				})
			}
		} else {
			log.V(1).Info("sidecar rejected configuration", "node", st.node, "type", shortType(typ), "version", sent.version)
		}
		return events
	}
	s.ackLocked(st, typ, sent.version)
	return nil
}

// ackLocked records that a stream holds version of typ.
func (s *Server) ackLocked(st *streamState, typ, version string) {
	prev, had := st.acked[typ]
	st.acked[typ] = version
	if typ != resource.RouteType || (had && prev == version) {
		return
	}
	if had {
		s.routeAcks[prev]--
	}
	s.routeAcks[version]++
	now := s.opts.Now()
	if s.current != nil && !s.converged && version == s.current.RouteVersion() && s.routeAcks[version] >= s.rdsStreams {
		s.converged = true
		s.metrics.Convergence.Observe(now.Sub(s.routesAt).Seconds())
	}
	if had {
		s.pruneLocked()
	}
	s.evaluateLocked(now)
}

// nackedCanariesLocked picks the Canaries a NACK is about: those whose
// resources the message names, or else, for routes, those waiting for a
// weight.
func (s *Server) nackedCanariesLocked(typ, msg string) []types.NamespacedName {
	var out []types.NamespacedName
	if s.current != nil {
		seen := map[types.NamespacedName]bool{}
		for name, c := range s.current.Output.Owners {
			if strings.Contains(msg, name) && !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	if len(out) == 0 && typ == resource.RouteType {
		for c, d := range s.desired {
			if d.confirmedAt.IsZero() {
				out = append(out, c)
			}
		}
	}
	return out
}

// pruneLocked forgets route versions no stream holds any more.
func (s *Server) pruneLocked() {
	for v, n := range s.routeAcks {
		if n <= 0 {
			delete(s.routeAcks, v)
		}
	}
	for v := range s.routeWeights {
		if _, held := s.routeAcks[v]; !held && (s.current == nil || v != s.current.RouteVersion()) {
			delete(s.routeWeights, v)
		}
	}
}

func shortType(typeURL string) string {
	return typeURL[strings.LastIndex(typeURL, ".")+1:]
}
