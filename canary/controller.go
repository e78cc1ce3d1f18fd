// Package canary is weir's Canary controller: a reconciler that gathers
// what it needs, asks the pure state machine (Decide) what to do, and does
// it; plus the primary/canary workloads it manages.
package canary

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/mesh/traffic"
)

// Checker runs the metric checks of a Canary's analysis (metrics.Prometheus
// implements it): one verdict per metric of c.Spec.Analysis.Metrics, in
// spec order. A failed query, no data or NaN is a failed verdict.
type Checker interface {
	Check(ctx context.Context, c *v1alpha1.Canary) []v1alpha1.MetricVerdict
}

// Reconciler reconciles Canaries.
type Reconciler struct {
	client.Client
	// APIReader reads Canaries from the API server rather than the cache:
	// the status is the whole state of a rollout and must never be stale.
	APIReader client.Reader
	// Recorder records the Events the notifier turns into messages.
	Recorder record.EventRecorder
	// Router applies canary weights to the data plane.
	Router traffic.Router
	// Checker runs the metric checks.
	Checker Checker
	// Clock is the time; tests swap it.
	Clock clock.PassiveClock
	// Options of the controller; MaxConcurrentReconciles defaults to 4.
	Options controller.Options
}

// +kubebuilder:rbac:groups=weir.dev,resources=canaries,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=weir.dev,resources=canaries/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=weir.dev,resources=canaries/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// targetIndex indexes Canaries by the name of their target Deployment.
const targetIndex = ".spec.targetRef.name"

// finalizePoll is how often a deleted Canary looks at the target it gives
// back its replicas to.
const finalizePoll = 2 * time.Second

// SetupWithManager registers the reconciler with mgr.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	if r.Options.MaxConcurrentReconciles == 0 {
		r.Options.MaxConcurrentReconciles = 4
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &v1alpha1.Canary{}, targetIndex, func(o client.Object) []string {
		return []string{o.(*v1alpha1.Canary).Spec.TargetRef.Name}
	}); err != nil {
		return fmt.Errorf("failed to index Canaries by target: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Canary{}, builder.WithPredicates(specOrDeletionChanged())).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(r.canariesOfTarget)).
		WithOptions(r.Options).
		Complete(r)
}

// specOrDeletionChanged lets through changes of a Canary's spec and its
// deletion, not the status writes of the reconciler itself.
func specOrDeletionChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
			e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
	}}
}

// canariesOfTarget maps a Deployment to the Canaries that target it.
func (r *Reconciler) canariesOfTarget(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.CanaryList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{targetIndex: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "failed to list the Canaries of a Deployment", "deployment", o.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, c := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&c)})
	}
	return reqs
}

// Reconcile reads the Canary, then: deletion → finalizer → suspend → the
// rollout. The status is written once, at the end.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	log := ctrl.LoggerFrom(ctx)
	c := &v1alpha1.Canary{}
	if err := r.APIReader.Get(ctx, req.NamespacedName, c); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("failed to get Canary: %w", err)
	}
	if !c.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, c)
	}
	if !controllerutil.ContainsFinalizer(c, v1alpha1.Finalizer) {
		patch := client.MergeFrom(c.DeepCopy())
		controllerutil.AddFinalizer(c, v1alpha1.Finalizer)
		if err := r.Patch(ctx, c, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("failed to add the finalizer: %w", err)
		}
	}
	if c.Spec.Suspend {
		log.Info("Canary is suspended: nothing moves until spec.suspend is cleared")
		return ctrl.Result{}, nil
	}

	before := c.DeepCopy()
	var out Output
	defer func() {
		if err := r.patchStatus(ctx, before, c); err != nil {
			retErr = errors.Join(retErr, err)
			return
		}
		if retErr == nil {
			r.record(c, out)
			recordMetrics(c, out.Result, r.Clock.Now())
		}
	}()
	out, err := r.reconcile(ctx, c)
	if err != nil {
		return ctrl.Result{}, err
	}
	if out.RequeueAfter > 0 {
		log.V(1).Info("waiting", "phase", c.Status.Phase, "weight", c.Status.CanaryWeight, "requeueAfter", out.RequeueAfter)
	}
	return ctrl.Result{RequeueAfter: out.RequeueAfter}, nil
}

// reconcile gathers the state machine's input, decides, and carries out the
// decision. c.Status becomes the new status only when every action
// succeeded.
func (r *Reconciler) reconcile(ctx context.Context, c *v1alpha1.Canary) (Output, error) {
	target, err := r.getDeployment(ctx, c.Namespace, c.Spec.TargetRef.Name)
	if err != nil {
		return Output{}, err
	}
	var primary *appsv1.Deployment
	if target != nil {
		if err := r.ensureServices(ctx, c, target); err != nil {
			return Output{}, r.invalid(c, err)
		}
		if primary, err = r.ensurePrimary(ctx, c, target); err != nil {
			return Output{}, r.invalid(c, err)
		}
	}

	key := client.ObjectKeyFromObject(c)
	conf, err := r.Router.SetWeight(ctx, key, c.Status.CanaryWeight)
	if err != nil {
		return Output{}, fmt.Errorf("failed to set weight %d: %w", c.Status.CanaryWeight, err)
	}
	in := Input{Canary: c, Now: r.Clock.Now(), Traffic: conf}
	if target != nil {
		in.Target = observe(target, TemplateHash(&target.Spec.Template))
	}
	if primary != nil {
		in.Primary = observe(primary, primary.Annotations[RevisionAnnotation])
	}
	out := Decide(in)
	if out.NeedChecks {
		in.Checked, in.Verdicts = true, r.Checker.Check(ctx, c)
		out = Decide(in)
	}
	if err := r.act(ctx, c, target, primary, &out); err != nil {
		return Output{}, err
	}
	c.Status = out.Status
	return out, nil
}

// act carries out the decision's actions in order.
func (r *Reconciler) act(ctx context.Context, c *v1alpha1.Canary, target, primary *appsv1.Deployment, out *Output) error {
	log := ctrl.LoggerFrom(ctx)
	for _, a := range out.Actions {
		switch a.Kind {
		case ActionSetWeight:
			conf, err := r.Router.SetWeight(ctx, client.ObjectKeyFromObject(c), a.Weight)
			if err != nil {
				return fmt.Errorf("failed to set weight %d: %w", a.Weight, err)
			}
			out.Status.Traffic = TrafficStatus(a.Weight, conf)
			log.Info("weight set", "weight", a.Weight, "confirmed", conf.Confirmed)
		case ActionScaleTarget:
			if err := r.scale(ctx, target, a.Replicas); err != nil {
				return err
			}
			log.Info("target scaled", "deployment", target.Name, "replicas", a.Replicas)
		case ActionPromote:
			if primary == nil {
				return fmt.Errorf("failed to promote: Deployment %s not found", c.GetPrimaryName())
			}
			patch := client.MergeFrom(primary.DeepCopy())
			if err := setPrimarySpec(c, primary, target); err != nil {
				return err
			}
			if err := r.Patch(ctx, primary, patch); err != nil {
				return fmt.Errorf("failed to promote to %s: %w", primary.Name, err)
			}
			log.Info("template copied to the primary", "deployment", primary.Name, "revision", primary.Annotations[RevisionAnnotation])
		default:
			return fmt.Errorf("unknown action %q", a.Kind)
		}
	}
	return nil
}

func (r *Reconciler) scale(ctx context.Context, d *appsv1.Deployment, n int32) error {
	if d.Spec.Replicas != nil && *d.Spec.Replicas == n {
		return nil
	}
	patch := client.MergeFrom(d.DeepCopy())
	d.Spec.Replicas = &n
	if err := r.Patch(ctx, d, patch); err != nil {
		return fmt.Errorf("failed to scale %s to %d: %w", d.Name, n, err)
	}
	return nil
}

// invalid turns a problem that only the user can fix into a Ready=False
// condition and a terminal error; other errors pass through.
func (r *Reconciler) invalid(c *v1alpha1.Canary, err error) error {
	if !errors.Is(err, errInvalidTarget) {
		return err
	}
	apimeta.SetStatusCondition(&c.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonInvalidTarget,
		Message: err.Error(), ObservedGeneration: c.Generation,
	})
	return reconcile.TerminalError(err)
}

func (r *Reconciler) getDeployment(ctx context.Context, ns, name string) (*appsv1.Deployment, error) {
	d := &appsv1.Deployment{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, d); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to get Deployment %s: %w", name, err)
	}
	return d, nil
}

// ensurePrimary creates the primary from the target when it is missing. It
// returns nil when the primary was created but is not in the cache yet.
func (r *Reconciler) ensurePrimary(ctx context.Context, c *v1alpha1.Canary, target *appsv1.Deployment) (*appsv1.Deployment, error) {
	p, err := r.getDeployment(ctx, c.Namespace, c.GetPrimaryName())
	if err != nil {
		return nil, err
	}
	if p != nil {
		if !metav1.IsControlledBy(p, c) {
			return nil, fmt.Errorf("%w: Deployment %s exists and does not belong to this Canary", errInvalidTarget, p.Name)
		}
		return p, nil
	}
	if p, err = newPrimary(c, target); err != nil {
		return nil, err
	}
	if err := controllerutil.SetControllerReference(c, p, r.Scheme()); err != nil {
		return nil, fmt.Errorf("failed to own %s: %w", p.Name, err)
	}
	if err := r.Create(ctx, p); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to create %s: %w", p.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("primary created", "deployment", p.Name)
	return p, nil
}

// ensureServices creates the Canary's three Services or brings their
// selectors and ports back to what they must be. A Service that clients
// already called before the Canary existed is adopted: weir points it at
// the primary and points it back at the target when the Canary goes.
func (r *Reconciler) ensureServices(ctx context.Context, c *v1alpha1.Canary, target *appsv1.Deployment) error {
	svcs, err := services(c, target)
	if err != nil {
		return err
	}
	for _, want := range svcs {
		got := &corev1.Service{}
		err := r.Get(ctx, client.ObjectKeyFromObject(want), got)
		switch {
		case apierrors.IsNotFound(err):
			if err := controllerutil.SetControllerReference(c, want, r.Scheme()); err != nil {
				return fmt.Errorf("failed to own %s: %w", want.Name, err)
			}
			if err := r.Create(ctx, want); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("failed to create Service %s: %w", want.Name, err)
			}
			continue
		case err != nil:
			return fmt.Errorf("failed to get Service %s: %w", want.Name, err)
		}
		orig := got.DeepCopy()
		switch {
		case metav1.IsControlledBy(got, c):
			got.Spec.Selector = want.Spec.Selector
			got.Spec.Ports = mergePorts(got.Spec.Ports, want.Spec.Ports)
			maps.Copy(labelsOf(got), want.Labels)
		case want.Name == c.GetServiceName() && metav1.GetControllerOf(got) == nil &&
			(got.Annotations[AdoptedAnnotation] == "" || got.Annotations[AdoptedAnnotation] == c.Name):
			got.Spec.Selector = want.Spec.Selector
			if got.Annotations == nil {
				got.Annotations = map[string]string{}
			}
			got.Annotations[AdoptedAnnotation] = c.Name
		default:
			return fmt.Errorf("%w: Service %s exists and does not belong to this Canary", errInvalidTarget, got.Name)
		}
		if equality.Semantic.DeepEqual(orig, got) {
			continue
		}
		if err := r.Patch(ctx, got, client.MergeFrom(orig)); err != nil {
			return fmt.Errorf("failed to update Service %s: %w", got.Name, err)
		}
	}
	return nil
}

func labelsOf(o metav1.Object) map[string]string {
	if o.GetLabels() == nil {
		o.SetLabels(map[string]string{})
	}
	return o.GetLabels()
}

// mergePorts returns want's ports, keeping the node ports the API server
// allotted to got's.
func mergePorts(got, want []corev1.ServicePort) []corev1.ServicePort {
	out := make([]corev1.ServicePort, len(want))
	for i, p := range want {
		for _, g := range got {
			if g.Port == p.Port && g.Protocol == p.Protocol {
				p.NodePort = g.NodePort
			}
		}
		out[i] = p
	}
	return out
}

// patchStatus writes the status once, when it changed. The optimistic
// lock makes a write based on a stale read fail instead of going back in
// time.
func (r *Reconciler) patchStatus(ctx context.Context, before, c *v1alpha1.Canary) error {
	if equality.Semantic.DeepEqual(before.Status, c.Status) {
		return nil
	}
	patch := client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})
	if err := r.Status().Patch(ctx, c, patch); err != nil {
		return fmt.Errorf("failed to write the status: %w", err)
	}
	return nil
}

// record records the decision's Events on the Canary.
func (r *Reconciler) record(c *v1alpha1.Canary, out Output) {
	for _, e := range out.Events {
		r.Recorder.AnnotatedEventf(c, e.Annotations, e.Type, e.Reason, "%s", e.Message)
	}
}

// finalize gives the target its replicas (and an adopted Service its
// selector) back, waits for it up to the progress deadline, and lets the
// Canary go; the garbage collector removes what weir owned.
func (r *Reconciler) finalize(ctx context.Context, c *v1alpha1.Canary) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(c, v1alpha1.Finalizer) {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx)
	target, err := r.getDeployment(ctx, c.Namespace, c.Spec.TargetRef.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if target != nil {
		if err := r.handBack(ctx, c, target); err != nil {
			return ctrl.Result{}, err
		}
		if ready, msg := deploymentReady(target); !ready && r.Clock.Since(c.DeletionTimestamp.Time) < c.Spec.GetProgressDeadline() {
			log.Info("Canary deleted: waiting for the target to serve again", "deployment", target.Name, "status", msg)
			return ctrl.Result{RequeueAfter: finalizePoll}, nil
		}
	}
	r.forget(client.ObjectKeyFromObject(c))
	patch := client.MergeFrom(c.DeepCopy())
	controllerutil.RemoveFinalizer(c, v1alpha1.Finalizer)
	if err := r.Patch(ctx, c, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to remove the finalizer: %w", err)
	}
	log.Info("Canary deleted: target handed back", "deployment", c.Spec.TargetRef.Name)
	return ctrl.Result{}, nil
}

// handBack scales the target back up and points an adopted Service at it.
func (r *Reconciler) handBack(ctx context.Context, c *v1alpha1.Canary, target *appsv1.Deployment) error {
	if target.Spec.Replicas != nil && *target.Spec.Replicas == 0 {
		n := int32(1)
		if p, err := r.getDeployment(ctx, c.Namespace, c.GetPrimaryName()); err != nil {
			return err
		} else if p != nil && p.Spec.Replicas != nil && *p.Spec.Replicas > 0 {
			n = *p.Spec.Replicas
		}
		if err := r.scale(ctx, target, n); err != nil {
			return err
		}
	}
	svc := &corev1.Service{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: c.Namespace, Name: c.GetServiceName()}, svc); err != nil {
		return client.IgnoreNotFound(err)
	}
	sel, err := targetSelector(target)
	if err != nil || svc.Annotations[AdoptedAnnotation] != c.Name {
		return nil
	}
	patch := client.MergeFrom(svc.DeepCopy())
	svc.Spec.Selector = sel
	delete(svc.Annotations, AdoptedAnnotation)
	if err := r.Patch(ctx, svc, patch); err != nil {
		return fmt.Errorf("failed to point Service %s back at %s: %w", svc.Name, target.Name, err)
	}
	return nil
}

// forget drops what the router and the metrics hold for a Canary.
func (r *Reconciler) forget(key types.NamespacedName) {
	r.Router.Forget(key)
	forgetMetrics(key.Namespace, key.Name)
}
