// Command weir-controller is weir's manager: the Canary reconciler, the xDS
// server the sidecars take their routes from, and the notifier, with
// metrics and health endpoints.
package main

import (
	"flag"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weir-dev/weir/canary"
	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/metrics"
)

// options are the flags of the manager itself; --kubeconfig is
// controller-runtime's.
type options struct {
	metricsAddress          string
	probeAddress            string
	leaderElect             bool
	leaderElectionNamespace string
	namespace               string
	metrics                 metrics.Options
	mesh                    meshOptions
	notify                  notifyOptions
	zap                     zap.Options
}

func (o *options) bindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.metricsAddress, "metrics-bind-address", ":8080",
		`Address of the metrics endpoint (/metrics, /debug/xds); "0" turns it off.`)
	fs.StringVar(&o.probeAddress, "health-probe-bind-address", ":8081",
		"Address of the health probes (/healthz, /readyz).")
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"Elect a leader among the replicas; only the leader reconciles Canaries, every replica serves xDS.")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease; defaults to the controller's own namespace in a cluster.")
	fs.StringVar(&o.namespace, "namespace", "",
		"Watch only this namespace (Canaries, Deployments, Services, EndpointSlices, Events); all namespaces when empty.")
	o.metrics.BindFlags(fs)
	o.mesh.bindFlags(fs)
	o.notify.bindFlags(fs)
	o.zap.BindFlags(fs)
}

func main() {
	var o options
	o.bindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap)))
	if err := run(o); err != nil {
		ctrl.Log.WithName("setup").Error(err, "weir-controller failed")
		os.Exit(1)
	}
}

func run(o options) error {
	log := ctrl.Log.WithName("setup")
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("failed to load the kubeconfig: %w", err)
	}
	mo := ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddress},
		HealthProbeBindAddress:        o.probeAddress,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "weir-controller.weir.dev",
		LeaderElectionNamespace:       o.leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
	}
	if o.namespace != "" {
		mo.Cache = cache.Options{DefaultNamespaces: map[string]cache.Config{o.namespace: {}}}
	}
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return fmt.Errorf("failed to create the manager: %w", err)
	}

	checker, err := metrics.NewPrometheus(o.metrics)
	if err != nil {
		return err
	}
	router, err := setupMesh(mgr, o.mesh)
	if err != nil {
		return err
	}
	if err := setupNotifier(mgr, o.notify); err != nil {
		return err
	}
	recorder, err := canary.NewEventRecorder(cfg, scheme)
	if err != nil {
		return err
	}

	ctx := ctrl.SetupSignalHandler()
	r := &canary.Reconciler{Client: mgr.GetClient(), Recorder: recorder, Router: router, Checker: checker}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("failed to set up the Canary controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("failed to add the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("failed to add the readiness check: %w", err)
	}
	log.Info("starting", "namespace", orAll(o.namespace), "metricsServer", o.metrics.Address,
		"xds", o.mesh.xdsAddress, "leaderElection", o.leaderElect)
	return mgr.Start(ctx)
}

func orAll(ns string) string {
	if ns == "" {
		return "(all)"
	}
	return ns
}
