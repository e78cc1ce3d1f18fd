package canary

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/mesh/traffic"
	"github.com/weir-dev/weir/metrics"
	"github.com/weir-dev/weir/metrics/promtest"
)

func cacheFor(ns string) cache.Options {
	return cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}}
}

// podinfo is the target Deployment of the tests: an app container with a
// weir-proxy sidecar and Prometheus annotations, as the e2e suite runs it.
func podinfo(ns, image string) *appsv1.Deployment {
	labels := map[string]string{"app": "podinfo"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: ns, Labels: map[string]string{"app": "podinfo", "team": "web"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"app": "podinfo", "version": "any"},
					Annotations: map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "15090"},
				},
				Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: "app", Image: image, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9898}}},
					{Name: "weir-proxy", Image: "weir-proxy", Args: []string{"--xds-address=weir-controller.weir-system:18000"}},
				}},
			},
		},
	}
}

// podinfoCanary is the Canary of the tests: 1s steps, two failed checks
// roll back.
func podinfoCanary(ns string, opts ...canaryOpt) *v1alpha1.Canary {
	c := &v1alpha1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: ns},
		Spec: v1alpha1.CanarySpec{
			TargetRef:               v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			ProgressDeadlineSeconds: ptr.To[int32](60),
			Service:                 v1alpha1.CanaryService{Port: 80, TargetPort: ptr.To(intstr.FromString("http"))},
			Analysis: v1alpha1.CanaryAnalysis{
				Interval:  &metav1.Duration{Duration: time.Second},
				Threshold: 2,
				Metrics: []v1alpha1.CanaryMetric{
					{Name: v1alpha1.MetricRequestSuccessRate, ThresholdRange: v1alpha1.ThresholdRange{Min: ptr.To(99.0)}},
					{Name: v1alpha1.MetricRequestDuration, ThresholdRange: v1alpha1.ThresholdRange{Max: ptr.To(500.0)}},
				},
			},
		},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// prometheus returns a stand-in Prometheus and a checker that queries it.
func promStandIn(t *testing.T, successRate, p99 float64) (*promtest.Server, Checker) {
	t.Helper()
	prom := promtest.New(t)
	prom.Set("envoy_cluster_upstream_rq_xx", promtest.Value(successRate))
	prom.Set("envoy_cluster_upstream_rq_time_bucket", promtest.Value(p99))
	checker, err := metrics.NewPrometheus(metrics.Options{Address: prom.URL(), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return prom, checker
}

// fixture is one test's namespace with its target, Canary and controller.
type fixture struct {
	t       *testing.T
	c       client.Client
	ns      string
	deploys *deploymentController
	prom    *promtest.Server
	checker Checker

	mu      sync.Mutex
	weights []int32 // distinct canary weights seen in the status, in order
	phases  []v1alpha1.CanaryPhase
}

func newFixture(t *testing.T, successRate float64) *fixture {
	c := newClient(t)
	ns := newNamespace(t, c)
	f := &fixture{t: t, c: c, ns: ns, deploys: rolloutDeployments(t, c, ns)}
	f.prom, f.checker = promStandIn(t, successRate, 120)
	return f
}

func (f *fixture) key(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: f.ns, Name: name}
}

func (f *fixture) canary() *v1alpha1.Canary {
	f.t.Helper()
	c := &v1alpha1.Canary{}
	if err := f.c.Get(context.Background(), f.key("podinfo"), c); err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) deployment(name string) *appsv1.Deployment {
	f.t.Helper()
	d := &appsv1.Deployment{}
	if err := f.c.Get(context.Background(), f.key(name), d); err != nil {
		f.t.Fatal(err)
	}
	return d
}

// watch records the weights and phases the Canary goes through until the
// test ends.
func (f *fixture) watch() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	f.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			c := &v1alpha1.Canary{}
			if err := f.c.Get(ctx, f.key("podinfo"), c); err == nil {
				f.mu.Lock()
				if n := len(f.weights); n == 0 || f.weights[n-1] != c.Status.CanaryWeight {
					f.weights = append(f.weights, c.Status.CanaryWeight)
				}
				if n := len(f.phases); c.Status.Phase != "" && (n == 0 || f.phases[n-1] != c.Status.Phase) {
					f.phases = append(f.phases, c.Status.Phase)
				}
				f.mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
}

func (f *fixture) seen() ([]int32, []v1alpha1.CanaryPhase) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.weights), slices.Clone(f.phases)
}

func (f *fixture) resetSeen() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.weights, f.phases = nil, nil
}

// waitPhase waits until the Canary is in phase and settled there.
func (f *fixture) waitPhase(phase v1alpha1.CanaryPhase, timeout time.Duration) *v1alpha1.Canary {
	f.t.Helper()
	var c *v1alpha1.Canary
	eventually(f.t, timeout, "phase "+string(phase), func() bool {
		c = f.canary()
		return c.Status.Phase == phase
	})
	return c
}

// setImage changes the target's image, as a user's kubectl apply would.
func (f *fixture) setImage(image string) {
	f.t.Helper()
	d := f.deployment("podinfo")
	patch := client.MergeFrom(d.DeepCopy())
	d.Spec.Template.Spec.Containers[0].Image = image
	if err := f.c.Patch(context.Background(), d, patch); err != nil {
		f.t.Fatal(err)
	}
}

// events returns the Events recorded on the Canary, oldest first.
func (f *fixture) events() []corev1.Event {
	f.t.Helper()
	var list corev1.EventList
	if err := f.c.List(context.Background(), &list, client.InNamespace(f.ns)); err != nil {
		f.t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == v1alpha1.CanaryKind && e.InvolvedObject.Name == "podinfo" {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b corev1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
	return out
}

func (f *fixture) eventsWith(reason string) []corev1.Event {
	var out []corev1.Event
	for _, e := range f.events() {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// initialise creates the target and the Canary, and waits until the
// Canary is initialised.
func (f *fixture) initialise(opts ...canaryOpt) {
	f.t.Helper()
	ctx := context.Background()
	if err := f.c.Create(ctx, podinfo(f.ns, "podinfo:1")); err != nil {
		f.t.Fatal(err)
	}
	if err := f.c.Create(ctx, podinfoCanary(f.ns, opts...)); err != nil {
		f.t.Fatal(err)
	}
	f.watch()
	f.waitPhase(v1alpha1.PhaseInitialized, 30*time.Second)
	eventually(f.t, 10*time.Second, "the target scaled to zero", func() bool {
		return ptr.Deref(f.deployment("podinfo").Spec.Replicas, 1) == 0
	})
}

// relabelled returns t with the primary's labels, as weir copies it.
func relabelled(t corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	t = *t.DeepCopy()
	t.Labels["app"] = "podinfo-primary"
	return t
}

func TestControllerPromotion(t *testing.T) {
	f := newFixture(t, 99.9)
	startController(t, f.ns, &traffic.Immediate{}, f.checker)
	f.initialise()
	ctx := context.Background()

	t.Run("initialised", func(t *testing.T) {
		c, target, primary := f.canary(), f.deployment("podinfo"), f.deployment("podinfo-primary")
		if !metav1.IsControlledBy(primary, c) {
			t.Errorf("primary is not owned by the Canary: %v", primary.OwnerReferences)
		}
		if diff := cmp.Diff(map[string]string{"app": "podinfo-primary"}, primary.Spec.Selector.MatchLabels); diff != "" {
			t.Errorf("primary selector (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(relabelled(target.Spec.Template), primary.Spec.Template); diff != "" {
			t.Errorf("primary template differs from the target's beyond its labels (-want +got):\n%s", diff)
		}
		if got := ptr.Deref(primary.Spec.Replicas, 0); got != 2 {
			t.Errorf("primary replicas = %d, want 2", got)
		}
		for name, sel := range map[string]string{"podinfo": "podinfo-primary", "podinfo-primary": "podinfo-primary", "podinfo-canary": "podinfo"} {
			svc := &corev1.Service{}
			if err := f.c.Get(ctx, f.key(name), svc); err != nil {
				t.Fatalf("Service %s: %v", name, err)
			}
			if !metav1.IsControlledBy(svc, c) {
				t.Errorf("Service %s is not owned by the Canary", name)
			}
			if diff := cmp.Diff(map[string]string{"app": sel}, svc.Spec.Selector); diff != "" {
				t.Errorf("Service %s selector (-want +got):\n%s", name, diff)
			}
			if p := svc.Spec.Ports; len(p) != 1 || p[0].Port != 80 || p[0].TargetPort != intstr.FromString("http") || p[0].Name != "http" {
				t.Errorf("Service %s ports = %+v", name, p)
			}
		}
		if r := apimeta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionTrue {
			t.Errorf("Ready = %+v", r)
		}
		if c.Status.ObservedGeneration != c.Generation || c.Status.LastPromotedSpec != TemplateHash(&target.Spec.Template) {
			t.Errorf("status = %+v", c.Status)
		}
		if !slices.Contains(c.Finalizers, v1alpha1.Finalizer) {
			t.Errorf("finalizers = %v", c.Finalizers)
		}
	})

	f.resetSeen()
	f.setImage("podinfo:2")
	c := f.waitPhase(v1alpha1.PhaseSucceeded, 60*time.Second)
	weights, phases := f.seen()
	t.Logf("weights %v, phases %v", weights, phases)
	logKubectl(t, f.ns)

	if diff := cmp.Diff([]int32{0, 10, 50, 100, 0}, weights); diff != "" {
		t.Errorf("weights seen (-want +got):\n%s", diff)
	}
	// Waiting and Promoting pass too fast to be seen by polling here; the
	// Events below show every transition.
	if !slices.Contains(phases, v1alpha1.PhaseProgressing) {
		t.Errorf("phase Progressing not seen in %v", phases)
	}
	target, primary := f.deployment("podinfo"), f.deployment("podinfo-primary")
	if diff := cmp.Diff(relabelled(target.Spec.Template), primary.Spec.Template); diff != "" {
		t.Errorf("primary template is not the new one (-want +got):\n%s", diff)
	}
	if primary.Spec.Template.Spec.Containers[0].Image != "podinfo:2" {
		t.Errorf("primary image = %s", primary.Spec.Template.Spec.Containers[0].Image)
	}
	eventually(t, 10*time.Second, "the canary scaled to zero", func() bool {
		return ptr.Deref(f.deployment("podinfo").Spec.Replicas, 1) == 0
	})
	rev := TemplateHash(&target.Spec.Template)
	if c.Status.LastPromotedSpec != rev || c.Status.LastAppliedSpec != rev || c.Status.CanaryWeight != 0 || c.Status.FailedChecks != 0 {
		t.Errorf("status after promotion = %+v", c.Status)
	}
	if p := apimeta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionPromoted); p == nil || p.Status != metav1.ConditionTrue || p.Reason != v1alpha1.ReasonSucceeded {
		t.Errorf("Promoted = %+v", p)
	}
	if n := f.prom.Count("envoy_cluster_upstream_rq_xx"); n < 3 {
		t.Errorf("%d success-rate queries, want one per step at least", n)
	}

	var reasons []string
	for _, e := range f.events() {
		reasons = append(reasons, e.Reason)
		if e.Annotations[v1alpha1.AnnotationTransition] == "" {
			t.Errorf("event %s %q has no transition annotation", e.Reason, e.Message)
		}
	}
	want := []string{v1alpha1.EventInitialized, v1alpha1.EventNewRevision, v1alpha1.EventWeightAdvanced, v1alpha1.EventWeightAdvanced,
		v1alpha1.EventWeightAdvanced, v1alpha1.EventPromoting, v1alpha1.EventPromoted}
	if diff := cmp.Diff(want, reasons); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if nr := f.eventsWith(v1alpha1.EventNewRevision); len(nr) == 1 {
		a := nr[0].Annotations
		if a[v1alpha1.AnnotationImage] != "podinfo:2,weir-proxy" || a[v1alpha1.AnnotationPrimaryImage] != "podinfo:1,weir-proxy" || a[v1alpha1.AnnotationRevision] != rev {
			t.Errorf("NewRevision annotations = %v", a)
		}
	}

	if got := testutil.ToFloat64(resultsCounter.WithLabelValues(f.ns, "podinfo", ResultSucceeded)); got != 1 {
		t.Errorf("weir_canary_results_total{result=succeeded} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(statusGauge.WithLabelValues(f.ns, "podinfo")); got != 1 {
		t.Errorf("weir_canary_status = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(durationHistogram, "weir_canary_duration_seconds"); n < 1 {
		t.Errorf("weir_canary_duration_seconds has no series")
	}

}

func TestControllerRollback(t *testing.T) {
	f := newFixture(t, 99.9)
	startController(t, f.ns, &traffic.Immediate{}, f.checker)
	f.initialise()

	// The new version fails half its requests.
	f.prom.Set("envoy_cluster_upstream_rq_xx", promtest.Value(50))
	f.resetSeen()
	f.setImage("podinfo:bad")
	c := f.waitPhase(v1alpha1.PhaseFailed, 60*time.Second)
	eventually(t, 10*time.Second, "the canary scaled to zero", func() bool {
		return ptr.Deref(f.deployment("podinfo").Spec.Replicas, 1) == 0
	})
	weights, _ := f.seen()
	logKubectl(t, f.ns)
	if diff := cmp.Diff([]int32{0, 10, 0}, weights); diff != "" {
		t.Errorf("weights seen (-want +got):\n%s", diff)
	}
	c = f.canary()
	if c.Status.CanaryWeight != 0 || c.Status.FailedChecks != 2 {
		t.Errorf("weight %d, failed checks %d; want 0 and 2", c.Status.CanaryWeight, c.Status.FailedChecks)
	}
	if img := f.deployment("podinfo-primary").Spec.Template.Spec.Containers[0].Image; img != "podinfo:1" {
		t.Errorf("primary image = %s, want podinfo:1", img)
	}
	if r := apimeta.FindStatusCondition(c.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Reason != v1alpha1.ReasonRolledBack {
		t.Errorf("Ready = %+v", r)
	}
	failed := f.eventsWith(v1alpha1.EventCheckFailed)
	if len(failed) != 2 {
		t.Fatalf("%d CheckFailed events, want 2", len(failed))
	}
	for _, e := range failed {
		a := e.Annotations
		if e.Type != corev1.EventTypeWarning || a[v1alpha1.AnnotationMetric] != v1alpha1.MetricRequestSuccessRate ||
			a[v1alpha1.AnnotationValue] == "" || a[v1alpha1.AnnotationBound] == "" || a[v1alpha1.AnnotationCheckReason] != metrics.ReasonOutOfRange {
			t.Errorf("CheckFailed %q annotations = %v", e.Message, a)
		}
	}
	rb := f.eventsWith(v1alpha1.EventRolledBack)
	if len(rb) != 1 || rb[0].Annotations[v1alpha1.AnnotationRollbackCause] != v1alpha1.RollbackCauseThreshold ||
		rb[0].Annotations[v1alpha1.AnnotationMetric] != v1alpha1.MetricRequestSuccessRate {
		t.Errorf("RolledBack events = %+v", rb)
	} else {
		t.Logf("RolledBack: %s %v", rb[0].Message, rb[0].Annotations)
	}
	if got := testutil.ToFloat64(resultsCounter.WithLabelValues(f.ns, "podinfo", ResultFailed)); got != 1 {
		t.Errorf("weir_canary_results_total{result=failed} = %v, want 1", got)
	}

	t.Run("a revert to the promoted spec starts nothing", func(t *testing.T) {
		n := len(f.events())
		f.setImage("podinfo:1")
		time.Sleep(2 * time.Second)
		c := f.canary()
		if c.Status.Phase != v1alpha1.PhaseFailed || len(f.events()) != n {
			t.Errorf("the revert started something: phase %s, %d new events", c.Status.Phase, len(f.events())-n)
		}
		if rev := TemplateHash(&f.deployment("podinfo").Spec.Template); c.Status.LastAppliedSpec != rev || c.Status.LastPromotedSpec != rev {
			t.Errorf("lastAppliedSpec %s, lastPromotedSpec %s, want both %s", c.Status.LastAppliedSpec, c.Status.LastPromotedSpec, rev)
		}
		if n := ptr.Deref(f.deployment("podinfo").Spec.Replicas, 1); n != 0 {
			t.Errorf("target scaled to %d by a revert", n)
		}
	})

	t.Run("Prometheus unreachable fails the checks", func(t *testing.T) {
		f.prom.Close()
		f.setImage("podinfo:3")
		f.waitPhase(v1alpha1.PhaseProgressing, 30*time.Second)
		c := f.waitPhase(v1alpha1.PhaseFailed, 60*time.Second)
		var reasons []string
		for _, v := range c.Status.LastChecks {
			reasons = append(reasons, v.Reason)
		}
		if diff := cmp.Diff([]string{metrics.ReasonQueryError, metrics.ReasonQueryError}, reasons); diff != "" {
			t.Errorf("last checks (-want +got):\n%s", diff)
		}
	})

	// Two analyses went 0 → 10 with the same message: two Events, each
	// with its own transition, never one merged Event.
	keys := map[string]bool{}
	for _, e := range f.eventsWith(v1alpha1.EventWeightAdvanced) {
		if e.Count != 1 || keys[e.Annotations[v1alpha1.AnnotationTransition]] {
			t.Errorf("WeightAdvanced %q: count %d, transition %s seen before: %v", e.Message, e.Count, e.Annotations[v1alpha1.AnnotationTransition], keys)
		}
		keys[e.Annotations[v1alpha1.AnnotationTransition]] = true
	}
	if len(keys) != 2 {
		t.Errorf("%d WeightAdvanced transitions, want 2 (one per analysis)", len(keys))
	}
}

func TestControllerRestartMidRollout(t *testing.T) {
	f := newFixture(t, 99.9)
	// Long enough steps to stop the controller in one.
	slow := func(c *v1alpha1.Canary) { c.Spec.Analysis.Interval = &metav1.Duration{Duration: 3 * time.Second} }
	first := startController(t, f.ns, &traffic.Immediate{}, f.checker)
	f.initialise(slow)

	f.resetSeen()
	f.setImage("podinfo:2")
	eventually(t, 30*time.Second, "weight 50 confirmed", func() bool {
		st := f.canary().Status
		return st.CanaryWeight == 50 && st.StepStartTime != nil
	})
	logKubectl(t, f.ns)
	first.stop()
	stopped := f.canary()
	t.Logf("stopped at weight %d, iterations %d, step started %v", stopped.Status.CanaryWeight, stopped.Status.Iterations, stopped.Status.StepStartTime)
	time.Sleep(time.Second)
	if c := f.canary(); c.Status.CanaryWeight != 50 {
		t.Fatalf("weight moved while the controller was stopped: %d", c.Status.CanaryWeight)
	}

	f.resetSeen()
	startController(t, f.ns, &traffic.Immediate{}, f.checker)
	// The restarted controller keeps the step's clock.
	time.Sleep(500 * time.Millisecond)
	if c := f.canary(); c.Status.CanaryWeight == 50 && !c.Status.StepStartTime.Equal(stopped.Status.StepStartTime) {
		t.Errorf("step clock restarted: %v, was %v", c.Status.StepStartTime, stopped.Status.StepStartTime)
	}
	f.waitPhase(v1alpha1.PhaseSucceeded, 60*time.Second)
	weights, _ := f.seen()
	if diff := cmp.Diff([]int32{50, 100, 0}, weights); diff != "" {
		t.Errorf("weights after the restart (-want +got):\n%s", diff)
	}
	if img := f.deployment("podinfo-primary").Spec.Template.Spec.Containers[0].Image; img != "podinfo:2" {
		t.Errorf("primary image = %s, want podinfo:2", img)
	}
	if n := len(f.eventsWith(v1alpha1.EventNewRevision)); n != 1 {
		t.Errorf("%d NewRevision events, want 1: the restart must not start over", n)
	}
}

func TestControllerProgressDeadline(t *testing.T) {
	f := newFixture(t, 99.9)
	startController(t, f.ns, &traffic.Immediate{}, f.checker)
	f.initialise(func(c *v1alpha1.Canary) { c.Spec.ProgressDeadlineSeconds = ptr.To[int32](2) })

	f.deploys.hold("podinfo", true) // the new version never becomes ready
	f.setImage("podinfo:crashloop")
	f.waitPhase(v1alpha1.PhaseFailed, 30*time.Second)
	// Events are recorded just after the status write that makes the phase
	// Failed, so they may trail it by a moment.
	var pd, rb []corev1.Event
	eventually(t, 10*time.Second, "the deadline and rollback events", func() bool {
		pd = f.eventsWith(v1alpha1.EventProgressDeadlineExceeded)
		rb = f.eventsWith(v1alpha1.EventRolledBack)
		return len(pd) > 0 && len(rb) > 0
	})
	if len(pd) != 1 || len(rb) != 1 || rb[0].Annotations[v1alpha1.AnnotationRollbackCause] != v1alpha1.RollbackCauseProgressDeadline {
		t.Fatalf("ProgressDeadlineExceeded %+v, RolledBack %+v", pd, rb)
	}
	t.Logf("%s: %s", pd[0].Reason, pd[0].Message)
	eventually(t, 10*time.Second, "the canary scaled to zero", func() bool {
		return ptr.Deref(f.deployment("podinfo").Spec.Replicas, 1) == 0
	})
}

func TestControllerDeletionHandsTargetBack(t *testing.T) {
	f := newFixture(t, 99.9)
	startController(t, f.ns, &traffic.Immediate{}, f.checker)
	f.initialise()
	ctx := context.Background()
	if err := f.c.Delete(ctx, f.canary()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the Canary gone", func() bool {
		return apierrors.IsNotFound(f.c.Get(ctx, f.key("podinfo"), &v1alpha1.Canary{}))
	})
	if n := ptr.Deref(f.deployment("podinfo").Spec.Replicas, 0); n != 2 {
		t.Errorf("target replicas after the Canary was deleted = %d, want the primary's 2", n)
	}
}

func TestControllerAdoptsExistingService(t *testing.T) {
	f := newFixture(t, 99.9)
	ctx := context.Background()
	// The Service clients called before weir came.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: f.ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "podinfo"},
			Ports: []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromInt32(9898)}}},
	}
	if err := f.c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	startController(t, f.ns, &traffic.Immediate{}, f.checker)
	f.initialise()
	if err := f.c.Get(ctx, f.key("podinfo"), svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Selector["app"] != "podinfo-primary" || svc.Annotations[AdoptedAnnotation] != "podinfo" || len(svc.OwnerReferences) != 0 {
		t.Errorf("adopted Service = selector %v, annotations %v, owners %v", svc.Spec.Selector, svc.Annotations, svc.OwnerReferences)
	}
	if err := f.c.Delete(ctx, f.canary()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the Service handed back", func() bool {
		if err := f.c.Get(ctx, f.key("podinfo"), svc); err != nil {
			t.Fatal(err)
		}
		return svc.Spec.Selector["app"] == "podinfo"
	})
}

func TestControllerInvalidTarget(t *testing.T) {
	f := newFixture(t, 99.9)
	ctx := context.Background()
	startController(t, f.ns, &traffic.Immediate{}, f.checker)
	d := podinfo(f.ns, "podinfo:1")
	d.Spec.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"podinfo"}}}}
	if err := f.c.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Create(ctx, podinfoCanary(f.ns)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "Ready=False InvalidTarget", func() bool {
		r := apimeta.FindStatusCondition(f.canary().Status.Conditions, v1alpha1.ConditionReady)
		return r != nil && r.Reason == v1alpha1.ReasonInvalidTarget && strings.Contains(r.Message, "matchExpressions")
	})
}

// logKubectl logs what `kubectl get canary` shows.
func logKubectl(t *testing.T, ns string) {
	t.Helper()
	for _, args := range [][]string{{"get", "canary", "-n", ns}, {"get", "canary", "-n", ns, "-o", "wide"}} {
		out, err := kubectl(t, args...)
		if err != nil {
			t.Errorf("kubectl %v: %v\n%s", args, err, out)
			continue
		}
		t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
	}
}
