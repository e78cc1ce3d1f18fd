package v1alpha1

// Condition types of a Canary.
const (
	// ConditionReady is True when the primary serves all traffic with no
	// rollout in flight (Initialized, Succeeded), Unknown while a revision
	// is analysed or promoted, and False when weir cannot do its job or the
	// last rollout was rolled back.
	ConditionReady = "Ready"
	// ConditionPromoted is True when the primary runs the last revision of
	// the target that weir analysed (or the initial one), False while a
	// revision is under analysis or after it was rolled back.
	ConditionPromoted = "Promoted"
)

// Reasons of the Ready and Promoted conditions.
const (
	// ReasonInitializing (Ready=False): the primary is being created and is
	// not ready yet.
	ReasonInitializing = "Initializing"
	// ReasonInitialized (Ready=True, Promoted=True): the primary runs the
	// target's initial revision and serves all traffic.
	ReasonInitialized = "Initialized"
	// ReasonProgressing (Ready=Unknown, Promoted=False): a new revision is
	// being analysed, promoted or finalised.
	ReasonProgressing = "Progressing"
	// ReasonSucceeded (Ready=True, Promoted=True): the last revision passed
	// its analysis and the primary runs it.
	ReasonSucceeded = "Succeeded"
	// ReasonRolledBack (Ready=False, Promoted=False): the last revision was
	// rolled back; the message says why. The primary serves all traffic.
	ReasonRolledBack = "RolledBack"
	// ReasonProgressDeadlineExceeded (Ready=False): the primary did not
	// become ready within progressDeadlineSeconds while initialising or
	// promoting; weir keeps waiting and traffic stays where it was.
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
	// ReasonTargetNotFound (Ready=False): the Deployment named by
	// spec.targetRef does not exist.
	ReasonTargetNotFound = "TargetNotFound"
	// ReasonInvalidTarget (Ready=False): the target or an object weir
	// would own cannot be used, e.g. a selector without matchLabels or a
	// primary Deployment that belongs to something else.
	ReasonInvalidTarget = "InvalidTarget"
)

// Finalizer lets weir give the target Deployment its replicas back before
// a deleted Canary's primary goes away.
const Finalizer = "weir.dev/finalizer"
