package main

// This file belongs to the mesh: it builds the traffic.Router that the
// Canary reconciler uses and registers the xDS server with the manager.

import (
	"context"
	"flag"
	"fmt"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/weir-dev/weir/mesh/traffic"
	"github.com/weir-dev/weir/mesh/xds"
)

// meshOptions are the flags of the xDS side of the controller.
type meshOptions struct {
	xdsAddress      string
	listenerPort    uint
	confirmFraction float64
	confirmTimeout  time.Duration
}

func (o *meshOptions) bindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.xdsAddress, "xds-address", ":18000", "Address the xDS (ADS) gRPC server listens on.")
	fs.UintVar(&o.listenerPort, "xds-listener-port", xds.DefaultListenerPort, "Port of the sidecars' outbound HTTP listener.")
	fs.Float64Var(&o.confirmFraction, "xds-confirm-fraction", 1.0,
		"Share of the connected sidecars (0 < f <= 1) that must acknowledge a canary weight before it counts as in effect.")
	fs.DurationVar(&o.confirmTimeout, "xds-confirm-timeout", 30*time.Second,
		"How long a canary weight may wait for the sidecars' acknowledgement before the controller warns and goes on.")
}

// setupMesh registers the xDS server with mgr and returns the Router that
// applies canary weights through it. The server runs on every replica (it
// needs no leader election), reads Services, EndpointSlices and Canaries
// through the manager's cache, exports its metrics on controller-runtime's
// registry and serves /debug/xds on the metrics server.
func setupMesh(mgr ctrl.Manager, o meshOptions) (traffic.Router, error) {
	if o.confirmFraction <= 0 || o.confirmFraction > 1 {
		return nil, fmt.Errorf("--xds-confirm-fraction must be in (0, 1], got %v", o.confirmFraction)
	}
	if o.listenerPort == 0 || o.listenerPort > 65535 {
		return nil, fmt.Errorf("--xds-listener-port must be in 1..65535, got %d", o.listenerPort)
	}
	srv := xds.NewServer(
		xds.KubeSource{Reader: mgr.GetCache()},
		mgr.GetEventRecorder("weir-xds"),
		xds.NewMetrics(metrics.Registry),
		xds.Options{
			Address:         o.xdsAddress,
			ListenerPort:    uint32(o.listenerPort),
			ConfirmFraction: o.confirmFraction,
			ConfirmTimeout:  o.confirmTimeout,
			Logger:          ctrl.Log,
		},
	)
	if err := xds.Watch(context.Background(), mgr.GetCache(), srv.Trigger); err != nil {
		return nil, err
	}
	if err := mgr.Add(srv); err != nil {
		return nil, fmt.Errorf("failed to add the xDS server: %w", err)
	}
	if err := mgr.AddMetricsServerExtraHandler("/debug/xds", srv.DebugHandler()); err != nil {
		return nil, fmt.Errorf("failed to add /debug/xds: %w", err)
	}
	return srv, nil
}
