package xds

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	weirv1alpha1 "github.com/weir-dev/weir/canary/v1alpha1"
)

// service is a Service fixture with the given ports.
func service(ns, name string, ports ...int32) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "http", Port: p, Protocol: corev1.ProtocolTCP})
	}
	if len(ports) > 1 {
		for i := range svc.Spec.Ports {
			svc.Spec.Ports[i].Name = "p" + string(rune('a'+i))
		}
	}
	return svc
}

type endpointOpt func(*discoveryv1.Endpoint)

func notReady() endpointOpt {
	return func(e *discoveryv1.Endpoint) { e.Conditions.Ready = ptr.To(false) }
}

// ep is an endpoint of a slice fixture.
func ep(ip string, opts ...endpointOpt) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// slice is an EndpointSlice fixture of a Service's "http" port.
func slice(ns, name, service string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
}

type canaryOpt func(*weirv1alpha1.Canary)

func withWeight(w int32) canaryOpt {
	return func(c *weirv1alpha1.Canary) { c.Status.CanaryWeight = w }
}

func withTimeout(d time.Duration) canaryOpt {
	return func(c *weirv1alpha1.Canary) { c.Spec.Service.Timeout = &metav1.Duration{Duration: d} }
}

func withRetries(attempts int32, perTry time.Duration, on string) canaryOpt {
	return func(c *weirv1alpha1.Canary) {
		c.Spec.Service.Retries = &weirv1alpha1.HTTPRetry{Attempts: attempts, PerTryTimeout: &metav1.Duration{Duration: perTry}, RetryOn: on}
	}
}

func withOutlier(consecutive int32, interval, base time.Duration, maxPct int32) canaryOpt {
	return func(c *weirv1alpha1.Canary) {
		c.Spec.Service.OutlierDetection = &weirv1alpha1.OutlierDetection{
			Consecutive5xxErrors: consecutive,
			Interval:             &metav1.Duration{Duration: interval},
			BaseEjectionTime:     &metav1.Duration{Duration: base},
			MaxEjectionPercent:   maxPct,
		}
	}
}

// canary is a Canary fixture targeting the Deployment (and Service) target.
func canary(ns, name, target string, port int32, opts ...canaryOpt) *weirv1alpha1.Canary {
	c := &weirv1alpha1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: weirv1alpha1.CanarySpec{
			TargetRef: weirv1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: target},
			Service:   weirv1alpha1.CanaryService{Port: port},
		},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// podinfo is the usual fixture: the podinfo Services of a Canary, with one
// ready pod behind the primary and one behind the canary.
func podinfo(opts ...canaryOpt) Input {
	return Input{
		Services: []*corev1.Service{
			service("test", "podinfo", 9898),
			service("test", "podinfo-canary", 9898),
			service("test", "podinfo-primary", 9898),
		},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			slice("test", "podinfo-primary-abc", "podinfo-primary", 9898, ep("10.0.0.1")),
			slice("test", "podinfo-abc", "podinfo", 9898, ep("10.0.0.1")),
			slice("test", "podinfo-canary-abc", "podinfo-canary", 9898, ep("10.0.0.2")),
		},
		Canaries: []*weirv1alpha1.Canary{canary("test", "podinfo", "podinfo", 9898, opts...)},
	}
}
