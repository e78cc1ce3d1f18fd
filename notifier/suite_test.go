package notifier

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/tools/reference"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	weirv1 "github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/internal/testenv"
)

// The API server is started by the first test that needs it and stopped
// by TestMain.
var (
	envOnce sync.Once
	env     *envtest.Environment
	envCfg  *rest.Config
	envErr  error
	scheme  = newScheme()
)

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := weirv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

func TestMain(m *testing.M) {
	flag.Parse()
	// Controller logs go to stderr with -v, nowhere otherwise.
	logger := logr.Discard()
	if testing.Verbose() {
		logger = funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{Verbosity: 1})
	}
	ctrl.SetLogger(logger)
	code := m.Run()
	if env != nil {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "failed to stop the API server: %v\n", err)
		}
	}
	os.Exit(code)
}

// apiServer returns the config of a real kube-apiserver (envtest, with
// the pinned binaries of bin/ and the CRDs of config/crd/bases) and a
// client of it.
func apiServer(t *testing.T) (*rest.Config, client.Client) {
	t.Helper()
	testenv.Bin(t, "kube-apiserver")
	testenv.Bin(t, "etcd")
	envOnce.Do(func() {
		env = &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join(testenv.RepoRoot(), "config", "crd", "bases")},
			ErrorIfCRDPathMissing: true,
			BinaryAssetsDirectory: testenv.BinDir(),
		}
		envCfg, envErr = env.Start()
	})
	if envErr != nil {
		t.Fatalf("failed to start the API server: %v", envErr)
	}
	c, err := client.New(envCfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return envCfg, c
}

// newNamespace creates a namespace named after t.
func newNamespace(t *testing.T, ctx context.Context, c client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "notifier-"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// startNotifier runs a manager with only the notifier in it until the
// returned stop is called or t ends.
func startNotifier(t *testing.T, cfg *rest.Config, o Options) (stop func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = testHTTPClient(t)
	}
	if o.Queue.AttemptTimeout == 0 {
		o.Queue.AttemptTimeout = 5 * time.Second
	}
	if err := Setup(mgr, o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-stopped
		})
	}
	t.Cleanup(stop)
	return stop
}

// eventRecorder records Events the way the reconciler does: core/v1,
// through client-go's broadcaster, with annotations.
func eventRecorder(t *testing.T, cfg *rest.Config) record.EventRecorder {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	return b.NewRecorder(scheme, corev1.EventSource{Component: "weir-controller"})
}

// directRecorder writes one Event object per call, named by GenerateName
// and ordered by eventTime, the way weir's reconciler records them (see
// canary.NewEventRecorder): nothing merged, names random.
type directRecorder struct {
	t      *testing.T
	client client.Client
}

func (r *directRecorder) Event(obj runtime.Object, typ, reason, msg string) {
	r.AnnotatedEventf(obj, nil, typ, reason, "%s", msg)
}

func (r *directRecorder) Eventf(obj runtime.Object, typ, reason, format string, args ...any) {
	r.AnnotatedEventf(obj, nil, typ, reason, format, args...)
}

func (r *directRecorder) AnnotatedEventf(obj runtime.Object, ann map[string]string, typ, reason, format string, args ...any) {
	ref, err := reference.GetReference(scheme, obj)
	if err != nil {
		r.t.Error(err)
		return
	}
	now := time.Now()
	e := &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{GenerateName: ref.Name + ".", Namespace: ref.Namespace, Annotations: ann},
		InvolvedObject:      *ref,
		Reason:              reason,
		Message:             fmt.Sprintf(format, args...),
		Type:                typ,
		Source:              corev1.EventSource{Component: "weir-controller", Host: "test"},
		FirstTimestamp:      metav1.NewTime(now),
		LastTimestamp:       metav1.NewTime(now),
		Count:               1,
		EventTime:           metav1.NewMicroTime(now),
		Action:              reason,
		ReportingController: "weir.dev/weir-controller",
		ReportingInstance:   "test",
	}
	if err := r.client.Create(context.Background(), e); err != nil {
		r.t.Error(err)
	}
}

// canaryOption changes a test Canary.
type canaryOption func(*weirv1.Canary)

// withAlert adds an alert.
func withAlert(name, severity, provider string) canaryOption {
	return func(c *weirv1.Canary) {
		c.Spec.Analysis.Alerts = append(c.Spec.Analysis.Alerts, weirv1.CanaryAlert{
			Name: name, Severity: severity, ProviderRef: weirv1.ProviderRef{Name: provider},
		})
	}
}

// createCanary creates a Canary for the Deployment of the same name.
func createCanary(t *testing.T, ctx context.Context, c client.Client, ns, name string, opts ...canaryOption) *weirv1.Canary {
	t.Helper()
	cn := &weirv1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: weirv1.CanarySpec{
			TargetRef: weirv1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
			Service:   weirv1.CanaryService{Port: 9898},
		},
	}
	for _, o := range opts {
		o(cn)
	}
	if err := c.Create(ctx, cn); err != nil {
		t.Fatal(err)
	}
	// Notifiers of later tests see this namespace's Events too; without
	// the Canary they leave them alone.
	t.Cleanup(func() { _ = c.Delete(context.Background(), cn) })
	return cn
}

// createSecret creates a Secret with data.
func createSecret(t *testing.T, ctx context.Context, c client.Client, ns, name string, data map[string]string) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: data}
	if err := c.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
}

// createProvider creates an AlertProvider.
func createProvider(t *testing.T, ctx context.Context, c client.Client, ns, name string, spec weirv1.AlertProviderSpec) {
	t.Helper()
	p := &weirv1.AlertProvider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	if err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
}

// recordSteps records steps on cn, in order.
func recordSteps(rec record.EventRecorder, cn *weirv1.Canary, steps ...step) {
	for _, s := range steps {
		rec.AnnotatedEventf(cn, s.ann, eventType(s.reason), s.reason, "%s", s.message)
	}
}

// dumpEvents logs the Events of ns, to explain a failure.
func dumpEvents(t *testing.T, ctx context.Context, c client.Client, ns string) {
	t.Helper()
	var list corev1.EventList
	if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
		t.Logf("failed to list events: %v", err)
		return
	}
	for _, e := range list.Items {
		t.Logf("event %s %s first=%s annotations=%v", e.Name, e.Reason, e.FirstTimestamp.Format(time.RFC3339), e.Annotations)
	}
}
