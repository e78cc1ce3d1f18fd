// Package traffic is the seam between the Canary controller, which decides
// how much traffic the canary should get, and the data plane, which moves it.
//
// The controller calls SetWeight on every reconcile with the weight it wants
// (the call is idempotent and returns at once). The Router answers whether
// that weight is in effect yet; the analysis interval of a step starts only
// once it is.
package traffic

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Confirmation tells whether a requested weight is in effect on the data plane.
type Confirmation struct {
	// Confirmed is true once enough proxies acknowledged a configuration
	// that carries the requested weight.
	Confirmed bool
	// Since is when the weight was first confirmed (zero while unconfirmed).
	Since time.Time
	// Acked and Total count the proxies that acknowledged the weight and the
	// proxies that are connected.
	Acked, Total int
	// TimedOut is true when the weight has waited longer than the router's
	// confirmation timeout; the controller warns and goes on.
	TimedOut bool
	// Message says, for people, what the router is waiting for.
	Message string
}

// Router applies canary weights to the data plane.
type Router interface {
	// SetWeight makes canaryWeight (0..100) the share of the traffic to the
	// Canary's service that goes to the canary; the rest goes to the primary.
	SetWeight(ctx context.Context, canary types.NamespacedName, canaryWeight int32) (Confirmation, error)
	// Forget drops what the router holds for a Canary that was deleted.
	Forget(canary types.NamespacedName)
}

// Immediate is a Router whose weights are in effect the moment they are set.
// It stands in for the mesh in tests of the controller alone.
type Immediate struct {
	// Now returns the current time; time.Now when nil.
	Now func() time.Time

	mu      sync.Mutex
	weights map[types.NamespacedName]weightAt
}

type weightAt struct {
	weight int32
	since  time.Time
}

// SetWeight implements Router.
func (r *Immediate) SetWeight(_ context.Context, c types.NamespacedName, w int32) (Confirmation, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.weights == nil {
		r.weights = map[types.NamespacedName]weightAt{}
	}
	cur, ok := r.weights[c]
	if !ok || cur.weight != w {
		now := time.Now()
		if r.Now != nil {
			now = r.Now()
		}
		cur = weightAt{weight: w, since: now}
		r.weights[c] = cur
	}
	return Confirmation{Confirmed: true, Since: cur.since, Acked: 1, Total: 1}, nil
}

// Weight returns the weight last set for a Canary and whether one was set.
func (r *Immediate) Weight(c types.NamespacedName) (int32, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.weights[c]
	return w.weight, ok
}

// Forget implements Router.
func (r *Immediate) Forget(c types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.weights, c)
}
