package xds

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	envoy_service_discovery_v3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	weirv1alpha1 "github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/internal/testenv"
)

// TestKubernetesToSidecar runs the server as the controller does — reading
// Services, EndpointSlices and Canaries through a manager's cache from a
// real API server — and checks what an ADS client receives.
func TestKubernetesToSidecar(t *testing.T) {
	testenv.Bin(t, "kube-apiserver")
	testenv.Bin(t, "etcd")
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(testenv.RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: testenv.BinDir(),
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("failed to start the API server: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("failed to stop the API server: %v", err)
		}
	})
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(weirv1alpha1.AddToScheme(scheme))
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	srv := NewServer(KubeSource{Reader: mgr.GetCache()}, mgr.GetEventRecorder("weir-xds"), NewMetrics(prometheus.NewRegistry()), Options{})
	if err := Watch(ctx, mgr.GetCache(), srv.Trigger); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return srv.Serve(ctx, lis) })); err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- mgr.Start(mctx) }()
	defer func() {
		stop()
		if err := <-stopped; err != nil {
			t.Errorf("manager: %v", err)
		}
	}()

	c := mgr.GetClient()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "test"}}
	must(t, c.Create(ctx, ns))
	in := podinfo()
	for _, s := range in.Services {
		s.Spec.Ports[0].TargetPort.IntVal = 9898
		must(t, c.Create(ctx, s))
	}
	for _, es := range in.EndpointSlices {
		must(t, c.Create(ctx, es))
	}
	cn := in.Canaries[0]
	must(t, c.Create(ctx, cn))
	cn.Status.CanaryWeight = 10
	must(t, c.Status().Update(ctx, cn))

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, closeStream := context.WithCancel(ctx)
	sidecar, err := dialADS(cctx, conn, "sidecar-1", false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		closeStream()
		<-sidecar.done
	}()

	// The Canary's status weight is routed.
	if err := sidecar.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return cmp.Equal(routeWeights(l[resource.RouteType], "test/podinfo:9898"),
			map[string]uint32{"test/podinfo-canary:9898": 10, "test/podinfo-primary:9898": 90})
	}); err != nil {
		t.Fatalf("weights of the Canary's status: %v", err)
	}

	// A new pod behind the canary reaches the sidecar as EDS.
	var es discoveryv1.EndpointSlice
	must(t, c.Get(ctx, client.ObjectKey{Namespace: "test", Name: "podinfo-canary-abc"}, &es))
	es.Endpoints = append(es.Endpoints, ep("10.0.0.7"))
	must(t, c.Update(ctx, &es))
	if err := sidecar.wait(ctx, func(l map[string]*envoy_service_discovery_v3.DiscoveryResponse) bool {
		return cmp.Equal(endpointsOf(l[resource.EndpointType], "test/podinfo-canary:9898"), []string{"10.0.0.2", "10.0.0.7"})
	}); err != nil {
		t.Fatalf("endpoints after an EndpointSlice update: %v", err)
	}

	// A spec Envoy would reject is not published; an Event says why.
	routes := sidecar.accepted(resource.ClusterType)
	must(t, c.Get(ctx, client.ObjectKeyFromObject(cn), cn))
	cn.Spec.Service.OutlierDetection = &weirv1alpha1.OutlierDetection{Interval: &metav1.Duration{}}
	must(t, c.Update(ctx, cn))
	for {
		var events eventsv1.EventList
		must(t, c.List(ctx, &events, client.InNamespace("test")))
		found := false
		for _, e := range events.Items {
			if e.Reason == weirv1alpha1.EventXDSRejected && e.Regarding.Name == "podinfo" && strings.Contains(e.Note, "Interval") {
				found = true
			}
		}
		if found {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no XDSRejected Event on the Canary")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if got := sidecar.accepted(resource.ClusterType); got != routes {
		t.Errorf("clusters changed from %q to %q although the new ones are invalid", routes, got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
