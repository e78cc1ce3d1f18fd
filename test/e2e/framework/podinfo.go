package framework

import (
	"context"
	"fmt"
	"time"

	"k8s.io/utils/ptr"

	"github.com/weir-dev/weir/canary/v1alpha1"
)

// The workload the e2e suite and the demo roll out.
const (
	Namespace  = "test"
	App        = "podinfo"
	Client     = "mesh-client"
	AppHost    = "podinfo.test:9898"
	CanaryPods = 3
)

// DefaultCanary is the Canary of the suite and the demo: 10 → 50 → 100,
// a success-rate and a p99 gate, rollback at the second failed check,
// retries and outlier detection on the route.
func DefaultCanary(interval time.Duration) []CanaryOption {
	return []CanaryOption{
		WithInterval(interval),
		WithThreshold(2),
		WithStepWeights(10, 50, 100),
		WithProgressDeadline(60 * time.Second),
		WithMetric(v1alpha1.MetricRequestSuccessRate, ptr.To(99.0), nil, 0),
		WithMetric(v1alpha1.MetricRequestDuration, nil, ptr.To(500.0), 0),
		WithRetries(2, time.Second),
		WithOutlierDetection(3, time.Second, 30*time.Second, 34),
	}
}

// InstallPodinfo deploys the meshed client and the demo app at version
// first under a Canary built from opts, waits until the Canary has
// initialised and the primary serves, and returns the client pod's IP, the
// address traffic is sent through.
func (e *Env) InstallPodinfo(ctx context.Context, first AppVersion, opts ...CanaryOption) (string, error) {
	steps := []func() error{
		func() error { return e.CreateNamespace(ctx, Namespace) },
		func() error { return e.Apply(ctx, ClientDeployment(Namespace, Client, e.XDSAddress)) },
		func() error {
			return e.Apply(ctx, AppDeployment(Namespace, App, CanaryPods, first, e.XDSAddress))
		},
		func() error { return e.WaitDeploymentAvailable(ctx, Namespace, Client, 2*time.Minute) },
		func() error { return e.WaitDeploymentAvailable(ctx, Namespace, App, 2*time.Minute) },
		func() error { return e.Apply(ctx, NewCanary(Namespace, App, opts...)) },
		func() error {
			_, err := e.WaitCanary(ctx, Namespace, App, 2*time.Minute, func(c *v1alpha1.Canary) bool {
				return c.Status.Phase == v1alpha1.PhaseInitialized || c.Status.Phase == v1alpha1.PhaseSucceeded
			})
			return err
		},
		func() error { return e.WaitDeploymentAvailable(ctx, Namespace, App+"-primary", 2*time.Minute) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return "", err
		}
	}
	clients, err := e.ReadyPods(ctx, Namespace, Client)
	if err != nil {
		return "", err
	}
	if len(clients) != 1 {
		return "", fmt.Errorf("want one ready %s pod, found %d", Client, len(clients))
	}
	return clients[0].Status.PodIP, nil
}
