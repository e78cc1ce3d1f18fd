package notifier

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	weirv1 "github.com/weir-dev/weir/canary/v1alpha1"
)

// Notifier delivers one message about a Canary. Sinks (Slack, webhooks)
// implement it synchronously; the Dispatcher puts a queue in front of them
// so that no caller ever waits for a sink.
type Notifier interface {
	Notify(ctx context.Context, ev Event) error
}

// Severity orders events by how much a person needs to know about them.
type Severity int

// Severities, from least to most severe.
const (
	SeverityInfo Severity = iota + 1
	SeverityWarn
	SeverityError
)

// severityNames is the table of severity names used by CanaryAlert.Severity.
var severityNames = map[string]Severity{
	"info":  SeverityInfo,
	"warn":  SeverityWarn,
	"error": SeverityError,
}

// ParseSeverity reads an alert's severity; empty means info. Unknown names
// are an error, never a silent default.
func ParseSeverity(s string) (Severity, error) {
	if s == "" {
		return SeverityInfo, nil
	}
	sev, ok := severityNames[s]
	if !ok {
		return 0, fmt.Errorf("unknown severity %q: want info, warn or error", s)
	}
	return sev, nil
}

// String is the severity's name.
func (s Severity) String() string {
	for name, sev := range severityNames {
		if sev == s {
			return name
		}
	}
	return fmt.Sprintf("Severity(%d)", int(s))
}

// MarshalText writes the severity's name, for the webhook payload.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a severity's name.
func (s *Severity) UnmarshalText(b []byte) error {
	sev, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = sev
	return nil
}

// Event is one thing that happened to a Canary, with the numbers a person
// needs to act on it. It is built from a Kubernetes Event's reason and
// annotations (see canary/v1alpha1/events.go) and the Canary it is about.
type Event struct {
	// Canary is the Canary the Event was recorded on.
	Canary types.NamespacedName `json:"canary"`
	// Target is the analysed workload, e.g. "Deployment/podinfo".
	Target string `json:"target,omitempty"`
	// Reason is the Kubernetes Event's reason, one of weirv1.Event*.
	Reason string `json:"reason"`
	// Severity decides the colour and which alerts receive the message.
	Severity Severity `json:"severity"`
	// Message is the Event's message, the reconciler's own words.
	Message string `json:"message,omitempty"`
	// Revision is the hash of the canary's pod template.
	Revision string `json:"revision,omitempty"`
	// Image is the new version's image(s); PrimaryImage the old version's.
	Image        string `json:"image,omitempty"`
	PrimaryImage string `json:"primaryImage,omitempty"`
	// Weight is the canary weight in percent, as recorded.
	Weight string `json:"weight,omitempty"`
	// FailedChecks and Threshold count failed checks.
	FailedChecks string `json:"failedChecks,omitempty"`
	Threshold    string `json:"threshold,omitempty"`
	// Metric, Value, Bound and CheckReason describe a failed check.
	Metric      string `json:"metric,omitempty"`
	Value       string `json:"value,omitempty"`
	Bound       string `json:"bound,omitempty"`
	CheckReason string `json:"checkReason,omitempty"`
	// RollbackCause is threshold, progress-deadline or manual.
	RollbackCause string `json:"rollbackCause,omitempty"`
	// Transition identifies the transition; each is sent once.
	Transition string `json:"transition,omitempty"`
	// Cluster is the cluster's name, when configured.
	Cluster string `json:"cluster,omitempty"`
	// Time is when the Event was last recorded.
	Time time.Time `json:"time"`
}

// reasonRule says what the notifier does with one Event reason.
type reasonRule struct {
	// send is false for reasons that are recorded but never sent.
	send bool
	// optional reasons are sent only when asked for (Rules.WeightAdvanced).
	optional bool
	severity Severity
	// headline follows the Canary's "name.namespace".
	headline string
}

// reasons is the table of Event reasons the notifier knows. A reason that
// is not in it is not sent.
var reasons = map[string]reasonRule{
	weirv1.EventInitialized:              {send: false},
	weirv1.EventNewRevision:              {send: true, severity: SeverityInfo, headline: "new revision detected, analysis starting"},
	weirv1.EventWaitingForConfirmation:   {send: true, severity: SeverityWarn, headline: "waiting for the data plane to confirm the weight"},
	weirv1.EventWeightAdvanced:           {send: true, optional: true, severity: SeverityInfo, headline: "weight advanced"},
	weirv1.EventCheckFailed:              {send: true, severity: SeverityWarn, headline: "check failed"},
	weirv1.EventPromoting:                {send: false}, // Promoted follows.
	weirv1.EventPromoted:                 {send: true, severity: SeverityInfo, headline: "promoted"},
	weirv1.EventRolledBack:               {send: true, severity: SeverityError, headline: "rolled back"},
	weirv1.EventProgressDeadlineExceeded: {send: true, severity: SeverityError, headline: "progress deadline exceeded"},
	weirv1.EventXDSRejected:              {send: true, severity: SeverityWarn, headline: "data plane rejected the route"},
	weirv1.EventAlertProviderInvalid:     {send: false}, // about the notifier itself.
}

// rollbackCauses explains AnnotationRollbackCause values to a person.
var rollbackCauses = map[string]string{
	weirv1.RollbackCauseThreshold:        "failed checks reached the threshold",
	weirv1.RollbackCauseProgressDeadline: "the new version was not ready within the progress deadline",
	weirv1.RollbackCauseManual:           "rolled back by hand",
}

// checkReasons explains AnnotationCheckReason values that carry no value.
var checkReasons = map[string]string{
	"NoData":     "no data",
	"QueryError": "query error",
}

// Rules decide which Events become messages.
type Rules struct {
	// WeightAdvanced sends a message at every step, not only at the
	// transitions a person acts on.
	WeightAdvanced bool
	// Cluster is added to every message when not empty.
	Cluster string
}

// FromKubeEvent turns a Kubernetes Event recorded on a Canary into an Event,
// and says whether it is to be sent at all.
func (r Rules) FromKubeEvent(kev *corev1.Event) (Event, bool) {
	if !IsCanaryEvent(kev) {
		return Event{}, false
	}
	rule, ok := reasons[kev.Reason]
	if !ok || !rule.send || (rule.optional && !r.WeightAdvanced) {
		return Event{}, false
	}
	a := kev.Annotations
	ev := Event{
		Canary:        types.NamespacedName{Namespace: kev.InvolvedObject.Namespace, Name: kev.InvolvedObject.Name},
		Reason:        kev.Reason,
		Severity:      rule.severity,
		Message:       kev.Message,
		Revision:      a[weirv1.AnnotationRevision],
		Image:         a[weirv1.AnnotationImage],
		PrimaryImage:  a[weirv1.AnnotationPrimaryImage],
		Weight:        a[weirv1.AnnotationWeight],
		FailedChecks:  a[weirv1.AnnotationFailedChecks],
		Threshold:     a[weirv1.AnnotationThreshold],
		Metric:        a[weirv1.AnnotationMetric],
		Value:         a[weirv1.AnnotationValue],
		Bound:         a[weirv1.AnnotationBound],
		CheckReason:   a[weirv1.AnnotationCheckReason],
		RollbackCause: a[weirv1.AnnotationRollbackCause],
		Transition:    a[weirv1.AnnotationTransition],
		Cluster:       r.Cluster,
		Time:          eventTime(kev),
	}
	if ev.Canary.Namespace == "" {
		ev.Canary.Namespace = kev.Namespace
	}
	return ev, true
}

// IsCanaryEvent reports whether kev was recorded on a weir Canary.
func IsCanaryEvent(kev *corev1.Event) bool {
	gv := strings.SplitN(kev.InvolvedObject.APIVersion, "/", 2)
	return kev.InvolvedObject.Kind == weirv1.CanaryKind && gv[0] == weirv1.GroupVersion.Group
}

// eventTime is when kev was last recorded.
func eventTime(kev *corev1.Event) time.Time {
	switch {
	case !kev.LastTimestamp.IsZero():
		return kev.LastTimestamp.Time
	case !kev.EventTime.IsZero():
		return kev.EventTime.Time
	case !kev.FirstTimestamp.IsZero():
		return kev.FirstTimestamp.Time
	default:
		return kev.CreationTimestamp.Time
	}
}

// Headline is the message's first line, e.g. "podinfo.test rolled back".
func (ev Event) Headline() string {
	h := reasons[ev.Reason].headline
	if h == "" {
		h = ev.Reason
	}
	if ev.Reason == weirv1.EventCheckFailed && ev.Metric != "" {
		h += ": " + ev.Metric
	}
	return ev.Canary.Name + "." + ev.Canary.Namespace + " " + h
}

// Field is one labelled number or name of a message.
type Field struct {
	Title string `json:"title"`
	Value string `json:"value"`
}

// Fields are the message's labelled facts, in display order; empty ones
// are left out.
func (ev Event) Fields() []Field {
	var fs []Field
	add := func(title, value string) {
		if value != "" {
			fs = append(fs, Field{Title: title, Value: value})
		}
	}
	add("Target", ev.Target)
	add("New revision", revision(ev.Image, ev.Revision))
	add("Old revision", ev.PrimaryImage)
	if ev.Weight != "" {
		add("Weight", ev.Weight+"%")
	}
	// The reconciler annotates every Event with its failed checks; none
	// failed is not worth a line.
	switch {
	case ev.FailedChecks == "" || ev.FailedChecks == "0":
	case ev.Threshold != "":
		add("Failed checks", ev.FailedChecks+"/"+ev.Threshold)
	default:
		add("Failed checks", ev.FailedChecks)
	}
	add("Metric", ev.Metric)
	value := ev.Value
	if why, ok := checkReasons[ev.CheckReason]; ok && value == "" {
		value = why
	}
	add("Value", value)
	add("Bound", ev.Bound)
	if cause, ok := rollbackCauses[ev.RollbackCause]; ok {
		add("Cause", cause)
	} else {
		add("Cause", ev.RollbackCause)
	}
	return fs
}

// revision shows an image with its short pod-template hash.
func revision(image, rev string) string {
	if len(rev) > 10 {
		rev = rev[:10]
	}
	switch {
	case image != "" && rev != "":
		return image + " (" + rev + ")"
	case image != "":
		return image
	default:
		return rev
	}
}

// Text is the plain-text form of the message: headline, the Event's
// message and the fields, one per line.
func (ev Event) Text() string {
	var b strings.Builder
	b.WriteString(ev.Headline())
	if ev.Message != "" {
		b.WriteString(": " + ev.Message)
	}
	for _, f := range ev.Fields() {
		b.WriteString("\n" + f.Title + ": " + f.Value)
	}
	if ev.Cluster != "" {
		b.WriteString("\nCluster: " + ev.Cluster)
	}
	return b.String()
}
