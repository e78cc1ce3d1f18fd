package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// CanaryKind is the kind of the Canary resource.
const CanaryKind = "Canary"

// Names of the built-in metrics. Any other metric name needs a query.
const (
	// MetricRequestSuccessRate is the percentage of requests to the canary
	// that did not answer 5xx; its bound is a minimum.
	MetricRequestSuccessRate = "request-success-rate"
	// MetricErrorRate is the percentage of requests to the canary that
	// answered 5xx; its bound is a maximum.
	MetricErrorRate = "error-rate"
	// MetricRequestDuration is the canary's p99 request duration in
	// milliseconds; its bound is a maximum.
	MetricRequestDuration = "request-duration"
)

// DefaultStepWeights are the canary weights walked through when the analysis
// names neither stepWeights nor stepWeight and maxWeight.
var DefaultStepWeights = []int32{10, 50, 100}

// Canary shifts traffic to a new version of a Deployment in steps, checks
// metrics at every step, and promotes the new version or rolls it back.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:singular=canary,categories={all,weir}
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Weight",type=integer,JSONPath=`.status.canaryWeight`
// +kubebuilder:printcolumn:name="FailedChecks",type=integer,JSONPath=`.status.failedChecks`
// +kubebuilder:printcolumn:name="LastTransitionTime",type=string,JSONPath=`.status.lastTransitionTime`
// +kubebuilder:printcolumn:name="Interval",type=string,JSONPath=`.spec.analysis.interval`,priority=1
// +kubebuilder:printcolumn:name="StepWeights",type=string,JSONPath=`.status.stepWeights`,priority=1
// +kubebuilder:printcolumn:name="MaxWeight",type=integer,JSONPath=`.spec.analysis.maxWeight`,priority=1
// +kubebuilder:printcolumn:name="Primary",type=string,JSONPath=`.status.lastPromotedSpec`,priority=1
type Canary struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec CanarySpec `json:"spec"`
	// +optional
	Status CanaryStatus `json:"status,omitempty"`
}

// CanarySpec is what the user asks for.
type CanarySpec struct {
	// TargetRef names the Deployment whose new versions are analysed. The
	// primary Deployment is named after it: <targetRef.name>-primary.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="targetRef is immutable: create a new Canary to analyse another Deployment"
	// +required
	TargetRef TargetRef `json:"targetRef"`

	// ProgressDeadlineSeconds is how long the canary (or the primary, while
	// promoting) may take to become ready before the rollout is rolled back.
	// +kubebuilder:default=600
	// +kubebuilder:validation:Minimum=1
	// +optional
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`

	// Service describes the Service weir creates for the target and how its
	// traffic is routed.
	// +required
	Service CanaryService `json:"service"`

	// Analysis says how the new version is checked and how traffic moves.
	// +required
	Analysis CanaryAnalysis `json:"analysis"`

	// SkipAnalysis promotes a new version at once, without steps or checks.
	// +optional
	SkipAnalysis bool `json:"skipAnalysis,omitempty"`

	// Suspend stops weir from acting on this Canary; a rollout in progress
	// stays where it is until Suspend is cleared.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// TargetRef names the workload under analysis.
type TargetRef struct {
	// APIVersion of the target; only apps/v1 is supported.
	// +kubebuilder:validation:Enum=apps/v1
	// +kubebuilder:default=apps/v1
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// Kind of the target; only Deployment is supported.
	// +kubebuilder:validation:Enum=Deployment
	// +required
	Kind string `json:"kind"`
	// Name of the target in the Canary's namespace. It names the primary
	// Deployment and, unless service.name is set, the Services, so it must
	// be a DNS label short enough to take the suffix "-primary".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=55
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	// +required
	Name string `json:"name"`
}

// CanaryService describes the Services weir creates for the target and the
// route policy pushed to the sidecars.
type CanaryService struct {
	// Name of the Services weir creates: <name> (the one clients call),
	// <name>-primary and <name>-canary. Defaults to targetRef.name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=55
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Name string `json:"name,omitempty"`
	// Port the Services expose.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +required
	Port int32 `json:"port"`
	// PortName of the Service port.
	// +kubebuilder:default=http
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	PortName string `json:"portName,omitempty"`
	// TargetPort on the pods; defaults to Port.
	// +optional
	TargetPort *intstr.IntOrString `json:"targetPort,omitempty"`
	// Timeout of a whole request, retries included, e.g. "5s".
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// Retries of a failed request.
	// +optional
	Retries *HTTPRetry `json:"retries,omitempty"`
	// OutlierDetection ejects failing pods from both the primary and the
	// canary cluster.
	// +optional
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
}

// HTTPRetry is the retry policy of the route.
type HTTPRetry struct {
	// Attempts is the number of retries after the first try.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +required
	Attempts int32 `json:"attempts"`
	// PerTryTimeout bounds each try, e.g. "1s".
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	PerTryTimeout *metav1.Duration `json:"perTryTimeout,omitempty"`
	// RetryOn lists the conditions that cause a retry, comma-separated,
	// from 5xx, gateway-error, reset, connect-failure, retriable-4xx.
	// +kubebuilder:default="5xx,reset,connect-failure"
	// +kubebuilder:validation:Pattern=`^(5xx|gateway-error|reset|connect-failure|retriable-4xx)(,(5xx|gateway-error|reset|connect-failure|retriable-4xx))*$`
	// +optional
	RetryOn string `json:"retryOn,omitempty"`
}

// OutlierDetection follows Envoy's outlier detection.
type OutlierDetection struct {
	// Consecutive5xxErrors ejects a pod at its Nth consecutive 5xx or
	// connection failure.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +optional
	Consecutive5xxErrors int32 `json:"consecutive5xxErrors,omitempty"`
	// Interval between ejection sweeps.
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// BaseEjectionTime is multiplied by the number of times a pod was
	// ejected to give its ejection time.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	BaseEjectionTime *metav1.Duration `json:"baseEjectionTime,omitempty"`
	// MaxEjectionPercent caps the share of a cluster that may be ejected.
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxEjectionPercent int32 `json:"maxEjectionPercent,omitempty"`
}

// CanaryAnalysis says how a new version is checked and how traffic moves.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.stepWeights) && (has(self.stepWeight) || has(self.maxWeight)))",message="set either stepWeights or stepWeight with maxWeight, not both"
// +kubebuilder:validation:XValidation:rule="has(self.stepWeight) == has(self.maxWeight)",message="stepWeight and maxWeight go together: set both or neither"
// +kubebuilder:validation:XValidation:rule="!has(self.stepWeight) || !has(self.maxWeight) || self.stepWeight <= self.maxWeight",message="stepWeight must not be larger than maxWeight"
type CanaryAnalysis struct {
	// Interval between two checks; each step lasts at least one interval.
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || duration(self) >= duration('1s')",message="interval must be at least 1s"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// Threshold is the number of failed checks that rolls the canary back.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +optional
	Threshold int32 `json:"threshold,omitempty"`
	// StepWeights are the canary weights to walk through, strictly
	// ascending, each 1..100. Defaults to [10, 50, 100] when neither
	// stepWeights nor stepWeight/maxWeight is set.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=100
	// +kubebuilder:validation:XValidation:rule="self.isSorted() && self.all(w, self.exists_one(v, v == w))",message="stepWeights must be strictly ascending, each between 1 and 100, e.g. [10, 50, 100]"
	// +listType=atomic
	// +optional
	StepWeights []int32 `json:"stepWeights,omitempty"`
	// StepWeight is added to the canary weight at every step, up to MaxWeight.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	StepWeight *int32 `json:"stepWeight,omitempty"`
	// MaxWeight is the last canary weight before promotion.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxWeight *int32 `json:"maxWeight,omitempty"`
	// Metrics checked at every step; all must pass for the step to pass.
	// +kubebuilder:validation:MaxItems=20
	// +listType=map
	// +listMapKey=name
	// +optional
	Metrics []CanaryMetric `json:"metrics,omitempty"`
	// Alerts say who hears about this Canary's rollouts.
	// +kubebuilder:validation:MaxItems=20
	// +listType=map
	// +listMapKey=name
	// +optional
	Alerts []CanaryAlert `json:"alerts,omitempty"`
}

// CanaryMetric is one check of the analysis.
//
// +kubebuilder:validation:XValidation:rule="self.name in ['request-success-rate', 'error-rate', 'request-duration'] || has(self.query)",message="a metric that is not built-in (request-success-rate, error-rate, request-duration) needs a query"
type CanaryMetric struct {
	// Name of the metric: a built-in one or a name of your own.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +required
	Name string `json:"name"`
	// ThresholdRange is the range the metric's value must stay within.
	// +required
	ThresholdRange ThresholdRange `json:"thresholdRange"`
	// Interval is the window the metric is computed over, e.g. "1m";
	// defaults to the analysis interval.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$') || duration(self) >= duration('1s')",message="a metric's interval must be at least 1s"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// Query is a PromQL template for a custom metric. It may use
	// {{ namespace }}, {{ target }}, {{ service }} and {{ interval }}.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Query string `json:"query,omitempty"`
}

// ThresholdRange bounds a metric's value.
//
// +kubebuilder:validation:XValidation:rule="has(self.min) || has(self.max)",message="thresholdRange needs min or max"
// +kubebuilder:validation:XValidation:rule="!has(self.min) || !has(self.max) || self.min <= self.max",message="thresholdRange min must not be larger than max"
type ThresholdRange struct {
	// Min is the smallest value that passes.
	// +optional
	Min *float64 `json:"min,omitempty"`
	// Max is the largest value that passes.
	// +optional
	Max *float64 `json:"max,omitempty"`
}

// CanaryAlert sends this Canary's events to an AlertProvider.
type CanaryAlert struct {
	// Name of the alert.
	// +kubebuilder:validation:MinLength=1
	// +required
	Name string `json:"name"`
	// Severity is the least severe event sent: info sends everything, warn
	// sends failed checks and worse, error only rollbacks.
	// +kubebuilder:validation:Enum=info;warn;error
	// +kubebuilder:default=info
	// +optional
	Severity string `json:"severity,omitempty"`
	// ProviderRef names the AlertProvider.
	// +required
	ProviderRef ProviderRef `json:"providerRef"`
}

// ProviderRef names an AlertProvider.
type ProviderRef struct {
	// Name of the AlertProvider.
	// +kubebuilder:validation:MinLength=1
	// +required
	Name string `json:"name"`
	// Namespace of the AlertProvider; defaults to the Canary's.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// CanaryPhase is where a Canary is in its life.
// +kubebuilder:validation:Enum=Initializing;Initialized;Waiting;Progressing;Promoting;Finalising;Succeeded;Failed
type CanaryPhase string

// The phases of a Canary.
const (
	// PhaseInitializing: weir created the primary from the target and
	// waits for it to be ready.
	PhaseInitializing CanaryPhase = "Initializing"
	// PhaseInitialized: the primary serves all traffic, the target is at
	// zero replicas; a change of its pod template starts an analysis.
	PhaseInitialized CanaryPhase = "Initialized"
	// PhaseWaiting: a new revision was detected; the canary is scaled up
	// and weir waits for it to be ready before it gets any traffic.
	PhaseWaiting CanaryPhase = "Waiting"
	// PhaseProgressing: the canary gets the weight of a step and is
	// checked once per interval.
	PhaseProgressing CanaryPhase = "Progressing"
	// PhasePromoting: every step passed; the primary is rolling out the
	// canary's pod template while the canary keeps its weight.
	PhasePromoting CanaryPhase = "Promoting"
	// PhaseFinalising: the primary runs the new revision; traffic goes
	// back to it, then the canary is scaled to zero.
	PhaseFinalising CanaryPhase = "Finalising"
	// PhaseSucceeded: the last revision was promoted.
	PhaseSucceeded CanaryPhase = "Succeeded"
	// PhaseFailed: the last revision was rolled back (failed checks,
	// progress deadline, or the target reverted during the analysis); the
	// primary serves all traffic and the canary is at zero replicas.
	PhaseFailed CanaryPhase = "Failed"
)

// CanaryStatus is what weir observed and did. It is the whole state of a
// rollout: a restarted controller resumes from it alone.
type CanaryStatus struct {
	// ObservedGeneration is the generation last acted upon.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase of the Canary.
	// +optional
	Phase CanaryPhase `json:"phase,omitempty"`
	// CanaryWeight is the share of traffic, in percent, sent to the canary.
	// +kubebuilder:default=0
	// +optional
	CanaryWeight int32 `json:"canaryWeight"`
	// FailedChecks counts failed checks of the current analysis.
	// +kubebuilder:default=0
	// +optional
	FailedChecks int32 `json:"failedChecks"`
	// Iterations counts the checks of the current analysis.
	// +kubebuilder:default=0
	// +optional
	Iterations int32 `json:"iterations"`
	// StepWeights are the canary weights the analysis walks through, as
	// computed from the spec (shown by kubectl get -o wide).
	// +listType=atomic
	// +optional
	StepWeights []int32 `json:"stepWeights,omitempty"`
	// LastAppliedSpec is the hash of the target's pod template last seen:
	// the revision under analysis, or the one last analysed.
	// +optional
	LastAppliedSpec string `json:"lastAppliedSpec,omitempty"`
	// LastPromotedSpec is the hash of the pod template the primary runs.
	// +optional
	LastPromotedSpec string `json:"lastPromotedSpec,omitempty"`
	// LastTransitionTime is when the phase last changed.
	// +optional
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`
	// AnalysisStartTime is when the analysis of LastAppliedSpec started.
	// +optional
	AnalysisStartTime *metav1.Time `json:"analysisStartTime,omitempty"`
	// StepStartTime is when the current weight was confirmed in effect on
	// the data plane; the step's interval counts from here.
	// +optional
	StepStartTime *metav1.Time `json:"stepStartTime,omitempty"`
	// LastCheckTime is when the metrics were last checked; the next check
	// is one interval after the later of this and StepStartTime.
	// +optional
	LastCheckTime *metav1.Time `json:"lastCheckTime,omitempty"`
	// NotReadySince is when the Deployment weir waits for (the canary while
	// analysing, the primary while initialising or promoting) was first
	// seen not ready; progressDeadlineSeconds counts from here.
	// +optional
	NotReadySince *metav1.Time `json:"notReadySince,omitempty"`
	// Traffic reports how far the current weight has reached the sidecars.
	// +optional
	Traffic *TrafficStatus `json:"traffic,omitempty"`
	// LastChecks are the verdicts of the most recent check, one per metric.
	// +listType=atomic
	// +optional
	LastChecks []MetricVerdict `json:"lastChecks,omitempty"`
	// Conditions: Ready and Promoted.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// TrafficStatus reports how far a weight has reached the data plane.
type TrafficStatus struct {
	// Weight is the canary weight requested from the data plane.
	Weight int32 `json:"weight"`
	// Confirmed is true once enough sidecars acknowledged Weight.
	Confirmed bool `json:"confirmed"`
	// TimedOut is true when Weight was not confirmed within the router's
	// confirmation timeout and weir went on without it.
	// +optional
	TimedOut bool `json:"timedOut,omitempty"`
	// AckedProxies is the number of sidecars that acknowledged Weight.
	AckedProxies int32 `json:"ackedProxies"`
	// TotalProxies is the number of connected sidecars.
	TotalProxies int32 `json:"totalProxies"`
	// Message explains what is awaited, if anything.
	// +optional
	Message string `json:"message,omitempty"`
}

// MetricVerdict records one metric's check.
type MetricVerdict struct {
	// Metric is the metric's name.
	Metric string `json:"metric"`
	// Value observed, formatted; empty when there was none.
	// +optional
	Value string `json:"value,omitempty"`
	// Bound the value was held against, e.g. ">= 99" or "<= 500".
	Bound string `json:"bound"`
	// Passed is true when the value was within its bound.
	Passed bool `json:"passed"`
	// Reason is why a check failed: OutOfRange, NoData, QueryError.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message gives the details of a failure, e.g. the query error.
	// +optional
	Message string `json:"message,omitempty"`
}

// +kubebuilder:object:root=true

// CanaryList is a list of Canaries.
type CanaryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Canary `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Canary{}, &CanaryList{})
}

// GetStepWeights returns the canary weights of the analysis, in order:
// stepWeights, or stepWeight, 2×stepWeight, … up to maxWeight, or the
// defaults.
func (a *CanaryAnalysis) GetStepWeights() []int32 {
	switch {
	case len(a.StepWeights) > 0:
		return a.StepWeights
	case a.StepWeight != nil && a.MaxWeight != nil && *a.StepWeight > 0:
		var ws []int32
		for w := *a.StepWeight; w <= *a.MaxWeight; w += *a.StepWeight {
			ws = append(ws, w)
		}
		if ws[len(ws)-1] != *a.MaxWeight {
			ws = append(ws, *a.MaxWeight)
		}
		return ws
	default:
		return DefaultStepWeights
	}
}

// GetInterval returns the analysis interval, 30s when unset.
func (a *CanaryAnalysis) GetInterval() time.Duration {
	if a.Interval == nil || a.Interval.Duration <= 0 {
		return 30 * time.Second
	}
	return a.Interval.Duration
}

// GetThreshold returns the failed-check threshold, 5 when unset.
func (a *CanaryAnalysis) GetThreshold() int32 {
	if a.Threshold <= 0 {
		return 5
	}
	return a.Threshold
}

// GetProgressDeadline returns the progress deadline, 600s when unset.
func (s *CanarySpec) GetProgressDeadline() time.Duration {
	if s.ProgressDeadlineSeconds == nil || *s.ProgressDeadlineSeconds <= 0 {
		return 600 * time.Second
	}
	return time.Duration(*s.ProgressDeadlineSeconds) * time.Second
}

// GetTargetPort returns the pods' port: TargetPort, or Port when unset.
func (s *CanaryService) GetTargetPort() intstr.IntOrString {
	if s.TargetPort == nil {
		return intstr.FromInt32(s.Port)
	}
	return *s.TargetPort
}

// GetInterval returns the metric's window, or the analysis interval.
func (m *CanaryMetric) GetInterval(analysis time.Duration) time.Duration {
	if m.Interval == nil || m.Interval.Duration <= 0 {
		return analysis
	}
	return m.Interval.Duration
}

// Suffixes of the names of the objects weir makes for a Canary.
const (
	PrimarySuffix = "-primary"
	CanarySuffix  = "-canary"
)

// GetServiceName returns the name of the Service clients call:
// spec.service.name, or targetRef.name when unset. The Services
// <name>-primary and <name>-canary select the primary's and the canary's pods.
func (c *Canary) GetServiceName() string {
	if c.Spec.Service.Name != "" {
		return c.Spec.Service.Name
	}
	return c.Spec.TargetRef.Name
}

// GetPrimaryServiceName returns the name of the Service of the primary's pods.
func (c *Canary) GetPrimaryServiceName() string { return c.GetServiceName() + PrimarySuffix }

// GetCanaryServiceName returns the name of the Service of the canary's pods.
func (c *Canary) GetCanaryServiceName() string { return c.GetServiceName() + CanarySuffix }

// GetPrimaryName returns the name of the primary Deployment:
// <targetRef.name>-primary.
func (c *Canary) GetPrimaryName() string { return c.Spec.TargetRef.Name + PrimarySuffix }
