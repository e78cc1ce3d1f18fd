package canary

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
)

// ControllerName is the component that records weir's Events.
const ControllerName = "weir-controller"

// NewEventRecorder returns a recorder for the Canary's Events and a function
// that flushes and stops it.
//
// client-go's default correlator merges more than ten Events of one reason
// and object within ten minutes into one "(combined from similar events)"
// Event without annotations, and drops Events of an object beyond a burst of
// 25. weir's Events are transitions that the notifier turns into messages,
// each with its own annotations, and there are few of them per rollout: this
// recorder never merges Events with different messages and allows a larger
// burst. Identical Events are still counted on one object.
func NewEventRecorder(cfg *rest.Config, scheme *runtime.Scheme) (record.EventRecorder, func(), error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to create the events client: %w", err)
	}
	b := record.NewBroadcaster(record.WithCorrelatorOptions(record.CorrelatorOptions{
		KeyFunc: func(e *corev1.Event) (string, string) {
			key, local := record.EventAggregatorByReasonFunc(e)
			return key + "\x00" + e.Message, local
		},
		BurstSize: 200,
		QPS:       1,
	}))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	rec := b.NewRecorder(scheme, corev1.EventSource{Component: ControllerName})
	return rec, b.Shutdown, nil
}
