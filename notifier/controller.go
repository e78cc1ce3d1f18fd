package notifier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	weirv1 "github.com/weir-dev/weir/canary/v1alpha1"
)

// NotifiedAnnotationPrefix starts the annotation the notifier puts on an
// Event once its message was delivered to a provider (or rejected by it for
// good): weir.dev/notified-<provider>. Annotated Events are never sent
// again to that provider, also not by a restarted controller.
const NotifiedAnnotationPrefix = weirv1.AnnotationPrefix + "notified-"

// Values of the notified annotation.
const (
	NotifiedSent     = "sent"
	NotifiedRejected = "rejected"
)

// involvedNameIndex indexes the Event cache by the Canary's name.
const involvedNameIndex = "involvedObject.name"

// invalidName matches what may not appear in an annotation's name part.
var invalidName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// NotifiedAnnotation is the annotation that marks an Event as delivered to
// provider, e.g. weir.dev/notified-test.slack. Long names are shortened
// with a hash to fit the 63 characters of an annotation name.
func NotifiedAnnotation(provider string) string {
	const limit = 63 - len("notified-")
	name := invalidName.ReplaceAllString(provider, ".")
	if len(name) > limit {
		sum := sha256.Sum256([]byte(provider))
		name = name[:limit-9] + "-" + hex.EncodeToString(sum[:4])
	}
	return NotifiedAnnotationPrefix + name
}

// Controller watches the Events recorded on Canaries and hands the ones
// worth a message to the Dispatcher. It reconciles per Canary: all of a
// Canary's Events, sorted by when they were first recorded, so its messages
// go out in order even when a restart finds a backlog (an informer's initial
// list comes in no particular order). Its reconcile only reads caches and
// enqueues; it never waits for a sink.
type Controller struct {
	// Events reads the cache of Canary Events, indexed by involvedObject.name.
	Events client.Reader
	// Client reads Canaries and patches the notified mark onto Events.
	Client client.Client
	// Resolver turns a Canary's alerts into sinks.
	Resolver *Resolver
	// Dispatcher delivers in the background.
	Dispatcher *Dispatcher
	// Recorder records AlertProviderInvalid on the Canary.
	Recorder record.EventRecorder
	// Rules decide which Events are sent.
	Rules Rules
	// MaxAge skips Events last recorded longer ago than this (zero: none
	// are skipped), so a first start does not replay the past hour.
	MaxAge time.Duration
	// Clock tells the time for MaxAge.
	Clock clock.PassiveClock

	mu sync.Mutex
	// claimed holds the keys of messages in flight or sent by this process,
	// with when they were claimed.
	claimed map[string]time.Time
	// looked holds the UIDs of the Events this process looked at, so that a
	// bad alert is reported once per Event, not at every reconcile.
	looked map[types.UID]time.Time
}

// pending is an Event worth a message, with the Kubernetes Event it is from.
type pending struct {
	kev *corev1.Event
	ev  Event
}

// Reconcile looks at the Events of the Canary req names.
func (c *Controller) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	var list corev1.EventList
	if err := c.Events.List(ctx, &list, client.InNamespace(req.Namespace),
		client.MatchingFields{involvedNameIndex: req.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to list events of canary %s: %w", req.NamespacedName, err)
	}
	events := make([]*corev1.Event, 0, len(list.Items))
	for i := range list.Items {
		events = append(events, &list.Items[i])
	}
	sortEvents(events)

	var todo []pending
	for _, kev := range events {
		ev, ok := c.Rules.FromKubeEvent(kev)
		if !ok {
			continue
		}
		if c.MaxAge > 0 && c.Clock != nil && c.Clock.Since(ev.Time) > c.MaxAge {
			log.V(1).Info("event too old to notify, not sent", "event", kev.Name, "reason", kev.Reason, "age", c.Clock.Since(ev.Time).String())
			continue
		}
		todo = append(todo, pending{kev: kev, ev: ev})
	}
	if len(todo) == 0 {
		return ctrl.Result{}, nil
	}

	var canary weirv1.Canary
	if err := c.Client.Get(ctx, req.NamespacedName, &canary); err != nil {
		if apierrors.IsNotFound(err) {
			log.V(1).Info("canary gone, its events are not sent")
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("failed to get canary %s: %w", req.NamespacedName, err)
	}
	targets, problems, err := c.Resolver.Resolve(ctx, &canary)
	if err != nil {
		return ctrl.Result{}, err
	}
	if c.firstLook(todo) {
		c.report(&canary, problems)
	}
	sent := sentTransitions(events, targets)

	for _, p := range todo {
		if p.kev.InvolvedObject.UID != "" && p.kev.InvolvedObject.UID != canary.UID {
			continue // an earlier Canary of the same name
		}
		p.ev.Target = canary.Spec.TargetRef.Kind + "/" + canary.Spec.TargetRef.Name
		for _, t := range targets {
			mark := NotifiedAnnotation(t.Provider)
			if p.ev.Severity < t.MinSeverity || p.kev.Annotations[mark] != "" || sent[mark][transitionOf(p.kev)] {
				continue
			}
			key := dedupKey(p.kev, t.Provider)
			if !c.claim(key) {
				continue
			}
			log.V(1).Info("message queued", "provider", t.Provider, "event", p.kev.Name, "reason", p.kev.Reason)
			c.Dispatcher.Enqueue(Delivery{
				Provider: t.Provider,
				Sink:     t.Sink,
				Event:    p.ev,
				Done:     c.done(types.NamespacedName{Namespace: p.kev.Namespace, Name: p.kev.Name}, mark, key),
			})
		}
	}
	return ctrl.Result{}, nil
}

// report records an AlertProviderInvalid Event on the Canary per alert
// that cannot be resolved, and counts it. Repeats are folded into one Event
// with a count by the Event recorder.
func (c *Controller) report(canary *weirv1.Canary, problems []Problem) {
	for _, p := range problems {
		notificationsTotal.WithLabelValues(p.Provider, ResultInvalid).Inc()
		c.Recorder.AnnotatedEventf(canary, map[string]string{weirv1.AnnotationTransition: "alert/" + p.Alert},
			corev1.EventTypeWarning, weirv1.EventAlertProviderInvalid,
			"alert %s: %v; its messages are not sent until this is fixed", p.Alert, p.Err)
	}
}

// sortEvents orders a Canary's Events by when they were first recorded:
// eventTime (microseconds; weir's reconciler sets it), else firstTimestamp
// (seconds). Events of the same instant go by name, which client-go's
// recorder makes from the nanosecond of recording.
func sortEvents(events []*corev1.Event) {
	first := func(e *corev1.Event) time.Time {
		switch {
		case !e.EventTime.IsZero():
			return e.EventTime.Time
		case !e.FirstTimestamp.IsZero():
			return e.FirstTimestamp.Time
		default:
			return e.CreationTimestamp.Time
		}
	}
	sort.SliceStable(events, func(i, j int) bool {
		ti, tj := first(events[i]), first(events[j])
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return events[i].Name < events[j].Name
	})
}

// transitionOf is the revision and transition an Event reports, empty
// when it names no transition.
func transitionOf(kev *corev1.Event) string {
	tr := kev.Annotations[weirv1.AnnotationTransition]
	if tr == "" {
		return ""
	}
	return kev.Annotations[weirv1.AnnotationRevision] + "/" + tr
}

// sentTransitions maps each target's notified annotation to the
// transitions already marked sent on some Event: the reconciler may record
// one transition twice (e.g. after its own restart), and the second Event
// must not send it again.
func sentTransitions(events []*corev1.Event, targets []Target) map[string]map[string]bool {
	sent := map[string]map[string]bool{}
	for _, t := range targets {
		mark := NotifiedAnnotation(t.Provider)
		sent[mark] = map[string]bool{}
		for _, e := range events {
			if tr := transitionOf(e); tr != "" && e.Annotations[mark] != "" {
				sent[mark][tr] = true
			}
		}
	}
	return sent
}

// dedupKey identifies a message: the Canary, revision and transition of
// the Event (or the Event itself when it names no transition) and the
// provider.
func dedupKey(kev *corev1.Event, provider string) string {
	tr := transitionOf(kev)
	if tr == "" {
		return "uid/" + string(kev.UID) + "/" + provider
	}
	return kev.InvolvedObject.Namespace + "/" + kev.InvolvedObject.Name + "/" + tr + "/" + provider
}

// forgetAfter is how long the controller remembers claims and looks;
// Events live one hour by default.
const forgetAfter = 3 * time.Hour

// prune forgets entries of m older than forgetAfter.
func prune[K comparable](m map[K]time.Time, now time.Time) {
	for k, at := range m {
		if now.Sub(at) > forgetAfter {
			delete(m, k)
		}
	}
}

// firstLook reports whether any of todo is new to this process, and
// remembers them.
func (c *Controller) firstLook(todo []pending) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.looked == nil {
		c.looked = map[types.UID]time.Time{}
	}
	now := time.Now()
	prune(c.looked, now)
	fresh := false
	for _, p := range todo {
		if _, ok := c.looked[p.kev.UID]; !ok {
			c.looked[p.kev.UID] = now
			fresh = true
		}
	}
	return fresh
}

// claim takes key for this process; false when it is already taken.
func (c *Controller) claim(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.claimed == nil {
		c.claimed = map[string]time.Time{}
	}
	now := time.Now()
	prune(c.claimed, now)
	if _, ok := c.claimed[key]; ok {
		return false
	}
	c.claimed[key] = now
	return true
}

// release gives key back, so that a later update of the Event, or another
// Event of the same transition, may try again.
func (c *Controller) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.claimed, key)
}

// done returns the Delivery callback: a delivered (or for good rejected)
// message marks its Event with the notified annotation; one that was not
// delivered releases its key and leaves the Event unmarked, so the next
// start tries again.
func (c *Controller) done(event types.NamespacedName, mark, key string) func(context.Context, error) {
	return func(ctx context.Context, err error) {
		value := NotifiedSent
		if err != nil {
			var derr *DeliveryError
			if !errors.As(err, &derr) || !derr.Permanent {
				c.release(key)
				return
			}
			value = NotifiedRejected
		}
		log := ctrl.LoggerFrom(ctx).WithValues("event", event.String())
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{mark: value}}})
		// A message that went out is marked even while the controller
		// stops, or the next start would send it again.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		obj := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: event.Namespace, Name: event.Name}}
		if err := c.Client.Patch(pctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
			// Still claimed: this process does not resend; a restart might.
			log.Error(err, "failed to mark event as notified", "annotation", mark)
		}
	}
}

// Options configure the notifier.
type Options struct {
	// Rules decide which Events are sent.
	Rules Rules
	// Default is the global Slack sink for Canaries without alerts; unused
	// when it names neither a webhook URL nor a token.
	Default SlackOptions
	// SlackAPIURL is the Web API base URL for token-based Slack providers
	// without an address of their own (enterprise gateways, tests).
	SlackAPIURL string
	// Queue tunes delivery.
	Queue QueueOptions
	// MaxAge skips Events older than this; zero keeps all.
	MaxAge time.Duration
	// HTTPClient sends to the sinks; a client of its own when nil.
	HTTPClient *http.Client
}

// Setup adds the notifier to mgr: a cache of the Events whose
// involvedObject is a weir Canary, the Controller over it, and the
// Dispatcher.
func Setup(mgr ctrl.Manager, o Options) error {
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	var def Notifier
	if o.Default.WebhookURL != "" || o.Default.Token != "" {
		d := o.Default
		d.HTTPClient = hc
		if d.APIURL == "" {
			d.APIURL = o.SlackAPIURL
		}
		s, err := NewSlack(d)
		if err != nil {
			return fmt.Errorf("failed to configure the default slack notifier: %w", err)
		}
		def = s
	}

	events, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(),
		Mapper: mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Event{}: {Field: fields.SelectorFromSet(fields.Set{
				"involvedObject.kind":       weirv1.CanaryKind,
				"involvedObject.apiVersion": weirv1.GroupVersion.String(),
			})},
		},
	})
	if err != nil {
		return fmt.Errorf("failed to create the event cache: %w", err)
	}
	if err := events.IndexField(context.Background(), &corev1.Event{}, involvedNameIndex, func(o client.Object) []string {
		return []string{o.(*corev1.Event).InvolvedObject.Name}
	}); err != nil {
		return fmt.Errorf("failed to index events: %w", err)
	}
	if err := mgr.Add(events); err != nil {
		return fmt.Errorf("failed to add the event cache: %w", err)
	}

	d := NewDispatcher(o.Queue)
	if err := mgr.Add(d); err != nil {
		return fmt.Errorf("failed to add the notification dispatcher: %w", err)
	}
	c := &Controller{
		Events: events,
		Client: mgr.GetClient(),
		Resolver: &Resolver{
			Client:      mgr.GetClient(),
			Secrets:     mgr.GetAPIReader(),
			HTTPClient:  hc,
			SlackAPIURL: o.SlackAPIURL,
			Default:     def,
		},
		Dispatcher: d,
		Recorder:   mgr.GetEventRecorderFor("weir-notifier"), //nolint:staticcheck // core/v1 Events, like the reconciler's.
		Rules:      o.Rules,
		MaxAge:     o.MaxAge,
		Clock:      clock.RealClock{},
	}
	// Only new Events of reasons that may be sent wake the controller: not
	// its own AlertProviderInvalid Events, not its notified marks, not
	// deletions.
	worthALook := func(e *corev1.Event) bool { return IsCanaryEvent(e) && reasons[e.Reason].send }
	isCanaryEvent := predicate.TypedFuncs[*corev1.Event]{
		CreateFunc: func(e event.TypedCreateEvent[*corev1.Event]) bool { return worthALook(e.Object) },
		UpdateFunc: func(e event.TypedUpdateEvent[*corev1.Event]) bool {
			return worthALook(e.ObjectNew) && e.ObjectNew.Count != e.ObjectOld.Count
		},
		DeleteFunc:  func(event.TypedDeleteEvent[*corev1.Event]) bool { return false },
		GenericFunc: func(e event.TypedGenericEvent[*corev1.Event]) bool { return worthALook(e.Object) },
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("notifier").
		WatchesRawSource(source.Kind(events, &corev1.Event{}, handler.TypedEnqueueRequestsFromMapFunc(canaryOf), isCanaryEvent)).
		// One worker: the messages of different Canaries go out in the
		// order their Canaries were looked at.
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(c)
	if err != nil {
		return fmt.Errorf("failed to set up the notifier controller: %w", err)
	}
	return nil
}

// canaryOf maps an Event to the Canary it was recorded on.
func canaryOf(_ context.Context, e *corev1.Event) []reconcile.Request {
	ns := e.InvolvedObject.Namespace
	if ns == "" {
		ns = e.Namespace
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: e.InvolvedObject.Name}}}
}
