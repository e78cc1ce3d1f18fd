package canary

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/mesh/traffic"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Fixtures: builders with functional options.

type canaryOpt func(*v1alpha1.Canary)

func canary(opts ...canaryOpt) *v1alpha1.Canary {
	c := &v1alpha1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "test", Generation: 3},
		Spec: v1alpha1.CanarySpec{
			TargetRef:               v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			ProgressDeadlineSeconds: ptr.To[int32](600),
			Service:                 v1alpha1.CanaryService{Port: 9898},
			Analysis: v1alpha1.CanaryAnalysis{
				Interval:  &metav1.Duration{Duration: time.Minute},
				Threshold: 5,
				Metrics: []v1alpha1.CanaryMetric{
					{Name: v1alpha1.MetricRequestSuccessRate, ThresholdRange: v1alpha1.ThresholdRange{Min: ptr.To(99.0)}},
				},
			},
		},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func withPhase(p v1alpha1.CanaryPhase) canaryOpt {
	return func(c *v1alpha1.Canary) { c.Status.Phase = p }
}
func withWeight(w int32) canaryOpt {
	return func(c *v1alpha1.Canary) {
		c.Status.CanaryWeight = w
		c.Status.Traffic = &v1alpha1.TrafficStatus{Weight: w, Confirmed: true}
	}
}
func withFailedChecks(n int32) canaryOpt {
	return func(c *v1alpha1.Canary) { c.Status.FailedChecks = n }
}
func withIterations(n int32) canaryOpt { return func(c *v1alpha1.Canary) { c.Status.Iterations = n } }
func withThreshold(n int32) canaryOpt {
	return func(c *v1alpha1.Canary) { c.Spec.Analysis.Threshold = n }
}
func withRevisions(applied, promoted string) canaryOpt {
	return func(c *v1alpha1.Canary) { c.Status.LastAppliedSpec, c.Status.LastPromotedSpec = applied, promoted }
}
func withStepStart(t time.Time) canaryOpt {
	return func(c *v1alpha1.Canary) { c.Status.StepStartTime = ptr.To(metav1.NewTime(t)) }
}
func withLastCheck(t time.Time) canaryOpt {
	return func(c *v1alpha1.Canary) { c.Status.LastCheckTime = ptr.To(metav1.NewTime(t)) }
}
func withNotReadySince(t time.Time) canaryOpt {
	return func(c *v1alpha1.Canary) { c.Status.NotReadySince = ptr.To(metav1.NewTime(t)) }
}
func withAnalysisStart(t time.Time) canaryOpt {
	return func(c *v1alpha1.Canary) { c.Status.AnalysisStartTime = ptr.To(metav1.NewTime(t)) }
}
func withStepWeights(ws ...int32) canaryOpt {
	return func(c *v1alpha1.Canary) { c.Spec.Analysis.StepWeights = ws }
}
func withStepWeight(step, maxWeight int32) canaryOpt {
	return func(c *v1alpha1.Canary) {
		c.Spec.Analysis.StepWeight, c.Spec.Analysis.MaxWeight = ptr.To(step), ptr.To(maxWeight)
	}
}
func withSkipAnalysis() canaryOpt { return func(c *v1alpha1.Canary) { c.Spec.SkipAnalysis = true } }
func withSuspend() canaryOpt      { return func(c *v1alpha1.Canary) { c.Spec.Suspend = true } }
func withTrafficTimedOut(w int32) canaryOpt {
	return func(c *v1alpha1.Canary) { c.Status.Traffic = &v1alpha1.TrafficStatus{Weight: w, TimedOut: true} }
}
func withReady(reason string) canaryOpt {
	return func(c *v1alpha1.Canary) {
		apimeta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason})
	}
}

// progressing is a Canary analysing revision v2 at weight w, its step
// confirmed at stepStart, over a primary at v1.
func progressing(w int32, stepStart time.Time, opts ...canaryOpt) *v1alpha1.Canary {
	base := []canaryOpt{withPhase(v1alpha1.PhaseProgressing), withWeight(w), withRevisions("v2", "v1"),
		withStepStart(stepStart), withAnalysisStart(t0.Add(-time.Hour))}
	return canary(append(base, opts...)...)
}

func target(rev string, opts ...func(*Workload)) Workload {
	w := Workload{Exists: true, Revision: rev, Images: "podinfo:" + rev, Replicas: 2, Ready: true}
	for _, o := range opts {
		o(&w)
	}
	return w
}

func notReady(msg string) func(*Workload) {
	return func(w *Workload) { w.Ready, w.Message = false, msg }
}
func replicas(n int32) func(*Workload) { return func(w *Workload) { w.Replicas = n } }

var (
	confirmed   = traffic.Confirmation{Confirmed: true, Since: t0.Add(-10 * time.Minute), Acked: 3, Total: 3}
	unconfirmed = traffic.Confirmation{Acked: 1, Total: 3, Message: "2 proxies have not acknowledged"}
	timedOut    = traffic.Confirmation{TimedOut: true, Acked: 1, Total: 3, Message: "2 proxies have not acknowledged"}
)

func pass(metric string) v1alpha1.MetricVerdict {
	return v1alpha1.MetricVerdict{Metric: metric, Value: "99.9", Bound: ">= 99", Passed: true}
}

func outOfRange(metric, value, bound string) v1alpha1.MetricVerdict {
	return v1alpha1.MetricVerdict{Metric: metric, Value: value, Bound: bound, Reason: "OutOfRange"}
}

var (
	noData     = v1alpha1.MetricVerdict{Metric: v1alpha1.MetricRequestSuccessRate, Bound: ">= 99", Reason: "NoData", Message: "no values found"}
	queryError = v1alpha1.MetricVerdict{Metric: v1alpha1.MetricRequestSuccessRate, Bound: ">= 99", Reason: "QueryError",
		Message: `Post "http://prometheus:9090/api/v1/query": dial tcp: connection refused`}
)

func setWeight(w int32) Action { return Action{Kind: ActionSetWeight, Weight: w} }
func scaleTo(n int32) Action   { return Action{Kind: ActionScaleTarget, Replicas: n} }
func promoteAction() Action    { return Action{Kind: ActionPromote} }
func checked(vs ...v1alpha1.MetricVerdict) []v1alpha1.MetricVerdict {
	if vs == nil {
		return []v1alpha1.MetricVerdict{}
	}
	return vs
}

type want struct {
	phase      v1alpha1.CanaryPhase
	weight     int32
	failed     int32
	iterations int32
	actions    []Action
	events     []string
	needChecks bool
	requeue    time.Duration // checked when not zero
	noRequeue  bool
	result     string
	ready      string // reason of the Ready condition, checked when set
	check      func(t *testing.T, out Output)
}

func TestDecide(t *testing.T) {
	const minute = time.Minute
	tests := []struct {
		name     string
		canary   *v1alpha1.Canary
		target   Workload
		primary  Workload
		traffic  traffic.Confirmation
		verdicts []v1alpha1.MetricVerdict // nil: the checks were not run
		want     want
	}{
		// Initialisation.
		{
			name:    "new Canary waits for its primary to be created",
			canary:  canary(),
			target:  target("v1"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseInitializing, requeue: time.Second, ready: v1alpha1.ReasonInitializing},
		},
		{
			name:    "primary not ready yet: keep waiting, the deadline clock starts",
			canary:  canary(withPhase(v1alpha1.PhaseInitializing)),
			target:  target("v1"),
			primary: target("v1", notReady("0 of 2 updated replicas available")),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseInitializing, requeue: readinessPoll, ready: v1alpha1.ReasonInitializing,
				check: func(t *testing.T, out Output) {
					if out.Status.NotReadySince == nil || !out.Status.NotReadySince.Time.Equal(t0) {
						t.Errorf("notReadySince = %v, want %v", out.Status.NotReadySince, t0)
					}
				}},
		},
		{
			name:    "primary ready: initialised, it serves all traffic at its revision",
			canary:  canary(withPhase(v1alpha1.PhaseInitializing)),
			target:  target("v1"),
			primary: target("v1"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseInitialized, events: []string{v1alpha1.EventInitialized}, ready: v1alpha1.ReasonInitialized,
				check: func(t *testing.T, out Output) {
					if out.Status.LastAppliedSpec != "v1" || out.Status.LastPromotedSpec != "v1" {
						t.Errorf("revisions = %q/%q, want v1/v1", out.Status.LastAppliedSpec, out.Status.LastPromotedSpec)
					}
				}},
		},
		{
			name:    "primary not ready past the deadline while initialising: warn once, keep waiting",
			canary:  canary(withPhase(v1alpha1.PhaseInitializing), withNotReadySince(t0.Add(-11*minute))),
			target:  target("v1"),
			primary: target("v1", notReady("ImagePullBackOff")),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseInitializing, events: []string{v1alpha1.EventProgressDeadlineExceeded},
				ready: v1alpha1.ReasonProgressDeadlineExceeded},
		},
		{
			name: "primary still not ready past the deadline: no second warning",
			canary: canary(withPhase(v1alpha1.PhaseInitializing), withNotReadySince(t0.Add(-20*minute)),
				withReady(v1alpha1.ReasonProgressDeadlineExceeded)),
			target:  target("v1"),
			primary: target("v1", notReady("ImagePullBackOff")),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseInitializing, ready: v1alpha1.ReasonProgressDeadlineExceeded},
		},

		// Between rollouts.
		{
			name:    "initialised: the target is scaled to zero once weight 0 is confirmed",
			canary:  canary(withPhase(v1alpha1.PhaseInitialized), withRevisions("v1", "v1")),
			target:  target("v1"),
			primary: target("v1"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseInitialized, actions: []Action{scaleTo(0)}, noRequeue: true, ready: v1alpha1.ReasonInitialized},
		},
		{
			name:    "initialised: the target keeps its pods while weight 0 is not confirmed",
			canary:  canary(withPhase(v1alpha1.PhaseInitialized), withRevisions("v1", "v1")),
			target:  target("v1"),
			primary: target("v1"),
			traffic: unconfirmed,
			want:    want{phase: v1alpha1.PhaseInitialized, requeue: time.Second},
		},
		{
			name:    "initialised and settled: nothing to do",
			canary:  canary(withPhase(v1alpha1.PhaseSucceeded), withRevisions("v1", "v1")),
			target:  target("v1", replicas(0)),
			primary: target("v1"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseSucceeded, noRequeue: true, ready: v1alpha1.ReasonSucceeded},
		},
		{
			name:    "new revision: analysis starts at weight 0, the canary is scaled up",
			canary:  canary(withPhase(v1alpha1.PhaseSucceeded), withRevisions("v1", "v1"), withFailedChecks(2), withIterations(7)),
			target:  target("v2", replicas(0)),
			primary: target("v1", replicas(3)),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseWaiting, actions: []Action{scaleTo(3)}, events: []string{v1alpha1.EventNewRevision},
				ready: v1alpha1.ReasonProgressing,
				check: func(t *testing.T, out Output) {
					st := out.Status
					if st.LastAppliedSpec != "v2" || st.LastPromotedSpec != "v1" {
						t.Errorf("revisions = %q/%q, want v2/v1", st.LastAppliedSpec, st.LastPromotedSpec)
					}
					if !st.AnalysisStartTime.Time.Equal(t0) || !st.NotReadySince.Time.Equal(t0) {
						t.Errorf("analysisStartTime %v, notReadySince %v, want both %v", st.AnalysisStartTime, st.NotReadySince, t0)
					}
					e := out.Events[0]
					if e.Annotations[v1alpha1.AnnotationImage] != "podinfo:v2" || e.Annotations[v1alpha1.AnnotationPrimaryImage] != "podinfo:v1" ||
						e.Annotations[v1alpha1.AnnotationRevision] != "v2" {
						t.Errorf("NewRevision annotations = %v", e.Annotations)
					}
				}},
		},
		{
			name:    "revert to the promoted spec after a rollback starts nothing",
			canary:  canary(withPhase(v1alpha1.PhaseFailed), withRevisions("v2", "v1"), withFailedChecks(5)),
			target:  target("v1", replicas(0)),
			primary: target("v1"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseFailed, failed: 5, noRequeue: true,
				check: func(t *testing.T, out Output) {
					if out.Status.LastAppliedSpec != "v1" {
						t.Errorf("lastAppliedSpec = %q, want v1", out.Status.LastAppliedSpec)
					}
				}},
		},
		{
			name:    "a failed revision stays failed until the target changes",
			canary:  canary(withPhase(v1alpha1.PhaseFailed), withRevisions("v2", "v1"), withFailedChecks(5)),
			target:  target("v2", replicas(0)),
			primary: target("v1"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseFailed, failed: 5, noRequeue: true},
		},
		{
			name:    "failed: the canary is scaled to zero once weight 0 is confirmed",
			canary:  canary(withPhase(v1alpha1.PhaseFailed), withRevisions("v2", "v1"), withFailedChecks(5)),
			target:  target("v2"),
			primary: target("v1"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseFailed, failed: 5, actions: []Action{scaleTo(0)}},
		},
		{
			name:    "skipAnalysis: a new revision is promoted at once",
			canary:  canary(withPhase(v1alpha1.PhaseSucceeded), withRevisions("v1", "v1"), withSkipAnalysis()),
			target:  target("v2"),
			primary: target("v1"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhasePromoting, actions: []Action{promoteAction()},
				events: []string{v1alpha1.EventNewRevision, v1alpha1.EventPromoting}},
		},

		// Waiting for the canary; the progress deadline.
		{
			name:    "waiting: canary not ready within the deadline, keep waiting",
			canary:  canary(withPhase(v1alpha1.PhaseWaiting), withRevisions("v2", "v1"), withNotReadySince(t0.Add(-599*time.Second))),
			target:  target("v2", notReady("1 of 2 updated replicas available")),
			primary: target("v1"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseWaiting, requeue: time.Second, ready: v1alpha1.ReasonProgressing},
		},
		{
			name:    "progress deadline: the canary is rolled back and an alert is sent",
			canary:  canary(withPhase(v1alpha1.PhaseWaiting), withRevisions("v2", "v1"), withNotReadySince(t0.Add(-600*time.Second))),
			target:  target("v2", notReady("1 of 2 updated replicas available")),
			primary: target("v1"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseFailed, result: ResultFailed, ready: v1alpha1.ReasonRolledBack,
				events: []string{v1alpha1.EventProgressDeadlineExceeded, v1alpha1.EventRolledBack},
				check: func(t *testing.T, out Output) {
					e := out.Events[0]
					if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Message, "1 of 2 updated replicas available") {
						t.Errorf("ProgressDeadlineExceeded event = %+v", e)
					}
					if c := out.Events[1].Annotations[v1alpha1.AnnotationRollbackCause]; c != v1alpha1.RollbackCauseProgressDeadline {
						t.Errorf("rollback cause = %q", c)
					}
				}},
		},
		{
			name:    "progress deadline mid-analysis: the canary lost its pods, rolled back from 50",
			canary:  progressing(50, t0.Add(-minute), withNotReadySince(t0.Add(-11*minute))),
			target:  target("v2", notReady("CrashLoopBackOff")),
			primary: target("v1"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseFailed, actions: []Action{setWeight(0)}, result: ResultFailed,
				events: []string{v1alpha1.EventProgressDeadlineExceeded, v1alpha1.EventRolledBack}},
		},
		{
			name:    "waiting: canary ready, the first step's weight is applied",
			canary:  canary(withPhase(v1alpha1.PhaseWaiting), withRevisions("v2", "v1"), withNotReadySince(t0.Add(-minute))),
			target:  target("v2"),
			primary: target("v1"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseProgressing, weight: 10, actions: []Action{setWeight(10)},
				events: []string{v1alpha1.EventWeightAdvanced}, requeue: time.Second,
				check: func(t *testing.T, out Output) {
					if out.Status.NotReadySince != nil || out.Status.StepStartTime != nil {
						t.Errorf("notReadySince %v, stepStartTime %v, want both unset", out.Status.NotReadySince, out.Status.StepStartTime)
					}
				}},
		},
		{
			name:    "waiting: a canary at zero replicas is scaled up",
			canary:  canary(withPhase(v1alpha1.PhaseWaiting), withRevisions("v2", "v1"), withNotReadySince(t0)),
			target:  target("v2", replicas(0)),
			primary: target("v1", replicas(4)),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseWaiting, actions: []Action{scaleTo(4)}},
		},

		// Traffic confirmation.
		{
			name:    "unconfirmed weight does not start the clock",
			canary:  progressing(10, time.Time{}, func(c *v1alpha1.Canary) { c.Status.StepStartTime = nil }),
			target:  target("v2"),
			primary: target("v1"),
			traffic: unconfirmed,
			want: want{phase: v1alpha1.PhaseProgressing, weight: 10, requeue: time.Second,
				check: func(t *testing.T, out Output) {
					if out.Status.StepStartTime != nil {
						t.Errorf("stepStartTime = %v, want unset", out.Status.StepStartTime)
					}
					if tr := out.Status.Traffic; tr.Confirmed || tr.AckedProxies != 1 || tr.TotalProxies != 3 {
						t.Errorf("traffic = %+v, want 1/3 unconfirmed", tr)
					}
				}},
		},
		{
			name:    "confirmed weight starts the clock at the confirmation",
			canary:  progressing(10, time.Time{}, func(c *v1alpha1.Canary) { c.Status.StepStartTime = nil }),
			target:  target("v2"),
			primary: target("v1"),
			traffic: traffic.Confirmation{Confirmed: true, Since: t0.Add(-5 * time.Second), Acked: 3, Total: 3},
			want: want{phase: v1alpha1.PhaseProgressing, weight: 10, requeue: 55 * time.Second,
				check: func(t *testing.T, out Output) {
					if !out.Status.StepStartTime.Time.Equal(t0.Add(-5 * time.Second)) {
						t.Errorf("stepStartTime = %v, want the confirmation time", out.Status.StepStartTime)
					}
				}},
		},
		{
			name:    "confirmation timed out: warn once and go on",
			canary:  progressing(10, time.Time{}, func(c *v1alpha1.Canary) { c.Status.StepStartTime = nil }),
			target:  target("v2"),
			primary: target("v1"),
			traffic: timedOut,
			want: want{phase: v1alpha1.PhaseProgressing, weight: 10, requeue: minute, events: []string{v1alpha1.EventWaitingForConfirmation},
				check: func(t *testing.T, out Output) {
					if !out.Status.StepStartTime.Time.Equal(t0) || !out.Status.Traffic.TimedOut {
						t.Errorf("stepStartTime %v, traffic %+v", out.Status.StepStartTime, out.Status.Traffic)
					}
				}},
		},
		{
			name:    "confirmation still timed out: no second warning",
			canary:  progressing(10, t0.Add(-10*time.Second), withTrafficTimedOut(10)),
			target:  target("v2"),
			primary: target("v1"),
			traffic: timedOut,
			want:    want{phase: v1alpha1.PhaseProgressing, weight: 10, requeue: 50 * time.Second},
		},

		// Checks.
		{
			name:    "interval not over: wait for it",
			canary:  progressing(10, t0.Add(-40*time.Second)),
			target:  target("v2"),
			primary: target("v1"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseProgressing, weight: 10, requeue: 20 * time.Second},
		},
		{
			name:    "interval counts from the last check too",
			canary:  progressing(10, t0.Add(-5*minute), withLastCheck(t0.Add(-30*time.Second))),
			target:  target("v2"),
			primary: target("v1"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseProgressing, weight: 10, requeue: 30 * time.Second},
		},
		{
			name:    "interval over: the checks are asked for",
			canary:  progressing(10, t0.Add(-minute)),
			target:  target("v2"),
			primary: target("v1"),
			traffic: confirmed,
			want:    want{needChecks: true},
		},
		{
			name:     "checks pass: advance to the next step",
			canary:   progressing(10, t0.Add(-minute)),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(pass(v1alpha1.MetricRequestSuccessRate)),
			want: want{phase: v1alpha1.PhaseProgressing, weight: 50, iterations: 1, actions: []Action{setWeight(50)},
				events: []string{v1alpha1.EventWeightAdvanced}, requeue: time.Second},
		},
		{
			name:     "no metrics: every check passes",
			canary:   progressing(50, t0.Add(-minute), func(c *v1alpha1.Canary) { c.Spec.Analysis.Metrics = nil }),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(),
			want: want{phase: v1alpha1.PhaseProgressing, weight: 100, iterations: 1, actions: []Action{setWeight(100)},
				events: []string{v1alpha1.EventWeightAdvanced}},
		},
		{
			name:     "promotion after the last step",
			canary:   progressing(100, t0.Add(-minute), withIterations(2)),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(pass(v1alpha1.MetricRequestSuccessRate)),
			want: want{phase: v1alpha1.PhasePromoting, weight: 100, iterations: 3, actions: []Action{promoteAction()},
				events: []string{v1alpha1.EventPromoting}},
		},
		{
			name:     "a failed check counts and holds the step",
			canary:   progressing(50, t0.Add(-minute), withFailedChecks(1)),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(outOfRange(v1alpha1.MetricRequestSuccessRate, "92.5", ">= 99")),
			want: want{phase: v1alpha1.PhaseProgressing, weight: 50, failed: 2, iterations: 1, requeue: minute,
				events: []string{v1alpha1.EventCheckFailed},
				check: func(t *testing.T, out Output) {
					a := out.Events[0].Annotations
					if a[v1alpha1.AnnotationMetric] != v1alpha1.MetricRequestSuccessRate || a[v1alpha1.AnnotationValue] != "92.5" ||
						a[v1alpha1.AnnotationBound] != ">= 99" || a[v1alpha1.AnnotationFailedChecks] != "2" || a[v1alpha1.AnnotationThreshold] != "5" {
						t.Errorf("CheckFailed annotations = %v", a)
					}
					if !out.Status.LastCheckTime.Time.Equal(t0) || len(out.Status.LastChecks) != 1 {
						t.Errorf("lastCheckTime %v, lastChecks %v", out.Status.LastCheckTime, out.Status.LastChecks)
					}
				}},
		},
		{
			name:   "two failed metrics are one failed check and two events",
			canary: progressing(50, t0.Add(-minute)),
			target: target("v2"), primary: target("v1"), traffic: confirmed,
			verdicts: checked(outOfRange(v1alpha1.MetricRequestSuccessRate, "92.5", ">= 99"), outOfRange(v1alpha1.MetricRequestDuration, "812", "<= 500")),
			want: want{phase: v1alpha1.PhaseProgressing, weight: 50, failed: 1, iterations: 1,
				events: []string{v1alpha1.EventCheckFailed, v1alpha1.EventCheckFailed}},
		},
		{
			name:     "rollback when the failures reach the threshold",
			canary:   progressing(50, t0.Add(-minute), withFailedChecks(4), withIterations(6)),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(outOfRange(v1alpha1.MetricRequestSuccessRate, "92.5", ">= 99")),
			want: want{phase: v1alpha1.PhaseFailed, failed: 5, iterations: 7, actions: []Action{setWeight(0)}, result: ResultFailed,
				events: []string{v1alpha1.EventCheckFailed, v1alpha1.EventRolledBack}, ready: v1alpha1.ReasonRolledBack,
				check: func(t *testing.T, out Output) {
					a := out.Events[1].Annotations
					if a[v1alpha1.AnnotationRollbackCause] != v1alpha1.RollbackCauseThreshold || a[v1alpha1.AnnotationMetric] != v1alpha1.MetricRequestSuccessRate ||
						a[v1alpha1.AnnotationValue] != "92.5" || a[v1alpha1.AnnotationBound] != ">= 99" {
						t.Errorf("RolledBack annotations = %v", a)
					}
					if p := apimeta.FindStatusCondition(out.Status.Conditions, v1alpha1.ConditionPromoted); p == nil || p.Reason != v1alpha1.ReasonRolledBack {
						t.Errorf("Promoted condition = %+v", p)
					}
				}},
		},
		{
			name:     "a passing check does not reset the failed checks",
			canary:   progressing(10, t0.Add(-minute), withFailedChecks(3)),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(pass(v1alpha1.MetricRequestSuccessRate)),
			want: want{phase: v1alpha1.PhaseProgressing, weight: 50, failed: 3, iterations: 1, actions: []Action{setWeight(50)},
				events: []string{v1alpha1.EventWeightAdvanced}},
		},
		{
			name:     "no data counts as a failed check",
			canary:   progressing(10, t0.Add(-minute)),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(noData),
			want: want{phase: v1alpha1.PhaseProgressing, weight: 10, failed: 1, iterations: 1, events: []string{v1alpha1.EventCheckFailed},
				check: func(t *testing.T, out Output) {
					if r := out.Events[0].Annotations[v1alpha1.AnnotationCheckReason]; r != "NoData" {
						t.Errorf("check reason = %q, want NoData", r)
					}
				}},
		},
		{
			name:     "Prometheus unreachable counts as a failed check",
			canary:   progressing(10, t0.Add(-minute), withFailedChecks(4)),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(queryError),
			want: want{phase: v1alpha1.PhaseFailed, failed: 5, iterations: 1, actions: []Action{setWeight(0)}, result: ResultFailed,
				events: []string{v1alpha1.EventCheckFailed, v1alpha1.EventRolledBack},
				check: func(t *testing.T, out Output) {
					if !strings.Contains(out.Events[0].Message, "connection refused") {
						t.Errorf("CheckFailed message %q does not say why", out.Events[0].Message)
					}
				}},
		},
		{
			name:    "failed checks already at a lowered threshold roll back before checking",
			canary:  progressing(50, t0.Add(-minute), withFailedChecks(3), withThreshold(2)),
			target:  target("v2"),
			primary: target("v1"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseFailed, failed: 3, actions: []Action{setWeight(0)}, result: ResultFailed,
				events: []string{v1alpha1.EventRolledBack}},
		},
		{
			name:     "stepWeight and maxWeight: 20 → 40",
			canary:   progressing(20, t0.Add(-minute), withStepWeight(20, 50)),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(pass(v1alpha1.MetricRequestSuccessRate)),
			want: want{phase: v1alpha1.PhaseProgressing, weight: 40, iterations: 1, actions: []Action{setWeight(40)},
				events: []string{v1alpha1.EventWeightAdvanced},
				check: func(t *testing.T, out Output) {
					if diff := cmp.Diff([]int32{20, 40, 50}, out.Status.StepWeights); diff != "" {
						t.Errorf("stepWeights (-want +got):\n%s", diff)
					}
				}},
		},
		{
			name:     "stepWeight and maxWeight: promote after maxWeight",
			canary:   progressing(50, t0.Add(-minute), withStepWeight(20, 50)),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(pass(v1alpha1.MetricRequestSuccessRate)),
			want: want{phase: v1alpha1.PhasePromoting, weight: 50, iterations: 1, actions: []Action{promoteAction()},
				events: []string{v1alpha1.EventPromoting}},
		},
		{
			name:     "stepWeights [5, 25]: promote after 25",
			canary:   progressing(25, t0.Add(-minute), withStepWeights(5, 25)),
			target:   target("v2"),
			primary:  target("v1"),
			traffic:  confirmed,
			verdicts: checked(pass(v1alpha1.MetricRequestSuccessRate)),
			want: want{phase: v1alpha1.PhasePromoting, weight: 25, iterations: 1, actions: []Action{promoteAction()},
				events: []string{v1alpha1.EventPromoting}},
		},

		// Changes of the target or the spec during an analysis.
		{
			name:    "new revision mid-analysis restarts at step 0 with weights 100/0",
			canary:  progressing(50, t0.Add(-minute), withFailedChecks(2), withIterations(4)),
			target:  target("v3"),
			primary: target("v1"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseWaiting, weight: 0, actions: []Action{setWeight(0)}, events: []string{v1alpha1.EventNewRevision},
				check: func(t *testing.T, out Output) {
					st := out.Status
					if st.LastAppliedSpec != "v3" || st.StepStartTime != nil || st.LastChecks != nil || !st.AnalysisStartTime.Time.Equal(t0) {
						t.Errorf("status not reset: %+v", st)
					}
					if !strings.Contains(out.Events[0].Message, "restarting") {
						t.Errorf("NewRevision message = %q", out.Events[0].Message)
					}
				}},
		},
		{
			name:    "target reverted to the primary's revision mid-analysis: manual rollback",
			canary:  progressing(50, t0.Add(-minute)),
			target:  target("v1"),
			primary: target("v1"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseFailed, actions: []Action{setWeight(0)}, result: ResultFailed, events: []string{v1alpha1.EventRolledBack},
				check: func(t *testing.T, out Output) {
					if c := out.Events[0].Annotations[v1alpha1.AnnotationRollbackCause]; c != v1alpha1.RollbackCauseManual {
						t.Errorf("rollback cause = %q", c)
					}
				}},
		},
		{
			name:    "skipAnalysis set during an analysis promotes",
			canary:  progressing(10, t0.Add(-10*time.Second), withSkipAnalysis()),
			target:  target("v2"),
			primary: target("v1"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhasePromoting, weight: 10, actions: []Action{promoteAction()},
				events: []string{v1alpha1.EventPromoting}},
		},
		{
			name:    "suspend: nothing moves",
			canary:  progressing(50, t0.Add(-time.Hour), withSuspend(), withFailedChecks(1)),
			target:  target("v3", notReady("whatever")),
			primary: target("v1"),
			traffic: unconfirmed,
			want: want{phase: v1alpha1.PhaseProgressing, weight: 50, failed: 1, noRequeue: true,
				check: func(t *testing.T, out Output) {
					if diff := cmp.Diff(progressing(50, t0.Add(-time.Hour), withFailedChecks(1)).Status, out.Status); diff != "" {
						t.Errorf("status changed while suspended (-want +got):\n%s", diff)
					}
				}},
		},
		{
			name:    "target deleted: Ready=False, nothing moves",
			canary:  progressing(50, t0.Add(-minute)),
			primary: target("v1"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseProgressing, weight: 50, ready: v1alpha1.ReasonTargetNotFound, noRequeue: true},
		},

		// Promotion.
		{
			name:    "promoting: the primary is updated until it carries the revision",
			canary:  canary(withPhase(v1alpha1.PhasePromoting), withWeight(100), withRevisions("v2", "v1")),
			target:  target("v2"),
			primary: target("v1"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhasePromoting, weight: 100, actions: []Action{promoteAction()}},
		},
		{
			name:    "promoting: traffic stays on the canary while the primary rolls out",
			canary:  canary(withPhase(v1alpha1.PhasePromoting), withWeight(100), withRevisions("v2", "v1")),
			target:  target("v2"),
			primary: target("v2", notReady("1 old replicas pending termination")),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhasePromoting, weight: 100, requeue: readinessPoll},
		},
		{
			name:    "promoting: primary not ready past the deadline warns once and keeps the traffic where it works",
			canary:  canary(withPhase(v1alpha1.PhasePromoting), withWeight(100), withRevisions("v2", "v1"), withNotReadySince(t0.Add(-10*minute))),
			target:  target("v2"),
			primary: target("v2", notReady("0 of 2 updated replicas available")),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhasePromoting, weight: 100, events: []string{v1alpha1.EventProgressDeadlineExceeded},
				ready: v1alpha1.ReasonProgressDeadlineExceeded},
		},
		{
			name:    "promoting: primary rolled out, traffic goes back to it",
			canary:  canary(withPhase(v1alpha1.PhasePromoting), withWeight(100), withRevisions("v2", "v1")),
			target:  target("v2"),
			primary: target("v2"),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhaseFinalising, weight: 0, actions: []Action{setWeight(0)}, requeue: time.Second},
		},
		{
			name:    "promoting: a newer revision takes the canary off the traffic at once",
			canary:  canary(withPhase(v1alpha1.PhasePromoting), withWeight(100), withRevisions("v2", "v1")),
			target:  target("v3"),
			primary: target("v2", notReady("1 of 2 replicas updated")),
			traffic: confirmed,
			want:    want{phase: v1alpha1.PhasePromoting, weight: 0, actions: []Action{setWeight(0)}},
		},
		{
			name:    "finalising: waits for weight 0 to be confirmed",
			canary:  canary(withPhase(v1alpha1.PhaseFinalising), withWeight(0), withRevisions("v2", "v1")),
			target:  target("v2"),
			primary: target("v2"),
			traffic: unconfirmed,
			want:    want{phase: v1alpha1.PhaseFinalising, requeue: time.Second},
		},
		{
			name:    "finalising: weight 0 confirmed, canary scaled to zero, promoted",
			canary:  canary(withPhase(v1alpha1.PhaseFinalising), withWeight(0), withRevisions("v2", "v1"), withAnalysisStart(t0.Add(-5*minute))),
			target:  target("v2"),
			primary: target("v2"),
			traffic: confirmed,
			want: want{phase: v1alpha1.PhaseSucceeded, actions: []Action{scaleTo(0)}, result: ResultSucceeded,
				events: []string{v1alpha1.EventPromoted}, ready: v1alpha1.ReasonSucceeded,
				check: func(t *testing.T, out Output) {
					if out.Status.LastPromotedSpec != "v2" {
						t.Errorf("lastPromotedSpec = %q, want v2", out.Status.LastPromotedSpec)
					}
					if p := apimeta.FindStatusCondition(out.Status.Conditions, v1alpha1.ConditionPromoted); p == nil || p.Status != metav1.ConditionTrue {
						t.Errorf("Promoted condition = %+v", p)
					}
				}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{Canary: tt.canary, Now: t0, Target: tt.target, Primary: tt.primary, Traffic: tt.traffic,
				Checked: tt.verdicts != nil, Verdicts: tt.verdicts}
			before := tt.canary.DeepCopy()
			out := Decide(in)
			if diff := cmp.Diff(before, tt.canary); diff != "" {
				t.Fatalf("Decide changed its input (-before +after):\n%s", diff)
			}
			w := tt.want
			if out.NeedChecks != w.needChecks {
				t.Fatalf("needChecks = %v, want %v", out.NeedChecks, w.needChecks)
			}
			if w.needChecks {
				if len(out.Actions) > 0 || len(out.Events) > 0 {
					t.Errorf("asked for checks and also decided: %+v", out)
				}
				return
			}
			st := out.Status
			if st.Phase != w.phase || st.CanaryWeight != w.weight || st.FailedChecks != w.failed || st.Iterations != w.iterations {
				t.Errorf("phase/weight/failed/iterations = %s/%d/%d/%d, want %s/%d/%d/%d",
					st.Phase, st.CanaryWeight, st.FailedChecks, st.Iterations, w.phase, w.weight, w.failed, w.iterations)
			}
			if diff := cmp.Diff(w.actions, out.Actions); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			var reasons []string
			for _, e := range out.Events {
				reasons = append(reasons, e.Reason)
			}
			if diff := cmp.Diff(w.events, reasons); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if w.requeue != 0 && out.RequeueAfter != w.requeue {
				t.Errorf("requeueAfter = %v, want %v", out.RequeueAfter, w.requeue)
			}
			if w.noRequeue && out.RequeueAfter != 0 {
				t.Errorf("requeueAfter = %v, want none", out.RequeueAfter)
			}
			if out.Result != w.result {
				t.Errorf("result = %q, want %q", out.Result, w.result)
			}
			if w.ready != "" {
				if r := apimeta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); r == nil || r.Reason != w.ready {
					t.Errorf("Ready condition = %+v, want reason %s", r, w.ready)
				}
			}
			if !tt.canary.Spec.Suspend && st.ObservedGeneration != tt.canary.Generation {
				t.Errorf("observedGeneration = %d, want %d", st.ObservedGeneration, tt.canary.Generation)
			}
			for _, e := range out.Events {
				for _, k := range []string{v1alpha1.AnnotationRevision, v1alpha1.AnnotationWeight, v1alpha1.AnnotationTransition,
					v1alpha1.AnnotationFailedChecks, v1alpha1.AnnotationThreshold} {
					if _, ok := e.Annotations[k]; !ok {
						t.Errorf("event %s lacks annotation %s", e.Reason, k)
					}
				}
			}
			if w.check != nil {
				w.check(t, out)
			}
		})
	}
}

// world plays the cluster for the state machine: Deployments roll out at
// once, the router confirms every weight at once, time jumps to the next
// requeue.
type world struct {
	now      time.Time
	canary   *v1alpha1.Canary
	target   Workload
	primary  Workload
	weight   int32
	since    time.Time
	verdicts func(weight int32) []v1alpha1.MetricVerdict

	weights []int32
	events  []Event
	phases  []v1alpha1.CanaryPhase
}

func (w *world) step(t *testing.T) Output {
	t.Helper()
	in := Input{Canary: w.canary, Now: w.now, Target: w.target, Primary: w.primary,
		Traffic: traffic.Confirmation{Confirmed: true, Since: w.since, Acked: 1, Total: 1}}
	out := Decide(in)
	if out.NeedChecks {
		in.Checked, in.Verdicts = true, w.verdicts(w.weight)
		out = Decide(in)
	}
	for _, a := range out.Actions {
		switch a.Kind {
		case ActionSetWeight:
			w.weight, w.since = a.Weight, w.now
			w.weights = append(w.weights, a.Weight)
		case ActionScaleTarget:
			w.target.Replicas = a.Replicas
		case ActionPromote:
			w.primary.Revision, w.primary.Images = w.target.Revision, w.target.Images
		}
	}
	w.events = append(w.events, out.Events...)
	if n := len(w.phases); n == 0 || w.phases[n-1] != out.Status.Phase {
		w.phases = append(w.phases, out.Status.Phase)
	}
	w.canary = w.canary.DeepCopy()
	w.canary.Status = out.Status
	after := out.RequeueAfter
	if after == 0 {
		after = time.Second
	}
	w.now = w.now.Add(after)
	return out
}

// run steps until the Canary settles in phase, at most 100 steps.
func (w *world) run(t *testing.T, phase v1alpha1.CanaryPhase) {
	t.Helper()
	for range 100 {
		if out := w.step(t); out.Status.Phase == phase && out.RequeueAfter == 0 {
			return
		}
	}
	t.Fatalf("not settled in %s after 100 steps: %s", phase, w.canary.Status.Phase)
}

func (w *world) reasons() []string {
	var rs []string
	for _, e := range w.events {
		rs = append(rs, e.Reason)
	}
	return rs
}

func TestDecideWalk(t *testing.T) {
	healthy := func(int32) []v1alpha1.MetricVerdict { return checked(pass(v1alpha1.MetricRequestSuccessRate)) }
	failing := func(int32) []v1alpha1.MetricVerdict {
		return checked(outOfRange(v1alpha1.MetricRequestSuccessRate, "50", ">= 99"))
	}
	tests := []struct {
		name       string
		canary     *v1alpha1.Canary
		verdicts   func(int32) []v1alpha1.MetricVerdict
		settle     v1alpha1.CanaryPhase
		weights    []int32
		events     []string
		phases     []v1alpha1.CanaryPhase
		primaryRev string
	}{
		{
			name: "promotion", canary: canary(), verdicts: healthy, settle: v1alpha1.PhaseSucceeded,
			weights: []int32{10, 50, 100, 0},
			events: []string{v1alpha1.EventNewRevision, v1alpha1.EventWeightAdvanced, v1alpha1.EventWeightAdvanced,
				v1alpha1.EventWeightAdvanced, v1alpha1.EventPromoting, v1alpha1.EventPromoted},
			phases: []v1alpha1.CanaryPhase{v1alpha1.PhaseWaiting, v1alpha1.PhaseProgressing, v1alpha1.PhasePromoting,
				v1alpha1.PhaseFinalising, v1alpha1.PhaseSucceeded},
			primaryRev: "v2",
		},
		{
			name: "stepWeight 30 up to 80", canary: canary(withStepWeight(30, 80)), verdicts: healthy, settle: v1alpha1.PhaseSucceeded,
			weights: []int32{30, 60, 80, 0},
			events: []string{v1alpha1.EventNewRevision, v1alpha1.EventWeightAdvanced, v1alpha1.EventWeightAdvanced,
				v1alpha1.EventWeightAdvanced, v1alpha1.EventPromoting, v1alpha1.EventPromoted},
			phases: []v1alpha1.CanaryPhase{v1alpha1.PhaseWaiting, v1alpha1.PhaseProgressing, v1alpha1.PhasePromoting,
				v1alpha1.PhaseFinalising, v1alpha1.PhaseSucceeded},
			primaryRev: "v2",
		},
		{
			name: "rollback", canary: canary(withThreshold(3)), verdicts: failing, settle: v1alpha1.PhaseFailed,
			weights: []int32{10, 0},
			events: []string{v1alpha1.EventNewRevision, v1alpha1.EventWeightAdvanced, v1alpha1.EventCheckFailed,
				v1alpha1.EventCheckFailed, v1alpha1.EventCheckFailed, v1alpha1.EventRolledBack},
			phases:     []v1alpha1.CanaryPhase{v1alpha1.PhaseWaiting, v1alpha1.PhaseProgressing, v1alpha1.PhaseFailed},
			primaryRev: "v1",
		},
		{
			name: "skipAnalysis", canary: canary(withSkipAnalysis()), verdicts: failing, settle: v1alpha1.PhaseSucceeded,
			events:     []string{v1alpha1.EventNewRevision, v1alpha1.EventPromoting, v1alpha1.EventPromoted},
			phases:     []v1alpha1.CanaryPhase{v1alpha1.PhasePromoting, v1alpha1.PhaseFinalising, v1alpha1.PhaseSucceeded},
			primaryRev: "v2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &world{now: t0, canary: tt.canary, target: target("v1"), primary: target("v1"), verdicts: tt.verdicts}
			w.run(t, v1alpha1.PhaseInitialized)
			if w.target.Replicas != 0 {
				t.Fatalf("target has %d replicas after initialisation, want 0", w.target.Replicas)
			}
			w.weights, w.events, w.phases = nil, nil, nil
			w.target.Revision, w.target.Images = "v2", "podinfo:2"
			w.run(t, tt.settle)
			if diff := cmp.Diff(tt.weights, w.weights); diff != "" {
				t.Errorf("weights (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.events, w.reasons()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.phases, w.phases); diff != "" {
				t.Errorf("phases (-want +got):\n%s", diff)
			}
			if w.primary.Revision != tt.primaryRev || w.target.Replicas != 0 || w.weight != 0 {
				t.Errorf("primary at %s, target at %d replicas, weight %d; want primary at %s, target at 0, weight 0",
					w.primary.Revision, w.target.Replicas, w.weight, tt.primaryRev)
			}
			keys := map[string]bool{}
			for _, e := range w.events {
				k := e.Annotations[v1alpha1.AnnotationTransition]
				if keys[k] {
					t.Errorf("transition key %q used twice", k)
				}
				keys[k] = true
			}
		})
	}
}

// TestDecideResumesFromStatus: a controller that restarts mid-rollout has
// only the status; given it, the decision is the same as without the
// restart, and the step's clock is not restarted by a fresh router.
func TestDecideResumesFromStatus(t *testing.T) {
	c := progressing(50, t0.Add(-50*time.Second), withFailedChecks(1), withIterations(3))
	// A new router: the weight is confirmed from now on, but the step
	// started 50s ago.
	fresh := traffic.Confirmation{Confirmed: true, Since: t0, Acked: 3, Total: 3}
	out := Decide(Input{Canary: c, Now: t0, Target: target("v2"), Primary: target("v1"), Traffic: fresh})
	if out.Status.CanaryWeight != 50 || out.Status.FailedChecks != 1 || out.RequeueAfter != 10*time.Second ||
		!out.Status.StepStartTime.Time.Equal(t0.Add(-50*time.Second)) || len(out.Actions) != 0 {
		t.Errorf("after a restart: weight %d, failed %d, requeue %v, stepStart %v, actions %v; want 50, 1, 10s, unchanged, none",
			out.Status.CanaryWeight, out.Status.FailedChecks, out.RequeueAfter, out.Status.StepStartTime, out.Actions)
	}
}
