package notifier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Webhook posts every Event as a JSON document to a URL.
type Webhook struct {
	url        string
	token      string
	httpClient *http.Client
}

// WebhookPayload is the JSON document a Webhook posts: the Event with its
// headline, its plain text and its fields.
type WebhookPayload struct {
	// Canary shadows Event.Canary with lower-case keys.
	Canary   CanaryRef `json:"canary"`
	Headline string    `json:"headline"`
	Text     string    `json:"text"`
	Fields   []Field   `json:"fields"`
	Event
}

// CanaryRef names the Canary in a WebhookPayload.
type CanaryRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// NewWebhook returns a webhook sink posting to url with httpClient.
func NewWebhook(url string, httpClient *http.Client) (*Webhook, error) {
	return NewWebhookWithToken(url, "", httpClient)
}

// NewWebhookWithToken returns a webhook sink that also sends token as
// "Authorization: Bearer <token>" when it is not empty.
func NewWebhookWithToken(url, token string, httpClient *http.Client) (*Webhook, error) {
	if url == "" {
		return nil, errors.New("webhook sink needs an address")
	}
	if httpClient == nil {
		return nil, errors.New("webhook sink needs an HTTP client")
	}
	return &Webhook{url: url, token: token, httpClient: httpClient}, nil
}

// HTTPError is a non-2xx answer of a webhook.
type HTTPError struct {
	// StatusCode is the HTTP status code.
	StatusCode int
	// RetryAfter is the Retry-After of a 429 or 503, zero when absent.
	RetryAfter time.Duration
}

func (e *HTTPError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("webhook answered %d, retry after %s", e.StatusCode, e.RetryAfter)
	}
	return fmt.Sprintf("webhook answered %d", e.StatusCode)
}

// Retryable is true for 429 and 5xx answers.
func (e *HTTPError) Retryable() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// Notify posts ev as a WebhookPayload.
func (w *Webhook) Notify(ctx context.Context, ev Event) error {
	body, err := json.Marshal(WebhookPayload{
		Canary:   CanaryRef{Namespace: ev.Canary.Namespace, Name: ev.Canary.Name},
		Headline: ev.Headline(), Text: ev.Text(), Fields: ev.Fields(), Event: ev})
	if err != nil {
		return fmt.Errorf("failed to encode webhook payload: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("failed to build webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if w.token != "" {
		req.Header.Set("Authorization", "Bearer "+w.token)
	}
	resp, err := w.httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("failed to post webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	herr := &HTTPError{StatusCode: resp.StatusCode}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		herr.RetryAfter = time.Duration(secs) * time.Second
	}
	return herr
}
