// Package cluster starts a real local Kubernetes cluster for tests and the
// demo: etcd, kube-apiserver and kube-controller-manager from bin/, an
// in-process node agent that runs pods as local processes, Prometheus
// scraping the pods, and a Slack recorder. Everything logs into one folder
// and Stop leaves no process, port or network namespace behind.
//
// Two things differ from a textbook cluster, both forced by what is real
// here:
//   - Pods run inside a network namespace the cluster creates, weir-<id>,
//     with addresses from a /24 of 10.213.0.0/16 and a veth pair to the
//     root namespace, whose side is the node's address (NodeIP). Pods
//     cannot use 127.0.0.0/8: the API server rejects loopback addresses in
//     EndpointSlices, so they would never become endpoints. And no other
//     address of the root namespace may be a target: the network rule of
//     our workplace allows only loopback and addresses inside namespaces
//     the run created itself. The control plane stays on 127.0.0.1; pods
//     reach the API server through a forwarder on NodeIP (see network.go
//     and forward.go).
//   - Debian's Prometheus has no kubernetes_sd_configs, so the cluster
//     serves the pods to Prometheus through HTTP service discovery with the
//     same __meta_kubernetes_pod_* labels (see discovery.go).
//
// There is no kube-proxy, DNS or kubelet API: Service cluster IPs do not
// answer, and `kubectl logs` does not work; container logs are files in
// LogDir()/pods.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weir-dev/weir/test/cluster/slackrecorder"
)

// DefaultImages maps image repositories (the image name without its tag) to
// binaries in the bin folder.
var DefaultImages = map[string]string{
	"weir.dev/demo-app":        "demo-app",
	"weir.dev/weir-proxy":      "weir-proxy",
	"weir.dev/weir-controller": "weir-controller",
	"weir.dev/loadgen":         "loadgen",
}

// DefaultNodeName is the name of the node the agent registers.
const DefaultNodeName = "weir-local"

// Options configure a cluster.
type Options struct {
	// Dir holds state and logs (logs in Dir/logs). Required.
	Dir string
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and the
	// binaries images map to. Required.
	BinDir string
	// Images adds to or overrides DefaultImages: image repository → binary
	// name in BinDir (or an absolute path).
	Images map[string]string
	// NodeName is the node's name; default DefaultNodeName.
	NodeName string
	// PodCIDR is the /24 of 10.0.0.0/8 of the pod network namespace: .1 is
	// the node, pods get .129 to .254; default a free /24 of 10.213.0.0/16
	// (see network.go).
	PodCIDR string
	// PrometheusBin is the Prometheus binary; default "prometheus" on PATH.
	PrometheusBin string
	// NoPrometheus skips Prometheus.
	NoPrometheus bool
	// SlackToken is the token the Slack recorder accepts.
	SlackToken string
	// StopGrace bounds how long pods get to stop on Stop; default 2s.
	StopGrace time.Duration
}

// Cluster is a running local cluster.
type Cluster struct {
	opts   Options
	dir    string
	logDir string

	pki          *pki
	adminToken   string
	kcmToken     string
	etcdURL      string
	apiServerURL string
	kubeconfig   string
	config       *rest.Config
	client       kubernetes.Interface

	network       *podNetwork
	apiForward    *forwarder
	agent         *agent
	agentDone     chan struct{}
	cancelAgent   context.CancelFunc
	discovery     *discovery
	prometheusURL string
	slack         *slackrecorder.Recorder

	mu       sync.Mutex
	procs    []*Process
	stopOnce sync.Once
	stopErr  error
}

// Start starts a cluster and waits until it can run pods. On failure it
// stops whatever it had started.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Dir == "" || opts.BinDir == "" {
		return nil, errors.New("cluster options need Dir and BinDir")
	}
	c, err := newCluster(opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"pod network", c.startNetwork},
		{"keys and certificates", c.writePKI},
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"admin kubeconfig", c.writeAdminKubeconfig},
		{"kube-controller-manager", c.startControllerManager},
		{"node agent", c.startAgent},
		{"prometheus", c.startPrometheusUnlessDisabled},
		{"slack recorder", c.startSlack},
		{"default service account", c.waitDefaultServiceAccount},
	}
	for _, s := range steps {
		if err := runStep(ctx, s.run); err != nil {
			return nil, fmt.Errorf("failed to start the local cluster (%s; logs in %s): %w", s.name, c.logDir, err)
		}
	}
	return c, nil
}

// runStep runs a start step, again (up to three times in all) when it lost
// its port to another process.
func runStep(ctx context.Context, step func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := step(ctx)
		if err == nil || !errors.Is(err, errPortInUse) || attempt == 3 {
			return err
		}
	}
}

// newCluster prepares the folders, keys and tokens of a cluster.
func newCluster(opts Options) (*Cluster, error) {
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("bad cluster folder: %w", err)
	}
	if opts.NodeName == "" {
		opts.NodeName = DefaultNodeName
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = 2 * time.Second
	}
	images := maps.Clone(DefaultImages)
	maps.Copy(images, opts.Images)
	opts.Images = images
	c := &Cluster{opts: opts, dir: dir, logDir: filepath.Join(dir, "logs"), adminToken: randomToken(), kcmToken: randomToken()}
	if err := os.MkdirAll(c.logDir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", c.logDir, err)
	}
	return c, nil
}

// writePKI writes the keys and certificates; the API server's certificate
// is valid for 127.0.0.1, the kubernetes Service's 10.0.0.1 and NodeIP,
// where pods reach it.
func (c *Cluster) writePKI(context.Context) error {
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1"), net.IP(c.network.NodeIP().AsSlice())}
	p, err := writePKI(filepath.Join(c.dir, "pki"), ips)
	if err != nil {
		return err
	}
	c.pki = p
	return nil
}

// startNetwork creates the pod network namespace.
func (c *Cluster) startNetwork(ctx context.Context) error {
	n, err := newPodNetwork(ctx, c.opts.PodCIDR)
	if err != nil {
		return err
	}
	c.network = n
	return nil
}

// writeAdminKubeconfig writes Dir/kubeconfig and builds the admin client.
func (c *Cluster) writeAdminKubeconfig(context.Context) error {
	c.kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := writeKubeconfig(c.kubeconfig, c.apiServerURL, c.pki.caPEM, "admin", c.adminToken); err != nil {
		return err
	}
	c.config = restConfig(c.apiServerURL, c.pki.caPEM, c.adminToken)
	client, err := kubernetes.NewForConfig(c.config)
	if err != nil {
		return fmt.Errorf("failed to build the admin client: %w", err)
	}
	c.client = client
	return nil
}

// startAgent forwards NodeIP's API server port to the API server, runs
// the node agent until Stop and waits for its node.
func (c *Cluster) startAgent(ctx context.Context) error {
	u, err := url.Parse(c.apiServerURL)
	if err != nil {
		return fmt.Errorf("bad API server URL: %w", err)
	}
	if c.apiForward == nil {
		listen := net.JoinHostPort(c.network.NodeIP().String(), u.Port())
		if c.apiForward, err = startForwarder(listen, u.Host); err != nil {
			return err
		}
	}
	a := newAgent(c.client, agentConfig{
		NodeName: c.opts.NodeName, BinDir: c.opts.BinDir, Images: c.opts.Images,
		LogDir: filepath.Join(c.logDir, "pods"), RunDir: filepath.Join(c.dir, "pods"),
		Network: c.network, Server: "https://" + c.apiForward.Addr(), CAPEM: c.pki.caPEM,
	})
	if err := a.register(ctx); err != nil {
		return err
	}
	agentCtx, cancel := context.WithCancel(context.Background())
	c.agent, c.cancelAgent, c.agentDone = a, cancel, make(chan struct{})
	go func() {
		defer close(c.agentDone)
		a.run(agentCtx)
	}()
	return nil
}

// startPrometheusUnlessDisabled starts Prometheus unless NoPrometheus is set.
func (c *Cluster) startPrometheusUnlessDisabled(ctx context.Context) error {
	if c.opts.NoPrometheus {
		return nil
	}
	return c.startPrometheus(ctx)
}

// startSlack starts the Slack recorder.
func (c *Cluster) startSlack(context.Context) error {
	r, err := slackrecorder.Start(slackrecorder.Options{Token: c.opts.SlackToken})
	if err != nil {
		return err
	}
	c.slack = r
	return nil
}

// waitDefaultServiceAccount waits until kube-controller-manager created the
// default service account, the sign that pods can be created.
func (c *Cluster) waitDefaultServiceAccount(ctx context.Context) error {
	return c.waitServiceAccount(ctx, metav1.NamespaceDefault, "default")
}

// waitServiceAccount polls until the named service account exists.
func (c *Cluster) waitServiceAccount(ctx context.Context, ns, name string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := c.client.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("failed to get service account %s/%s: %w", ns, name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("service account %s/%s never appeared: %w", ns, name, ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop stops the node agent and its pods, then Prometheus, the control
// plane and the Slack recorder, and deletes the pod network namespace. It
// is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = c.stop() })
	return c.stopErr
}

// stop does the work of Stop.
func (c *Cluster) stop() error {
	var errs []error
	if c.cancelAgent != nil {
		c.cancelAgent()
		<-c.agentDone
		errs = append(errs, c.agent.stopAll(c.opts.StopGrace))
	}
	if c.apiForward != nil {
		errs = append(errs, c.apiForward.Close())
	}
	if c.discovery != nil {
		errs = append(errs, c.discovery.Close())
	}
	c.mu.Lock()
	procs := c.procs
	c.procs = nil
	c.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		errs = append(errs, procs[i].Stop(10*time.Second))
	}
	if c.slack != nil {
		errs = append(errs, c.slack.Close())
	}
	if c.network != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, c.network.Close(ctx))
		cancel()
	}
	return errors.Join(errs...)
}

// Dir is the cluster's state folder.
func (c *Cluster) Dir() string { return c.dir }

// LogDir is the folder holding every log: one per component, and
// pods/<namespace>_<pod>_<container>.log per container.
func (c *Cluster) LogDir() string { return c.logDir }

// Kubeconfig is the path of the admin kubeconfig.
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// RESTConfig returns a copy of the admin client configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.config) }

// Client is an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// APIServerURL is the API server's https URL.
func (c *Cluster) APIServerURL() string { return c.apiServerURL }

// PrometheusURL is Prometheus's base URL, empty with NoPrometheus.
func (c *Cluster) PrometheusURL() string { return c.prometheusURL }

// SlackRecorder is the cluster's Slack recorder.
func (c *Cluster) SlackRecorder() *slackrecorder.Recorder { return c.slack }

// NodeName is the name of the cluster's only node.
func (c *Cluster) NodeName() string { return c.opts.NodeName }

// NodeIP is the node's address, the root namespace's side of the veth
// pair to the pods' namespace: bindable in the root namespace and
// reachable from pods, the place for servers that pods call, such as the
// xDS server.
func (c *Cluster) NodeIP() string { return c.network.NodeIP().String() }

// PodCIDR is the /24 of the pod network namespace; pod addresses are its
// upper half.
func (c *Cluster) PodCIDR() string { return c.network.prefix.String() }

// Pids lists the process ids of every running child: control plane,
// Prometheus and container processes.
func (c *Cluster) Pids() []int {
	c.mu.Lock()
	var pids []int
	for _, p := range c.procs {
		pids = append(pids, p.Pid())
	}
	c.mu.Unlock()
	if c.agent != nil {
		pids = append(pids, c.agent.pids()...)
	}
	return pids
}

// CreateNamespace creates a namespace and waits for its default service
// account, so that pods can be created in it at once.
func (c *Cluster) CreateNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create namespace %s: %w", name, err)
	}
	return c.waitServiceAccount(ctx, name, "default")
}

// ServiceAccountToken requests a token for a service account (TokenRequest
// API), valid for a day.
func (c *Cluster) ServiceAccountToken(ctx context.Context, ns, name string) (string, error) {
	expiry := int64((24 * time.Hour).Seconds())
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}
	got, err := c.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("failed to request a token for %s/%s: %w", ns, name, err)
	}
	return got.Status.Token, nil
}

// KubeconfigForServiceAccount writes a kubeconfig acting as the service
// account ns/name and returns its path.
func (c *Cluster) KubeconfigForServiceAccount(ctx context.Context, ns, name string) (string, error) {
	token, err := c.ServiceAccountToken(ctx, ns, name)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.dir, "kubeconfigs", ns+"_"+name+".kubeconfig")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("failed to create the kubeconfig folder: %w", err)
	}
	user := "system:serviceaccount:" + ns + ":" + name
	if err := writeKubeconfig(path, c.apiServerURL, c.pki.caPEM, user, token); err != nil {
		return "", err
	}
	return path, nil
}

// RESTConfigForServiceAccount is a client configuration acting as the
// service account ns/name.
func (c *Cluster) RESTConfigForServiceAccount(ctx context.Context, ns, name string) (*rest.Config, error) {
	token, err := c.ServiceAccountToken(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	return restConfig(c.apiServerURL, c.pki.caPEM, token), nil
}

// randomToken is a random bearer token.
func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
