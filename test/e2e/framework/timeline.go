package framework

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/weir-dev/weir/canary/v1alpha1"
)

// Point is the Canary's status at one moment.
type Point struct {
	At           time.Time
	Phase        v1alpha1.CanaryPhase
	Weight       int32
	Confirmed    bool
	FailedChecks int32
	Revision     string
}

// Timeline records every change of a Canary's status, polled every 100ms.
type Timeline struct {
	mu     sync.Mutex
	points []Point
	subs   []func(Point)
	done   chan struct{}
}

// WatchCanary records the Canary's status changes until ctx ends.
func (e *Env) WatchCanary(ctx context.Context, ns, name string) *Timeline {
	tl := &Timeline{done: make(chan struct{})}
	go func() {
		defer close(tl.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if c, err := e.Canary(ctx, ns, name); err == nil {
				tl.add(pointOf(c))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return tl
}

func pointOf(c *v1alpha1.Canary) Point {
	p := Point{At: time.Now(), Phase: c.Status.Phase, Weight: c.Status.CanaryWeight, FailedChecks: c.Status.FailedChecks, Revision: c.Status.LastAppliedSpec}
	if tr := c.Status.Traffic; tr != nil {
		p.Confirmed = tr.Confirmed && tr.Weight == c.Status.CanaryWeight
	}
	return p
}

func (tl *Timeline) add(p Point) {
	tl.mu.Lock()
	if n := len(tl.points); n > 0 {
		last := tl.points[n-1]
		p0 := p
		p0.At = last.At
		if p0 == last {
			tl.mu.Unlock()
			return
		}
	}
	tl.points = append(tl.points, p)
	subs := slices.Clone(tl.subs)
	tl.mu.Unlock()
	for _, f := range subs {
		f(p)
	}
}

// OnChange calls f with every later change.
func (tl *Timeline) OnChange(f func(Point)) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.subs = append(tl.subs, f)
}

// Points returns the changes recorded so far.
func (tl *Timeline) Points() []Point {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return slices.Clone(tl.points)
}

// Span is a stretch of time during which the canary weight was confirmed
// in effect on the sidecars.
type Span struct {
	Weight   int32
	From, To time.Time
}

// ConfirmedSpans lists, after since, each stretch during which a weight was
// confirmed, in order. A stretch still open ends at now.
func (tl *Timeline) ConfirmedSpans(since time.Time) []Span {
	pts := tl.Points()
	var spans []Span
	var open *Span
	closeOpen := func(at time.Time) {
		if open != nil {
			open.To = at
			spans = append(spans, *open)
			open = nil
		}
	}
	for _, p := range pts {
		if p.At.Before(since) {
			continue
		}
		active := p.Confirmed && p.Phase == v1alpha1.PhaseProgressing && p.Weight > 0
		if open != nil && (!active || p.Weight != open.Weight) {
			closeOpen(p.At)
		}
		if open == nil && active {
			open = &Span{Weight: p.Weight, From: p.At}
		}
	}
	closeOpen(time.Now())
	return spans
}

// Weights lists the distinct weights seen after since, in order.
func (tl *Timeline) Weights(since time.Time) []int32 {
	var ws []int32
	for _, p := range tl.Points() {
		if p.At.Before(since) {
			continue
		}
		if len(ws) == 0 || ws[len(ws)-1] != p.Weight {
			ws = append(ws, p.Weight)
		}
	}
	return ws
}

// RevisionSeen returns when the timeline first recorded a revision other
// than old, after since; zero if it has not yet.
func (tl *Timeline) RevisionSeen(since time.Time, old string) time.Time {
	for _, p := range tl.Points() {
		if !p.At.Before(since) && p.Revision != old && p.Revision != "" {
			return p.At
		}
	}
	return time.Time{}
}
