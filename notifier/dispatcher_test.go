package notifier

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	weirv1 "github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/test/cluster/slackrecorder"
)

// spyClock is a fake clock that remembers the durations it was asked to
// wait for.
type spyClock struct {
	*clocktesting.FakeClock
	mu    sync.Mutex
	waits []time.Duration
}

func (c *spyClock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	return c.FakeClock.NewTimer(d)
}

func (c *spyClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// startDispatcher runs a Dispatcher until t ends.
func startDispatcher(t *testing.T, o QueueOptions) *Dispatcher {
	t.Helper()
	d := NewDispatcher(o)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = d.Start(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})
	return d
}

// testEvent is an Event for a Canary named after t.
func testEvent(t *testing.T, reason string) Event {
	return Event{Canary: types.NamespacedName{Namespace: "test", Name: "podinfo"}, Reason: reason, Severity: reasons[reason].severity,
		Message: t.Name(), Target: "Deployment/podinfo", Weight: "10"}
}

// doneChan returns a Done callback and the channel it reports to.
func doneChan() (func(context.Context, error), chan error) {
	ch := make(chan error, 16)
	return func(_ context.Context, err error) { ch <- err }, ch
}

func slackSinks(t *testing.T, rec *slackrecorder.Recorder) map[string]Notifier {
	t.Helper()
	hc := testHTTPClient(t)
	hook, err := NewSlack(SlackOptions{WebhookURL: rec.WebhookURL(), HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewSlack(SlackOptions{Token: rec.Token(), Channel: "#deploys", APIURL: rec.APIURL(), HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Notifier{"webhook": hook, "chat.postMessage": api}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	for _, mode := range []string{"webhook", "chat.postMessage"} {
		t.Run(mode, func(t *testing.T) {
			ctx := testContext(t)
			rec := startRecorder(t)
			sink := slackSinks(t, rec)[mode]
			clk := &spyClock{FakeClock: clocktesting.NewFakeClock(time.Now())}
			d := startDispatcher(t, QueueOptions{Clock: clk})
			provider := "retry-after/" + mode
			retried := counterValue(t, notificationsTotal.WithLabelValues(provider, ResultRetried))

			rec.RateLimitNext(1, 3*time.Second)
			done, result := doneChan()
			d.Enqueue(Delivery{Provider: provider, Sink: sink, Event: testEvent(t, weirv1.EventRolledBack), Done: done})

			eventually(t, ctx, "the worker to wait after the 429", clk.HasWaiters)
			if got := rec.Requests(); got != 1 {
				t.Fatalf("requests = %d before the Retry-After passed, want 1", got)
			}
			if got := clk.Waits(); len(got) != 1 || got[0] != 3*time.Second {
				t.Fatalf("waits = %v, want [3s] from Retry-After", got)
			}
			clk.Step(3*time.Second - time.Millisecond)
			if !clk.HasWaiters() || len(rec.Messages()) != 0 {
				t.Fatal("retried before the Retry-After passed")
			}
			clk.Step(time.Millisecond)
			msgs, err := rec.WaitForMessages(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-result; err != nil {
				t.Fatalf("delivery failed: %v", err)
			}
			if len(msgs) != 1 || rec.Requests() != 2 {
				t.Errorf("got %d messages in %d requests, want 1 in 2", len(msgs), rec.Requests())
			}
			if got := counterValue(t, notificationsTotal.WithLabelValues(provider, ResultRetried)) - retried; got != 1 {
				t.Errorf("retried counted %v times, want 1", got)
			}
		})
	}
}

func TestRetryAfterRealClock(t *testing.T) {
	ctx := testContext(t)
	rec := startRecorder(t)
	d := startDispatcher(t, QueueOptions{})
	rec.RateLimitNext(1, time.Second)
	done, result := doneChan()
	start := time.Now()
	d.Enqueue(Delivery{Provider: "retry-after/real", Sink: slackSinks(t, rec)["webhook"], Event: testEvent(t, weirv1.EventRolledBack), Done: done})
	if _, err := rec.WaitForMessages(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < time.Second {
		t.Errorf("sent again after %s, before Retry-After: 1", elapsed)
	}
}

func TestBackoffWithoutRetryAfter(t *testing.T) {
	ctx := testContext(t)
	var mu sync.Mutex
	codes := []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusOK}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		code := codes[0]
		codes = codes[1:]
		mu.Unlock()
		w.WriteHeader(code)
	}))
	defer srv.Close()
	sink, err := NewWebhook(srv.URL, testHTTPClient(t))
	if err != nil {
		t.Fatal(err)
	}
	clk := &spyClock{FakeClock: clocktesting.NewFakeClock(time.Now())}
	d := startDispatcher(t, QueueOptions{Clock: clk, MinBackoff: 2 * time.Second})
	done, result := doneChan()
	d.Enqueue(Delivery{Provider: "backoff", Sink: sink, Event: testEvent(t, weirv1.EventPromoted), Done: done})
	for range 2 {
		eventually(t, ctx, "a back-off", clk.HasWaiters)
		clk.Step(time.Hour)
	}
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	if got, want := clk.Waits(), []time.Duration{2 * time.Second, 4 * time.Second}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("waits = %v, want %v", got, want)
	}
}

func TestRejectedMessageIsNotRetried(t *testing.T) {
	rec := startRecorder(t)
	sink, err := NewSlack(SlackOptions{Token: "xoxb-wrong", Channel: "#deploys", APIURL: rec.APIURL(), HTTPClient: testHTTPClient(t)})
	if err != nil {
		t.Fatal(err)
	}
	d := startDispatcher(t, QueueOptions{})
	done, result := doneChan()
	d.Enqueue(Delivery{Provider: "rejected", Sink: sink, Event: testEvent(t, weirv1.EventRolledBack), Done: done})
	err = <-result
	var derr *DeliveryError
	if !errors.As(err, &derr) || !derr.Permanent || derr.Attempts != 1 {
		t.Fatalf("got %v, want a permanent failure after one attempt", err)
	}
	if rec.Requests() != 1 {
		t.Errorf("requests = %d, want 1", rec.Requests())
	}
}

func TestFullQueueDropsOldest(t *testing.T) {
	d := NewDispatcher(QueueOptions{Capacity: 3}) // not started: nothing leaves the queue
	dropped := counterValue(t, notificationsTotal.WithLabelValues("full", ResultDropped))
	var mu sync.Mutex
	var droppedMsgs []string
	for i := range 5 {
		ev := testEvent(t, weirv1.EventPromoted)
		ev.Message = fmt.Sprint(i)
		d.Enqueue(Delivery{Provider: "full", Sink: nil, Event: ev, Done: func(_ context.Context, err error) {
			if !errors.Is(err, ErrDropped) {
				t.Errorf("message %s: got %v, want ErrDropped", ev.Message, err)
			}
			mu.Lock()
			droppedMsgs = append(droppedMsgs, ev.Message)
			mu.Unlock()
		}})
	}
	if got := d.Len("full"); got != 3 {
		t.Errorf("queue length %d, want 3", got)
	}
	if got := counterValue(t, notificationsTotal.WithLabelValues("full", ResultDropped)) - dropped; got != 2 {
		t.Errorf("dropped counted %v, want 2", got)
	}
	if fmt.Sprint(droppedMsgs) != "[0 1]" {
		t.Errorf("dropped %v, want the oldest [0 1]", droppedMsgs)
	}
}

func TestHangingSlackDoesNotBlock(t *testing.T) {
	ctx := testContext(t)
	hanging := startRecorder(t)
	other := startRecorder(t)
	hanging.HangNext(1000)
	d := startDispatcher(t, QueueOptions{Capacity: 10, AttemptTimeout: time.Minute})
	hangSink := slackSinks(t, hanging)["webhook"]

	d.Enqueue(Delivery{Provider: "hanging", Sink: hangSink, Event: testEvent(t, weirv1.EventNewRevision)})
	eventually(t, ctx, "the first request to hang", func() bool { return hanging.Requests() == 1 })

	// Enqueue returns at once while the provider's only goroutine hangs;
	// a blocking Enqueue would never let this loop finish.
	enqueued := make(chan struct{})
	go func() {
		defer close(enqueued)
		for range 100 {
			d.Enqueue(Delivery{Provider: "hanging", Sink: hangSink, Event: testEvent(t, weirv1.EventRolledBack)})
		}
	}()
	select {
	case <-enqueued:
	case <-ctx.Done():
		t.Fatal("Enqueue blocked behind a hanging Slack")
	}
	if got := d.Len("hanging"); got != 10 {
		t.Errorf("queue length %d, want the capacity 10", got)
	}

	// Another provider is served meanwhile.
	d.Enqueue(Delivery{Provider: "other", Sink: slackSinks(t, other)["webhook"], Event: testEvent(t, weirv1.EventPromoted)})
	if _, err := other.WaitForMessages(ctx, 1); err != nil {
		t.Fatalf("a hanging provider held up another: %v", err)
	}
	if hanging.Requests() != 1 || len(hanging.Messages()) != 0 {
		t.Errorf("hanging server got %d requests, %d messages; want 1, 0", hanging.Requests(), len(hanging.Messages()))
	}
}

func TestWebhookSink(t *testing.T) {
	ctx := testContext(t)
	var got WebhookPayload
	var ctype, auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctype, auth = r.Header.Get("Content-Type"), r.Header.Get("Authorization")
		if err := decodeJSON(r, &got); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	sink, err := NewWebhookWithToken(srv.URL, "s3cret", testHTTPClient(t))
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := Rules{Cluster: "prod"}.FromKubeEvent(kubeEvent("test", "podinfo", rollback()[4]))
	if err := sink.Notify(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if ctype != "application/json" || auth != "Bearer s3cret" {
		t.Errorf("content type %q, authorization %q", ctype, auth)
	}
	if got.Headline != "podinfo.test rolled back" || got.Reason != weirv1.EventRolledBack || got.Metric != "request-success-rate" ||
		got.Value != "90.25" || got.Bound != ">= 99" || got.Cluster != "prod" || got.Severity != SeverityError || got.RollbackCause != "threshold" {
		t.Errorf("payload lacks the rollback's numbers: %+v", got)
	}
}

func TestWebhookErrors(t *testing.T) {
	tests := []struct {
		name       string
		code       int
		retryAfter string
		wantRetry  bool
		wantAfter  time.Duration
	}{
		{"rate limited", http.StatusTooManyRequests, "7", true, 7 * time.Second},
		{"server error", http.StatusInternalServerError, "", true, 0},
		{"not found", http.StatusNotFound, "", false, 0},
		{"bad request", http.StatusBadRequest, "", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.code)
			}))
			defer srv.Close()
			sink, err := NewWebhook(srv.URL, testHTTPClient(t))
			if err != nil {
				t.Fatal(err)
			}
			err = sink.Notify(testContext(t), testEvent(t, weirv1.EventPromoted))
			retry, after := classify(err)
			if retry != tt.wantRetry || after != tt.wantAfter {
				t.Errorf("classify(%v) = %v, %v; want %v, %v", err, retry, after, tt.wantRetry, tt.wantAfter)
			}
		})
	}
}

func TestNewSlackRejectsIncompleteOptions(t *testing.T) {
	hc := testHTTPClient(t)
	tests := []struct {
		name string
		o    SlackOptions
	}{
		{"nothing", SlackOptions{HTTPClient: hc}},
		{"token without channel", SlackOptions{Token: "xoxb-1", HTTPClient: hc}},
		{"webhook and token", SlackOptions{WebhookURL: "https://hooks.slack.com/x", Token: "xoxb-1", Channel: "#c", HTTPClient: hc}},
		{"no HTTP client", SlackOptions{WebhookURL: "https://hooks.slack.com/x"}},
	}
	for _, tt := range tests {
		if _, err := NewSlack(tt.o); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestAttemptsRunOut(t *testing.T) {
	ctx := testContext(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	sink, err := NewWebhook(srv.URL, testHTTPClient(t))
	if err != nil {
		t.Fatal(err)
	}
	clk := &spyClock{FakeClock: clocktesting.NewFakeClock(time.Now())}
	d := startDispatcher(t, QueueOptions{Clock: clk, MaxAttempts: 3})
	failed := counterValue(t, notificationsTotal.WithLabelValues("down", ResultFailed))
	done, result := doneChan()
	d.Enqueue(Delivery{Provider: "down", Sink: sink, Event: testEvent(t, weirv1.EventRolledBack), Done: done})
	for range 2 {
		eventually(t, ctx, "a back-off", clk.HasWaiters)
		clk.Step(time.Hour)
	}
	err = <-result
	var derr *DeliveryError
	if !errors.As(err, &derr) || derr.Permanent || derr.Attempts != 3 {
		t.Fatalf("got %#v, want a transient failure after 3 attempts", err)
	}
	if got := counterValue(t, notificationsTotal.WithLabelValues("down", ResultFailed)) - failed; got != 1 {
		t.Errorf("failed counted %v, want 1", got)
	}
}
