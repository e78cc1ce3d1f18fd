package notifier

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	weirv1 "github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/internal/testenv"
	"github.com/weir-dev/weir/test/cluster/slackrecorder"
)

// step is one Event of a rollout as the reconciler records it: reason,
// message and annotations.
type step struct {
	reason  string
	message string
	ann     map[string]string
}

// stepOption adds annotations to a step.
type stepOption func(map[string]string)

// rev sets revision, image and primary image.
func rev(revision, image, primary string) stepOption {
	return func(a map[string]string) {
		a[weirv1.AnnotationRevision] = revision
		a[weirv1.AnnotationImage] = image
		a[weirv1.AnnotationPrimaryImage] = primary
	}
}

// weight sets the canary weight.
func weight(w string) stepOption {
	return func(a map[string]string) { a[weirv1.AnnotationWeight] = w }
}

// checks sets failed checks and threshold.
func checks(failed, threshold string) stepOption {
	return func(a map[string]string) {
		a[weirv1.AnnotationFailedChecks] = failed
		a[weirv1.AnnotationThreshold] = threshold
	}
}

// failedCheck sets metric, value, bound and reason of a failed check.
func failedCheck(metric, value, bound, reason string) stepOption {
	return func(a map[string]string) {
		a[weirv1.AnnotationMetric] = metric
		a[weirv1.AnnotationValue] = value
		a[weirv1.AnnotationBound] = bound
		a[weirv1.AnnotationCheckReason] = reason
	}
}

// cause sets the rollback cause.
func cause(c string) stepOption {
	return func(a map[string]string) { a[weirv1.AnnotationRollbackCause] = c }
}

// transition sets the transition annotation.
func transition(tr string) stepOption {
	return func(a map[string]string) { a[weirv1.AnnotationTransition] = tr }
}

// newStep builds a step; the transition defaults to revision/reason/weight.
func newStep(reason, message string, opts ...stepOption) step {
	a := map[string]string{}
	for _, o := range opts {
		o(a)
	}
	if _, ok := a[weirv1.AnnotationTransition]; !ok {
		a[weirv1.AnnotationTransition] = a[weirv1.AnnotationRevision] + "/" + reason + "/" + a[weirv1.AnnotationWeight] + "/" + a[weirv1.AnnotationFailedChecks]
	}
	return step{reason: reason, message: message, ann: a}
}

// eventType is the Kubernetes Event type the reconciler uses for reason.
func eventType(reason string) string {
	if reasons[reason].severity >= SeverityWarn {
		return corev1.EventTypeWarning
	}
	return corev1.EventTypeNormal
}

// kubeEvent is s as a Kubernetes Event on the Canary ns/name.
func kubeEvent(ns, name string, s step) *corev1.Event {
	now := metav1.Now()
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + ".test", Annotations: s.ann},
		InvolvedObject: corev1.ObjectReference{
			APIVersion: weirv1.GroupVersion.String(), Kind: weirv1.CanaryKind, Namespace: ns, Name: name,
		},
		Reason: s.reason, Message: s.message, Type: eventType(s.reason),
		FirstTimestamp: now, LastTimestamp: now,
	}
}

const (
	imgOld = "ghcr.io/stefanprodan/podinfo:6.0.0"
	imgNew = "ghcr.io/stefanprodan/podinfo:6.0.1"
	revNew = "7d9f8c6b5a4e3d2c"
)

// promotion is the Event sequence of a rollout that is promoted.
func promotion() []step {
	r := rev(revNew, imgNew, imgOld)
	return []step{
		newStep(weirv1.EventNewRevision, "New revision 7d9f8c6b5a detected, starting analysis", r, weight("0")),
		newStep(weirv1.EventWeightAdvanced, "Advance canary weight to 10", r, weight("10")),
		newStep(weirv1.EventWeightAdvanced, "Advance canary weight to 50", r, weight("50")),
		newStep(weirv1.EventWeightAdvanced, "Advance canary weight to 100", r, weight("100")),
		newStep(weirv1.EventPromoting, "Copying the canary template to the primary", r, weight("100")),
		newStep(weirv1.EventPromoted, "Promotion completed: podinfo-primary runs 6.0.1", r, weight("0")),
	}
}

// rollback is the Event sequence of a rollout rolled back at the threshold.
func rollback() []step {
	r := rev(revNew, imgNew, imgOld)
	f := failedCheck(weirv1.MetricRequestSuccessRate, "91.5", ">= 99", "OutOfRange")
	return []step{
		newStep(weirv1.EventNewRevision, "New revision 7d9f8c6b5a detected, starting analysis", r, weight("0")),
		newStep(weirv1.EventWeightAdvanced, "Advance canary weight to 10", r, weight("10")),
		newStep(weirv1.EventCheckFailed, "request-success-rate 91.5 is below 99 (1 of 2 failed checks)", r, weight("10"), checks("1", "2"), f),
		newStep(weirv1.EventCheckFailed, "request-success-rate 90.25 is below 99 (2 of 2 failed checks)", r, weight("10"), checks("2", "2"),
			failedCheck(weirv1.MetricRequestSuccessRate, "90.25", ">= 99", "OutOfRange")),
		newStep(weirv1.EventRolledBack, "Rolled back after 2 failed checks: request-success-rate 90.25 is below 99", r, weight("0"), checks("2", "2"),
			failedCheck(weirv1.MetricRequestSuccessRate, "90.25", ">= 99", "OutOfRange"), cause(weirv1.RollbackCauseThreshold)),
	}
}

// received is a recorded Slack message, decoded.
type received struct {
	Headline string
	Body     string
	Color    string
	Fields   map[string]string
	Context  []string
}

// decode reads a recorded message's attachment: the headline (first line
// of the first section), its colour, its fields and its context line.
func decode(t *testing.T, m slackrecorder.Message) received {
	t.Helper()
	var atts []struct {
		Color    string `json:"color"`
		Fallback string `json:"fallback"`
		Blocks   []struct {
			Type string `json:"type"`
			Text *struct {
				Text string `json:"text"`
			} `json:"text"`
			Fields []struct {
				Text string `json:"text"`
			} `json:"fields"`
			Elements []struct {
				Text string `json:"text"`
			} `json:"elements"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(m.Attachments, &atts); err != nil || len(atts) != 1 {
		t.Fatalf("message %s: want one attachment, got %s (%v)", m.Raw, m.Attachments, err)
	}
	a := atts[0]
	if a.Fallback == "" || m.Text == "" {
		t.Errorf("message without plain-text fallback: %s", m.Raw)
	}
	r := received{Color: a.Color, Fields: map[string]string{}}
	for _, b := range a.Blocks {
		switch {
		case b.Type == "section" && b.Text != nil && r.Headline == "":
			head, body, _ := strings.Cut(b.Text.Text, "\n")
			r.Headline, r.Body = html.UnescapeString(strings.Trim(head, "*")), html.UnescapeString(body)
		case b.Type == "section":
			for _, f := range b.Fields {
				title, value, _ := strings.Cut(f.Text, "\n")
				r.Fields[html.UnescapeString(strings.Trim(title, "*"))] = html.UnescapeString(value)
			}
		case b.Type == "context":
			for _, e := range b.Elements {
				r.Context = append(r.Context, e.Text)
			}
		}
	}
	return r
}

// startRecorder starts a Slack recorder, closed when t ends.
func startRecorder(t *testing.T) *slackrecorder.Recorder {
	t.Helper()
	rec, err := slackrecorder.Start(slackrecorder.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rec.Close() })
	return rec
}

// testContext is cancelled when t ends, and after a minute at most.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testHTTPClient is an HTTP client of the test's own, closed when t ends.
func testHTTPClient(t *testing.T) *http.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// eventually polls cond every 10ms until it holds or ctx ends.
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, ctx, 0, 10*time.Millisecond, what, testenv.Holds(cond))
}

// decodeJSON decodes a request's JSON body into v.
func decodeJSON(r *http.Request, v any) error {
	return json.NewDecoder(r.Body).Decode(v)
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// sentinel is the last Event of a test on its Canary: a rollback, so that
// every alert takes it, with a transition of its own. The notifier sends a
// Canary's Events in the order they were recorded, so once the sentinel's
// message is in, every message before it is.
func sentinel() step {
	return newStep(weirv1.EventRolledBack, "sentinel", transition("sentinel"))
}

// isSentinel reports whether m is the sentinel's message.
func isSentinel(t *testing.T, m slackrecorder.Message) bool {
	return decode(t, m).Body == "sentinel"
}
