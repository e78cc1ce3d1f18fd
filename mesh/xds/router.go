package xds

import (
	"context"
	"fmt"
	"math"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/weir-dev/weir/mesh/traffic"
)

var _ traffic.Router = (*Server)(nil)

// SetWeight implements traffic.Router. It records the weight the
// Canary's route should carry, asks for a rebuild when it changed, and
// reports whether enough sidecars acknowledged a route version carrying it.
//
// A weight counts as confirmed once ConfirmFraction of the sidecars
// subscribed to routes acknowledged a route version with it; from then on
// it stays confirmed until the weight changes, and Since is that moment.
// With no sidecar connected a weight is confirmed as soon as the published
// snapshot carries it (every sidecar that connects gets that snapshot),
// with Total 0 and a Message saying so. A Canary whose primary and canary
// Services are not both there yet has no weighted route and stays
// unconfirmed until they are.
func (s *Server) SetWeight(_ context.Context, c types.NamespacedName, w int32) (traffic.Confirmation, error) {
	if w < 0 || w > 100 {
		return traffic.Confirmation{}, fmt.Errorf("canary weight %d of %s is outside 0..100", w, c)
	}
	s.mu.Lock()
	now := s.opts.Now()
	d, ok := s.desired[c]
	changed := !ok || d.weight != w
	if changed {
		d = &desiredWeight{weight: w, setAt: now}
		s.desired[c] = d
	}
	s.evaluateOneLocked(c, d, now)
	conf := s.confirmationLocked(c, d, now)
	s.mu.Unlock()
	if changed {
		s.Trigger()
	}
	return conf, nil
}

// Forget implements traffic.Router.
func (s *Server) Forget(c types.NamespacedName) {
	s.mu.Lock()
	_, ok := s.desired[c]
	delete(s.desired, c)
	s.mu.Unlock()
	if ok {
		s.Trigger()
	}
}

// evaluateLocked confirms every pending weight that now has enough ACKs.
func (s *Server) evaluateLocked(now time.Time) {
	for c, d := range s.desired {
		if d.confirmedAt.IsZero() {
			s.evaluateOneLocked(c, d, now)
		}
	}
}

func (s *Server) evaluateOneLocked(c types.NamespacedName, d *desiredWeight, now time.Time) {
	acked := 0
	for v, n := range s.routeAcks {
		if w, ok := s.routeWeights[v][c]; ok && w == d.weight {
			acked += n
		}
	}
	d.acked, d.total = acked, s.rdsStreams
	if !d.confirmedAt.IsZero() {
		return
	}
	if d.total == 0 {
		if s.current != nil {
			if w, ok := s.current.Output.Weights[c]; ok && w == d.weight {
				d.confirmedAt = now
			}
		}
		return
	}
	if acked > 0 && acked >= s.needLocked(d.total) {
		d.confirmedAt = now
	}
}

// needLocked is how many of total sidecars must acknowledge a weight.
func (s *Server) needLocked(total int) int {
	return max(1, int(math.Ceil(s.opts.ConfirmFraction*float64(total)-1e-9)))
}

func (s *Server) confirmationLocked(c types.NamespacedName, d *desiredWeight, now time.Time) traffic.Confirmation {
	conf := traffic.Confirmation{
		Confirmed: !d.confirmedAt.IsZero(),
		Since:     d.confirmedAt,
		Acked:     d.acked,
		Total:     d.total,
	}
	_, routed := s.current.weightsOf(c)
	switch {
	case conf.Confirmed && d.total == 0:
		conf.Message = fmt.Sprintf("weight %d is published; no sidecar is connected", d.weight)
	case conf.Confirmed:
		conf.Message = fmt.Sprintf("weight %d acknowledged by %d of %d sidecars", d.weight, d.acked, d.total)
	case s.current == nil:
		conf.Message = "no xDS snapshot published yet"
	case !routed:
		conf.Message = fmt.Sprintf("no weighted route for %s yet: its Service, -primary and -canary Services must all exist", c)
	default:
		conf.Message = fmt.Sprintf("weight %d acknowledged by %d of %d sidecars, waiting for %d", d.weight, d.acked, d.total, s.needLocked(d.total))
	}
	if !conf.Confirmed && now.Sub(d.setAt) > s.opts.ConfirmTimeout {
		conf.TimedOut = true
		conf.Message += fmt.Sprintf(" (unconfirmed after %s)", s.opts.ConfirmTimeout)
	}
	return conf
}

// weightsOf returns the weight the snapshot routes for a Canary.
func (s *Snapshot) weightsOf(c types.NamespacedName) (int32, bool) {
	if s == nil {
		return 0, false
	}
	w, ok := s.Output.Weights[c]
	return w, ok
}
