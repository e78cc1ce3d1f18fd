package canary

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/internal/testenv"
	"github.com/weir-dev/weir/mesh/traffic"
)

// The controller tests run against a real kube-apiserver and etcd from bin/
// (envtest), started once for the package on first use. There is no
// kube-controller-manager: the tests play the Deployment controller
// (rolloutDeployments) and the garbage collector is absent.

var (
	scheme = runtime.NewScheme()

	apiOnce sync.Once
	apiEnv  *envtest.Environment
	apiCfg  *rest.Config
	apiErr  error
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
}

func TestMain(m *testing.M) {
	code := m.Run()
	if apiEnv != nil {
		if err := apiEnv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the API server:", err)
		}
	}
	os.Exit(code)
}

// apiServer returns the config of the shared API server, starting it with
// weir's CRDs on first use.
func apiServer(t *testing.T) *rest.Config {
	t.Helper()
	testenv.Bin(t, "kube-apiserver")
	testenv.Bin(t, "etcd")
	apiOnce.Do(func() {
		ctrl.SetLogger(zap.New(zap.WriteTo(testLogWriter{}), zap.UseDevMode(true)))
		apiEnv = &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join(testenv.RepoRoot(), "config", "crd", "bases")},
			ErrorIfCRDPathMissing: true,
			BinaryAssetsDirectory: testenv.BinDir(),
		}
		apiCfg, apiErr = apiEnv.Start()
	})
	if apiErr != nil {
		t.Fatalf("starting the API server from %s: %v", testenv.BinDir(), apiErr)
	}
	return apiCfg
}

// testLogWriter sends the controller's logs to stderr only when asked
// (WEIR_TEST_LOGS=1), to keep test output readable.
type testLogWriter struct{}

func (testLogWriter) Write(p []byte) (int, error) {
	if os.Getenv("WEIR_TEST_LOGS") != "" {
		return os.Stderr.Write(p)
	}
	return len(p), nil
}

func newClient(t *testing.T) client.Client {
	t.Helper()
	c, err := client.New(apiServer(t), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newNamespace creates a namespace of its own for a test.
func newNamespace(t *testing.T, c client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// controllerRun is a running manager with the Canary reconciler.
type controllerRun struct {
	stop func()
}

// startController runs the reconciler in a manager of its own that
// watches namespace ns, until the test ends or stop is called.
func startController(t *testing.T, ns string, router traffic.Router, checker Checker) *controllerRun {
	t.Helper()
	return startControllerWith(t, apiServer(t), ns, router, checker)
}

// startControllerWith is startController with the credentials of cfg.
func startControllerWith(t *testing.T, cfg *rest.Config, ns string, router traffic.Router, checker Checker) *controllerRun {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cacheFor(ns),
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := NewEventRecorder(cfg, scheme)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Reconciler{Client: mgr.GetClient(), Recorder: rec, Router: router, Checker: checker}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	run := &controllerRun{stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("manager: %v", err)
			}
		})
	}}
	t.Cleanup(run.stop)
	return run
}

// deploymentController plays kube-controller-manager's Deployment
// controller: it marks every Deployment of a namespace as rolled out,
// except those held.
type deploymentController struct {
	mu   sync.Mutex
	held map[string]bool
}

func (d *deploymentController) hold(name string, held bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.held[name] = held
}

func (d *deploymentController) isHeld(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.held[name]
}

// rolloutDeployments starts a deploymentController for ns that runs until
// the test ends.
func rolloutDeployments(t *testing.T, c client.Client, ns string) *deploymentController {
	d := &deploymentController{held: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var list appsv1.DeploymentList
			if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
				continue
			}
			for i := range list.Items {
				dep := &list.Items[i]
				n := ptr.Deref(dep.Spec.Replicas, 1)
				want := appsv1.DeploymentStatus{
					ObservedGeneration: dep.Generation,
					Replicas:           n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
				}
				if d.isHeld(dep.Name) {
					want = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: n, UpdatedReplicas: n, UnavailableReplicas: n}
				}
				if equality.Semantic.DeepEqual(dep.Status, want) {
					continue
				}
				dep.Status = want
				_ = c.Status().Update(ctx, dep)
			}
		}
	}()
	return d
}

// eventually polls cond every 50ms until it returns true or timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, context.Background(), timeout, 50*time.Millisecond, what, testenv.Holds(cond))
}

// kubectl runs bin/kubectl against the test API server.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	apiServer(t)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	user, err := apiEnv.AddUser(envtest.User{Name: "kubectl", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kc, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Bin(t, "kubectl"), append([]string{"--kubeconfig", kc}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
