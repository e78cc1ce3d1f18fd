package notifier

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	weirv1 "github.com/weir-dev/weir/canary/v1alpha1"
)

func TestResolve(t *testing.T) {
	provider := func(ns, name string, spec weirv1.AlertProviderSpec) client.Object {
		return &weirv1.AlertProvider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
	}
	objects := []client.Object{
		provider("test", "slack", weirv1.AlertProviderSpec{Type: "slack", Address: "https://hooks.slack.com/services/T/B/X"}),
		provider("ops", "pager", weirv1.AlertProviderSpec{Type: "webhook", SecretRef: &weirv1.LocalSecretReference{Name: "pager"}}),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "pager"}, Data: map[string][]byte{"address": []byte("https://pager.example/hook")}},
		provider("test", "teams", weirv1.AlertProviderSpec{Type: "teams", Address: "https://teams.example"}),
		provider("test", "token-only", weirv1.AlertProviderSpec{Type: "slack", SecretRef: &weirv1.LocalSecretReference{Name: "token"}}),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: "token"}, Data: map[string][]byte{"token": []byte("xoxb-1")}},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objects...).Build()
	hc := testHTTPClient(t)
	def, err := NewSlack(SlackOptions{WebhookURL: "https://hooks.slack.com/services/default", HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}

	type target struct {
		Provider    string
		MinSeverity Severity
	}
	tests := []struct {
		name         string
		alerts       []weirv1.CanaryAlert
		def          Notifier
		want         []target
		wantProblems []string
	}{
		{name: "no alerts, no default"},
		{name: "no alerts: the default", def: def, want: []target{{DefaultProvider, SeverityInfo}}},
		{
			name: "alerts replace the default", def: def,
			alerts: []weirv1.CanaryAlert{{Name: "team", ProviderRef: weirv1.ProviderRef{Name: "slack"}}},
			want:   []target{{"test/slack", SeverityInfo}},
		},
		{
			name: "two alerts to one provider: the least severe wins",
			alerts: []weirv1.CanaryAlert{
				{Name: "errors", Severity: "error", ProviderRef: weirv1.ProviderRef{Name: "slack"}},
				{Name: "warnings", Severity: "warn", ProviderRef: weirv1.ProviderRef{Name: "slack", Namespace: "test"}},
			},
			want: []target{{"test/slack", SeverityWarn}},
		},
		{
			name:   "provider in another namespace, address from its secret",
			alerts: []weirv1.CanaryAlert{{Name: "pager", Severity: "error", ProviderRef: weirv1.ProviderRef{Name: "pager", Namespace: "ops"}}},
			want:   []target{{"ops/pager", SeverityError}},
		},
		{
			name: "bad alerts are problems, good ones still targets",
			alerts: []weirv1.CanaryAlert{
				{Name: "team", ProviderRef: weirv1.ProviderRef{Name: "slack"}},
				{Name: "missing", ProviderRef: weirv1.ProviderRef{Name: "nope"}},
				{Name: "teams", ProviderRef: weirv1.ProviderRef{Name: "teams"}},
				{Name: "loud", Severity: "critical", ProviderRef: weirv1.ProviderRef{Name: "slack"}},
				{Name: "no-channel", ProviderRef: weirv1.ProviderRef{Name: "token-only"}},
			},
			want: []target{{"test/slack", SeverityInfo}},
			wantProblems: []string{
				"missing: test/nope: AlertProvider test/nope not found",
				`teams: test/teams: AlertProvider test/teams has unknown type "teams"`,
				`loud: test/slack: unknown severity "critical": want info, warn or error`,
				"no-channel: test/token-only: AlertProvider test/token-only: slack sink with a token needs a channel",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Resolver{Client: c, Secrets: c, HTTPClient: hc, Default: tt.def}
			cn := &weirv1.Canary{ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: "podinfo"}}
			cn.Spec.Analysis.Alerts = tt.alerts
			targets, problems, err := r.Resolve(context.Background(), cn)
			if err != nil {
				t.Fatal(err)
			}
			var got []target
			for _, tg := range targets {
				got = append(got, target{tg.Provider, tg.MinSeverity})
			}
			var gotProblems []string
			for _, p := range problems {
				gotProblems = append(gotProblems, fmt.Sprintf("%s: %s: %v", p.Alert, p.Provider, p.Err))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantProblems, gotProblems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
