package main

// This file belongs to the notifier: it registers the component that turns
// weir's Kubernetes Events into Slack and webhook messages.

import (
	"flag"

	ctrl "sigs.k8s.io/controller-runtime"
)

// notifyOptions are the flags of the notifier.
type notifyOptions struct{}

func (o *notifyOptions) bindFlags(fs *flag.FlagSet) {}

// setupNotifier registers the notifier with mgr. Until notifier/ lands it
// registers nothing.
func setupNotifier(mgr ctrl.Manager, o notifyOptions) error {
	_ = mgr
	return nil
}
