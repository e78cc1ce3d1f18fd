package notifier

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/slack-go/slack"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	weirv1 "github.com/weir-dev/weir/canary/v1alpha1"
)

func TestFromKubeEvent(t *testing.T) {
	r := rev(revNew, imgNew, imgOld)
	tests := []struct {
		name       string
		rules      Rules
		step       step
		wantSend   bool
		wantSev    Severity
		wantHead   string
		wantFields []Field
	}{
		{
			name: "new revision", step: newStep(weirv1.EventNewRevision, "New revision", r, weight("0")),
			wantSend: true, wantSev: SeverityInfo, wantHead: "podinfo.test new revision detected, analysis starting",
			wantFields: []Field{{"New revision", imgNew + " (7d9f8c6b5a)"}, {"Old revision", imgOld}, {"Weight", "0%"}},
		},
		{
			name: "weight advanced is off by default", step: newStep(weirv1.EventWeightAdvanced, "Advance", r, weight("10")),
		},
		{
			name: "weight advanced when asked", rules: Rules{WeightAdvanced: true},
			step:     newStep(weirv1.EventWeightAdvanced, "Advance", r, weight("10")),
			wantSend: true, wantSev: SeverityInfo, wantHead: "podinfo.test weight advanced",
			wantFields: []Field{{"New revision", imgNew + " (7d9f8c6b5a)"}, {"Old revision", imgOld}, {"Weight", "10%"}},
		},
		{
			name: "check failed names metric, value and bound",
			step: newStep(weirv1.EventCheckFailed, "below", r, weight("10"), checks("1", "5"),
				failedCheck(weirv1.MetricRequestSuccessRate, "91.5", ">= 99", "OutOfRange")),
			wantSend: true, wantSev: SeverityWarn, wantHead: "podinfo.test check failed: request-success-rate",
			wantFields: []Field{
				{"New revision", imgNew + " (7d9f8c6b5a)"}, {"Old revision", imgOld}, {"Weight", "10%"},
				{"Failed checks", "1/5"}, {"Metric", "request-success-rate"}, {"Value", "91.5"}, {"Bound", ">= 99"},
			},
		},
		{
			name:     "check without data says so",
			step:     newStep(weirv1.EventCheckFailed, "no data", checks("1", "5"), failedCheck("request-duration", "", "<= 500", "NoData")),
			wantSend: true, wantSev: SeverityWarn, wantHead: "podinfo.test check failed: request-duration",
			wantFields: []Field{{"Failed checks", "1/5"}, {"Metric", "request-duration"}, {"Value", "no data"}, {"Bound", "<= 500"}},
		},
		{
			name:     "rollback on progress deadline says why",
			step:     newStep(weirv1.EventRolledBack, "not ready", r, weight("0"), cause(weirv1.RollbackCauseProgressDeadline)),
			wantSend: true, wantSev: SeverityError, wantHead: "podinfo.test rolled back",
			wantFields: []Field{
				{"New revision", imgNew + " (7d9f8c6b5a)"}, {"Old revision", imgOld}, {"Weight", "0%"},
				{"Cause", "the new version was not ready within the progress deadline"},
			},
		},
		{
			name:     "progress deadline exceeded",
			step:     newStep(weirv1.EventProgressDeadlineExceeded, "canary not ready after 10m", r),
			wantSend: true, wantSev: SeverityError, wantHead: "podinfo.test progress deadline exceeded",
			wantFields: []Field{{"New revision", imgNew + " (7d9f8c6b5a)"}, {"Old revision", imgOld}},
		},
		{
			name: "waiting for confirmation", step: newStep(weirv1.EventWaitingForConfirmation, "3 of 4 sidecars", weight("50")),
			wantSend: true, wantSev: SeverityWarn, wantHead: "podinfo.test waiting for the data plane to confirm the weight",
			wantFields: []Field{{"Weight", "50%"}},
		},
		{
			name:     "no failed checks is not worth a line",
			step:     newStep(weirv1.EventPromoted, "done", r, weight("0"), checks("0", "5")),
			wantSend: true, wantSev: SeverityInfo, wantHead: "podinfo.test promoted",
			wantFields: []Field{{"New revision", imgNew + " (7d9f8c6b5a)"}, {"Old revision", imgOld}, {"Weight", "0%"}},
		},
		{name: "promoting is followed by promoted", step: newStep(weirv1.EventPromoting, "copying", r)},
		{name: "initialized is not sent", step: newStep(weirv1.EventInitialized, "ready", r)},
		{name: "the notifier's own problems are not sent", step: newStep(weirv1.EventAlertProviderInvalid, "missing")},
		{name: "unknown reasons are not sent", step: newStep("Scaled", "whatever")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, send := tt.rules.FromKubeEvent(kubeEvent("test", "podinfo", tt.step))
			if send != tt.wantSend {
				t.Fatalf("send = %v, want %v", send, tt.wantSend)
			}
			if !send {
				return
			}
			if ev.Severity != tt.wantSev {
				t.Errorf("severity = %v, want %v", ev.Severity, tt.wantSev)
			}
			if got := ev.Headline(); got != tt.wantHead {
				t.Errorf("headline = %q, want %q", got, tt.wantHead)
			}
			if diff := cmp.Diff(tt.wantFields, ev.Fields()); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFromKubeEventIgnoresOtherObjects(t *testing.T) {
	kev := kubeEvent("test", "podinfo", newStep(weirv1.EventRolledBack, "x"))
	kev.InvolvedObject.APIVersion, kev.InvolvedObject.Kind = "flagger.app/v1beta1", "Canary"
	if _, send := (Rules{}).FromKubeEvent(kev); send {
		t.Error("a Flagger Canary's event was taken for weir's")
	}
}

func TestParseSeverity(t *testing.T) {
	tests := []struct {
		in      string
		want    Severity
		wantErr bool
	}{
		{"", SeverityInfo, false},
		{"info", SeverityInfo, false},
		{"warn", SeverityWarn, false},
		{"error", SeverityError, false},
		{"critical", 0, true},
		{"Error", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSeverity(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSeverity(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestNotifiedAnnotation(t *testing.T) {
	long := strings.Repeat("a", 63) + "/" + strings.Repeat("b", 200)
	tests := []struct{ provider, want string }{
		{DefaultProvider, "weir.dev/notified-default"},
		{"test/slack", "weir.dev/notified-test.slack"},
		{long, "weir.dev/notified-" + strings.Repeat("a", 45) + "-" + NotifiedAnnotation(long)[len(NotifiedAnnotation(long))-8:]},
	}
	for _, tt := range tests {
		got := NotifiedAnnotation(tt.provider)
		if got != tt.want {
			t.Errorf("NotifiedAnnotation(%q) = %q, want %q", tt.provider, got, tt.want)
		}
		if name := strings.TrimPrefix(got, weirv1.AnnotationPrefix); len(name) > 63 {
			t.Errorf("annotation name %q longer than 63", name)
		}
	}
	if NotifiedAnnotation(long) == NotifiedAnnotation(long+"c") {
		t.Error("two long provider names share an annotation")
	}
}

func TestSlackMessage(t *testing.T) {
	ev, _ := Rules{Cluster: "prod-eu"}.FromKubeEvent(kubeEvent("test", "podinfo", rollback()[4]))
	ev.Target = "Deployment/podinfo"
	text, att := SlackMessage(ev)
	if att.Color != severityColors[SeverityError] {
		t.Errorf("colour = %q, want the error colour", att.Color)
	}
	if !strings.HasPrefix(text, "podinfo.test rolled back: ") || !strings.Contains(text, "Bound: &gt;= 99") || !strings.Contains(text, "Cluster: prod-eu") {
		t.Errorf("fallback text lacks the headline, an escaped bound or the cluster:\n%s", text)
	}
	if att.Fallback != text {
		t.Error("attachment fallback differs from the text")
	}
	if n := len(att.Blocks.BlockSet); n != 3 {
		t.Errorf("got %d blocks, want headline, fields and context", n)
	}
}

func TestSortEvents(t *testing.T) {
	at := func(name string, sec, micro int, withEventTime bool) *corev1.Event {
		e := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: name}}
		ts := time.Date(2026, 11, 22, 4, 0, sec, micro*1000, time.UTC)
		if withEventTime {
			e.EventTime = metav1.NewMicroTime(ts)
		} else {
			e.FirstTimestamp = metav1.NewTime(ts)
		}
		return e
	}
	events := []*corev1.Event{
		at("podinfo.18ea4399abc3d6e7", 1, 0, false), // same second as the next: by name
		at("podinfo.18ea4399abc2c6fb", 1, 0, false),
		at("podinfo.0000000000000009", 0, 0, false), // an earlier second wins over its name
		at("podinfo.zzzzz", 2, 10, true),            // eventTime orders within a second
		at("podinfo.aaaaa", 2, 20, true),
	}
	sortEvents(events)
	var got []string
	for _, e := range events {
		got = append(got, e.Name)
	}
	want := []string{"podinfo.0000000000000009", "podinfo.18ea4399abc2c6fb", "podinfo.18ea4399abc3d6e7", "podinfo.zzzzz", "podinfo.aaaaa"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a bit too long", 10, "a bit t…"},
		{"ääääää", 8, "ää…"}, // never cuts a rune in half
	}
	for _, tt := range tests {
		if got := truncate(tt.in, tt.n); got != tt.want || len(got) > tt.n {
			t.Errorf("truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestSlackMessageStaysWithinLimits(t *testing.T) {
	s := newStep(weirv1.EventXDSRejected, strings.Repeat("NACK: invalid route <x> ", 400), failedCheck("m", strings.Repeat("9", 3000), "<= 1", "OutOfRange"))
	ev, _ := Rules{}.FromKubeEvent(kubeEvent("test", "podinfo", s))
	text, att := SlackMessage(ev)
	if len(text) > maxSectionText {
		t.Errorf("text of %d bytes", len(text))
	}
	for _, b := range att.Blocks.BlockSet {
		if sec, ok := b.(*slack.SectionBlock); ok {
			if sec.Text != nil && len(sec.Text.Text) > maxSectionText {
				t.Errorf("section text of %d bytes", len(sec.Text.Text))
			}
			for _, f := range sec.Fields {
				if len(f.Text) > maxFieldText {
					t.Errorf("field of %d bytes", len(f.Text))
				}
			}
		}
	}
}
