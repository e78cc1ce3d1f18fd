// Package promtest is a stand-in Prometheus for tests: an httptest server that
// speaks the real Prometheus HTTP query API, so code under test talks to it
// through the ordinary client (github.com/prometheus/client_golang/api).
//
// It serves /api/v1/query by GET and by POST form, answers with the real JSON
// envelope ({"status":"success","data":{"resultType":"vector","result":[…]}}
// or {"status":"error","errorType":…,"error":…}) and records every query it
// received. Tests decide the answers:
//
//	prom := promtest.New(t)                          // closed by t.Cleanup
//	prom.Set("envoy_cluster_upstream_rq_xx", promtest.Value(99.5))
//	prom.Set("upstream_rq_time_bucket", promtest.Value(120))
//	prom.SetFunc(func(q string) bool { return strings.Contains(q, "my_errors") }, promtest.Empty())
//	prom.SetDefault(promtest.Error(promtest.ErrorExec, "boom")) // for any other query
//	opts := metrics.Options{Address: prom.URL(), Timeout: time.Second}
//	...
//	prom.Count("envoy_cluster_upstream_rq_xx") // how many such queries arrived
//	prom.Queries()                             // every PromQL received, in order
//
// Rules are tried newest first; setting the same substring again replaces its
// answer, so a test can turn a healthy metric bad halfway through a rollout.
// A query that matches no rule gets the default answer, an empty vector
// (what a real Prometheus answers for a metric it has never seen).
//
// Answers: Value (one sample), Vector (several), Scalar, Empty, NaN, Error
// (the error envelope with Prometheus's status code for the type),
// HTTPStatus (a bare non-API response, e.g. from a proxy in front), Hang
// (never answers; the client's timeout must end the request), Dynamic
// (computed per query), and a.After(d) to delay any of them.
package promtest

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Error types of the Prometheus API, as sent in the error envelope.
const (
	ErrorBadData  = "bad_data"
	ErrorExec     = "execution"
	ErrorTimeout  = "timeout"
	ErrorCanceled = "canceled"
	ErrorInternal = "internal"
)

// Sample is one element of an instant vector.
type Sample struct {
	// Labels of the series; may be nil.
	Labels map[string]string
	// Value of the sample; NaN and ±Inf are sent as Prometheus sends them.
	Value float64
}

// Answer is what the Server sends back for a query. Build one with the
// functions of this package; the zero Answer is an empty vector.
type Answer struct {
	scalar   *float64
	samples  []Sample
	errType  string
	errMsg   string
	status   int
	body     string
	hang     bool
	delay    time.Duration
	dynamic  func(query string) Answer
	warnings []string
}

// Value answers a vector of one sample without labels.
func Value(v float64) Answer { return Answer{samples: []Sample{{Value: v}}} }

// Vector answers a vector of the given samples.
func Vector(samples ...Sample) Answer { return Answer{samples: samples} }

// Scalar answers a scalar result.
func Scalar(v float64) Answer { return Answer{scalar: &v} }

// Empty answers an empty vector: Prometheus's "no data".
func Empty() Answer { return Answer{} }

// NaN answers a vector of one NaN sample, as Prometheus does for 0/0.
func NaN() Answer { return Value(math.NaN()) }

// Error answers the API's error envelope with the given error type (see the
// Error* constants) and message, with the HTTP status Prometheus uses for
// that type: 400 bad_data, 422 execution, 503 timeout and canceled, 500
// otherwise.
func Error(errType, msg string) Answer { return Answer{errType: errType, errMsg: msg} }

// HTTPStatus answers a bare response with the given status code and body, not
// the API's envelope, like a proxy in front of Prometheus would.
func HTTPStatus(code int, body string) Answer { return Answer{status: code, body: body} }

// Hang never answers: the request ends when the client gives up or the
// Server is closed.
func Hang() Answer { return Answer{hang: true} }

// Dynamic computes the answer for every query anew, e.g. from a counter.
func Dynamic(f func(query string) Answer) Answer { return Answer{dynamic: f} }

// After returns a copy of a that is sent only after d, or never if the
// client gives up first.
func (a Answer) After(d time.Duration) Answer { a.delay = d; return a }

// WithWarnings returns a copy of a that carries the given API warnings.
func (a Answer) WithWarnings(w ...string) Answer { a.warnings = w; return a }

// Request is one query the Server received.
type Request struct {
	// Method is GET or POST.
	Method string
	// Query is the PromQL expression.
	Query string
	// Time is the evaluation time parameter as sent; empty when absent.
	Time string
	// Header is a copy of the request's headers (Authorization included).
	Header http.Header
}

type rule struct {
	substr string // "" for func rules
	match  func(string) bool
	answer Answer
}

// Server is a stand-in Prometheus. Its methods are safe for concurrent use.
type Server struct {
	srv  *httptest.Server
	done chan struct{}
	once sync.Once

	mu       sync.Mutex
	rules    []rule
	fallback Answer
	requests []Request
}

// New starts a Server on a loopback port and closes it in t.Cleanup.
func New(t testing.TB) *Server {
	t.Helper()
	s := NewServer()
	t.Cleanup(s.Close)
	return s
}

// NewServer starts a Server on a loopback port; the caller must Close it.
func NewServer() *Server {
	s := &Server{done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/query", s.serveQuery)
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Prometheus Server is Healthy.") })
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Prometheus Server is Ready.") })
	s.srv = httptest.NewServer(mux)
	return s
}

// URL is the server's base address, e.g. http://127.0.0.1:41234.
func (s *Server) URL() string { return s.srv.URL }

// Close releases hanging requests and stops the server. It is idempotent.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.done)
		s.srv.Close()
	})
}

// Set answers a for every query that contains substr. Setting the same
// substr again replaces its answer; the newest matching rule wins.
func (s *Server) Set(substr string, a Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range s.rules {
		if r.match == nil && r.substr == substr {
			s.rules = append(s.rules[:i], s.rules[i+1:]...)
			break
		}
	}
	s.rules = append(s.rules, rule{substr: substr, answer: a})
}

// SetFunc answers a for every query for which match returns true; the newest
// matching rule wins.
func (s *Server) SetFunc(match func(query string) bool, a Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = append(s.rules, rule{match: match, answer: a})
}

// SetDefault answers a for queries that match no rule; initially Empty().
func (s *Server) SetDefault(a Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fallback = a
}

// Requests returns the queries received so far, in order of arrival.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Queries returns the PromQL expressions received so far, in order.
func (s *Server) Queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	qs := make([]string, len(s.requests))
	for i, r := range s.requests {
		qs[i] = r.Query
	}
	return qs
}

// Count returns how many received queries contain substr.
func (s *Server) Count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if strings.Contains(r.Query, substr) {
			n++
		}
	}
	return n
}

// ResetRequests forgets the queries received so far; rules stay.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

func (s *Server) answerFor(query string) Answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.rules) - 1; i >= 0; i-- {
		r := s.rules[i]
		if (r.match != nil && r.match(query)) || (r.match == nil && strings.Contains(query, r.substr)) {
			return r.answer
		}
	}
	return s.fallback
}

func (s *Server) serveQuery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeAPIError(w, ErrorBadData, fmt.Sprintf("error parsing form values: %v", err))
		return
	}
	query := r.Form.Get("query")
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Query: query, Time: r.Form.Get("time"), Header: r.Header.Clone()})
	s.mu.Unlock()
	if query == "" {
		writeAPIError(w, ErrorBadData, `invalid parameter "query": 1:1: parse error: no expression found in input`)
		return
	}
	ts := float64(time.Now().UnixMilli()) / 1000
	if t := r.Form.Get("time"); t != "" {
		f, err := strconv.ParseFloat(t, 64)
		if err != nil {
			writeAPIError(w, ErrorBadData, fmt.Sprintf(`invalid parameter "time": cannot parse %q to a valid timestamp`, t))
			return
		}
		ts = f
	}

	a := s.answerFor(query)
	for a.dynamic != nil {
		a = a.dynamic(query)
	}
	if a.hang {
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	}
	if a.delay > 0 {
		t := time.NewTimer(a.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
	}
	switch {
	case a.status != 0:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(a.status)
		fmt.Fprint(w, a.body)
	case a.errType != "":
		writeAPIError(w, a.errType, a.errMsg)
	case a.scalar != nil:
		writeSuccess(w, "scalar", []any{ts, formatValue(*a.scalar)}, a.warnings)
	default:
		result := make([]any, 0, len(a.samples))
		for _, smp := range a.samples {
			labels := smp.Labels
			if labels == nil {
				labels = map[string]string{}
			}
			result = append(result, map[string]any{"metric": labels, "value": []any{ts, formatValue(smp.Value)}})
		}
		writeSuccess(w, "vector", result, a.warnings)
	}
}

// formatValue renders a sample value as Prometheus does: NaN, +Inf, -Inf or
// the shortest decimal.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func writeSuccess(w http.ResponseWriter, resultType string, result any, warnings []string) {
	body := map[string]any{
		"status": "success",
		"data":   map[string]any{"resultType": resultType, "result": result},
	}
	if len(warnings) > 0 {
		body["warnings"] = warnings
	}
	writeJSON(w, http.StatusOK, body)
}

func writeAPIError(w http.ResponseWriter, errType, msg string) {
	code := http.StatusInternalServerError
	switch errType {
	case ErrorBadData:
		code = http.StatusBadRequest
	case ErrorExec:
		code = http.StatusUnprocessableEntity
	case ErrorTimeout, ErrorCanceled:
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"status": "error", "errorType": errType, "error": msg})
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
