package main

// This file belongs to the mesh: it builds the traffic.Router that the
// Canary reconciler uses and registers the xDS server with the manager.

import (
	"flag"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/weir-dev/weir/mesh/traffic"
)

// meshOptions are the flags of the xDS side of the controller.
type meshOptions struct {
	xdsAddress string
}

func (o *meshOptions) bindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.xdsAddress, "xds-address", ":18000", "Address the xDS (ADS) gRPC server listens on.")
}

// setupMesh registers the xDS server with mgr and returns the Router that
// applies canary weights through it.
//
// Until mesh/xds lands, weights take effect at once (traffic.Immediate).
func setupMesh(mgr ctrl.Manager, o meshOptions) (traffic.Router, error) {
	_ = mgr
	return &traffic.Immediate{}, nil
}
