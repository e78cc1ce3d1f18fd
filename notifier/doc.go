// Package notifier turns the Kubernetes Events weir records on a Canary into
// messages for people: Slack (through github.com/slack-go/slack, by incoming
// webhook or by bot token and chat.postMessage) and generic JSON webhooks.
//
// # From Event to message
//
// The reconciler never talks to a sink. It records core/v1 Events with the
// reasons and annotations of canary/v1alpha1/events.go. The notifier keeps a
// cache of the Events whose involvedObject is a weir Canary and reconciles
// per Canary: it sorts the Canary's Events by when they were recorded, keeps
// those the reason table sends (weight steps only with
// --notify-weight-advanced), resolves the Canary's alerts (AlertProvider and
// Secret; the --slack-* default for Canaries without alerts), filters by each
// alert's severity and hands each message to the Dispatcher. An alert that
// names a missing provider or Secret is reported as a Warning Event
// AlertProviderInvalid on the Canary and counted as
// weir_notifications_total{result="invalid"}; the other alerts still get the
// message.
//
// # Delivery
//
// The Dispatcher has one bounded FIFO queue and one goroutine per provider,
// so a slow or hanging provider holds up only itself, and enqueueing never
// blocks. A full queue drops its oldest message (result="dropped"): the
// newest says the most about where a rollout is. Each attempt has a timeout;
// failures are retried with exponential back-off, or after Slack's (or the
// webhook's) Retry-After on a 429. Rejections (invalid_auth,
// channel_not_found, 4xx) are not retried.
//
// # Once only
//
// A message is identified by its Canary, revision, transition (the
// weir.dev/transition annotation) and provider. Once delivered, its Event is
// annotated weir.dev/notified-<provider>; annotated Events, and other Events
// of a transition already marked, are not sent again, also not by a
// restarted controller. A message that could not be delivered leaves its
// Event unmarked, so the next start tries again.
//
// +kubebuilder:rbac:groups="",resources=events,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=weir.dev,resources=alertproviders,verbs=get;list;watch
// +kubebuilder:rbac:groups=weir.dev,resources=canaries,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
package notifier
