package proxy_test

import (
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	weirv1alpha1 "github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/mesh/proxy"
	"github.com/weir-dev/weir/mesh/xds"
)

// TestAcceptsControllerResources feeds what the controller's translator
// publishes to weir-proxy: every resource must be accepted, as by Envoy.
func TestAcceptsControllerResources(t *testing.T) {
	svc := func(name string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 9898, Protocol: corev1.ProtocolTCP}}}}
	}
	slice := func(service, ip string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "test", Name: service + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(9898)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
	}
	tests := []struct {
		name    string
		weight  int32
		service weirv1alpha1.CanaryService
	}{
		{"defaults at weight 0", 0, weirv1alpha1.CanaryService{Port: 9898}},
		{"weighted with timeout, retries and outlier detection", 10, weirv1alpha1.CanaryService{
			Port:    9898,
			Timeout: &metav1.Duration{Duration: 2 * time.Second},
			Retries: &weirv1alpha1.HTTPRetry{Attempts: 2, PerTryTimeout: &metav1.Duration{Duration: time.Second}, RetryOn: "5xx,reset,connect-failure"},
			OutlierDetection: &weirv1alpha1.OutlierDetection{Consecutive5xxErrors: 3, Interval: &metav1.Duration{Duration: time.Second},
				BaseEjectionTime: &metav1.Duration{Duration: 30 * time.Second}, MaxEjectionPercent: 50},
		}},
		{"all on the canary", 100, weirv1alpha1.CanaryService{Port: 9898}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &weirv1alpha1.Canary{
				ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: "podinfo"},
				Spec: weirv1alpha1.CanarySpec{
					TargetRef: weirv1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
					Service:   tt.service,
				},
			}
			c.Status.CanaryWeight = tt.weight
			out := xds.Translate(xds.Input{
				Services:       []*corev1.Service{svc("podinfo"), svc("podinfo-primary"), svc("podinfo-canary")},
				EndpointSlices: []*discoveryv1.EndpointSlice{slice("podinfo-primary", "10.0.0.1"), slice("podinfo-canary", "10.0.0.2")},
				Canaries:       []*weirv1alpha1.Canary{c},
				ListenerPort:   uint32(freePort(t)),
			})
			p := proxy.New(proxy.Options{BindIP: "127.0.0.1"})
			t.Cleanup(p.Close)
			apply := func(typeURL string, msgs []proto.Message) {
				t.Helper()
				var res []*anypb.Any
				for _, m := range msgs {
					a, err := anypb.New(m)
					if err != nil {
						t.Fatal(err)
					}
					res = append(res, a)
				}
				if err := p.Apply(typeURL, "1", res); err != nil {
					t.Fatalf("weir-proxy rejects the controller's %s: %v", typeURL, err)
				}
			}
			apply(resource.ClusterType, toMessages(out.Clusters))
			apply(resource.EndpointType, toMessages(out.Endpoints))
			apply(resource.ListenerType, toMessages(out.Listeners))
			apply(resource.RouteType, toMessages(out.Routes))
			if ok, state := p.Ready(); !ok {
				t.Errorf("not ready after the controller's resources: %s", state)
			}
		})
	}
}

func toMessages[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}
