package notifier

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
)

// QueueOptions tune the Dispatcher. Zero values take the defaults.
type QueueOptions struct {
	// Capacity is the number of messages waiting per provider (default
	// 100). When a queue is full the oldest waiting message is dropped and
	// counted (result="dropped"): the newest message says the most about
	// where a rollout is now.
	Capacity int
	// MaxAttempts per message, the first included (default 5).
	MaxAttempts int
	// AttemptTimeout bounds one attempt (default 15s), so a server that
	// hangs costs one timeout per attempt and holds up only its provider.
	AttemptTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential back-off between
	// attempts (default 1s and 1m). A Retry-After from the sink replaces
	// the back-off, capped at MaxRetryAfter (default 10m).
	MinBackoff, MaxBackoff time.Duration
	MaxRetryAfter          time.Duration
	// Clock is the clock the back-off waits on; tests inject a fake one.
	Clock clock.Clock
}

func (o QueueOptions) withDefaults() QueueOptions {
	if o.Capacity <= 0 {
		o.Capacity = 100
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 15 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = 10 * time.Minute
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

// Delivery is one message for one provider.
type Delivery struct {
	// Provider names the destination ("default" or namespace/name of the
	// AlertProvider); messages for one provider are sent in order, one at
	// a time, and the name labels the metrics.
	Provider string
	// Sink sends the message.
	Sink Notifier
	// Event is the message.
	Event Event
	// Done, when set, is called once with the outcome: nil when sent, or a
	// *DeliveryError. It runs on the provider's goroutine.
	Done func(ctx context.Context, err error)
}

// DeliveryError is why a message was given up.
type DeliveryError struct {
	// Permanent is true when the sink rejected the message (e.g. an
	// unknown channel), false when attempts ran out, the queue dropped
	// it, or the dispatcher stopped.
	Permanent bool
	// Attempts made.
	Attempts int
	// Err is the last error.
	Err error
}

func (e *DeliveryError) Error() string { return e.Err.Error() }
func (e *DeliveryError) Unwrap() error { return e.Err }

// ErrDropped is the error of a message dropped from a full queue.
var ErrDropped = errors.New("notification queue full: message dropped")

// Dispatcher delivers messages in the background: one bounded FIFO queue
// and one goroutine per provider. Enqueue never blocks. It is a
// manager.Runnable.
type Dispatcher struct {
	o QueueOptions

	mu     sync.Mutex
	queues map[string]*providerQueue
	ctx    context.Context // set by Start; nil before
	wg     sync.WaitGroup
}

// providerQueue is the queue of one provider.
type providerQueue struct {
	name  string
	items []Delivery
	wake  chan struct{}
}

// NewDispatcher returns a Dispatcher; it delivers once Start runs.
func NewDispatcher(o QueueOptions) *Dispatcher {
	return &Dispatcher{o: o.withDefaults(), queues: map[string]*providerQueue{}}
}

// Enqueue queues d for its provider and returns at once. When the
// provider's queue is full the oldest waiting message is dropped.
func (d *Dispatcher) Enqueue(del Delivery) {
	d.mu.Lock()
	q, ok := d.queues[del.Provider]
	if !ok {
		q = &providerQueue{name: del.Provider, wake: make(chan struct{}, 1)}
		d.queues[del.Provider] = q
		if d.ctx != nil {
			d.startWorker(q)
		}
	}
	var dropped *Delivery
	if len(q.items) >= d.o.Capacity {
		first := q.items[0]
		dropped = &first
		q.items = q.items[1:]
	}
	q.items = append(q.items, del)
	d.mu.Unlock()

	select {
	case q.wake <- struct{}{}:
	default:
	}
	if dropped != nil {
		notificationsTotal.WithLabelValues(dropped.Provider, ResultDropped).Inc()
		if dropped.Done != nil {
			dropped.Done(context.Background(), &DeliveryError{Err: ErrDropped})
		}
	}
}

// Len is the number of messages waiting for provider.
func (d *Dispatcher) Len(provider string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if q, ok := d.queues[provider]; ok {
		return len(q.items)
	}
	return 0
}

// Start delivers until ctx is done, then waits for the provider goroutines
// to stop. Messages still waiting are not sent; their Events carry no
// notified mark, so the next start sends them.
func (d *Dispatcher) Start(ctx context.Context) error {
	d.mu.Lock()
	if d.ctx != nil {
		d.mu.Unlock()
		return errors.New("dispatcher already started")
	}
	d.ctx = ctx
	for _, q := range d.queues {
		d.startWorker(q)
	}
	d.mu.Unlock()
	<-ctx.Done()
	d.wg.Wait()
	return nil
}

// startWorker runs q's goroutine; d.mu must be held.
func (d *Dispatcher) startWorker(q *providerQueue) {
	ctx := d.ctx
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		for {
			del, ok := d.next(ctx, q)
			if !ok {
				return
			}
			err := d.deliver(ctx, del)
			if del.Done != nil {
				del.Done(ctx, err)
			}
		}
	}()
}

// next pops q's oldest message, waiting for one until ctx is done.
func (d *Dispatcher) next(ctx context.Context, q *providerQueue) (Delivery, bool) {
	for {
		d.mu.Lock()
		if len(q.items) > 0 {
			del := q.items[0]
			q.items[0] = Delivery{}
			q.items = q.items[1:]
			d.mu.Unlock()
			return del, true
		}
		d.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			return Delivery{}, false
		}
	}
}

// deliver sends one message, retrying with back-off.
func (d *Dispatcher) deliver(ctx context.Context, del Delivery) error {
	log := ctrl.LoggerFrom(ctx).WithValues("provider", del.Provider, "canary", del.Event.Canary.String(), "reason", del.Event.Reason)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, d.o.AttemptTimeout)
		err := del.Sink.Notify(actx, del.Event)
		cancel()
		if err == nil {
			notificationsTotal.WithLabelValues(del.Provider, ResultSent).Inc()
			return nil
		}
		if ctx.Err() != nil {
			return &DeliveryError{Attempts: attempt, Err: err}
		}
		retry, wait := classify(err)
		if !retry || attempt >= d.o.MaxAttempts {
			notificationsTotal.WithLabelValues(del.Provider, ResultFailed).Inc()
			log.Error(err, "notification given up", "attempts", attempt)
			return &DeliveryError{Permanent: !retry, Attempts: attempt, Err: err}
		}
		notificationsTotal.WithLabelValues(del.Provider, ResultRetried).Inc()
		if wait > 0 {
			wait = min(wait, d.o.MaxRetryAfter)
		} else {
			wait = min(d.o.MinBackoff<<(attempt-1), d.o.MaxBackoff)
		}
		log.V(1).Info("notification failed, retrying", "attempt", attempt, "after", wait.String(), "error", err.Error())
		t := d.o.Clock.NewTimer(wait)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return &DeliveryError{Attempts: attempt, Err: err}
		}
	}
}

// classify says whether err is worth another attempt and how long the
// sink asked to wait first (zero when it did not say).
func classify(err error) (retry bool, after time.Duration) {
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return true, rl.RetryAfter
	}
	var herr *HTTPError
	if errors.As(err, &herr) {
		return herr.Retryable(), herr.RetryAfter
	}
	var r interface{ Retryable() bool }
	if errors.As(err, &r) {
		return r.Retryable(), 0
	}
	var serr slack.SlackErrorResponse
	if errors.As(err, &serr) {
		// Slack understood and refused: invalid_auth, channel_not_found, …
		return false, 0
	}
	// Transport errors and timeouts.
	return true, 0
}
