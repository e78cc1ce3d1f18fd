// Package e2e runs weir's whole loop on the local cluster: real API server
// and controllers, real pods (processes) with weir-proxy sidecars, real
// Prometheus scraping the sidecars, weir-controller as its own process under
// its ServiceAccount, and slack-go talking to the Slack recorder.
//
// The scenarios run in order on one cluster, each starting from the state
// the previous one left (the primary runs the last promoted version).
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/internal/testenv"
	"github.com/weir-dev/weir/test/cluster/slackrecorder"
	"github.com/weir-dev/weir/test/e2e/framework"
)

const (
	ns      = framework.Namespace
	app     = framework.App
	client_ = framework.Client
	host    = framework.AppHost
	// rate and interval give each step about 1,600 answers, so that the
	// ±tolerance check on the traffic share is 4 standard deviations wide
	// even at 50% (σ = 50/√1600 = 1.25 points): it fails on a wrong split,
	// not on chance.
	rate     = 250 // requests per second through the client sidecar
	interval = 7 * time.Second
	// tolerance is how far, in points, the traffic share seen by the load
	// generator may be from a step's weight.
	tolerance = 5.0
)

// suite is the state the scenarios share.
type suite struct {
	env     *framework.Env
	traffic *framework.Traffic
	tl      *framework.Timeline
	slack   *slackrecorder.Recorder
}

func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	for _, bin := range []string{"weir-controller", "weir-proxy", "demo-app", "etcd", "kube-apiserver", "kube-controller-manager", "kubectl"} {
		testenv.Bin(t, bin)
	}
	s := setUp(ctx, t)

	scenarios := []struct {
		name string
		run  func(context.Context, *testing.T, *suite)
	}{
		{"promotion", promotion},
		{"rollback on errors", rollbackOnErrors},
		{"rollback on latency", rollbackOnLatency},
		{"new revision mid-analysis", newRevisionMidAnalysis},
		{"controller restart mid-rollout", controllerRestart},
		{"control plane gone", controlPlaneGone},
		{"outlier ejection", outlierEjection},
	}
	for _, sc := range scenarios {
		start := time.Now()
		ok := t.Run(sc.name, func(t *testing.T) { sc.run(ctx, t, s) })
		t.Logf("scenario %-32q took %5.1fs", sc.name, time.Since(start).Seconds())
		if !ok {
			t.Logf("logs are in %s", s.env.Cluster.LogDir())
			t.FailNow() // later scenarios stand on earlier ones
		}
	}
}

// setUp starts the cluster with weir installed, the demo app at v1 under a
// Canary, the meshed client and steady traffic through it.
func setUp(ctx context.Context, t *testing.T) *suite {
	t.Helper()
	start := time.Now()
	env, err := framework.Start(ctx, framework.Options{Dir: t.TempDir(), BinDir: testenv.BinDir(), RepoRoot: testenv.RepoRoot()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("failed to stop the environment: %v", err)
		}
	})
	s := &suite{env: env, slack: env.Cluster.SlackRecorder()}
	s.tl = env.WatchCanary(ctx, ns, app)
	clientIP, err := env.InstallPodinfo(ctx, framework.AppVersion{Tag: "v1"}, framework.DefaultCanary(interval)...)
	if err != nil {
		t.Fatalf("failed to install podinfo under a Canary: %v", err)
	}
	s.traffic, err = framework.StartTraffic(ctx, clientIP, host, rate)
	must(t, err)
	t.Cleanup(s.traffic.Stop)
	// All traffic reaches v1 before anything else happens.
	waitShare(ctx, t, s, "v1", 100)
	t.Logf("set-up took %.1fs", time.Since(start).Seconds())
	return s
}

func promotion(ctx context.Context, t *testing.T, s *suite) {
	start := time.Now()
	s.slack.Reset()
	must(t, s.env.SetVersion(ctx, ns, app, framework.AppVersion{Tag: "v2"}))
	waitPhase(ctx, t, s, 3*time.Minute, v1alpha1.PhaseSucceeded, start)

	checkSteps(t, s, start, "v2", []int32{10, 50, 100})
	primaryRuns(ctx, t, s, "v2")
	waitShare(ctx, t, s, "v2", 100)
	if got := s.traffic.Between(start, time.Now()); got.Failures != 0 {
		t.Errorf("requests failed during the rollout: %s", got)
	}
	wantMessages(ctx, t, s, "podinfo.test", []string{"new revision", "promoted"})
}

func rollbackOnErrors(ctx context.Context, t *testing.T, s *suite) {
	start := time.Now()
	s.slack.Reset()
	must(t, s.env.SetVersion(ctx, ns, app, framework.AppVersion{Tag: "v3", ErrorRate: 0.5}))
	c := waitPhase(ctx, t, s, 3*time.Minute, v1alpha1.PhaseFailed, start)
	rolledBack(ctx, t, s, c, "v2")
	msgs := wantMessages(ctx, t, s, "podinfo.test", []string{"new revision", "rolled back"})
	last := msgs[len(msgs)-1]
	if !strings.Contains(string(last.Raw), v1alpha1.MetricRequestSuccessRate) {
		t.Errorf("the rollback message does not name the metric %s:\n%s", v1alpha1.MetricRequestSuccessRate, last.Raw)
	}
}

func rollbackOnLatency(ctx context.Context, t *testing.T, s *suite) {
	start := time.Now()
	s.slack.Reset()
	must(t, s.env.SetVersion(ctx, ns, app, framework.AppVersion{Tag: "v4", Latency: 800 * time.Millisecond}))
	c := waitPhase(ctx, t, s, 3*time.Minute, v1alpha1.PhaseFailed, start)
	rolledBack(ctx, t, s, c, "v2")
	msgs := wantMessages(ctx, t, s, "podinfo.test", []string{"new revision", "rolled back"})
	if last := msgs[len(msgs)-1]; !strings.Contains(string(last.Raw), v1alpha1.MetricRequestDuration) {
		t.Errorf("the rollback message does not name the metric %s:\n%s", v1alpha1.MetricRequestDuration, last.Raw)
	}
}

func newRevisionMidAnalysis(ctx context.Context, t *testing.T, s *suite) {
	start := time.Now()
	must(t, s.env.SetVersion(ctx, ns, app, framework.AppVersion{Tag: "v5"}))
	waitWeight(ctx, t, s, 50)
	at50 := time.Now()
	c, err := s.env.Canary(ctx, ns, app)
	must(t, err)
	v5 := c.Status.LastAppliedSpec
	must(t, s.env.SetVersion(ctx, ns, app, framework.AppVersion{Tag: "v6"}))
	waitPhase(ctx, t, s, 3*time.Minute, v1alpha1.PhaseSucceeded, start)
	// The restart is the first status the timeline saw with v6's revision
	// (the timeline's own clock, so no earlier poll of v5's weight 50 can
	// fall after it). That status, and every later one, must not carry a
	// confirmed weight of v5's analysis.
	restart := s.tl.RevisionSeen(at50, v5)
	if restart.IsZero() {
		t.Fatal("the timeline never saw v6's revision")
	}

	// The new revision resets the weight to 0 and the analysis restarts at
	// the first step: the confirmed steps after the change are 10, 50, 100.
	checkSteps(t, s, restart, "v6", []int32{10, 50, 100})
	primaryRuns(ctx, t, s, "v6")
}

func controllerRestart(ctx context.Context, t *testing.T, s *suite) {
	start := time.Now()
	must(t, s.env.SetVersion(ctx, ns, app, framework.AppVersion{Tag: "v7"}))
	waitWeight(ctx, t, s, 50)
	must(t, s.env.KillController())
	killed := time.Now()
	must(t, s.env.StartController(ctx))
	waitPhase(ctx, t, s, 3*time.Minute, v1alpha1.PhaseSucceeded, start)
	// After the restart the weight never went back below 50 before promotion.
	for _, w := range s.tl.Weights(killed) {
		if w != 0 && w < 50 {
			t.Errorf("after the restart the canary went back to weight %d; weights seen: %v", w, s.tl.Weights(killed))
		}
	}
	primaryRuns(ctx, t, s, "v7")
	if got := s.traffic.Between(start, time.Now()); got.Failures != 0 {
		t.Errorf("requests failed across the controller restart: %s", got)
	}
}

func controlPlaneGone(ctx context.Context, t *testing.T, s *suite) {
	must(t, s.env.StopController())
	stopped := time.Now()
	sleep(ctx, 5*time.Second)
	got := s.traffic.Between(stopped, time.Now())
	if got.Failures != 0 || got.Requests < rate*4 || got.Percent("v7") != 100 {
		t.Errorf("with the controller gone the sidecars should keep routing to v7: %s", got)
	}
	must(t, s.env.StartController(ctx))
	// Every sidecar (3 primary pods and the client) connects again.
	if err := s.env.WaitConnectedProxies(ctx, 4, time.Minute); err != nil {
		t.Error(err)
	}
	if got := s.traffic.Between(stopped, time.Now()); got.Failures != 0 {
		t.Errorf("requests failed while the control plane was away: %s", got)
	}
}

func outlierEjection(ctx context.Context, t *testing.T, s *suite) {
	start := time.Now()
	// A pod that fails every request is ejected after 3 consecutive 5xx;
	// the client sees those 3 (retried elsewhere), so the success-rate
	// gate is relaxed for this scenario.
	c, err := s.env.Canary(ctx, ns, app)
	must(t, err)
	for i := range c.Spec.Analysis.Metrics {
		if c.Spec.Analysis.Metrics[i].Name == v1alpha1.MetricRequestSuccessRate {
			c.Spec.Analysis.Metrics[i].ThresholdRange.Min = ptr.To(90.0)
		}
	}
	must(t, s.env.Client.Update(ctx, c))

	must(t, s.env.SetVersion(ctx, ns, app, framework.AppVersion{Tag: "v8"}))
	waitWeight(ctx, t, s, 10)
	pods, err := s.env.ReadyPods(ctx, ns, app)
	must(t, err)
	var bad string
	for _, p := range pods {
		if strings.HasSuffix(p.Spec.Containers[0].Image, ":v8") {
			bad = p.Status.PodIP
			break
		}
	}
	if bad == "" {
		t.Fatal("no ready canary pod found")
	}
	must(t, framework.SetAppConfig(ctx, bad, `{"errorRate":1}`))
	broke := time.Now()
	clients, err := s.env.ReadyPods(ctx, ns, client_)
	must(t, err)
	ejected, err := framework.WaitEjected(ctx, clients[0].Status.PodIP, "test/podinfo-canary:9898", 15*time.Second)
	if err != nil {
		t.Errorf("the failing canary pod was not ejected: %v", err)
	} else {
		t.Logf("failing canary pod ejected %.1fs after it broke", ejected.Sub(broke).Seconds())
	}
	waitPhase(ctx, t, s, 3*time.Minute, v1alpha1.PhaseSucceeded, start)
	primaryRuns(ctx, t, s, "v8")
}

// checkSteps asserts that the confirmed weights after since were want, in
// order, and that the share of version seen in each matched its weight.
func checkSteps(t *testing.T, s *suite, since time.Time, version string, want []int32) {
	t.Helper()
	spans := s.tl.ConfirmedSpans(since)
	var got []int32
	for _, sp := range spans {
		got = append(got, sp.Weight)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("confirmed steps = %v, want %v", got, want)
	}
	for _, sp := range spans {
		// Leave a moment for requests in flight under the previous weight.
		sh := s.traffic.Between(sp.From.Add(500*time.Millisecond), sp.To)
		pct := sh.Percent(version)
		t.Logf("step %3d%%: %s share %5.1f%% over %d requests (%.1fs)", sp.Weight, version, pct, sh.Requests, sp.To.Sub(sp.From).Seconds())
		if math.Abs(pct-float64(sp.Weight)) > tolerance {
			t.Errorf("at weight %d the load generator saw %.1f%% %s (%s)", sp.Weight, pct, version, sh)
		}
	}
}

// rolledBack asserts what a rollback leaves: weight 0, the canary scaled
// to zero, traffic on the primary's version.
func rolledBack(ctx context.Context, t *testing.T, s *suite, c *v1alpha1.Canary, primaryVersion string) {
	t.Helper()
	if c.Status.CanaryWeight != 0 || c.Status.FailedChecks < 2 {
		t.Errorf("after rollback: weight %d, failed checks %d; want 0 and >= 2", c.Status.CanaryWeight, c.Status.FailedChecks)
	}
	// The canary is scaled to zero once the sidecars acknowledged weight 0.
	if err := s.env.WaitScaledToZero(ctx, ns, app, 30*time.Second); err != nil {
		t.Errorf("canary Deployment after rollback: %v", err)
	}
	primaryRuns(ctx, t, s, primaryVersion)
	waitShare(ctx, t, s, primaryVersion, 100)
}

func primaryRuns(ctx context.Context, t *testing.T, s *suite, version string) {
	t.Helper()
	d := &appsv1.Deployment{}
	must(t, s.env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: app + "-primary"}, d))
	if img := d.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, ":"+version) {
		t.Errorf("primary runs %s, want version %s", img, version)
	}
}

// waitShare waits until, over the last 2 seconds, version got pct% of the
// answers (±tolerance) and nothing failed.
func waitShare(ctx context.Context, t *testing.T, s *suite, version string, pct float64) {
	t.Helper()
	sleep(ctx, time.Second) // the first window starts after the call
	testenv.Eventually(t, ctx, 29*time.Second, time.Second, fmt.Sprintf("%.0f%% of the traffic on %s", pct, version), func() (bool, error) {
		now := time.Now()
		sh := s.traffic.Between(now.Add(-2*time.Second), now)
		if sh.Requests > 0 && math.Abs(sh.Percent(version)-pct) <= tolerance {
			return true, nil
		}
		return false, fmt.Errorf("last 2s: %s", sh)
	})
}

func waitPhase(ctx context.Context, t *testing.T, s *suite, timeout time.Duration, phase v1alpha1.CanaryPhase, since time.Time) *v1alpha1.Canary {
	t.Helper()
	// The phase must be reached by this rollout, not be left over from the
	// last: wait for a point after since with a new revision first.
	c, err := s.env.WaitCanary(ctx, ns, app, timeout, func(c *v1alpha1.Canary) bool {
		return c.Status.Phase == phase && c.Status.LastTransitionTime != nil && c.Status.LastTransitionTime.After(since)
	})
	if err != nil {
		t.Fatalf("canary never reached %s: %v", phase, err)
	}
	return c
}

func waitWeight(ctx context.Context, t *testing.T, s *suite, w int32) {
	t.Helper()
	if _, err := s.env.WaitCanary(ctx, ns, app, 2*time.Minute, func(c *v1alpha1.Canary) bool {
		return c.Status.Phase == v1alpha1.PhaseProgressing && c.Status.CanaryWeight == w && c.Status.Traffic != nil && c.Status.Traffic.Confirmed
	}); err != nil {
		t.Fatalf("canary never reached weight %d: %v", w, err)
	}
}

// wantMessages waits for Slack messages about subject whose texts contain
// each of wants, in order, and returns them.
func wantMessages(ctx context.Context, t *testing.T, s *suite, subject string, wants []string) []slackrecorder.Message {
	t.Helper()
	var msgs []slackrecorder.Message
	testenv.Eventually(t, ctx, 30*time.Second, 500*time.Millisecond, fmt.Sprintf("Slack messages about %s containing, in order, %q", subject, wants), func() (bool, error) {
		msgs = s.slack.Messages()
		if matchInOrder(msgs, subject, wants) {
			return true, nil
		}
		texts := make([]string, 0, len(msgs))
		for _, m := range msgs {
			texts = append(texts, m.Text)
		}
		raw, _ := json.MarshalIndent(texts, "", "  ")
		return false, fmt.Errorf("received %s", raw)
	})
	return msgs
}

func matchInOrder(msgs []slackrecorder.Message, subject string, wants []string) bool {
	i := 0
	for _, m := range msgs {
		text := strings.ToLower(m.Text)
		if i < len(wants) && strings.Contains(text, strings.ToLower(subject)) && strings.Contains(text, wants[i]) {
			i++
		}
	}
	return i == len(wants)
}

func phaseIs(phases ...v1alpha1.CanaryPhase) func(*v1alpha1.Canary) bool {
	return func(c *v1alpha1.Canary) bool {
		for _, p := range phases {
			if c.Status.Phase == p {
				return true
			}
		}
		return false
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
