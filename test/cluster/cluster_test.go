package cluster

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weir-dev/weir/internal/testenv"
)

const (
	testNS   = "demo"
	demoName = "demo"
	demoPort = 8080
)

// TestCluster runs a real Deployment of demo-app through its life on one
// cluster: availability, endpoints, Prometheus, a rolling update, a crash,
// scaling down, an unknown image, and finally Stop leaving nothing behind.
func TestCluster(t *testing.T) {
	testenv.Bin(t, "demo-app")
	kubectl := testenv.Bin(t, "kubectl")
	c := StartForTest(t, func(o *Options) {
		o.Images = map[string]string{"weir.dev/sh": "/bin/sh", "weir.dev/kubectl": kubectl}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	client := c.Client()
	if err := c.CreateNamespace(ctx, testNS); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: demoName, Namespace: testNS},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": demoName},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	if _, err := client.CoreV1().Services(testNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.AppsV1().Deployments(testNS).Create(ctx, demoDeployment("v1", 3), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{} // every container process the test saw

	t.Run("deployment becomes available", func(t *testing.T) {
		waitRolledOut(ctx, t, c, 3)
		pods := demoPods(ctx, t, c)
		for _, p := range pods {
			if p.Spec.NodeName != c.NodeName() || p.Status.Phase != corev1.PodRunning || !c.network.podRange().Contains(netip.MustParseAddr(p.Status.PodIP)) {
				t.Errorf("pod %s: node %q phase %s ip %s", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP)
			}
		}
		ownNet := netNamespace(t, os.Getpid())
		for pid := range podPids(t, pods) {
			seen[pid] = true
			if netNamespace(t, pid) == ownNet {
				t.Errorf("container process %d runs in the root network namespace", pid)
			}
		}
	})

	t.Run("endpoints answer their version", func(t *testing.T) {
		ips := waitEndpoints(ctx, t, c, 3)
		for _, ip := range ips {
			if v := getVersion(ctx, t, ip); v != "v1" {
				t.Errorf("%s answered version %q, want v1", ip, v)
			}
		}
	})

	t.Run("prometheus scrapes annotated pods", func(t *testing.T) {
		waitScraped(ctx, t, c, 3)
	})

	t.Run("rolling update replaces every process", func(t *testing.T) {
		old := podPids(t, demoPods(ctx, t, c))
		patch := `{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"weir.dev/demo-app:v2","env":[{"name":"VERSION","value":"v2"}]}]}}}}`
		if _, err := client.AppsV1().Deployments(testNS).Patch(ctx, demoName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitRolledOut(ctx, t, c, 3)
		pods := demoPods(ctx, t, c)
		fresh := podPids(t, pods)
		for pid := range fresh {
			seen[pid] = true
			if old[pid] {
				t.Errorf("process %d survived the rolling update", pid)
			}
		}
		waitGone(ctx, t, old)
		for _, p := range pods {
			if p.Spec.Containers[0].Image != "weir.dev/demo-app:v2" {
				t.Errorf("pod %s runs %s", p.Name, p.Spec.Containers[0].Image)
			}
		}
		for _, ip := range waitEndpoints(ctx, t, c, 3) {
			if v := getVersion(ctx, t, ip); v != "v2" {
				t.Errorf("%s answered version %q, want v2", ip, v)
			}
		}
	})

	t.Run("killed container is restarted", func(t *testing.T) {
		pod := demoPods(ctx, t, c)[0]
		pid := podPidsOf(t, pod)[0]
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		got := waitPod(ctx, t, c, pod.Name, func(p *corev1.Pod) bool {
			cs := p.Status.ContainerStatuses
			return len(cs) == 1 && cs[0].RestartCount == 1 && cs[0].Ready && cs[0].State.Running != nil
		})
		cs := got.Status.ContainerStatuses[0]
		if term := cs.LastTerminationState.Terminated; term == nil || term.ExitCode != 137 || term.ContainerID != containerID(pid) {
			t.Errorf("last state %+v, want the killed process %d with exit code 137", cs.LastTerminationState, pid)
		}
		newPid, err := PidOf(cs.ContainerID)
		if err != nil || newPid == pid || !processAlive(newPid) {
			t.Errorf("restarted container id %q (%v), old pid %d", cs.ContainerID, err, pid)
		}
		seen[newPid] = true
	})

	t.Run("scale to one stops the other processes", func(t *testing.T) {
		before := podPids(t, demoPods(ctx, t, c))
		scale := `{"spec":{"replicas":1}}`
		if _, err := client.AppsV1().Deployments(testNS).Patch(ctx, demoName, types.MergePatchType, []byte(scale), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitRolledOut(ctx, t, c, 1)
		var pods []corev1.Pod
		waitFor(ctx, t, "one demo pod left", func() (bool, error) {
			pods = demoPods(ctx, t, c)
			return len(pods) == 1, nil
		})
		kept := podPids(t, pods)
		gone := map[int]bool{}
		for pid := range before {
			if !kept[pid] {
				gone[pid] = true
			}
		}
		if len(gone) != 2 {
			t.Errorf("%d processes to stop, want 2 (before %v, kept %v)", len(gone), before, kept)
		}
		waitGone(ctx, t, gone)
		if ips := waitEndpoints(ctx, t, c, 1); len(ips) != 1 {
			t.Errorf("endpoints %v, want 1", ips)
		}
	})

	t.Run("unknown image is rejected", func(t *testing.T) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "unknown", Namespace: testNS},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/nope:v1"}}},
		}
		if _, err := client.CoreV1().Pods(testNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		got := waitPod(ctx, t, c, "unknown", func(p *corev1.Pod) bool {
			cs := p.Status.ContainerStatuses
			return len(cs) == 1 && cs[0].State.Waiting != nil && cs[0].State.Waiting.Reason == "ErrImagePull"
		})
		if got.Status.Phase != corev1.PodPending {
			t.Errorf("phase %s, want Pending", got.Status.Phase)
		}
	})

	t.Run("restart policies", func(t *testing.T) { testRestartPolicies(ctx, t, c) })
	t.Run("grace period ends in SIGKILL", func(t *testing.T) { testGracePeriod(ctx, t, c) })
	t.Run("two containers share a pod", func(t *testing.T) { testMultiContainerPod(ctx, t, c) })
	t.Run("service account kubeconfig", func(t *testing.T) { testServiceAccountKubeconfig(ctx, t, c) })
	t.Run("pods and the node reach each other", func(t *testing.T) { testPodNodeReach(ctx, t, c) })

	t.Run("stop leaves no process, port or network namespace", func(t *testing.T) {
		for _, pid := range c.Pids() {
			seen[pid] = true
		}
		addrs := clusterAddrs(t, c)
		if err := c.Stop(); err != nil {
			t.Fatalf("stop: %v", err)
		}
		for pid := range seen {
			if processAlive(pid) {
				t.Errorf("process %d still runs after Stop", pid)
			}
		}
		if left := processesUnder(t, c.Dir()); len(left) > 0 {
			t.Errorf("processes still use %s: %v", c.Dir(), left)
		}
		listening := listeningAddrs(t)
		for _, a := range addrs {
			if listening[a] {
				t.Errorf("%s still listening after Stop", a)
			}
		}
		for _, args := range [][]string{{"netns", "list"}, {"link", "show"}, {"-4", "addr", "show"}, {"-4", "route", "show", "table", "all"}} {
			out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
			if err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, out)
			}
			for _, s := range []string{c.network.ns, c.network.link, c.NodeIP() + "/", c.PodCIDR()} {
				if strings.Contains(string(out), s) {
					t.Errorf("ip %v still shows %s after Stop:\n%s", args, s, out)
				}
			}
		}
		if _, err := os.Stat(ownerFile(c.network.prefix)); !os.IsNotExist(err) {
			t.Errorf("owner record of %s left behind (%v)", c.PodCIDR(), err)
		}
	})
}

// demoDeployment is demo-app at version, annotated for scraping, with a
// readiness probe on /readyz.
func demoDeployment(version string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": demoName}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: demoName, Namespace: testNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1)),
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					"prometheus.io/scrape": "true", "prometheus.io/port": strconv.Itoa(demoPort), "prometheus.io/path": "/metrics",
				}},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{{
						Name:  "app",
						Image: "weir.dev/demo-app:" + version,
						Env: []corev1.EnvVar{
							{Name: "VERSION", Value: version},
							{Name: "PORT", Value: strconv.Itoa(demoPort)},
							{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: demoPort}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

// waitFor polls cond every 200ms until it holds, failing t when ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	testenv.Eventually(t, ctx, 0, 200*time.Millisecond, what, cond)
}

// waitRolledOut waits until the Deployment has rolled out to replicas
// updated, available pods and no old ones.
func waitRolledOut(ctx context.Context, t *testing.T, c *Cluster, replicas int32) {
	t.Helper()
	waitFor(ctx, t, fmt.Sprintf("deployment rolled out to %d replicas", replicas), func() (bool, error) {
		d, err := c.Client().AppsV1().Deployments(testNS).Get(ctx, demoName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s := d.Status
		available := false
		for _, cond := range s.Conditions {
			available = available || (cond.Type == appsv1.DeploymentAvailable && cond.Status == corev1.ConditionTrue)
		}
		return s.ObservedGeneration == d.Generation && available && s.UpdatedReplicas == replicas &&
			s.AvailableReplicas == replicas && s.Replicas == replicas, nil
	})
}

// demoPods lists the demo pods that are not being deleted.
func demoPods(ctx context.Context, t *testing.T, c *Cluster) []corev1.Pod {
	t.Helper()
	list, err := c.Client().CoreV1().Pods(testNS).List(ctx, metav1.ListOptions{LabelSelector: "app=" + demoName})
	if err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			pods = append(pods, p)
		}
	}
	return pods
}

// podPids are the container processes of pods, from their container ids.
func podPids(t *testing.T, pods []corev1.Pod) map[int]bool {
	t.Helper()
	pids := map[int]bool{}
	for _, p := range pods {
		for _, pid := range podPidsOf(t, p) {
			pids[pid] = true
		}
	}
	return pids
}

// podPidsOf are the container processes of one running pod.
func podPidsOf(t *testing.T, p corev1.Pod) []int {
	t.Helper()
	var pids []int
	for _, cs := range p.Status.ContainerStatuses {
		pid, err := PidOf(cs.ContainerID)
		if err != nil {
			t.Fatalf("pod %s: %v", p.Name, err)
		}
		if !processAlive(pid) {
			t.Fatalf("pod %s: container %s process %d is not running", p.Name, cs.Name, pid)
		}
		pids = append(pids, pid)
	}
	return pids
}

// waitPod polls the named pod until cond holds and returns it.
func waitPod(ctx context.Context, t *testing.T, c *Cluster, name string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	waitFor(ctx, t, "pod "+name, func() (bool, error) {
		p, err := c.Client().CoreV1().Pods(testNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pod = p
		return cond(p), nil
	})
	return pod
}

// waitEndpoints waits until the demo Service's EndpointSlices list exactly
// n ready addresses in the pod network, and returns them.
func waitEndpoints(ctx context.Context, t *testing.T, c *Cluster, n int) []string {
	t.Helper()
	var ips []string
	waitFor(ctx, t, fmt.Sprintf("%d ready endpoints", n), func() (bool, error) {
		list, err := c.Client().DiscoveryV1().EndpointSlices(testNS).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + demoName,
		})
		if err != nil {
			return false, err
		}
		ips = nil
		for _, s := range list.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					ips = append(ips, e.Addresses...)
				}
			}
		}
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err != nil || !c.network.prefix.Contains(a) {
				return false, fmt.Errorf("endpoint %s outside the pod network %s", ip, c.PodCIDR())
			}
		}
		return len(ips) == n, nil
	})
	slices.Sort(ips)
	return ips
}

// getVersion asks demo-app at ip for its version.
func getVersion(ctx context.Context, t *testing.T, ip string) string {
	t.Helper()
	return getVersionAt(ctx, t, net.JoinHostPort(ip, strconv.Itoa(demoPort)))
}

// getVersionAt asks demo-app at host:port for its version.
func getVersionAt(ctx context.Context, t *testing.T, hostPort string) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostPort+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL, err)
	}
	defer resp.Body.Close()
	var body struct {
		Version string `json:"version"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", req.URL, resp.Status, err)
	}
	return body.Version
}

// waitScraped waits until Prometheus reports up == 1 for n demo pods.
func waitScraped(ctx context.Context, t *testing.T, c *Cluster, n int) {
	t.Helper()
	client, err := promapi.NewClient(promapi.Config{Address: c.PrometheusURL(), Client: &http.Client{Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	api := promv1.NewAPI(client)
	query := fmt.Sprintf(`up{namespace=%q, app=%q} == 1`, testNS, demoName)
	waitFor(ctx, t, "prometheus scraping the demo pods", func() (bool, error) {
		v, _, err := api.Query(ctx, query, time.Now())
		if err != nil {
			return false, err
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return false, fmt.Errorf("query answered %s", v.Type())
		}
		pods := map[string]bool{}
		for _, s := range vec {
			pods[string(s.Metric["pod"])] = true
		}
		return len(pods) == n, fmt.Errorf("up == 1 for %v", pods)
	})
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	fields := strings.Fields(string(b[i+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// waitGone waits until none of pids runs.
func waitGone(ctx context.Context, t *testing.T, pids map[int]bool) {
	t.Helper()
	waitFor(ctx, t, "processes to exit", func() (bool, error) {
		for pid := range pids {
			if processAlive(pid) {
				return false, fmt.Errorf("process %d still runs", pid)
			}
		}
		return true, nil
	})
}

// processesUnder lists live processes whose command line or working
// folder mentions dir.
func processesUnder(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !processAlive(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if strings.Contains(string(cmdline), dir) || strings.HasPrefix(cwd, dir) {
			found = append(found, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	return found
}

// clusterAddrs are the listening addresses the cluster opened: its
// components' ports and every pod address on the demo port.
func clusterAddrs(t *testing.T, c *Cluster) []string {
	t.Helper()
	var addrs []string
	for _, raw := range []string{c.etcdURL, c.APIServerURL(), "https://" + c.apiForward.Addr(), c.PrometheusURL(), c.SlackRecorder().URL(), c.discovery.URL()} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, u.Host)
	}
	for a := c.network.NodeIP(); c.network.prefix.Contains(a); a = a.Next() {
		addrs = append(addrs, net.JoinHostPort(a.String(), strconv.Itoa(demoPort)), net.JoinHostPort(a.String(), strconv.Itoa(demoPort+1)))
	}
	return addrs
}

// listeningAddrs reads the IPv4 TCP sockets in LISTEN state from /proc.
func listeningAddrs(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "0A" {
			continue
		}
		hostHex, portHex, ok := strings.Cut(f[1], ":")
		ip, err1 := hex.DecodeString(hostHex)
		port, err2 := strconv.ParseUint(portHex, 16, 16)
		if !ok || err1 != nil || err2 != nil || len(ip) != 4 {
			continue
		}
		a := netip.AddrFrom4([4]byte{ip[3], ip[2], ip[1], ip[0]})
		addrs[net.JoinHostPort(a.String(), strconv.FormatUint(port, 10))] = true
	}
	return addrs
}

// testServiceAccountKubeconfig checks that a kubeconfig written for a
// service account acts as that account and nothing more.
func testServiceAccountKubeconfig(ctx context.Context, t *testing.T, c *Cluster) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "weir-controller", Namespace: testNS}}
	if _, err := c.Client().CoreV1().ServiceAccounts(testNS).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	path, err := c.KubeconfigForServiceAccount(ctx, testNS, "weir-controller")
	if err != nil {
		t.Fatal(err)
	}
	kubectl := testenv.Bin(t, "kubectl")
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", path, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput()
	if want := "system:serviceaccount:" + testNS + ":weir-controller"; err != nil || string(out) != want {
		t.Fatalf("whoami: %q (%v), want %s", out, err, want)
	}
	out, err = exec.CommandContext(ctx, kubectl, "--kubeconfig", path, "get", "pods", "-n", testNS).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "forbidden") {
		t.Errorf("get pods as the service account without RBAC: %s (%v), want forbidden", out, err)
	}
}

// testMultiContainerPod runs two containers in one pod: both get the pod's
// address and answer on their own port.
func testMultiContainerPod(ctx context.Context, t *testing.T, c *Cluster) {
	containerOn := func(name string, port int) corev1.Container {
		return corev1.Container{
			Name: name, Image: "weir.dev/demo-app:" + name,
			Env: []corev1.EnvVar{
				{Name: "VERSION", Value: name}, {Name: "PORT", Value: strconv.Itoa(port)},
				{Name: "MY_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				{Name: "BIND_IP", Value: "$(MY_IP)"},
			},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt(port)}},
				PeriodSeconds: 1,
			},
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pair", Namespace: testNS},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{containerOn("first", demoPort), containerOn("second", demoPort+1)}},
	}
	if _, err := c.Client().CoreV1().Pods(testNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitPod(ctx, t, c, "pair", func(p *corev1.Pod) bool {
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady {
				return cond.Status == corev1.ConditionTrue
			}
		}
		return false
	})
	for i, want := range []string{"first", "second"} {
		if v := getVersionAt(ctx, t, net.JoinHostPort(got.Status.PodIP, strconv.Itoa(demoPort+i))); v != want {
			t.Errorf("container %s answered %q", want, v)
		}
	}
	pids := podPids(t, []corev1.Pod{*got})
	if len(pids) != 2 {
		t.Errorf("pod pair runs processes %v, want 2", pids)
	}
	if err := c.Client().CoreV1().Pods(testNS).Delete(ctx, "pair", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(ctx, t, pids)
	waitFor(ctx, t, "pod pair removed", func() (bool, error) {
		_, err := c.Client().CoreV1().Pods(testNS).Get(ctx, "pair", metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
}

// shPod is a pod running a shell script through the weir.dev/sh image.
func shPod(name, script string, policy corev1.RestartPolicy) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS},
		Spec: corev1.PodSpec{
			RestartPolicy:                 policy,
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers:                    []corev1.Container{{Name: "sh", Image: "weir.dev/sh:1", Command: []string{"sh", "-c", script}}},
		},
	}
}

// testRestartPolicies checks that a failed container of a Never pod fails
// the pod, and that an Always pod's crashing container is restarted with
// back-off.
func testRestartPolicies(ctx context.Context, t *testing.T, c *Cluster) {
	for _, p := range []*corev1.Pod{shPod("fails", "exit 3", corev1.RestartPolicyNever), shPod("crashes", "exit 1", corev1.RestartPolicyAlways)} {
		if _, err := c.Client().CoreV1().Pods(testNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	failed := waitPod(ctx, t, c, "fails", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
	cs := failed.Status.ContainerStatuses[0]
	if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 3 || cs.RestartCount != 0 {
		t.Errorf("failed pod's container: %+v", cs)
	}
	waitPod(ctx, t, c, "crashes", func(p *corev1.Pod) bool {
		cs := p.Status.ContainerStatuses
		return p.Status.Phase == corev1.PodRunning && len(cs) == 1 && cs[0].RestartCount >= 2 &&
			cs[0].LastTerminationState.Terminated != nil && cs[0].LastTerminationState.Terminated.ExitCode == 1
	})
	for _, name := range []string{"fails", "crashes"} {
		if err := c.Client().CoreV1().Pods(testNS).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// testGracePeriod deletes a pod whose process ignores SIGTERM: it must live
// through the grace period, then be killed, and the pod removed.
func testGracePeriod(ctx context.Context, t *testing.T, c *Cluster) {
	pod := shPod("stubborn", "trap '' TERM; exec sleep 1000", corev1.RestartPolicyAlways)
	if _, err := c.Client().CoreV1().Pods(testNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := waitPod(ctx, t, c, "stubborn", func(p *corev1.Pod) bool {
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].Ready
	})
	pid := podPidsOf(t, *running)[0]
	deleted := time.Now()
	if err := c.Client().CoreV1().Pods(testNS).Delete(ctx, "stubborn", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if !processAlive(pid) {
		t.Errorf("process %d ignoring SIGTERM died before its 2s grace period", pid)
	}
	waitGone(ctx, t, map[int]bool{pid: true})
	if d := time.Since(deleted); d < 2*time.Second {
		t.Errorf("process gone after %s, before its grace period", d)
	}
	waitFor(ctx, t, "pod stubborn removed", func() (bool, error) {
		_, err := c.Client().CoreV1().Pods(testNS).Get(ctx, "stubborn", metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
}

// netNamespace is the network namespace of a process, as /proc names it.
func netNamespace(t *testing.T, pid int) string {
	t.Helper()
	ns, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// testPodNodeReach runs kubectl as a pod: from inside the pod network
// namespace its service-account kubeconfig must reach the API server at
// NodeIP. And the root namespace reaches a pod at its address.
func testPodNodeReach(ctx context.Context, t *testing.T, c *Cluster) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "whoami", Namespace: testNS}}
	if _, err := c.Client().CoreV1().ServiceAccounts(testNS).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "whoami", Namespace: testNS},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, ServiceAccountName: "whoami",
			Containers: []corev1.Container{{Name: "kubectl", Image: "weir.dev/kubectl:1",
				Args: []string{"auth", "whoami", "--request-timeout=20s", "-o", "jsonpath={.status.userInfo.username}"}}},
		},
	}
	if _, err := c.Client().CoreV1().Pods(testNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	done := waitPod(ctx, t, c, "whoami", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
	out, _ := os.ReadFile(filepath.Join(c.LogDir(), "pods", testNS+"_whoami_kubectl.log"))
	if want := "system:serviceaccount:" + testNS + ":whoami"; done.Status.Phase != corev1.PodSucceeded || string(out) != want {
		t.Errorf("kubectl auth whoami in a pod: phase %s, output %q, want %s", done.Status.Phase, out, want)
	}
	if ip := netip.MustParseAddr(done.Status.PodIP); !c.network.podRange().Contains(ip) || done.Status.HostIP != c.NodeIP() {
		t.Errorf("pod ip %s host ip %s, want one of %s and %s", ip, done.Status.HostIP, c.network.podRange(), c.NodeIP())
	}
	if err := c.Client().CoreV1().Pods(testNS).Delete(ctx, "whoami", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range demoPods(ctx, t, c) {
		if v := getVersion(ctx, t, p.Status.PodIP); v == "" {
			t.Errorf("pod %s at %s answered no version", p.Name, p.Status.PodIP)
		}
	}
}
