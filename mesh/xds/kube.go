package xds

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	weirv1alpha1 "github.com/weir-dev/weir/canary/v1alpha1"
)

// The xDS server reads Services, EndpointSlices and Canaries and records
// Events on Canaries.
//
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=weir.dev,resources=canaries,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// KubeSource reads the translator's input from a controller-runtime cache.
type KubeSource struct {
	Reader client.Reader
}

// Input implements Source. The objects are the cache's own, not copies:
// the translator only reads them.
func (k KubeSource) Input(ctx context.Context) (Input, error) {
	var in Input
	var svcs corev1.ServiceList
	if err := k.Reader.List(ctx, &svcs, client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("failed to list Services: %w", err)
	}
	var eps discoveryv1.EndpointSliceList
	if err := k.Reader.List(ctx, &eps, client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("failed to list EndpointSlices: %w", err)
	}
	var canaries weirv1alpha1.CanaryList
	if err := k.Reader.List(ctx, &canaries, client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("failed to list Canaries: %w", err)
	}
	for i := range svcs.Items {
		in.Services = append(in.Services, &svcs.Items[i])
	}
	for i := range eps.Items {
		in.EndpointSlices = append(in.EndpointSlices, &eps.Items[i])
	}
	for i := range canaries.Items {
		in.Canaries = append(in.Canaries, &canaries.Items[i])
	}
	return in, nil
}

// Watch calls trigger whenever a Service, an EndpointSlice, or a Canary's
// spec or status weight changes in c. Call it before the cache starts.
func Watch(ctx context.Context, c cache.Cache, trigger func()) error {
	always := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { trigger() },
		UpdateFunc: func(any, any) { trigger() },
		DeleteFunc: func(any) { trigger() },
	}
	for _, obj := range []client.Object{&corev1.Service{}, &discoveryv1.EndpointSlice{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("failed to get an informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(always); err != nil {
			return fmt.Errorf("failed to watch %T: %w", obj, err)
		}
	}
	inf, err := c.GetInformer(ctx, &weirv1alpha1.Canary{})
	if err != nil {
		return fmt.Errorf("failed to get an informer for Canaries: %w", err)
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { trigger() },
		UpdateFunc: func(o, n any) {
			oc, ok1 := o.(*weirv1alpha1.Canary)
			nc, ok2 := n.(*weirv1alpha1.Canary)
			if !ok1 || !ok2 || oc.Generation != nc.Generation || oc.Status.CanaryWeight != nc.Status.CanaryWeight {
				trigger()
			}
		},
		DeleteFunc: func(any) { trigger() },
	})
	if err != nil {
		return fmt.Errorf("failed to watch Canaries: %w", err)
	}
	return nil
}
