package notifier

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	weirv1 "github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/test/cluster/slackrecorder"
)

// Slack delivery modes of the test providers.
const (
	modeWebhook = "webhook"
	modeToken   = "token"
)

// slackProvider creates the AlertProvider "slack" and its Secret, posting
// to rec by incoming webhook or by token and chat.postMessage.
func slackProvider(t *testing.T, ctx context.Context, c client.Client, ns, mode string, rec *slackrecorder.Recorder) {
	t.Helper()
	switch mode {
	case modeWebhook:
		createSecret(t, ctx, c, ns, "slack-url", map[string]string{weirv1.SecretKeyAddress: rec.WebhookURL()})
		createProvider(t, ctx, c, ns, "slack", weirv1.AlertProviderSpec{
			Type: weirv1.AlertProviderSlack, SecretRef: &weirv1.LocalSecretReference{Name: "slack-url"},
		})
	case modeToken:
		createSecret(t, ctx, c, ns, "slack-token", map[string]string{weirv1.SecretKeyToken: rec.Token()})
		createProvider(t, ctx, c, ns, "slack", weirv1.AlertProviderSpec{
			Type: weirv1.AlertProviderSlack, Channel: "#deploys", Username: "weir", Address: rec.APIURL(),
			SecretRef: &weirv1.LocalSecretReference{Name: "slack-token"},
		})
	default:
		t.Fatalf("unknown mode %q", mode)
	}
}

// wantMsg is an expected Slack message.
type wantMsg struct {
	Headline string
	Color    string
	Fields   map[string]string
}

// fieldsWith returns the fields every rollout message carries plus more.
func fieldsWith(kv ...string) map[string]string {
	f := map[string]string{
		"Target":       "Deployment/podinfo",
		"New revision": imgNew + " (7d9f8c6b5a)",
		"Old revision": imgOld,
	}
	for i := 0; i+1 < len(kv); i += 2 {
		f[kv[i]] = kv[i+1]
	}
	return f
}

var (
	green  = severityColors[SeverityInfo]
	yellow = severityColors[SeverityWarn]
	red    = severityColors[SeverityError]
)

func TestRolloutMessages(t *testing.T) {
	const ratio = "request-success-rate"
	newRevision := wantMsg{"podinfo.NS new revision detected, analysis starting", green, fieldsWith("Weight", "0%")}
	promoted := wantMsg{"podinfo.NS promoted", green, fieldsWith("Weight", "0%")}
	rolledBack := wantMsg{"podinfo.NS rolled back", red, fieldsWith("Weight", "0%", "Failed checks", "2/2",
		"Metric", ratio, "Value", "90.25", "Bound", ">= 99", "Cause", "failed checks reached the threshold")}
	r := rev(revNew, imgNew, imgOld)

	tests := []struct {
		name     string
		mode     string
		severity string
		rules    Rules
		direct   bool // record like weir's reconciler: random names, eventTime
		steps    []step
		want     []wantMsg
	}{
		{
			name: "promotion", mode: modeWebhook, steps: promotion(),
			want: []wantMsg{newRevision, promoted},
		},
		{
			name: "promotion with every step", mode: modeToken, rules: Rules{WeightAdvanced: true}, direct: true, steps: promotion(),
			want: []wantMsg{
				newRevision,
				{"podinfo.NS weight advanced", green, fieldsWith("Weight", "10%")},
				{"podinfo.NS weight advanced", green, fieldsWith("Weight", "50%")},
				{"podinfo.NS weight advanced", green, fieldsWith("Weight", "100%")},
				promoted,
			},
		},
		{
			name: "rollback", mode: modeToken, direct: true, steps: rollback(),
			want: []wantMsg{
				newRevision,
				{"podinfo.NS check failed: " + ratio, yellow, fieldsWith("Weight", "10%", "Failed checks", "1/2", "Metric", ratio, "Value", "91.5", "Bound", ">= 99")},
				{"podinfo.NS check failed: " + ratio, yellow, fieldsWith("Weight", "10%", "Failed checks", "2/2", "Metric", ratio, "Value", "90.25", "Bound", ">= 99")},
				rolledBack,
			},
		},
		{
			name: "rollback to an alert of severity error", mode: modeWebhook, severity: "error", steps: rollback(),
			want: []wantMsg{rolledBack},
		},
		{
			name: "rollback on progress deadline", mode: modeWebhook,
			steps: []step{
				newStep(weirv1.EventNewRevision, "New revision 7d9f8c6b5a detected, starting analysis", r, weight("0")),
				newStep(weirv1.EventProgressDeadlineExceeded, "podinfo not ready after 10m0s", r, weight("0")),
				newStep(weirv1.EventRolledBack, "Rolled back: podinfo not ready after 10m0s", r, weight("0"), cause(weirv1.RollbackCauseProgressDeadline)),
			},
			want: []wantMsg{
				newRevision,
				{"podinfo.NS progress deadline exceeded", red, fieldsWith("Weight", "0%")},
				{"podinfo.NS rolled back", red, fieldsWith("Weight", "0%", "Cause", "the new version was not ready within the progress deadline")},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			cfg, c := apiServer(t)
			ns := newNamespace(t, ctx, c)
			rec := startRecorder(t)
			slackProvider(t, ctx, c, ns, tt.mode, rec)
			cn := createCanary(t, ctx, c, ns, "podinfo", withAlert("team", tt.severity, "slack"))
			rules := tt.rules
			rules.Cluster = "test-cluster"
			startNotifier(t, cfg, Options{Rules: rules})

			events := eventRecorder(t, cfg)
			if tt.direct {
				events = &directRecorder{t: t, client: c}
			}
			recordSteps(events, cn, append(tt.steps, sentinel())...)
			msgs, err := rec.WaitForMessages(ctx, len(tt.want)+1)
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != len(tt.want)+1 || !isSentinel(t, msgs[len(msgs)-1]) {
				dumpEvents(t, ctx, c, ns)
				t.Fatalf("got %d messages, want %d and the sentinel last:\n%s", len(msgs), len(tt.want), headlines(t, msgs))
			}
			var got []wantMsg
			for _, m := range msgs[:len(tt.want)] {
				d := decode(t, m)
				got = append(got, wantMsg{Headline: strings.ReplaceAll(d.Headline, "."+ns+" ", ".NS "), Color: d.Color, Fields: d.Fields})
				if d.Headline == "podinfo."+ns+" rolled back" {
					t.Logf("rollback message as the Slack recorder received it (%s):\n%s", m.Kind, m.Raw)
				}
				if len(d.Context) == 0 || d.Context[0] != "cluster *test-cluster*" {
					t.Errorf("%s: context %q lacks the cluster", d.Headline, d.Context)
				}
				if tt.mode == modeToken && (m.Kind != slackrecorder.KindPostMessage || m.Channel != "#deploys" || m.Username != "weir") {
					t.Errorf("%s: sent by %s to %q as %q, want chat.postMessage to #deploys as weir", d.Headline, m.Kind, m.Channel, m.Username)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
		})
	}
}

// headlines lists the headlines of msgs, for failure messages.
func headlines(t *testing.T, msgs []slackrecorder.Message) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString("  " + decode(t, m).Headline + "\n")
	}
	return b.String()
}

func TestRestartDoesNotResend(t *testing.T) {
	ctx := testContext(t)
	cfg, c := apiServer(t)
	ns := newNamespace(t, ctx, c)
	rec := startRecorder(t)
	slackProvider(t, ctx, c, ns, modeWebhook, rec)
	cn := createCanary(t, ctx, c, ns, "podinfo", withAlert("team", "", "slack"))
	events := eventRecorder(t, cfg)

	stop := startNotifier(t, cfg, Options{})
	steps := rollback()
	recordSteps(events, cn, steps...)
	if _, err := rec.WaitForMessages(ctx, 4); err != nil {
		t.Fatal(err)
	}
	mark := NotifiedAnnotation(ns + "/slack")
	eventually(t, ctx, "the sent Events to be marked "+mark, func() bool {
		var list corev1.EventList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		marked := 0
		for _, e := range list.Items {
			if e.Annotations[mark] == NotifiedSent {
				marked++
			}
		}
		return marked == 4
	})
	stop()
	rec.Reset()

	// The reconciler, restarted too, records the rollback once more.
	again := steps[len(steps)-1]
	again.message = "Rolled back (recorded again after a restart)"
	recordSteps(events, cn, again)

	startNotifier(t, cfg, Options{})
	recordSteps(events, cn, sentinel())
	msgs, err := rec.WaitForMessages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || !isSentinel(t, msgs[0]) {
		t.Fatalf("after the restart got:\n%swant only the sentinel", headlines(t, msgs))
	}
}

func TestInvalidProviderReference(t *testing.T) {
	ctx := testContext(t)
	cfg, c := apiServer(t)
	ns := newNamespace(t, ctx, c)
	rec := startRecorder(t)
	slackProvider(t, ctx, c, ns, modeWebhook, rec)
	createProvider(t, ctx, c, ns, "no-secret", weirv1.AlertProviderSpec{
		Type: weirv1.AlertProviderSlack, SecretRef: &weirv1.LocalSecretReference{Name: "absent"},
	})
	createSecret(t, ctx, c, ns, "empty", map[string]string{"other": "x"})
	createProvider(t, ctx, c, ns, "empty-secret", weirv1.AlertProviderSpec{
		Type: weirv1.AlertProviderWebhook, SecretRef: &weirv1.LocalSecretReference{Name: "empty"},
	})
	cn := createCanary(t, ctx, c, ns, "podinfo",
		withAlert("good", "", "slack"),
		withAlert("missing", "", "nope"),
		withAlert("secret", "", "no-secret"),
		withAlert("keys", "", "empty-secret"))
	invalid := counterValue(t, notificationsTotal.WithLabelValues(ns+"/nope", ResultInvalid))
	startNotifier(t, cfg, Options{})
	recordSteps(eventRecorder(t, cfg), cn, rollback()[4])

	// The valid alert still gets its message.
	msgs, err := rec.WaitForMessages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if h := decode(t, msgs[0]).Headline; h != "podinfo."+ns+" rolled back" {
		t.Errorf("got %q", h)
	}
	want := map[string]string{
		"missing": "alert missing: AlertProvider " + ns + "/nope not found",
		"secret":  "alert secret: Secret " + ns + "/absent of AlertProvider " + ns + "/no-secret not found",
		"keys":    "alert keys: Secret " + ns + "/empty of AlertProvider " + ns + `/empty-secret holds neither "address" nor "token"`,
	}
	eventually(t, ctx, "an AlertProviderInvalid Event per bad alert", func() bool {
		var list corev1.EventList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, e := range list.Items {
			if e.Reason != weirv1.EventAlertProviderInvalid || e.InvolvedObject.UID != cn.UID || e.Type != corev1.EventTypeWarning {
				continue
			}
			for _, prefix := range want {
				if strings.HasPrefix(e.Message, prefix) {
					found++
				}
			}
		}
		return found == len(want)
	})
	if got := counterValue(t, notificationsTotal.WithLabelValues(ns+"/nope", ResultInvalid)) - invalid; got != 1 {
		t.Errorf("invalid counted %v times for %s/nope, want 1", got, ns)
	}
}

func TestHangingSlackDoesNotHoldUpTheNotifier(t *testing.T) {
	ctx := testContext(t)
	cfg, c := apiServer(t)
	ns := newNamespace(t, ctx, c)
	hanging := startRecorder(t)
	hanging.HangNext(1000)
	slackProvider(t, ctx, c, ns, modeWebhook, hanging)
	healthy := startRecorder(t)
	createSecret(t, ctx, c, ns, "healthy", map[string]string{weirv1.SecretKeyAddress: healthy.WebhookURL()})
	createProvider(t, ctx, c, ns, "healthy", weirv1.AlertProviderSpec{
		Type: weirv1.AlertProviderSlack, SecretRef: &weirv1.LocalSecretReference{Name: "healthy"},
	})
	stuck := createCanary(t, ctx, c, ns, "podinfo", withAlert("team", "", "slack"))
	other := createCanary(t, ctx, c, ns, "other", withAlert("team", "", "healthy"))
	startNotifier(t, cfg, Options{Queue: QueueOptions{AttemptTimeout: 10 * time.Minute}})

	events := eventRecorder(t, cfg)
	recordSteps(events, stuck, rollback()...)
	eventually(t, ctx, "the first message to hang", func() bool { return hanging.Requests() == 1 })
	recordSteps(events, other, newStep(weirv1.EventPromoted, "other promoted", transition("other")))
	msgs, err := healthy.WaitForMessages(ctx, 1)
	if err != nil {
		t.Fatalf("a hanging Slack held up the notifier: %v", err)
	}
	if h := decode(t, msgs[0]).Headline; h != "other."+ns+" promoted" {
		t.Errorf("got %q", h)
	}
}

func TestDefaultAndWebhookProviders(t *testing.T) {
	ctx := testContext(t)
	cfg, c := apiServer(t)
	ns := newNamespace(t, ctx, c)
	def := startRecorder(t)
	payloads := make(chan WebhookPayload, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p WebhookPayload
		if err := decodeJSON(r, &p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		payloads <- p
	}))
	defer srv.Close()
	createProvider(t, ctx, c, ns, "hook", weirv1.AlertProviderSpec{Type: weirv1.AlertProviderWebhook, Address: srv.URL})
	quiet := createCanary(t, ctx, c, ns, "podinfo")                                  // no alerts: the default
	loud := createCanary(t, ctx, c, ns, "backend", withAlert("ops", "warn", "hook")) // its own provider only
	startNotifier(t, cfg, Options{
		Rules:   Rules{Cluster: "prod-eu"},
		Default: SlackOptions{WebhookURL: def.WebhookURL(), Username: "weir"},
	})
	events := eventRecorder(t, cfg)
	recordSteps(events, quiet, rollback()[4])
	recordSteps(events, loud, rollback()[0], rollback()[4]) // NewRevision is below warn

	msgs, err := def.WaitForMessages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if h := decode(t, msgs[0]).Headline; h != "podinfo."+ns+" rolled back" || msgs[0].Username != "weir" {
		t.Errorf("default got %q as %q", h, msgs[0].Username)
	}
	var p WebhookPayload
	select {
	case p = <-payloads:
	case <-ctx.Done():
		t.Fatal("no webhook payload")
	}
	if p.Headline != "backend."+ns+" rolled back" || p.Canary != (CanaryRef{Namespace: ns, Name: "backend"}) ||
		p.Target != "Deployment/backend" || p.Severity != SeverityError || p.Cluster != "prod-eu" || p.Value != "90.25" {
		t.Errorf("webhook payload %+v", p)
	}
	if n := len(def.Messages()); n != 1 {
		t.Errorf("default got %d messages, want only the Canary without alerts' one", n)
	}
}

func TestSameTransitionIsSentOnce(t *testing.T) {
	ctx := testContext(t)
	cfg, c := apiServer(t)
	ns := newNamespace(t, ctx, c)
	rec := startRecorder(t)
	slackProvider(t, ctx, c, ns, modeWebhook, rec)
	cn := createCanary(t, ctx, c, ns, "podinfo", withAlert("team", "", "slack"))
	startNotifier(t, cfg, Options{})

	// The reconciler records one transition twice, as two Event objects
	// (e.g. its status patch failed and it decided again).
	events := &directRecorder{t: t, client: c}
	first := rollback()[4]
	again := first
	again.message = "Rolled back (decided again)"
	recordSteps(events, cn, first, again, sentinel())
	msgs, err := rec.WaitForMessages(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || !isSentinel(t, msgs[1]) {
		dumpEvents(t, ctx, c, ns)
		t.Fatalf("got:\n%swant one rollback and the sentinel", headlines(t, msgs))
	}
}
