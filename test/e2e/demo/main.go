// Command demo is `make demo`: it starts the local cluster, installs weir,
// deploys the demo app under a Canary and narrates a real promotion and a
// real rollback as they happen: the `kubectl get canary -w` lines, the
// traffic split the load generator sees, and the Slack messages. It writes
// a timeline chart (PNG) of the canary weight, the success rate and the p99
// latency, then says where to look and how to stop.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"html"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/internal/testenv"
	"github.com/weir-dev/weir/test/e2e/framework"
)

func main() {
	root := testenv.RepoRoot()
	dir := flag.String("dir", filepath.Join(root, ".cluster", "demo"), "folder for the cluster's state and logs (emptied first)")
	out := flag.String("chart", filepath.Join(root, "out", "demo-timeline.png"), "where to write the timeline chart")
	interval := flag.Duration("interval", 5*time.Second, "analysis interval of the demo Canary")
	keep := flag.Bool("keep", term.IsTerminal(int(os.Stdin.Fd())), "keep the cluster running after the demo until Ctrl-C (default when run from a terminal)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *dir, *out, *interval, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

// narrator prints the demo's lines, one writer at a time.
type narrator struct {
	mu    sync.Mutex
	start time.Time
}

func (n *narrator) say(tag, format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fmt.Printf("%6.1fs  %-8s %s\n", time.Since(n.start).Seconds(), tag, fmt.Sprintf(format, args...))
}

func (n *narrator) title(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fmt.Printf("\n== %s\n", s)
}

func run(ctx context.Context, dir, chart string, interval time.Duration, keep bool) error {
	n := &narrator{start: time.Now()}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	n.title("Starting a local cluster: etcd, kube-apiserver, kube-controller-manager, a node agent, Prometheus, a Slack recorder")
	env, err := framework.Start(ctx, framework.Options{Dir: dir, BinDir: testenv.BinDir(), RepoRoot: testenv.RepoRoot()})
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping the cluster: %v\n", err)
		}
	}()
	n.say("cluster", "API server %s, Prometheus %s", env.Cluster.APIServerURL(), env.Cluster.PrometheusURL())
	n.say("weir", "CRDs and RBAC applied from config/; weir-controller runs as ServiceAccount %s/%s, xDS on %s", framework.SystemNamespace, framework.ControllerSA, env.XDSAddress)

	n.title("Deploying podinfo v1 (3 pods, each with a weir-proxy sidecar) under a Canary: steps 10 → 50 → 100, a check every " + interval.String())
	tl := env.WatchCanary(ctx, framework.Namespace, framework.App)
	clientIP, err := env.InstallPodinfo(ctx, framework.AppVersion{Tag: "v1"}, framework.DefaultCanary(interval)...)
	if err != nil {
		return err
	}
	n.say("weir", "podinfo-primary serves v1; the Canary is initialised")

	watch, err := startWatch(ctx, env, n)
	if err != nil {
		return err
	}
	defer watch()
	traffic, err := framework.StartTraffic(ctx, clientIP, framework.AppHost, 50)
	if err != nil {
		return err
	}
	defer traffic.Stop()
	n.say("traffic", "50 requests/s to %s through the client pod's sidecar at %s", framework.AppHost, clientIP)
	narration, quiet := context.WithCancel(ctx)
	defer quiet()
	go narrateTraffic(narration, n, traffic)
	go narrateSlack(narration, n, env)

	start := time.Now()
	var markers []Marker
	rollout := func(v framework.AppVersion, want v1alpha1.CanaryPhase, what string) error {
		n.title(what)
		markers = append(markers, Marker{At: time.Now(), Label: v.Tag})
		if err := env.SetVersion(ctx, framework.Namespace, framework.App, v); err != nil {
			return err
		}
		since := time.Now()
		c, err := env.WaitCanary(ctx, framework.Namespace, framework.App, 5*time.Minute, func(c *v1alpha1.Canary) bool {
			return c.Status.LastTransitionTime != nil && c.Status.LastTransitionTime.After(since) &&
				(c.Status.Phase == v1alpha1.PhaseSucceeded || c.Status.Phase == v1alpha1.PhaseFailed)
		})
		if err != nil {
			return err
		}
		if c.Status.Phase != want {
			return fmt.Errorf("the rollout of %s ended %s, want %s", v.Tag, c.Status.Phase, want)
		}
		sleep(ctx, 3*time.Second) // let the last lines arrive
		return nil
	}
	if err := rollout(framework.AppVersion{Tag: "v2"}, v1alpha1.PhaseSucceeded, "Rolling out v2: healthy, so weir promotes it"); err != nil {
		return err
	}
	if err := rollout(framework.AppVersion{Tag: "v3", ErrorRate: 0.3}, v1alpha1.PhaseFailed, "Rolling out v3, which fails 30% of its requests: weir rolls it back"); err != nil {
		return err
	}

	quiet()
	watch()
	n.title("Done")
	if err := writeChart(chart, start, tl.Points(), traffic.Samples(), markers); err != nil {
		return err
	}
	end := time.Now()
	for i, m := range markers {
		to := end
		if i+1 < len(markers) {
			to = markers[i+1].At
		}
		sh := traffic.Between(m.At, to)
		fmt.Printf("  traffic during the %s rollout: %d requests, %d failed (%.2f%%)\n",
			m.Label, sh.Requests, sh.Failures, 100*float64(sh.Failures)/float64(max(sh.Requests, 1)))
	}
	if out, err := env.Kubectl(ctx, "get", "canary", "-A", "-o", "wide"); err == nil {
		fmt.Printf("\n$ kubectl get canary -A -o wide\n%s\n", out)
	}
	fmt.Printf("  timeline chart:  %s\n", chart)
	fmt.Printf("  kubeconfig:      %s\n", env.Cluster.Kubeconfig())
	fmt.Printf("  Prometheus:      %s\n", env.Cluster.PrometheusURL())
	fmt.Printf("  controller:      http://%s/metrics and /debug/xds\n", env.MetricsAddress)
	fmt.Printf("  logs:            %s\n", env.Cluster.LogDir())
	if !keep {
		fmt.Println("\nStopping the cluster (run with -keep to leave it up).")
		return nil
	}
	fmt.Printf("\nThe cluster stays up; try `bin/kubectl --kubeconfig %s get canary -w`. Press Ctrl-C to stop it.\n", env.Cluster.Kubeconfig())
	<-ctx.Done()
	return nil
}

// startWatch streams `kubectl get canary -w` into the narration.
func startWatch(ctx context.Context, env *framework.Env, n *narrator) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, filepath.Join(testenv.BinDir(), "kubectl"), "--kubeconfig", env.Cluster.Kubeconfig(),
		"get", "canary", "-n", framework.Namespace, "-w")
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("failed to run kubectl get canary -w: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			n.say("kubectl", "%s", sc.Text())
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			_ = cmd.Wait()
			<-done
		})
	}, nil
}

// narrateTraffic prints the split the load generator saw, every 2 seconds.
func narrateTraffic(ctx context.Context, n *narrator, tr *framework.Traffic) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		sh := tr.Between(now.Add(-2*time.Second), now)
		versions := make([]string, 0, len(sh.Versions))
		for v := range sh.Versions {
			versions = append(versions, v)
		}
		slices.Sort(versions)
		var parts []string
		for _, v := range versions {
			parts = append(parts, fmt.Sprintf("%s %5.1f%%", v, sh.Percent(v)))
		}
		n.say("traffic", "%-28s 5xx %d/%d", strings.Join(parts, "  "), sh.Failures, sh.Requests)
	}
}

// narrateSlack prints every message the Slack recorder receives.
func narrateSlack(ctx context.Context, n *narrator, env *framework.Env) {
	seen := 0
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		msgs := env.Cluster.SlackRecorder().Messages()
		for _, m := range msgs[seen:] {
			n.say("slack", "%s: %s", m.Channel, firstLine(html.UnescapeString(m.Text)))
		}
		seen = len(msgs)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func createFile(path string) (io.WriteCloser, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", path, err)
	}
	return f, nil
}
