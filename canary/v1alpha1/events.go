package v1alpha1

// Reasons of the Kubernetes Events weir records on a Canary. The reconciler
// records them; the notifier turns exactly these into messages, so what
// `kubectl describe canary` shows and what Slack shows always agree.
const (
	// EventInitialized: the primary is ready and serves all traffic.
	EventInitialized = "Initialized"
	// EventNewRevision: a new pod template was detected; analysis starts.
	EventNewRevision = "NewRevision"
	// EventWaitingForConfirmation: the data plane has not yet acknowledged
	// the weight of the current step within the confirmation timeout.
	EventWaitingForConfirmation = "WaitingForConfirmation"
	// EventWeightAdvanced: the canary weight moved to the next step.
	EventWeightAdvanced = "WeightAdvanced"
	// EventCheckFailed: a metric was out of its bound or had no data.
	EventCheckFailed = "CheckFailed"
	// EventPromoting: all steps passed; the primary is being updated.
	EventPromoting = "Promoting"
	// EventPromoted: the new version is the primary and serves all traffic.
	EventPromoted = "Promoted"
	// EventRolledBack: traffic went back to the primary and the canary
	// was scaled to zero. The annotation AnnotationRollbackCause says why.
	EventRolledBack = "RolledBack"
	// EventProgressDeadlineExceeded: the canary or the primary did not
	// become ready within progressDeadlineSeconds.
	EventProgressDeadlineExceeded = "ProgressDeadlineExceeded"
	// EventXDSRejected: the data plane config for this Canary failed
	// validation or was NACKed; the last good config stays in force.
	EventXDSRejected = "XDSRejected"
	// EventAlertProviderInvalid: an alert names a provider or Secret that
	// is missing or unusable.
	EventAlertProviderInvalid = "AlertProviderInvalid"
)

// Annotations carried by weir's Events, so that the notifier can build a
// message with the numbers without parsing the Event's text.
const (
	AnnotationPrefix = "weir.dev/"
	// AnnotationRevision is the hash of the canary pod template.
	AnnotationRevision = AnnotationPrefix + "revision"
	// AnnotationImage is the canary's image(s), comma-separated.
	AnnotationImage = AnnotationPrefix + "image"
	// AnnotationPrimaryImage is the primary's image(s) before this rollout.
	AnnotationPrimaryImage = AnnotationPrefix + "primary-image"
	// AnnotationWeight is the canary weight when the Event was recorded.
	AnnotationWeight = AnnotationPrefix + "weight"
	// AnnotationFailedChecks and AnnotationThreshold count failed checks.
	AnnotationFailedChecks = AnnotationPrefix + "failed-checks"
	AnnotationThreshold    = AnnotationPrefix + "threshold"
	// AnnotationMetric, AnnotationValue and AnnotationBound describe a
	// failed check: the metric, the value seen, the bound it broke.
	AnnotationMetric = AnnotationPrefix + "metric"
	AnnotationValue  = AnnotationPrefix + "value"
	AnnotationBound  = AnnotationPrefix + "bound"
	// AnnotationCheckReason is OutOfRange, NoData or QueryError.
	AnnotationCheckReason = AnnotationPrefix + "check-reason"
	// AnnotationRollbackCause is threshold, progress-deadline or manual.
	AnnotationRollbackCause = AnnotationPrefix + "rollback-cause"
	// AnnotationTransition identifies the transition an Event reports
	// (revision, reason and step); the notifier sends each one once.
	AnnotationTransition = AnnotationPrefix + "transition"
)

// Causes of a rollback, the values of AnnotationRollbackCause.
const (
	RollbackCauseThreshold        = "threshold"
	RollbackCauseProgressDeadline = "progress-deadline"
	RollbackCauseManual           = "manual"
)
