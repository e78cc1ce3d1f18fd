package notifier

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	weirv1 "github.com/weir-dev/weir/canary/v1alpha1"
)

// DefaultProvider is the provider name of the global default sink, the one
// configured by flags and used for Canaries without alerts.
const DefaultProvider = "default"

// Target is a resolved alert: a sink and the least severe Event it gets.
type Target struct {
	// Provider is DefaultProvider or the AlertProvider's namespace/name.
	Provider string
	// Sink sends the messages.
	Sink Notifier
	// MinSeverity is the least severe Event sent to Sink.
	MinSeverity Severity
}

// Problem is an alert that cannot be resolved to a sink.
type Problem struct {
	// Alert is the alert's name in spec.analysis.alerts.
	Alert string
	// Provider is the namespace/name the alert refers to.
	Provider string
	// Err says what is wrong, e.g. a missing AlertProvider or Secret.
	Err error
}

// Resolver turns a Canary's alerts into Targets.
type Resolver struct {
	// Client reads AlertProviders.
	Client client.Reader
	// Secrets reads Secrets; an uncached reader, so the controller needs
	// only get on Secrets and caches none of them.
	Secrets client.Reader
	// HTTPClient is used by the sinks.
	HTTPClient *http.Client
	// SlackAPIURL is the Web API base URL for Slack providers with a token
	// and no address of their own; Slack's when empty.
	SlackAPIURL string
	// Default receives the Events of Canaries without alerts; nil when no
	// default is configured.
	Default Notifier
}

// sinkBuilders is the table of AlertProvider types. A type that is not in
// it is rejected.
var sinkBuilders = map[string]func(r *Resolver, p *weirv1.AlertProvider, address, token string) (Notifier, error){
	weirv1.AlertProviderSlack:   (*Resolver).slackSink,
	weirv1.AlertProviderWebhook: (*Resolver).webhookSink,
}

// invalidError is a configuration problem of an alert: a missing or
// unusable AlertProvider or Secret. Other errors reading them are
// transient.
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }

// invalid returns an invalidError with a formatted message.
func invalid(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// Resolve returns where c's Events go: one Target per distinct provider
// (alerts naming the same provider are merged, the least severe threshold
// wins), and the alerts that cannot be resolved because of their
// configuration. A Canary without alerts goes to the default sink, if any.
// The error is a transient failure to read a provider or Secret.
func (r *Resolver) Resolve(ctx context.Context, c *weirv1.Canary) ([]Target, []Problem, error) {
	if len(c.Spec.Analysis.Alerts) == 0 {
		if r.Default == nil {
			return nil, nil, nil
		}
		return []Target{{Provider: DefaultProvider, Sink: r.Default, MinSeverity: SeverityInfo}}, nil, nil
	}
	byProvider := map[string]Target{}
	var problems []Problem
	for _, a := range c.Spec.Analysis.Alerts {
		ref := types.NamespacedName{Namespace: a.ProviderRef.Namespace, Name: a.ProviderRef.Name}
		if ref.Namespace == "" {
			ref.Namespace = c.Namespace
		}
		sev, err := ParseSeverity(a.Severity)
		if err != nil {
			problems = append(problems, Problem{Alert: a.Name, Provider: ref.String(), Err: err})
			continue
		}
		if t, ok := byProvider[ref.String()]; ok {
			t.MinSeverity = min(t.MinSeverity, sev)
			byProvider[ref.String()] = t
			continue
		}
		sink, err := r.sink(ctx, ref)
		var inv *invalidError
		switch {
		case errors.As(err, &inv):
			problems = append(problems, Problem{Alert: a.Name, Provider: ref.String(), Err: err})
			continue
		case err != nil:
			return nil, nil, err
		}
		byProvider[ref.String()] = Target{Provider: ref.String(), Sink: sink, MinSeverity: sev}
	}
	targets := make([]Target, 0, len(byProvider))
	for _, t := range byProvider {
		targets = append(targets, t)
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].Provider < targets[j].Provider })
	return targets, problems, nil
}

// sink reads the AlertProvider ref and its Secret and builds its sink.
func (r *Resolver) sink(ctx context.Context, ref types.NamespacedName) (Notifier, error) {
	var p weirv1.AlertProvider
	if err := r.Client.Get(ctx, ref, &p); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, invalid("AlertProvider %s not found", ref)
		}
		return nil, fmt.Errorf("failed to get AlertProvider %s: %w", ref, err)
	}
	address, token := p.Spec.Address, ""
	if p.Spec.SecretRef != nil {
		sref := types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.SecretRef.Name}
		var s corev1.Secret
		if err := r.Secrets.Get(ctx, sref, &s); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, invalid("Secret %s of AlertProvider %s not found", sref, ref)
			}
			return nil, fmt.Errorf("failed to get Secret %s of AlertProvider %s: %w", sref, ref, err)
		}
		if v := s.Data[weirv1.SecretKeyAddress]; len(v) > 0 {
			address = string(v)
		}
		token = string(s.Data[weirv1.SecretKeyToken])
		if address == "" && token == "" {
			return nil, invalid("Secret %s of AlertProvider %s holds neither %q nor %q", sref, ref, weirv1.SecretKeyAddress, weirv1.SecretKeyToken)
		}
	}
	build, ok := sinkBuilders[p.Spec.Type]
	if !ok {
		return nil, invalid("AlertProvider %s has unknown type %q", ref, p.Spec.Type)
	}
	sink, err := build(r, &p, address, token)
	if err != nil {
		return nil, invalid("AlertProvider %s: %v", ref, err)
	}
	return sink, nil
}

// slackSink builds a Slack sink: with a token, chat.postMessage to the
// channel (address, if any, is the Web API base URL); without, the address
// is an incoming webhook.
func (r *Resolver) slackSink(p *weirv1.AlertProvider, address, token string) (Notifier, error) {
	o := SlackOptions{Channel: p.Spec.Channel, Username: p.Spec.Username, HTTPClient: r.HTTPClient}
	if token != "" {
		o.Token, o.APIURL = token, address
		if o.APIURL == "" {
			o.APIURL = r.SlackAPIURL
		}
	} else {
		o.WebhookURL = address
	}
	return NewSlack(o)
}

// webhookSink builds a generic JSON webhook sink; a token, if any, is sent
// as a bearer token.
func (r *Resolver) webhookSink(_ *weirv1.AlertProvider, address, token string) (Notifier, error) {
	if address == "" {
		return nil, errors.New("a webhook provider needs an address")
	}
	return NewWebhookWithToken(address, token, r.HTTPClient)
}
