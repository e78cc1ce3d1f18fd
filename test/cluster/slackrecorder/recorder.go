// Package slackrecorder is a local HTTP server that speaks the parts of the
// Slack protocol that github.com/slack-go/slack uses to send messages:
// incoming webhooks (POST JSON to /hooks/...) and the Web API method
// chat.postMessage (form or JSON body, token auth). It records every message
// so tests can read them back, and it can inject failures (429 with
// Retry-After, or requests that hang) for the next requests.
package slackrecorder

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kinds of recorded messages.
const (
	// KindWebhook is a message posted to an incoming webhook.
	KindWebhook = "webhook"
	// KindPostMessage is a message sent through the Web API chat.postMessage.
	KindPostMessage = "chat.postMessage"
)

// DefaultToken is the token the recorder accepts when Options.Token is empty.
const DefaultToken = "xoxb-weir-test-token"

// Message is one message the recorder accepted.
type Message struct {
	// Kind is KindWebhook or KindPostMessage.
	Kind string
	// Path is the request path, e.g. /hooks/T000/B000/XXX or /api/chat.postMessage.
	Path string
	// Token is the token the Web API call carried (empty for webhooks).
	Token string
	// Raw is the request body as JSON. Form bodies are converted to a JSON
	// object of their fields, with blocks and attachments decoded.
	Raw json.RawMessage
	// Channel, Text, Username, IconEmoji, ThreadTS are the parsed fields.
	Channel   string
	Text      string
	Username  string
	IconEmoji string
	ThreadTS  string
	// Blocks and Attachments are the raw JSON arrays, nil when absent.
	Blocks      json.RawMessage
	Attachments json.RawMessage
	// TS is the timestamp the recorder answered with (Web API only).
	TS string
	// Received is when the recorder got the message.
	Received time.Time
}

// Options configure a Recorder.
type Options struct {
	// Addr is the listen address; default 127.0.0.1:0.
	Addr string
	// Token is the bot token chat.postMessage must carry; default DefaultToken.
	Token string
}

// Recorder is a running Slack recorder. It is safe for concurrent use.
type Recorder struct {
	token string
	ln    net.Listener
	srv   *http.Server

	mu       sync.Mutex
	msgs     []Message
	requests int
	seq      int64
	rateN    int
	rateWait time.Duration
	hangN    int
	changed  chan struct{}

	closed chan struct{}
	once   sync.Once
}

// Start listens on a loopback port and serves until Close.
func Start(opts Options) (*Recorder, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	token := opts.Token
	if token == "" {
		token = DefaultToken
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen for the slack recorder: %w", err)
	}
	r := &Recorder{
		token:   token,
		ln:      ln,
		changed: make(chan struct{}),
		closed:  make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hooks/", r.handleWebhook)
	mux.HandleFunc("/api/", r.handleAPI)
	r.srv = &http.Server{Handler: r.faults(mux), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// URL is the base URL, e.g. http://127.0.0.1:40000.
func (r *Recorder) URL() string { return "http://" + r.ln.Addr().String() }

// APIURL is the Web API base URL to pass to slack.OptionAPIURL.
func (r *Recorder) APIURL() string { return r.URL() + "/api/" }

// WebhookURL is an incoming-webhook URL the recorder accepts.
func (r *Recorder) WebhookURL() string { return r.URL() + "/hooks/T0WEIR/B0WEIR/recorder" }

// Token is the token chat.postMessage calls must carry.
func (r *Recorder) Token() string { return r.token }

// Close stops the server and releases requests that hang.
func (r *Recorder) Close() error {
	r.once.Do(func() { close(r.closed) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("failed to stop the slack recorder: %w", err)
	}
	return nil
}

// Messages returns a copy of every message recorded so far, oldest first.
func (r *Recorder) Messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

// Requests is how many requests the recorder received, failed ones included.
func (r *Recorder) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// Reset forgets recorded messages and pending faults.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = nil
	r.requests = 0
	r.rateN, r.hangN = 0, 0
}

// WaitForMessages blocks until at least n messages were recorded and returns
// them, or returns the context's error.
func (r *Recorder) WaitForMessages(ctx context.Context, n int) ([]Message, error) {
	for {
		r.mu.Lock()
		if len(r.msgs) >= n {
			msgs := append([]Message(nil), r.msgs...)
			r.mu.Unlock()
			return msgs, nil
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %d slack messages: %w", n, ctx.Err())
		}
	}
}

// RateLimitNext answers the next k requests with 429 Too Many Requests and
// a Retry-After header of retryAfter (rounded up to whole seconds).
func (r *Recorder) RateLimitNext(k int, retryAfter time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rateN = k
	r.rateWait = retryAfter
}

// HangNext makes the next k requests hang until the client gives up or the
// recorder is closed.
func (r *Recorder) HangNext(k int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hangN = k
}

// faults counts requests and applies pending injected failures.
func (r *Recorder) faults(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests++
		hang := r.hangN > 0
		if hang {
			r.hangN--
		}
		rate := !hang && r.rateN > 0
		if rate {
			r.rateN--
		}
		wait := r.rateWait
		r.notifyLocked()
		r.mu.Unlock()
		switch {
		case hang:
			select {
			case <-req.Context().Done():
			case <-r.closed:
			}
		case rate:
			secs := int((wait + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			http.Error(w, "rate limited", http.StatusTooManyRequests)
		default:
			next.ServeHTTP(w, req)
		}
	})
}

// notifyLocked wakes WaitForMessages callers; r.mu must be held.
func (r *Recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// handleWebhook records an incoming-webhook post; Slack answers "ok".
func (r *Recorder) handleWebhook(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "invalid_method", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	if err != nil {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	msg, err := parseJSON(body)
	if err != nil {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	if msg.Text == "" && msg.Blocks == nil && msg.Attachments == nil {
		http.Error(w, "no_text", http.StatusBadRequest)
		return
	}
	msg.Kind = KindWebhook
	msg.Path = req.URL.Path
	r.record(msg)
	w.Header().Set("Content-Type", "text/html")
	_, _ = io.WriteString(w, "ok")
}

// handleAPI serves Web API methods the way Slack does: HTTP 200 with
// {"ok":false,"error":...} for application errors.
func (r *Recorder) handleAPI(w http.ResponseWriter, req *http.Request) {
	method := strings.TrimPrefix(req.URL.Path, "/api/")
	body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	if err != nil {
		writeJSON(w, map[string]any{"ok": false, "error": "invalid_form_data"})
		return
	}
	msg, err := parseRequest(req, body)
	if err != nil {
		writeJSON(w, map[string]any{"ok": false, "error": "invalid_form_data"})
		return
	}
	switch {
	case msg.Token == "":
		writeJSON(w, map[string]any{"ok": false, "error": "not_authed"})
		return
	case msg.Token != r.token:
		writeJSON(w, map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	switch method {
	case "auth.test":
		writeJSON(w, map[string]any{"ok": true, "url": r.URL() + "/", "team": "weir", "user": "weir-bot",
			"team_id": "T0WEIR", "user_id": "U0WEIR", "bot_id": "B0WEIR"})
	case KindPostMessage:
		r.postMessage(w, req, msg)
	default:
		writeJSON(w, map[string]any{"ok": false, "error": "unknown_method"})
	}
}

// postMessage records a chat.postMessage call and answers like Slack.
func (r *Recorder) postMessage(w http.ResponseWriter, req *http.Request, msg Message) {
	if msg.Channel == "" {
		writeJSON(w, map[string]any{"ok": false, "error": "channel_not_found"})
		return
	}
	if msg.Text == "" && msg.Blocks == nil && msg.Attachments == nil {
		writeJSON(w, map[string]any{"ok": false, "error": "no_text"})
		return
	}
	msg.Kind = KindPostMessage
	msg.Path = req.URL.Path
	msg = r.record(msg)
	writeJSON(w, map[string]any{
		"ok":      true,
		"channel": msg.Channel,
		"ts":      msg.TS,
		"message": map[string]any{"type": "message", "text": msg.Text, "ts": msg.TS, "bot_id": "B0WEIR"},
	})
}

// record stores msg with a fresh timestamp and returns it.
func (r *Recorder) record(msg Message) Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	now := time.Now()
	msg.Received = now
	msg.TS = fmt.Sprintf("%d.%06d", now.Unix(), r.seq%1000000)
	r.msgs = append(r.msgs, msg)
	r.notifyLocked()
	return msg
}

// parseRequest reads a Web API request body (JSON or form) and its token.
func parseRequest(req *http.Request, body []byte) (Message, error) {
	ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	var (
		msg Message
		err error
	)
	switch ct {
	case "application/json":
		msg, err = parseJSON(body)
	default:
		msg, err = parseForm(body, req.URL.Query())
	}
	if err != nil {
		return Message{}, err
	}
	if auth := req.Header.Get("Authorization"); strings.HasPrefix(auth, "Bearer ") {
		msg.Token = strings.TrimPrefix(auth, "Bearer ")
	}
	return msg, nil
}

// jsonMessage is the subset of a Slack message body the recorder parses.
type jsonMessage struct {
	Token       string          `json:"token"`
	Channel     string          `json:"channel"`
	Text        string          `json:"text"`
	Username    string          `json:"username"`
	IconEmoji   string          `json:"icon_emoji"`
	ThreadTS    string          `json:"thread_ts"`
	Blocks      json.RawMessage `json:"blocks"`
	Attachments json.RawMessage `json:"attachments"`
}

// parseJSON parses a JSON message body.
func parseJSON(body []byte) (Message, error) {
	var m jsonMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return Message{}, fmt.Errorf("invalid JSON body: %w", err)
	}
	return Message{
		Raw: append(json.RawMessage(nil), body...), Token: m.Token,
		Channel: m.Channel, Text: m.Text, Username: m.Username, IconEmoji: m.IconEmoji, ThreadTS: m.ThreadTS,
		Blocks: nullable(m.Blocks), Attachments: nullable(m.Attachments),
	}, nil
}

// parseForm parses a form body; blocks and attachments are JSON strings in it.
func parseForm(body []byte, query url.Values) (Message, error) {
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return Message{}, fmt.Errorf("invalid form body: %w", err)
	}
	for k, v := range query {
		if _, ok := values[k]; !ok {
			values[k] = v
		}
	}
	obj := make(map[string]any, len(values))
	for k := range values {
		v := values.Get(k)
		if (k == "blocks" || k == "attachments" || k == "metadata") && json.Valid([]byte(v)) {
			obj[k] = json.RawMessage(v)
			continue
		}
		obj[k] = v
	}
	delete(obj, "token")
	raw, err := json.Marshal(obj)
	if err != nil {
		return Message{}, fmt.Errorf("failed to encode form as JSON: %w", err)
	}
	msg := Message{
		Raw: raw, Token: values.Get("token"),
		Channel: values.Get("channel"), Text: values.Get("text"), Username: values.Get("username"),
		IconEmoji: values.Get("icon_emoji"), ThreadTS: values.Get("thread_ts"),
	}
	if v := values.Get("blocks"); v != "" {
		msg.Blocks = json.RawMessage(v)
	}
	if v := values.Get("attachments"); v != "" {
		msg.Attachments = json.RawMessage(v)
	}
	return msg, nil
}

// nullable turns an absent or JSON null value into nil.
func nullable(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}

// writeJSON answers 200 with v as JSON.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}
