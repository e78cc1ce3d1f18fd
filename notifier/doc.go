// Package notifier turns the Kubernetes Events weir records on a Canary into
// messages for people: Slack (through github.com/slack-go/slack, by incoming
// webhook or by bot token and chat.postMessage) and generic JSON webhooks.
//
// The reconciler never talks to a sink. It records Events with the reasons
// and annotations of canary/v1alpha1/events.go; the notifier watches those
// Events, decides what is worth a message (a table keyed by reason), resolves
// the Canary's alerts to sinks, and hands each message to a bounded,
// asynchronous queue per provider. Delivery retries with back-off, honours
// Slack's Retry-After, and marks each delivered Event with the annotation
// weir.dev/notified-<provider> so that a restarted controller does not send it
// again.
//
// +kubebuilder:rbac:groups="",resources=events,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=weir.dev,resources=alertproviders,verbs=get;list;watch
// +kubebuilder:rbac:groups=weir.dev,resources=canaries,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
package notifier
