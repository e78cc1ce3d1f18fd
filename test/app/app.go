// Package app is weir's demo HTTP service: it answers its version, and its
// error rate, added latency and readiness can be set from the environment
// and changed at run time through an admin endpoint. Tests and the demo run
// it as bin/demo-app (built from ./test/app/cmd/demo-app).
//
// Endpoints:
//
//	/                  {"version","pod","namespace","hostname"}; 500 plus "error"
//	                   for the ERROR_RATE share of requests, after LATENCY
//	GET /healthz       200 while the process serves
//	GET /readyz        200 when ready, 503 when switched off or shutting down
//	/status/{code}     answers with that status (200..599)
//	/delay/{duration}  answers after that delay (at most MaxLatency)
//	GET /metrics       Prometheus metrics of the app itself
//	GET /admin/config  the current behaviour
//	PUT|POST /admin/config  change it: {"errorRate":0.5,"latency":"800ms","ready":false}
//	                   (every field optional; 400 with a message on bad input)
package app

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Answer is the JSON body of /, /status and /delay.
type Answer struct {
	Version   string `json:"version"`
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
	Hostname  string `json:"hostname"`
	// Status is set by /status/{code}.
	Status int `json:"status,omitempty"`
	// Delay is set by /delay/{duration}.
	Delay string `json:"delay,omitempty"`
	// Error says why a request to / failed on purpose.
	Error string `json:"error,omitempty"`
}

// Behaviour is what can change while the app runs.
type Behaviour struct {
	// ErrorRate is the fraction (0..1) of requests to / answered 500.
	ErrorRate float64
	// Latency is added to every request to /.
	Latency time.Duration
	// Ready is what /readyz reports.
	Ready bool
}

// Server is the demo app's HTTP handler.
type Server struct {
	settings Settings
	rand     func() float64
	sleep    func(context.Context, time.Duration) error
	registry *prometheus.Registry
	mux      *http.ServeMux

	mu        sync.Mutex
	behaviour Behaviour
}

// Option changes how a Server is built; tests use them to take chance and
// time out of the picture.
type Option func(*Server)

// WithRand sets the source of the error-rate draw: a request to / fails when
// f() < ErrorRate. f must return values in [0,1) and be safe for concurrent
// use. The default is math/rand/v2's Float64.
func WithRand(f func() float64) Option { return func(s *Server) { s.rand = f } }

// WithSleep sets how the server waits for added latency and /delay. It must
// return early with ctx's error when ctx ends first.
func WithSleep(f func(context.Context, time.Duration) error) Option {
	return func(s *Server) { s.sleep = f }
}

// SeededRand returns a deterministic, concurrency-safe source for WithRand.
func SeededRand(seed uint64) func() float64 {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Float64()
	}
}

// New returns a ready Server with the starting behaviour of settings.
func New(settings Settings, opts ...Option) *Server {
	s := &Server{
		settings: settings,
		rand:     rand.Float64,
		sleep:    sleepContext,
		registry: prometheus.NewRegistry(),
		behaviour: Behaviour{
			ErrorRate: settings.ErrorRate,
			Latency:   settings.Latency,
			Ready:     true,
		},
	}
	for _, o := range opts {
		o(s)
	}
	s.mux = s.routes(newMetrics(s.registry, settings.Version, s.Behaviour))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Behaviour returns the current behaviour.
func (s *Server) Behaviour() Behaviour {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.behaviour
}

// SetReady switches what /readyz reports.
func (s *Server) SetReady(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.behaviour.Ready = ready
}

func (s *Server) routes(m *metrics) *http.ServeMux {
	mux := http.NewServeMux()
	handle := func(pattern, name string, h http.HandlerFunc) {
		mux.Handle(pattern, m.instrument(name, h))
	}
	handle("/{$}", "root", s.root)
	handle("GET /healthz", "healthz", s.healthz)
	handle("GET /readyz", "readyz", s.readyz)
	handle("/status/{code}", "status", s.status)
	handle("/delay/{duration}", "delay", s.delay)
	handle("GET /admin/config", "admin", s.getConfig)
	handle("PUT /admin/config", "admin", s.putConfig)
	handle("POST /admin/config", "admin", s.putConfig)
	mux.Handle("GET /metrics", m.instrument("metrics",
		promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry})))
	return mux
}

func (s *Server) answer() Answer {
	return Answer{
		Version:   s.settings.Version,
		Pod:       s.settings.Pod,
		Namespace: s.settings.Namespace,
		Hostname:  s.settings.Hostname,
	}
}

func (s *Server) root(w http.ResponseWriter, r *http.Request) {
	b := s.Behaviour()
	if b.Latency > 0 {
		if err := s.sleep(r.Context(), b.Latency); err != nil {
			return // the client left; nobody reads an answer
		}
	}
	a := s.answer()
	if b.ErrorRate > 0 && s.rand() < b.ErrorRate {
		a.Error = "injected failure (error rate " + formatFloat(b.ErrorRate) + ")"
		writeJSON(w, http.StatusInternalServerError, a)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.Behaviour().Ready {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // a failed write means the client is gone
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
