// Package framework runs weir's whole loop on the local cluster: the real
// API server and controllers, weir-controller as its own process bound to
// its ServiceAccount and RBAC, the demo app with weir-proxy sidecars, a
// meshed client the load generator sends through, Prometheus scraping the
// sidecars and slack-go talking to the Slack recorder. The e2e tests and
// `make demo` both stand on it.
package framework

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/test/cluster"
)

// Names of what the framework installs.
const (
	SystemNamespace = "weir-system"
	ControllerSA    = "weir-controller"
	SlackToken      = "xoxb-weir-e2e"
	SlackChannel    = "#deploys"
	ClusterName     = "local"
)

// Options configure an Env.
type Options struct {
	// Dir holds the cluster's state and every log.
	Dir string
	// BinDir holds the pinned tools and weir's binaries.
	BinDir string
	// RepoRoot is where config/ is read from.
	RepoRoot string
}

// Env is a running cluster with weir installed.
type Env struct {
	opts    Options
	Cluster *cluster.Cluster
	Client  client.Client

	// XDSAddress is where the sidecars find the controller's xDS server.
	XDSAddress string
	// MetricsAddress serves the controller's metrics and /debug/xds.
	MetricsAddress string
	healthAddress  string
	kubeconfig     string
	controller     *cluster.Process
	controllerRuns int
}

// Scheme knows Kubernetes' built-in types and weir's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Start starts a local cluster and installs weir into it: CRDs and RBAC
// from config/, and weir-controller as a process whose kubeconfig carries
// the token of its ServiceAccount, so missing permissions fail.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	c, err := cluster.Start(ctx, cluster.Options{Dir: opts.Dir, BinDir: opts.BinDir, SlackToken: SlackToken})
	if err != nil {
		return nil, err
	}
	e := &Env{opts: opts, Cluster: c}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Stop())
		}
	}()
	if e.Client, err = client.New(c.RESTConfig(), client.Options{Scheme: Scheme()}); err != nil {
		return nil, fmt.Errorf("failed to create a client: %w", err)
	}
	if err := e.install(ctx); err != nil {
		return nil, err
	}
	host := c.NodeIP()
	if e.XDSAddress, err = freeAddress(host); err != nil {
		return nil, err
	}
	if e.MetricsAddress, err = freeAddress("127.0.0.1"); err != nil {
		return nil, err
	}
	if e.healthAddress, err = freeAddress("127.0.0.1"); err != nil {
		return nil, err
	}
	if e.kubeconfig, err = c.KubeconfigForServiceAccount(ctx, SystemNamespace, ControllerSA); err != nil {
		return nil, fmt.Errorf("failed to write the controller's kubeconfig: %w", err)
	}
	if err := e.StartController(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// install applies the CRDs and RBAC with kubectl, as a user would.
func (e *Env) install(ctx context.Context) error {
	if err := e.Cluster.CreateNamespace(ctx, SystemNamespace); err != nil {
		return err
	}
	for _, dir := range []string{"config/crd", "config/rbac"} {
		if out, err := e.Kubectl(ctx, "apply", "-k", filepath.Join(e.opts.RepoRoot, dir)); err != nil {
			return fmt.Errorf("failed to apply %s: %w\n%s", dir, err, out)
		}
	}
	_, err := e.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s", "crd/canaries.weir.dev", "crd/alertproviders.weir.dev")
	return err
}

// Kubectl runs bin/kubectl against the cluster as its admin.
func (e *Env) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.opts.BinDir, "kubectl"), append([]string{"--kubeconfig", e.Cluster.Kubeconfig()}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %v: %w: %s", args, err, out)
	}
	return string(out), nil
}

// StartController starts weir-controller; its log goes to the log folder,
// one file per start.
func (e *Env) StartController(ctx context.Context) error {
	if e.controller != nil {
		return errors.New("weir-controller is already running")
	}
	e.controllerRuns++
	args := []string{
		"--kubeconfig=" + e.kubeconfig,
		"--leader-elect=false",
		"--metrics-bind-address=" + e.MetricsAddress,
		"--health-probe-bind-address=" + e.healthAddress,
		"--xds-address=" + e.XDSAddress,
		"--metrics-server=" + e.Cluster.PrometheusURL(),
		"--slack-api-url=" + e.Cluster.SlackRecorder().URL() + "/api/",
		"--slack-token=" + SlackToken,
		"--slack-channel=" + SlackChannel,
		"--cluster-name=" + ClusterName,
	}
	log := filepath.Join(e.Cluster.LogDir(), "weir-controller-"+strconv.Itoa(e.controllerRuns)+".log")
	p, err := cluster.StartProcess("weir-controller", log, filepath.Join(e.opts.BinDir, "weir-controller"), args, os.Environ())
	if err != nil {
		return err
	}
	e.controller = p
	return e.waitHealthy(ctx)
}

// waitHealthy waits until the controller answers /readyz, or has exited.
func (e *Env) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return poll(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		select {
		case <-e.controller.Exited():
			return false, fmt.Errorf("weir-controller exited at start; see %s", e.Cluster.LogDir())
		default:
		}
		return httpOK(ctx, "http://"+e.healthAddress+"/readyz"), nil
	})
}

// StopController stops weir-controller gracefully.
func (e *Env) StopController() error {
	if e.controller == nil {
		return nil
	}
	err := e.controller.Stop(10 * time.Second)
	e.controller = nil
	return err
}

// KillController kills weir-controller with SIGKILL, as a crash would.
func (e *Env) KillController() error {
	if e.controller == nil {
		return nil
	}
	err := e.controller.Kill()
	e.controller = nil
	return err
}

// Stop stops the controller and the cluster; nothing is left running.
func (e *Env) Stop() error {
	return errors.Join(e.StopController(), e.Cluster.Stop())
}

// Apply creates obj, or updates it when it exists.
func (e *Env) Apply(ctx context.Context, obj client.Object) error {
	err := e.Client.Create(ctx, obj)
	if apierrors.IsAlreadyExists(err) {
		existing := obj.DeepCopyObject().(client.Object)
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(obj), existing); err != nil {
			return err
		}
		obj.SetResourceVersion(existing.GetResourceVersion())
		err = e.Client.Update(ctx, obj)
	}
	if err != nil {
		return fmt.Errorf("failed to apply %T %s: %w", obj, client.ObjectKeyFromObject(obj), err)
	}
	return nil
}

// SetVersion changes the image and faults of the Deployment `name`, the
// change that starts a rollout. It reads and updates again on a conflict:
// kube-controller-manager writes the Deployment's status (terminating
// replicas) while the pods of a scaled-down target are still stopping.
func (e *Env) SetVersion(ctx context.Context, ns, name string, v AppVersion) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := &appsv1.Deployment{}
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
			return err
		}
		for i := range d.Spec.Template.Spec.Containers {
			ct := &d.Spec.Template.Spec.Containers[i]
			if ct.Name == "app" {
				ct.Image = "weir.dev/demo-app:" + v.Tag
				ct.Env = v.env()
			}
		}
		return e.Client.Update(ctx, d)
	})
}

// Canary returns the current Canary.
func (e *Env) Canary(ctx context.Context, ns, name string) (*v1alpha1.Canary, error) {
	c := &v1alpha1.Canary{}
	return c, e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, c)
}

// WaitCanary polls the Canary until cond holds, ctx ends or timeout passes.
func (e *Env) WaitCanary(ctx context.Context, ns, name string, timeout time.Duration, cond func(*v1alpha1.Canary) bool) (*v1alpha1.Canary, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last *v1alpha1.Canary
	err := poll(ctx, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		c, err := e.Canary(ctx, ns, name)
		if err != nil {
			return false, nil
		}
		last = c
		return cond(c), nil
	})
	if err != nil && last != nil {
		err = fmt.Errorf("%w; canary is %s at weight %d with %d failed checks (%v)", err, last.Status.Phase, last.Status.CanaryWeight, last.Status.FailedChecks, last.Status.Conditions)
	}
	return last, err
}

// ReadyPods lists the ready pods of a Deployment's selector label app=name.
func (e *Env) ReadyPods(ctx context.Context, ns, app string) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := e.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"app": app}); err != nil {
		return nil, err
	}
	var ready []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && podReady(&p) {
			ready = append(ready, p)
		}
	}
	return ready, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// WaitDeploymentAvailable waits until every replica of a Deployment is
// updated and available.
func (e *Env) WaitDeploymentAvailable(ctx context.Context, ns, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return poll(ctx, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		d := &appsv1.Deployment{}
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
			return false, nil
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		s := d.Status
		return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want, nil
	})
}

// CreateNamespace creates a namespace unless it exists.
func (e *Env) CreateNamespace(ctx context.Context, ns string) error {
	err := e.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func freeAddress(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("failed to find a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// WaitScaledToZero waits until a Deployment asks for zero replicas and has
// no pods left.
func (e *Env) WaitScaledToZero(ctx context.Context, ns, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d appsv1.Deployment
	err := poll(ctx, 250*time.Millisecond, func(ctx context.Context) (bool, error) {
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
			return false, nil
		}
		return d.Spec.Replicas != nil && *d.Spec.Replicas == 0 && d.Status.Replicas == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%s/%s still has %d replicas (spec %v): %w", ns, name, d.Status.Replicas, ptrString(d.Spec.Replicas), err)
	}
	return nil
}

func ptrString(p *int32) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
