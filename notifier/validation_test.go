package notifier

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	weirv1 "github.com/weir-dev/weir/canary/v1alpha1"
)

// TestAlertProviderValidation creates AlertProviders on a real API server:
// each is accepted, or rejected with a message a person understands.
func TestAlertProviderValidation(t *testing.T) {
	secret := &weirv1.LocalSecretReference{Name: "slack"}
	tests := []struct {
		name    string
		spec    weirv1.AlertProviderSpec
		wantErr string // empty: accepted
	}{
		{name: "slack incoming webhook", spec: weirv1.AlertProviderSpec{Type: "slack", Address: "https://hooks.slack.com/services/T0/B0/XXX"}},
		{name: "slack token from a secret", spec: weirv1.AlertProviderSpec{Type: "slack", Channel: "#deploys", Username: "weir", SecretRef: secret}},
		{name: "slack behind an enterprise gateway", spec: weirv1.AlertProviderSpec{Type: "slack", Channel: "C0123", Address: "https://slack-gw.corp.example/api/", SecretRef: secret}},
		{name: "webhook", spec: weirv1.AlertProviderSpec{Type: "webhook", Address: "http://receiver.monitoring:8080/weir"}},
		{name: "webhook address from a secret", spec: weirv1.AlertProviderSpec{Type: "webhook", SecretRef: secret}},
		{
			name:    "slack without address or secret",
			spec:    weirv1.AlertProviderSpec{Type: "slack", Channel: "#deploys"},
			wantErr: "an alert provider needs an address or a secretRef to a Secret holding 'address' (or, for slack, 'token')",
		},
		{
			name:    "webhook without address or secret",
			spec:    weirv1.AlertProviderSpec{Type: "webhook"},
			wantErr: "an alert provider needs an address or a secretRef",
		},
		{
			name:    "unknown type",
			spec:    weirv1.AlertProviderSpec{Type: "teams", Address: "https://example.com/hook"},
			wantErr: `spec.type: Unsupported value: "teams": supported values: "slack", "webhook"`,
		},
		{
			name:    "missing type",
			spec:    weirv1.AlertProviderSpec{Address: "https://example.com/hook"},
			wantErr: `spec.type: Unsupported value: "": supported values: "slack", "webhook"`,
		},
		{
			name:    "address that is not a URL",
			spec:    weirv1.AlertProviderSpec{Type: "webhook", Address: "receiver.monitoring:8080"},
			wantErr: `spec.address: Invalid value: "receiver.monitoring:8080": address must be an http:// or https:// URL`,
		},
		{
			name:    "address of another scheme",
			spec:    weirv1.AlertProviderSpec{Type: "slack", Address: "ftp://hooks.slack.com/services/T0"},
			wantErr: "address must be an http:// or https:// URL",
		},
		{
			name:    "channel on a webhook",
			spec:    weirv1.AlertProviderSpec{Type: "webhook", Channel: "#deploys", Address: "https://example.com/hook"},
			wantErr: "channel and username apply only to providers of type slack",
		},
		{
			name:    "username on a webhook",
			spec:    weirv1.AlertProviderSpec{Type: "webhook", Username: "weir", Address: "https://example.com/hook"},
			wantErr: "channel and username apply only to providers of type slack",
		},
		{
			name:    "secretRef without a name",
			spec:    weirv1.AlertProviderSpec{Type: "slack", SecretRef: &weirv1.LocalSecretReference{}},
			wantErr: "spec.secretRef.name: Invalid value: \"\": spec.secretRef.name in body should be at least 1 chars long",
		},
		{
			name:    "username too long",
			spec:    weirv1.AlertProviderSpec{Type: "slack", Channel: "", Address: "https://hooks.slack.com/services/T0/B0/XXX", Username: strings.Repeat("w", 81)},
			wantErr: "spec.username: Too long: may not be more than 80 bytes",
		},
	}
	ctx := testContext(t)
	_, c := apiServer(t)
	ns := newNamespace(t, ctx, c)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &weirv1.AlertProvider{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", i)},
				Spec:       tt.spec,
			}
			err := c.Create(ctx, p)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("accepted, want %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("rejected with\n  %v\nwant it to contain\n  %s", err, tt.wantErr)
			}
		})
	}
}
