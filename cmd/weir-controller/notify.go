package main

// This file belongs to the notifier: it registers the component that turns
// weir's Kubernetes Events into Slack and webhook messages.

import (
	"flag"
	"fmt"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/weir-dev/weir/notifier"
)

// notifyOptions are the flags of the notifier.
type notifyOptions struct {
	slackURL       string
	slackToken     string
	slackChannel   string
	slackAPIURL    string
	slackUsername  string
	clusterName    string
	weightAdvanced bool
	queueSize      int
	maxAge         time.Duration
}

func (o *notifyOptions) bindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.slackURL, "slack-url", "", "Slack incoming-webhook URL that receives the events of Canaries without alerts.")
	fs.StringVar(&o.slackToken, "slack-token", "", "Slack bot token (chat.postMessage) for Canaries without alerts; needs --slack-channel. Not together with --slack-url.")
	fs.StringVar(&o.slackChannel, "slack-channel", "", "Slack channel of the default notifier.")
	fs.StringVar(&o.slackAPIURL, "slack-api-url", "", "Slack Web API base URL for token-based notifiers, for enterprise gateways and tests (default Slack's).")
	fs.StringVar(&o.slackUsername, "slack-username", "", "Name the default notifier posts as.")
	fs.StringVar(&o.clusterName, "cluster-name", "", "Cluster name shown in every message.")
	fs.BoolVar(&o.weightAdvanced, "notify-weight-advanced", false, "Also send a message at every weight step, not only at the transitions people act on.")
	fs.IntVar(&o.queueSize, "notify-queue-size", 100, "Messages waiting per provider; when full the oldest is dropped (weir_notifications_total{result=\"dropped\"}).")
	fs.DurationVar(&o.maxAge, "notify-max-age", 15*time.Minute, "Events last recorded longer ago than this are not sent (0: no limit).")
}

// setupNotifier registers the notifier with mgr.
func setupNotifier(mgr ctrl.Manager, o notifyOptions) error {
	err := notifier.Setup(mgr, notifier.Options{
		Rules: notifier.Rules{WeightAdvanced: o.weightAdvanced, Cluster: o.clusterName},
		Default: notifier.SlackOptions{
			WebhookURL: o.slackURL,
			Token:      o.slackToken,
			Channel:    o.slackChannel,
			Username:   o.slackUsername,
		},
		SlackAPIURL: o.slackAPIURL,
		Queue:       notifier.QueueOptions{Capacity: o.queueSize},
		MaxAge:      o.maxAge,
	})
	if err != nil {
		return fmt.Errorf("failed to set up the notifier: %w", err)
	}
	return nil
}
