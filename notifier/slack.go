package notifier

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/slack-go/slack"
)

// Attachment colours by severity, Slack's own good/warning/danger.
var severityColors = map[Severity]string{
	SeverityInfo:  "#2eb886",
	SeverityWarn:  "#daa038",
	SeverityError: "#a30200",
}

// SlackOptions configure a Slack sink: either WebhookURL (an incoming
// webhook) or Token and Channel (chat.postMessage).
type SlackOptions struct {
	// WebhookURL is an incoming-webhook URL.
	WebhookURL string
	// Token is a bot token (xoxb-…) for chat.postMessage.
	Token string
	// Channel to post to; required with Token, optional with WebhookURL.
	Channel string
	// APIURL is the Web API base URL used with Token; Slack's by default.
	APIURL string
	// Username the messages are posted as, when not empty.
	Username string
	// HTTPClient sends the requests; required.
	HTTPClient *http.Client
}

// Slack posts Block Kit messages to Slack through slack-go.
type Slack struct {
	webhookURL string
	api        *slack.Client
	channel    string
	username   string
	httpClient *http.Client
}

// NewSlack checks o and returns a Slack sink.
func NewSlack(o SlackOptions) (*Slack, error) {
	if o.HTTPClient == nil {
		return nil, errors.New("slack sink needs an HTTP client")
	}
	s := &Slack{channel: o.Channel, username: o.Username, httpClient: o.HTTPClient}
	switch {
	case o.Token != "" && o.WebhookURL != "":
		return nil, errors.New("slack sink takes a webhook URL or a token, not both")
	case o.Token != "":
		if o.Channel == "" {
			return nil, errors.New("slack sink with a token needs a channel")
		}
		api := o.APIURL
		if api == "" {
			api = slack.APIURL
		}
		if !strings.HasSuffix(api, "/") {
			api += "/"
		}
		s.api = slack.New(o.Token, slack.OptionAPIURL(api), slack.OptionHTTPClient(o.HTTPClient))
	case o.WebhookURL != "":
		s.webhookURL = o.WebhookURL
	default:
		return nil, errors.New("slack sink needs a webhook URL or a token and a channel")
	}
	return s, nil
}

// Notify posts ev. A 429 answer comes back as a wrapped
// *slack.RateLimitedError carrying Slack's Retry-After.
func (s *Slack) Notify(ctx context.Context, ev Event) error {
	text, att := SlackMessage(ev)
	if s.api != nil {
		opts := []slack.MsgOption{slack.MsgOptionText(text, false), slack.MsgOptionAttachments(att)}
		if s.username != "" {
			opts = append(opts, slack.MsgOptionUsername(s.username))
		}
		if _, _, err := s.api.PostMessageContext(ctx, s.channel, opts...); err != nil {
			return fmt.Errorf("failed to post to slack channel %s: %w", s.channel, err)
		}
		return nil
	}
	msg := &slack.WebhookMessage{
		Text:        text,
		Attachments: []slack.Attachment{att},
		Channel:     s.channel,
		Username:    s.username,
	}
	if err := slack.PostWebhookCustomHTTPContext(ctx, s.webhookURL, s.httpClient, msg); err != nil {
		return fmt.Errorf("failed to post to slack webhook: %w", err)
	}
	return nil
}

// SlackMessage builds the message for ev: a plain-text fallback (also the
// notification text) and one attachment coloured by severity whose Block
// Kit blocks are the headline with the Event's message, the fields, and a
// context line with the cluster and the reason.
func SlackMessage(ev Event) (string, slack.Attachment) {
	headline := "*" + escape(ev.Headline()) + "*"
	if ev.Message != "" {
		headline += "\n" + escape(ev.Message)
	}
	headline = truncate(headline, maxSectionText)
	blocks := []slack.Block{
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, headline, false, false), nil, nil),
	}
	var fields []*slack.TextBlockObject
	for _, f := range ev.Fields() {
		text := truncate("*"+escape(f.Title)+"*\n"+escape(f.Value), maxFieldText)
		fields = append(fields, slack.NewTextBlockObject(slack.MarkdownType, text, false, false))
	}
	if len(fields) > 0 {
		blocks = append(blocks, slack.NewSectionBlock(nil, fields, nil))
	}
	var context []slack.MixedElement
	if ev.Cluster != "" {
		context = append(context, slack.NewTextBlockObject(slack.MarkdownType, "cluster *"+escape(ev.Cluster)+"*", false, false))
	}
	context = append(context, slack.NewTextBlockObject(slack.MarkdownType, "reason "+escape(ev.Reason), false, false))
	blocks = append(blocks, slack.NewContextBlock("", context...))

	text := truncate(escape(ev.Text()), maxSectionText)
	return text, slack.Attachment{
		Color:    severityColors[ev.Severity],
		Fallback: text,
		Blocks:   slack.Blocks{BlockSet: blocks},
	}
}

// escape replaces the three characters Slack reserves in message text.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// Slack's limits: a section's text, and each of its fields.
const (
	maxSectionText = 3000
	maxFieldText   = 2000
)

// truncate shortens s to at most n bytes, on a rune boundary, marking the
// cut with an ellipsis.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
