package canary

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/mesh/traffic"
)

// This file is the state machine: one pure function, Decide, from what the
// reconciler observed to the Canary's next status and the few things the
// reconciler must do. Nothing here does I/O or reads a clock.

// Workload is what the reconciler observed of one Deployment.
type Workload struct {
	// Exists is false when the Deployment is not there (yet).
	Exists bool
	// Revision is, for the target, the hash of its pod template; for the
	// primary, the revision weir last copied into it.
	Revision string
	// Images are the images of the pod template, comma-separated.
	Images string
	// Replicas is spec.replicas.
	Replicas int32
	// Ready is true when the Deployment has rolled out its current template
	// and all of its replicas are available.
	Ready bool
	// Message says, for people, what the rollout is waiting for.
	Message string
}

// Input is everything the state machine decides on.
type Input struct {
	// Canary holds the spec and the status as last written.
	Canary *v1alpha1.Canary
	// Now is the current time.
	Now time.Time
	// Target is the user's Deployment, which runs the canary.
	Target Workload
	// Primary is the <target>-primary Deployment.
	Primary Workload
	// Traffic is the router's answer for Canary.Status.CanaryWeight.
	Traffic traffic.Confirmation
	// Checked is true when Verdicts holds the outcome of running the
	// analysis' metric checks for this decision. Decide asks for them with
	// Output.NeedChecks; the reconciler runs them and calls Decide again.
	Checked bool
	// Verdicts are the metric checks' outcome, one per metric.
	Verdicts []v1alpha1.MetricVerdict
}

// ActionKind names something the reconciler must do.
type ActionKind string

// The actions Decide may ask for. The reconciler carries them out in order,
// before it writes the status.
const (
	// ActionSetWeight asks the data plane to send Weight percent of the
	// traffic to the canary.
	ActionSetWeight ActionKind = "SetWeight"
	// ActionScaleTarget scales the target Deployment to Replicas.
	ActionScaleTarget ActionKind = "ScaleTarget"
	// ActionPromote copies the target's pod template (the revision in
	// status.lastAppliedSpec) to the primary Deployment.
	ActionPromote ActionKind = "Promote"
)

// Action is one thing the reconciler must do.
type Action struct {
	Kind     ActionKind
	Weight   int32
	Replicas int32
}

// Event is a Kubernetes Event to record on the Canary once the new status
// has been written.
type Event struct {
	// Type is corev1.EventTypeNormal or corev1.EventTypeWarning.
	Type        string
	Reason      string
	Message     string
	Annotations map[string]string
}

// Results of an analysis, the values of weir_canary_results_total's label.
const (
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
)

// Output is what Decide decided.
type Output struct {
	// Status is the Canary's new status.
	Status v1alpha1.CanaryStatus
	// Actions to carry out, in order.
	Actions []Action
	// Events to record after the status was written.
	Events []Event
	// RequeueAfter is when to look again; zero means only on a change.
	RequeueAfter time.Duration
	// NeedChecks is true when the metric checks are due: run them and call
	// Decide again with Checked and Verdicts set. Nothing else is set.
	NeedChecks bool
	// Result is ResultSucceeded or ResultFailed when an analysis ended.
	Result string
}

const (
	// confirmPoll is how often weir looks again while the data plane has
	// not confirmed a weight.
	confirmPoll = time.Second
	// readinessPoll caps the wait while a Deployment rolls out; changes of
	// the Deployments trigger a reconcile anyway.
	readinessPoll = 10 * time.Second
)

// Decide returns the Canary's next status and what to do to get there.
//
// Per reconcile, in order (DESIGN.md, "The state machine"):
//  1. a new revision while analysing restarts the analysis at weight 0;
//  2. a canary not ready within progressDeadlineSeconds is rolled back,
//     with an alert;
//  3. failed checks at the threshold roll back;
//  4. when the step's interval has passed since its weight was confirmed,
//     the checks run; a failed one counts and holds the step;
//  5. otherwise the weight advances, or, after the last step, the primary
//     is promoted.
func Decide(in Input) Output {
	d := newDecision(in)
	if in.Canary.Spec.Suspend {
		// Nothing moves; the rollout resumes from here when resumed.
		return Output{Status: *in.Canary.Status.DeepCopy()}
	}
	if !in.Target.Exists {
		d.setReady(metav1.ConditionFalse, v1alpha1.ReasonTargetNotFound,
			fmt.Sprintf("Deployment %s not found", in.Canary.Spec.TargetRef.Name))
		return d.out
	}
	d.observeTraffic()
	switch d.st.Phase {
	case v1alpha1.PhaseInitialized, v1alpha1.PhaseSucceeded, v1alpha1.PhaseFailed:
		d.idle()
	case v1alpha1.PhaseWaiting, v1alpha1.PhaseProgressing:
		d.analyse()
	case v1alpha1.PhasePromoting:
		d.promote()
	case v1alpha1.PhaseFinalising:
		d.finalise()
	default:
		d.initialise()
	}
	if d.out.NeedChecks {
		return Output{NeedChecks: true}
	}
	d.setConditions()
	return d.out
}

// decision is one run of Decide.
type decision struct {
	in        Input
	c         *v1alpha1.Canary
	out       Output
	st        *v1alpha1.CanaryStatus
	steps     []int32
	interval  time.Duration
	threshold int32
	deadline  time.Duration
	// readySet is true when a step set the Ready condition itself.
	readySet bool
}

func newDecision(in Input) *decision {
	d := &decision{
		in:        in,
		c:         in.Canary,
		steps:     in.Canary.Spec.Analysis.GetStepWeights(),
		interval:  in.Canary.Spec.Analysis.GetInterval(),
		threshold: in.Canary.Spec.Analysis.GetThreshold(),
		deadline:  in.Canary.Spec.GetProgressDeadline(),
	}
	d.out.Status = *in.Canary.Status.DeepCopy()
	d.st = &d.out.Status
	d.st.StepWeights = append([]int32(nil), d.steps...)
	d.st.ObservedGeneration = in.Canary.Generation
	return d
}

// analyse walks the steps of an analysis in order; the first step that
// decides ends the walk.
func (d *decision) analyse() {
	for _, step := range []func() bool{
		d.revisionChanged,
		d.skipAnalysis,
		d.canaryReady,
		d.thresholdReached,
		d.start,
		d.weightConfirmed,
		d.checkDue,
		d.runChecks,
		d.advance,
	} {
		if step() {
			return
		}
	}
}

// revisionChanged restarts the analysis when the target changed under it,
// or rolls back when the target went back to the primary's revision.
func (d *decision) revisionChanged() bool {
	rev := d.in.Target.Revision
	switch {
	case rev == d.st.LastAppliedSpec:
		return false
	case rev == d.st.LastPromotedSpec:
		d.rollback(v1alpha1.RollbackCauseManual, fmt.Sprintf(
			"%s was reverted to the primary's revision %s during the analysis", d.c.Spec.TargetRef.Name, rev), nil)
	default:
		d.newRevision()
	}
	return true
}

// skipAnalysis promotes at once when the spec says so.
func (d *decision) skipAnalysis() bool {
	if !d.c.Spec.SkipAnalysis {
		return false
	}
	d.startPromotion("skipAnalysis is set")
	return true
}

// canaryReady waits for the canary's pods, and rolls back when they are not
// ready within the progress deadline.
func (d *decision) canaryReady() bool {
	t := d.in.Target
	if t.Replicas == 0 {
		d.scaleTarget(d.canaryReplicas())
		t.Ready, t.Message = false, "scaled to zero; scaling up"
	}
	if t.Ready {
		d.st.NotReadySince = nil
		return false
	}
	if d.st.NotReadySince == nil {
		d.st.NotReadySince = d.now()
	}
	if left := d.st.NotReadySince.Add(d.deadline).Sub(d.in.Now); left > 0 {
		d.requeue(min(left, readinessPoll))
		return true
	}
	msg := fmt.Sprintf("canary %s not ready within %s: %s", d.c.Spec.TargetRef.Name, d.deadline, t.Message)
	d.event(corev1.EventTypeWarning, v1alpha1.EventProgressDeadlineExceeded, "0", msg, nil)
	d.rollback(v1alpha1.RollbackCauseProgressDeadline, msg, nil)
	return true
}

// thresholdReached rolls back when the failed checks already reached the
// threshold (e.g. after the threshold was lowered).
func (d *decision) thresholdReached() bool {
	if d.st.FailedChecks < d.threshold {
		return false
	}
	d.rollback(v1alpha1.RollbackCauseThreshold, fmt.Sprintf(
		"%d of %d checks failed", d.st.FailedChecks, d.threshold), d.lastFailed())
	return true
}

// start shifts the first step's weight once the canary is ready.
func (d *decision) start() bool {
	if d.st.Phase == v1alpha1.PhaseProgressing && d.st.CanaryWeight > 0 {
		return false
	}
	d.setPhase(v1alpha1.PhaseProgressing)
	d.advanceTo(d.steps[0])
	return true
}

// weightConfirmed starts the step's clock once the data plane confirmed the
// weight, or once the router gave up waiting.
func (d *decision) weightConfirmed() bool {
	if d.st.StepStartTime != nil {
		return false
	}
	t := d.in.Traffic
	switch {
	case t.Confirmed && !t.Since.IsZero():
		since := metav1.NewTime(t.Since)
		d.st.StepStartTime = &since
	case t.Confirmed, t.TimedOut:
		d.st.StepStartTime = d.now()
	default:
		d.requeue(confirmPoll)
		return true
	}
	return false
}

// checkDue waits until one interval has passed since the step started and
// since the last check.
func (d *decision) checkDue() bool {
	from := d.st.StepStartTime.Time
	if d.st.LastCheckTime != nil && d.st.LastCheckTime.After(from) {
		from = d.st.LastCheckTime.Time
	}
	if left := from.Add(d.interval).Sub(d.in.Now); left > 0 {
		d.requeue(left)
		return true
	}
	return false
}

// runChecks counts a failed check (one per interval, however many metrics
// failed) and holds the step, or rolls back when the threshold is reached.
// A passing check does not reset the failed checks.
func (d *decision) runChecks() bool {
	if !d.in.Checked {
		d.out.NeedChecks = true
		return true
	}
	d.st.Iterations++
	d.st.LastCheckTime = d.now()
	d.st.LastChecks = append([]v1alpha1.MetricVerdict(nil), d.in.Verdicts...)
	bad := failed(d.in.Verdicts)
	if len(bad) == 0 {
		return false
	}
	d.st.FailedChecks++
	for _, v := range bad {
		d.event(corev1.EventTypeWarning, v1alpha1.EventCheckFailed,
			fmt.Sprintf("%d-%s", d.st.Iterations, v.Metric),
			fmt.Sprintf("Check %d failed (%d of %d failed checks) at weight %d: %s",
				d.st.Iterations, d.st.FailedChecks, d.threshold, d.st.CanaryWeight, describeVerdict(v)),
			verdictAnnotations(v))
	}
	if d.st.FailedChecks >= d.threshold {
		d.rollback(v1alpha1.RollbackCauseThreshold, fmt.Sprintf(
			"%d of %d checks failed, last: %s", d.st.FailedChecks, d.threshold, describeVerdict(bad[0])), &bad[0])
		return true
	}
	d.requeue(d.interval)
	return true
}

// advance moves to the next step's weight or, after the last step,
// promotes.
func (d *decision) advance() bool {
	for _, w := range d.steps {
		if w > d.st.CanaryWeight {
			d.advanceTo(w)
			return true
		}
	}
	d.startPromotion(fmt.Sprintf("all %d steps passed", len(d.steps)))
	return true
}

func (d *decision) advanceTo(w int32) {
	from := d.st.CanaryWeight
	d.setWeight(w)
	d.event(corev1.EventTypeNormal, v1alpha1.EventWeightAdvanced, strconv.Itoa(int(w)),
		fmt.Sprintf("Canary weight %d → %d", from, w), nil)
}

// idle handles the phases without a rollout in flight: all traffic on the
// primary, the canary at zero, a new revision starts an analysis.
func (d *decision) idle() {
	rev := d.in.Target.Revision
	if rev != d.st.LastAppliedSpec {
		if rev != d.st.LastPromotedSpec {
			d.newRevision()
			return
		}
		// Back to what the primary runs: there is nothing to analyse.
		d.st.LastAppliedSpec = rev
	}
	d.setWeight(0)
	if !d.trafficSettled() {
		return
	}
	if d.in.Target.Replicas > 0 {
		d.scaleTarget(0)
	}
}

// newRevision (re)starts the analysis of the target's revision at weight 0.
func (d *decision) newRevision() {
	restart := d.st.Phase == v1alpha1.PhaseWaiting || d.st.Phase == v1alpha1.PhaseProgressing
	st := d.st
	st.LastAppliedSpec = d.in.Target.Revision
	st.AnalysisStartTime = d.now()
	st.FailedChecks, st.Iterations = 0, 0
	st.StepStartTime, st.LastCheckTime, st.LastChecks = nil, nil, nil
	st.NotReadySince = d.now()
	d.setWeight(0)
	msg := fmt.Sprintf("New revision %s of %s (%s), starting analysis", st.LastAppliedSpec, d.c.Spec.TargetRef.Name, d.in.Target.Images)
	if restart {
		msg = fmt.Sprintf("New revision %s of %s (%s) during the analysis, restarting at step 0",
			st.LastAppliedSpec, d.c.Spec.TargetRef.Name, d.in.Target.Images)
	}
	d.event(corev1.EventTypeNormal, v1alpha1.EventNewRevision, "0", msg, nil)
	if d.c.Spec.SkipAnalysis {
		d.startPromotion("skipAnalysis is set")
		return
	}
	d.setPhase(v1alpha1.PhaseWaiting)
	if d.in.Target.Replicas == 0 {
		d.scaleTarget(d.canaryReplicas())
	}
	d.requeue(confirmPoll)
}

// startPromotion copies the analysed template to the primary. The canary
// keeps its weight while the primary rolls out.
func (d *decision) startPromotion(why string) {
	d.setPhase(v1alpha1.PhasePromoting)
	d.st.NotReadySince = nil
	d.out.Actions = append(d.out.Actions, Action{Kind: ActionPromote})
	d.event(corev1.EventTypeNormal, v1alpha1.EventPromoting, "0", fmt.Sprintf(
		"%s: copying revision %s to %s", capitalise(why), d.st.LastAppliedSpec, d.c.GetPrimaryName()), nil)
	d.requeue(confirmPoll)
}

// promote waits for the primary to roll out the analysed revision, then
// routes all traffic back to it.
func (d *decision) promote() {
	t, p, rev := d.in.Target, d.in.Primary, d.st.LastAppliedSpec
	if t.Revision != rev {
		// The canary now runs a revision nobody analysed: off the traffic.
		d.setWeight(0)
	}
	if p.Revision != rev {
		if t.Revision != rev {
			// The analysed template left the target before it reached the
			// primary: analyse what is there now.
			d.newRevision()
			return
		}
		d.out.Actions = append(d.out.Actions, Action{Kind: ActionPromote})
		d.requeue(confirmPoll)
		return
	}
	if !d.primaryReady() {
		return
	}
	d.setPhase(v1alpha1.PhaseFinalising)
	d.setWeight(0)
}

// finalise scales the canary to zero once all traffic is back on the
// promoted primary.
func (d *decision) finalise() {
	d.setWeight(0)
	if !d.trafficSettled() {
		return
	}
	if d.in.Target.Revision == d.st.LastAppliedSpec && d.in.Target.Replicas > 0 {
		d.scaleTarget(0)
	}
	d.st.LastPromotedSpec = d.st.LastAppliedSpec
	d.setPhase(v1alpha1.PhaseSucceeded)
	d.out.Result = ResultSucceeded
	d.event(corev1.EventTypeNormal, v1alpha1.EventPromoted, "0", fmt.Sprintf(
		"Promoted revision %s (%s): %s serves all traffic", d.st.LastPromotedSpec, d.in.Primary.Images, d.c.GetPrimaryName()), nil)
}

// initialise waits for the primary weir created from the target, then hands
// it all traffic.
func (d *decision) initialise() {
	d.setPhase(v1alpha1.PhaseInitializing)
	d.setWeight(0)
	p := d.in.Primary
	if !p.Exists {
		d.requeue(confirmPoll)
		return
	}
	if !d.primaryReady() {
		return
	}
	d.st.LastAppliedSpec, d.st.LastPromotedSpec = p.Revision, p.Revision
	d.setPhase(v1alpha1.PhaseInitialized)
	d.event(corev1.EventTypeNormal, v1alpha1.EventInitialized, "0", fmt.Sprintf(
		"%s (revision %s, %s) is ready and serves all traffic", d.c.GetPrimaryName(), p.Revision, p.Images), nil)
}

// primaryReady is true once the primary is ready. Until then it waits, and
// past the deadline it warns once and keeps waiting: there is nothing to
// roll back to.
func (d *decision) primaryReady() bool {
	if d.in.Primary.Ready {
		d.st.NotReadySince = nil
		return true
	}
	if d.st.NotReadySince == nil {
		d.st.NotReadySince = d.now()
	}
	left := d.st.NotReadySince.Add(d.deadline).Sub(d.in.Now)
	if left > 0 {
		d.requeue(min(left, readinessPoll))
		return false
	}
	msg := fmt.Sprintf("%s not ready within %s: %s", d.c.GetPrimaryName(), d.deadline, d.in.Primary.Message)
	if r := apimeta.FindStatusCondition(d.st.Conditions, v1alpha1.ConditionReady); r == nil || r.Reason != v1alpha1.ReasonProgressDeadlineExceeded {
		d.event(corev1.EventTypeWarning, v1alpha1.EventProgressDeadlineExceeded, "primary", msg+"; still waiting", nil)
	}
	d.setReady(metav1.ConditionFalse, v1alpha1.ReasonProgressDeadlineExceeded, msg)
	d.requeue(readinessPoll)
	return false
}

// rollback sends all traffic to the primary; the canary is scaled to zero
// once the data plane confirmed it (see idle).
func (d *decision) rollback(cause, why string, v *v1alpha1.MetricVerdict) {
	d.setWeight(0)
	d.setPhase(v1alpha1.PhaseFailed)
	d.st.NotReadySince, d.st.StepStartTime = nil, nil
	d.out.Result = ResultFailed
	msg := fmt.Sprintf("Rolled back revision %s: %s", d.st.LastAppliedSpec, why)
	ann := map[string]string{v1alpha1.AnnotationRollbackCause: cause}
	if v != nil {
		for k, val := range verdictAnnotations(*v) {
			ann[k] = val
		}
	}
	d.event(corev1.EventTypeWarning, v1alpha1.EventRolledBack, cause, msg, ann)
	d.setReady(metav1.ConditionFalse, v1alpha1.ReasonRolledBack, msg)
	d.setCondition(v1alpha1.ConditionPromoted, metav1.ConditionFalse, v1alpha1.ReasonRolledBack, msg)
}

// observeTraffic records the router's answer for the current weight and
// warns, once per weight, when the router gave up waiting for it.
func (d *decision) observeTraffic() {
	t, w := d.in.Traffic, d.st.CanaryWeight
	timedOut := t.TimedOut && !t.Confirmed
	prev := d.in.Canary.Status.Traffic
	d.st.Traffic = TrafficStatus(w, t)
	if timedOut && (prev == nil || prev.Weight != w || !prev.TimedOut) {
		d.event(corev1.EventTypeWarning, v1alpha1.EventWaitingForConfirmation, "w"+strconv.Itoa(int(w)), fmt.Sprintf(
			"Weight %d not confirmed by the data plane (%d of %d proxies acknowledged): going on. %s",
			w, t.Acked, t.Total, t.Message), nil)
	}
}

// TrafficStatus is the status.traffic for weight w and the router's answer.
func TrafficStatus(w int32, t traffic.Confirmation) *v1alpha1.TrafficStatus {
	return &v1alpha1.TrafficStatus{
		Weight:       w,
		Confirmed:    t.Confirmed,
		TimedOut:     t.TimedOut && !t.Confirmed,
		AckedProxies: int32(t.Acked),
		TotalProxies: int32(t.Total),
		Message:      t.Message,
	}
}

// trafficSettled is true when the current weight is in effect (or the
// router gave up waiting); otherwise it asks to look again shortly.
func (d *decision) trafficSettled() bool {
	if t := d.st.Traffic; t != nil && t.Weight == d.st.CanaryWeight && (t.Confirmed || t.TimedOut) {
		return true
	}
	d.requeue(confirmPoll)
	return false
}

// setWeight asks for a new canary weight; the step's clock restarts once
// the data plane confirms it.
func (d *decision) setWeight(w int32) {
	if d.st.CanaryWeight == w && d.st.Traffic != nil && d.st.Traffic.Weight == w {
		return
	}
	d.st.CanaryWeight = w
	d.st.StepStartTime = nil
	d.st.Traffic = &v1alpha1.TrafficStatus{Weight: w, Message: "waiting for the data plane"}
	d.out.Actions = append(d.out.Actions, Action{Kind: ActionSetWeight, Weight: w})
	d.requeue(confirmPoll)
}

func (d *decision) scaleTarget(n int32) {
	d.out.Actions = append(d.out.Actions, Action{Kind: ActionScaleTarget, Replicas: n})
}

// canaryReplicas is the scale of a canary brought up from zero: the
// primary's.
func (d *decision) canaryReplicas() int32 {
	return max(d.in.Primary.Replicas, 1)
}

func (d *decision) setPhase(p v1alpha1.CanaryPhase) {
	if d.st.Phase != p {
		d.st.Phase = p
		d.st.LastTransitionTime = d.now()
		// Look again soon: what the new phase waits for may be there.
		d.requeue(confirmPoll)
	}
}

func (d *decision) requeue(after time.Duration) {
	if after <= 0 {
		after = time.Millisecond
	}
	if d.out.RequeueAfter == 0 || after < d.out.RequeueAfter {
		d.out.RequeueAfter = after
	}
}

func (d *decision) now() *metav1.Time {
	t := metav1.NewTime(d.in.Now)
	return &t
}

// failed returns the verdicts that did not pass.
func failed(vs []v1alpha1.MetricVerdict) []v1alpha1.MetricVerdict {
	var out []v1alpha1.MetricVerdict
	for _, v := range vs {
		if !v.Passed {
			out = append(out, v)
		}
	}
	return out
}

func (d *decision) lastFailed() *v1alpha1.MetricVerdict {
	if f := failed(d.st.LastChecks); len(f) > 0 {
		return &f[0]
	}
	return nil
}

// setConditions sets Ready and Promoted from the phase, unless a step set
// them already.
func (d *decision) setConditions() {
	st, rev := d.st, d.st.LastAppliedSpec
	switch st.Phase {
	case v1alpha1.PhaseInitializing:
		d.setReady(metav1.ConditionFalse, v1alpha1.ReasonInitializing,
			fmt.Sprintf("Waiting for %s: %s", d.c.GetPrimaryName(), orDefault(d.in.Primary.Message, "being created")))
		d.setCondition(v1alpha1.ConditionPromoted, metav1.ConditionFalse, v1alpha1.ReasonInitializing, "The primary is not ready yet")
	case v1alpha1.PhaseInitialized:
		d.setReady(metav1.ConditionTrue, v1alpha1.ReasonInitialized, fmt.Sprintf("%s serves all traffic", d.c.GetPrimaryName()))
		d.setCondition(v1alpha1.ConditionPromoted, metav1.ConditionTrue, v1alpha1.ReasonInitialized,
			fmt.Sprintf("%s runs revision %s", d.c.GetPrimaryName(), st.LastPromotedSpec))
	case v1alpha1.PhaseSucceeded:
		d.setReady(metav1.ConditionTrue, v1alpha1.ReasonSucceeded, fmt.Sprintf("%s serves all traffic", d.c.GetPrimaryName()))
		d.setCondition(v1alpha1.ConditionPromoted, metav1.ConditionTrue, v1alpha1.ReasonSucceeded,
			fmt.Sprintf("Revision %s was promoted to %s", st.LastPromotedSpec, d.c.GetPrimaryName()))
	case v1alpha1.PhaseWaiting, v1alpha1.PhaseProgressing, v1alpha1.PhasePromoting, v1alpha1.PhaseFinalising:
		var msg string
		switch st.Phase {
		case v1alpha1.PhaseWaiting:
			msg = fmt.Sprintf("Revision %s: waiting for %s to be ready: %s", rev, d.c.Spec.TargetRef.Name, orDefault(d.in.Target.Message, "scaling up"))
		case v1alpha1.PhaseProgressing:
			msg = fmt.Sprintf("Revision %s: weight %d%%, %d of %d failed checks", rev, st.CanaryWeight, st.FailedChecks, d.threshold)
		case v1alpha1.PhasePromoting:
			msg = fmt.Sprintf("Revision %s: %s is rolling out", rev, d.c.GetPrimaryName())
		default:
			msg = fmt.Sprintf("Revision %s: routing all traffic to %s", rev, d.c.GetPrimaryName())
		}
		d.setReady(metav1.ConditionUnknown, v1alpha1.ReasonProgressing, msg)
		d.setCondition(v1alpha1.ConditionPromoted, metav1.ConditionFalse, v1alpha1.ReasonProgressing,
			fmt.Sprintf("Revision %s is being analysed", rev))
	}
	// Failed keeps the conditions set by the rollback.
}

func (d *decision) setReady(status metav1.ConditionStatus, reason, msg string) {
	if d.readySet {
		return
	}
	d.readySet = true
	d.setCondition(v1alpha1.ConditionReady, status, reason, msg)
}

func (d *decision) setCondition(typ string, status metav1.ConditionStatus, reason, msg string) {
	c := metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: d.c.Generation,
		LastTransitionTime: metav1.NewTime(d.in.Now),
	}
	apimeta.SetStatusCondition(&d.st.Conditions, c)
}

// event records an Event with the annotations the notifier needs. step
// tells transitions of the same reason and revision apart.
func (d *decision) event(typ, reason, step, msg string, extra map[string]string) {
	st := d.st
	ann := map[string]string{
		v1alpha1.AnnotationRevision:     st.LastAppliedSpec,
		v1alpha1.AnnotationImage:        d.in.Target.Images,
		v1alpha1.AnnotationWeight:       strconv.Itoa(int(st.CanaryWeight)),
		v1alpha1.AnnotationFailedChecks: strconv.Itoa(int(st.FailedChecks)),
		v1alpha1.AnnotationThreshold:    strconv.Itoa(int(d.threshold)),
		v1alpha1.AnnotationTransition:   transitionKey(st, reason, step),
	}
	if d.in.Primary.Exists && d.in.Primary.Revision != st.LastAppliedSpec {
		// The primary still runs what it ran before this rollout.
		ann[v1alpha1.AnnotationPrimaryImage] = d.in.Primary.Images
	}
	for k, v := range extra {
		ann[k] = v
	}
	d.out.Events = append(d.out.Events, Event{Type: typ, Reason: reason, Message: msg, Annotations: ann})
}

// transitionKey identifies a transition: the revision and the start of its
// analysis (a revision may be analysed more than once), the reason and the
// step. The notifier sends each key once.
func transitionKey(st *v1alpha1.CanaryStatus, reason, step string) string {
	var start int64
	if st.AnalysisStartTime != nil {
		start = st.AnalysisStartTime.Unix()
	}
	return fmt.Sprintf("%s/%d/%s/%s", st.LastAppliedSpec, start, reason, step)
}

func verdictAnnotations(v v1alpha1.MetricVerdict) map[string]string {
	return map[string]string{
		v1alpha1.AnnotationMetric:      v.Metric,
		v1alpha1.AnnotationValue:       v.Value,
		v1alpha1.AnnotationBound:       v.Bound,
		v1alpha1.AnnotationCheckReason: v.Reason,
	}
}

// describeVerdict says in a few words why a check failed.
func describeVerdict(v v1alpha1.MetricVerdict) string {
	var b strings.Builder
	b.WriteString(v.Metric)
	switch {
	case v.Value != "":
		fmt.Fprintf(&b, " %s, outside %s", v.Value, v.Bound)
	default:
		fmt.Fprintf(&b, " had no value (bound %s)", v.Bound)
	}
	if v.Reason != "" {
		fmt.Fprintf(&b, " [%s]", v.Reason)
	}
	if v.Message != "" {
		fmt.Fprintf(&b, ": %s", v.Message)
	}
	return b.String()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func capitalise(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
