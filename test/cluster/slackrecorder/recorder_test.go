package slackrecorder_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/weir-dev/weir/test/cluster/slackrecorder"
)

func startRecorder(t *testing.T) *slackrecorder.Recorder {
	t.Helper()
	r, err := slackrecorder.Start(slackrecorder.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestWebhookIsRecorded(t *testing.T) {
	r := startRecorder(t)
	ctx := testContext(t)
	client := &http.Client{Timeout: 5 * time.Second}
	msg := &slack.WebhookMessage{
		Channel: "#deploys",
		Text:    "podinfo promoted",
		Attachments: []slack.Attachment{{
			Color: "good", Title: "podinfo.test",
			Fields: []slack.AttachmentField{{Title: "Target", Value: "Deployment/podinfo.test"}},
		}},
	}
	if err := slack.PostWebhookCustomHTTPContext(ctx, r.WebhookURL(), client, msg); err != nil {
		t.Fatalf("post webhook: %v", err)
	}
	msgs, err := r.WaitForMessages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := msgs[0]
	if got.Kind != slackrecorder.KindWebhook || got.Channel != "#deploys" || got.Text != "podinfo promoted" {
		t.Errorf("recorded %+v", got)
	}
	var atts []slack.Attachment
	if err := json.Unmarshal(got.Attachments, &atts); err != nil || len(atts) != 1 || atts[0].Title != "podinfo.test" {
		t.Errorf("attachments %s (%v)", got.Attachments, err)
	}
	var raw slack.WebhookMessage
	if err := json.Unmarshal(got.Raw, &raw); err != nil || raw.Text != msg.Text {
		t.Errorf("raw body %s (%v)", got.Raw, err)
	}
}

func TestPostMessageIsRecordedAndAnswered(t *testing.T) {
	r := startRecorder(t)
	ctx := testContext(t)
	api := slack.New(r.Token(), slack.OptionAPIURL(r.APIURL()), slack.OptionHTTPClient(&http.Client{Timeout: 5 * time.Second}))
	blocks := []slack.Block{slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, "*podinfo* rolled back", false, false), nil, nil)}
	channel, ts, err := api.PostMessageContext(ctx, "C0DEPLOYS", slack.MsgOptionText("podinfo rolled back", false), slack.MsgOptionBlocks(blocks...))
	if err != nil {
		t.Fatalf("post message: %v", err)
	}
	if channel != "C0DEPLOYS" || ts == "" {
		t.Errorf("answer channel=%q ts=%q", channel, ts)
	}
	msgs := r.Messages()
	if len(msgs) != 1 {
		t.Fatalf("recorded %d messages, want 1", len(msgs))
	}
	got := msgs[0]
	if got.Kind != slackrecorder.KindPostMessage || got.Channel != "C0DEPLOYS" || got.Text != "podinfo rolled back" || got.TS != ts {
		t.Errorf("recorded %+v", got)
	}
	if !strings.Contains(string(got.Blocks), "*podinfo* rolled back") {
		t.Errorf("blocks %s", got.Blocks)
	}
	var raw map[string]any
	if err := json.Unmarshal(got.Raw, &raw); err != nil || raw["channel"] != "C0DEPLOYS" {
		t.Errorf("raw body %s (%v)", got.Raw, err)
	}
}

func TestPostMessageRejectsWrongToken(t *testing.T) {
	r := startRecorder(t)
	ctx := testContext(t)
	api := slack.New("xoxb-wrong", slack.OptionAPIURL(r.APIURL()), slack.OptionHTTPClient(&http.Client{Timeout: 5 * time.Second}))
	_, _, err := api.PostMessageContext(ctx, "C0DEPLOYS", slack.MsgOptionText("hello", false))
	if err == nil || !strings.Contains(err.Error(), "invalid_auth") {
		t.Fatalf("err = %v, want invalid_auth", err)
	}
	if n := len(r.Messages()); n != 0 {
		t.Errorf("recorded %d messages, want 0", n)
	}
}

func TestRateLimitNext(t *testing.T) {
	r := startRecorder(t)
	ctx := testContext(t)
	client := &http.Client{Timeout: 5 * time.Second}
	api := slack.New(r.Token(), slack.OptionAPIURL(r.APIURL()), slack.OptionHTTPClient(client))
	r.RateLimitNext(2, 3*time.Second)

	err := slack.PostWebhookCustomHTTPContext(ctx, r.WebhookURL(), client, &slack.WebhookMessage{Text: "one"})
	var rl *slack.RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter != 3*time.Second {
		t.Fatalf("webhook err = %v, want RateLimitedError after 3s", err)
	}
	_, _, err = api.PostMessageContext(ctx, "C1", slack.MsgOptionText("two", false))
	if !errors.As(err, &rl) || rl.RetryAfter != 3*time.Second {
		t.Fatalf("postMessage err = %v, want RateLimitedError after 3s", err)
	}
	if _, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("three", false)); err != nil {
		t.Fatalf("third request: %v", err)
	}
	if msgs := r.Messages(); len(msgs) != 1 || msgs[0].Text != "three" {
		t.Errorf("recorded %+v, want only the third", msgs)
	}
	if n := r.Requests(); n != 3 {
		t.Errorf("requests = %d, want 3", n)
	}
}

func TestHangNext(t *testing.T) {
	r := startRecorder(t)
	ctx := testContext(t)
	r.HangNext(1)
	client := &http.Client{Timeout: 300 * time.Millisecond}
	start := time.Now()
	err := slack.PostWebhookCustomHTTPContext(ctx, r.WebhookURL(), client, &slack.WebhookMessage{Text: "lost"})
	if err == nil {
		t.Fatal("hanging request succeeded")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("request returned after %v, want it to hang until the client timeout", d)
	}
	if err := slack.PostWebhookCustomHTTPContext(ctx, r.WebhookURL(), client, &slack.WebhookMessage{Text: "delivered"}); err != nil {
		t.Fatalf("second request: %v", err)
	}
	if msgs := r.Messages(); len(msgs) != 1 || msgs[0].Text != "delivered" {
		t.Errorf("recorded %+v", msgs)
	}
}

func TestPostMessageAsJSON(t *testing.T) {
	r := startRecorder(t)
	ctx := testContext(t)
	body := `{"channel":"C0JSON","text":"json body","attachments":[{"color":"danger","title":"rolled back"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.APIURL()+"chat.postMessage", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+r.Token())
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		OK      bool   `json:"ok"`
		Channel string `json:"channel"`
		TS      string `json:"ts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || !answer.OK || answer.Channel != "C0JSON" || answer.TS == "" {
		t.Fatalf("answer %+v (%v)", answer, err)
	}
	msgs := r.Messages()
	if len(msgs) != 1 || msgs[0].Text != "json body" || string(msgs[0].Raw) != body || !strings.Contains(string(msgs[0].Attachments), "rolled back") {
		t.Errorf("recorded %+v", msgs)
	}
}
