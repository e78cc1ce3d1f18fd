package canary

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/tools/reference"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
)

// ControllerName is the component that records weir's Events.
const ControllerName = "weir-controller"

// eventTimeout bounds the creation of one Event.
const eventTimeout = 5 * time.Second

// NewEventRecorder returns the recorder of the Canary's Events.
//
// Every Event it records is an Event object of its own. client-go's
// recorder correlates: an Event whose message equals an earlier one's is
// merged into that earlier object (count+1, the old annotations kept), more
// than ten of one reason within ten minutes become one "(combined from
// similar events)" Event without annotations, and an object's Events beyond
// a burst of 25 are dropped. weir's Events are transitions that the
// notifier turns into messages from their annotations, and the same
// message can stand for two transitions (the weight going 0 → 10 in two
// analyses): none of them may be merged or dropped. There are a handful per
// rollout, so they are written as they come, at once.
func NewEventRecorder(cfg *rest.Config, scheme *runtime.Scheme) (record.EventRecorder, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to create the events client: %w", err)
	}
	host, _ := os.Hostname()
	if host == "" {
		host = ControllerName
	}
	return &eventRecorder{
		events:   cs.CoreV1(),
		scheme:   scheme,
		instance: host,
		clock:    clock.RealClock{},
		log:      ctrl.Log.WithName("events"),
	}, nil
}

// eventRecorder writes one core/v1 Event per call.
type eventRecorder struct {
	events   typedcorev1.EventsGetter
	scheme   *runtime.Scheme
	instance string
	clock    clock.PassiveClock
	log      logr.Logger
}

var _ record.EventRecorder = (*eventRecorder)(nil)

// Event implements record.EventRecorder.
func (r *eventRecorder) Event(obj runtime.Object, eventtype, reason, message string) {
	r.AnnotatedEventf(obj, nil, eventtype, reason, "%s", message)
}

// Eventf implements record.EventRecorder.
func (r *eventRecorder) Eventf(obj runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	r.AnnotatedEventf(obj, nil, eventtype, reason, messageFmt, args...)
}

// AnnotatedEventf implements record.EventRecorder. Like client-go's
// recorder it logs a failure rather than returning it: an Event is never
// worth failing a reconcile for.
func (r *eventRecorder) AnnotatedEventf(obj runtime.Object, annotations map[string]string, eventtype, reason, messageFmt string, args ...any) {
	ref, err := reference.GetReference(r.scheme, obj)
	if err != nil {
		r.log.Error(err, "cannot refer to the object of an Event", "reason", reason)
		return
	}
	t := r.clock.Now()
	now := metav1.NewTime(t)
	e := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: ref.Name + ".",
			Namespace:    ref.Namespace,
			Annotations:  annotations,
		},
		InvolvedObject: *ref,
		Reason:         reason,
		Message:        fmt.Sprintf(messageFmt, args...),
		Type:           eventtype,
		Source:         corev1.EventSource{Component: ControllerName, Host: r.instance},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
		// EventTime orders Events of one second; with it the API server
		// wants the reporting fields and an action.
		EventTime:           metav1.NewMicroTime(t),
		Action:              reason,
		ReportingController: "weir.dev/" + ControllerName,
		ReportingInstance:   r.instance,
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if _, err := r.events.Events(ref.Namespace).Create(ctx, e, metav1.CreateOptions{}); err != nil {
		r.log.Error(err, "failed to record an Event", "object", ref.Name, "namespace", ref.Namespace, "reason", reason, "message", e.Message)
	}
}
