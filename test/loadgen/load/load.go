// Package load sends steady HTTP traffic at a fixed rate and counts what
// answered it: per version (read from the demo app's JSON), per status code,
// and latency percentiles, in total and in sliding windows. The e2e suite and
// the demo use it to see the traffic split a canary rollout actually made;
// bin/loadgen is a thin command over it.
//
// Requests go to a plain URL, or to a proxy's address with the Host header
// set to the service name (how weir-proxy's outbound listener is called):
//
//	g, err := load.Start(ctx, load.Config{Proxy: "127.0.0.1:15001", Host: "podinfo.test:9898", Rate: 50})
//	...
//	w := g.Window(5 * time.Second)
//	fmt.Println(w.Percent("v2"), w.Failures, w.P99)
//	g.Stop()
package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultRate        = 50
	DefaultTimeout     = 5 * time.Second
	DefaultMaxInFlight = 256
	DefaultHistory     = 10 * time.Minute
	// MaxRate bounds Rate; this is a test tool for one machine.
	MaxRate = 10000
)

// maxBody bounds how much of an answer is read to find its version.
const maxBody = 64 << 10

// Config says where to send traffic and how much.
type Config struct {
	// URL is where requests go, e.g. http://127.0.0.1:8080/. With Proxy it
	// only gives the path, and the Host header unless Host is set; it may
	// then be empty (path /).
	URL string
	// Proxy, host:port, is where requests are sent instead of URL's host,
	// in origin form with the Host header set to Host.
	Proxy string
	// Host overrides the Host header, e.g. podinfo.test:9898. Required with
	// Proxy when URL is empty.
	Host string
	// Method is the HTTP method; GET when empty.
	Method string
	// Rate is requests per second (DefaultRate when 0).
	Rate float64
	// Duration ends sending after this long; 0 sends until ctx ends or Stop.
	Duration time.Duration
	// Timeout bounds each request (DefaultTimeout when 0).
	Timeout time.Duration
	// MaxInFlight bounds outstanding requests; a tick that finds this many
	// is skipped and counted (DefaultMaxInFlight when 0).
	MaxInFlight int
	// History is how far back Window and Since can look (DefaultHistory
	// when 0). Totals cover the whole run regardless.
	History time.Duration
	// Client sends the requests. When nil the generator uses its own, which
	// ignores proxy environment variables.
	Client *http.Client
	// OnResult, when set, is called with every completed request, from
	// several goroutines at once.
	OnResult func(Result)
	// Now stamps completed requests; time.Now when nil. Tests set it.
	Now func() time.Time
}

// Result is one completed request.
type Result struct {
	// At is when it completed.
	At time.Time
	// Latency is from sending to reading the whole answer.
	Latency time.Duration
	// Code is the HTTP status, 0 when no answer came.
	Code int
	// Version is the "version" field of the JSON answer, if any.
	Version string
	// Err is why no answer came, or why its body could not be read.
	Err error
}

// Failed reports whether the request counts as a failure: no answer or 5xx.
func (r Result) Failed() bool { return r.Code == 0 || r.Code >= 500 }

// Generator sends traffic until stopped. Its methods are safe for
// concurrent use.
type Generator struct {
	cfg    Config
	client *http.Client
	target string // the URL dialled
	host   string // the Host header; "" keeps target's
	now    func() time.Time
	rec    *recorder

	cancel   context.CancelFunc
	done     chan struct{}
	stopped  atomic.Pointer[time.Time]
	sem      chan struct{}
	inflight sync.WaitGroup

	sent, skipped, outstanding atomic.Int64
}

// Start checks cfg and starts sending; the first request goes at once.
// Sending ends when ctx ends, after cfg.Duration, or at Stop; requests in
// flight then are finished, not cancelled.
func Start(ctx context.Context, cfg Config) (*Generator, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	target, host, err := targetOf(cfg)
	if err != nil {
		return nil, err
	}
	g := &Generator{
		cfg: cfg, client: cfg.Client, target: target, host: host, now: cfg.Now,
		done: make(chan struct{}),
		sem:  make(chan struct{}, cfg.MaxInFlight),
	}
	if g.client == nil {
		g.client = newClient(cfg)
	}
	g.rec = newRecorder(g.now(), cfg.History)
	reqCtx := context.WithoutCancel(ctx)
	if cfg.Duration > 0 {
		ctx, g.cancel = context.WithTimeout(ctx, cfg.Duration)
	} else {
		ctx, g.cancel = context.WithCancel(ctx)
	}
	go g.run(ctx, reqCtx)
	return g, nil
}

func withDefaults(cfg Config) (Config, error) {
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.History == 0 {
		cfg.History = DefaultHistory
	}
	if cfg.Method == "" {
		cfg.Method = http.MethodGet
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var errs []error
	if !(cfg.Rate > 0 && cfg.Rate <= MaxRate) {
		errs = append(errs, fmt.Errorf("rate %v must be above 0 and at most %d per second", cfg.Rate, MaxRate))
	}
	if cfg.Duration < 0 || cfg.Timeout < 0 || cfg.History < 0 || cfg.MaxInFlight < 0 {
		errs = append(errs, errors.New("duration, timeout, history and max in flight must not be negative"))
	}
	return cfg, errors.Join(errs...)
}

// targetOf returns the URL to dial and the Host header to send.
func targetOf(cfg Config) (target, host string, err error) {
	raw := cfg.URL
	if raw == "" {
		if cfg.Proxy == "" || cfg.Host == "" {
			return "", "", errors.New("a URL, or a proxy address with a host, is required")
		}
		raw = "http://" + cfg.Host + "/"
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", fmt.Errorf("URL %q must be absolute, http or https", raw)
	}
	host = cfg.Host
	if cfg.Proxy == "" {
		return u.String(), host, nil
	}
	if _, _, err := net.SplitHostPort(cfg.Proxy); err != nil {
		return "", "", fmt.Errorf("proxy %q must be host:port: %w", cfg.Proxy, err)
	}
	if host == "" {
		host = u.Host
	}
	return u.Scheme + "://" + cfg.Proxy + u.RequestURI(), host, nil
}

func newClient(cfg Config) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil, // requests go exactly where told
			DialContext:         (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        cfg.MaxInFlight,
			MaxIdleConnsPerHost: cfg.MaxInFlight,
			IdleConnTimeout:     90 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// run sends one request per tick until ctx ends, then waits for the
// requests in flight.
func (g *Generator) run(ctx, reqCtx context.Context) {
	defer close(g.done)
	defer g.inflight.Wait()
	tick := time.NewTicker(time.Duration(float64(time.Second) / g.cfg.Rate))
	defer tick.Stop()
	for {
		g.fire(reqCtx)
		select {
		case <-ctx.Done():
			now := g.now()
			g.stopped.CompareAndSwap(nil, &now)
			return
		case <-tick.C:
		}
	}
}

// fire starts one request unless MaxInFlight are outstanding.
func (g *Generator) fire(ctx context.Context) {
	select {
	case g.sem <- struct{}{}:
	default:
		g.skipped.Add(1)
		return
	}
	g.sent.Add(1)
	g.outstanding.Add(1)
	g.inflight.Add(1)
	go func() {
		defer g.inflight.Done()
		defer func() { <-g.sem; g.outstanding.Add(-1) }()
		r := g.send(ctx)
		var msg string
		if r.Err != nil {
			msg = r.Err.Error()
		}
		g.rec.add(record{at: r.At, latency: r.Latency, code: r.Code, version: r.Version, err: msg})
		if g.cfg.OnResult != nil {
			g.cfg.OnResult(r)
		}
	}()
}

// send makes one request and reads the version from its answer.
func (g *Generator) send(ctx context.Context) Result {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	start := time.Now()
	finish := func(r Result) Result {
		r.Latency, r.At = time.Since(start), g.now()
		return r
	}
	req, err := http.NewRequestWithContext(ctx, g.cfg.Method, g.target, nil)
	if err != nil {
		return finish(Result{Err: fmt.Errorf("failed to build a request for %s: %w", g.target, err)})
	}
	if g.host != "" {
		req.Host = g.host
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return finish(Result{Err: err}) // *url.Error already names method and URL
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	r := Result{Code: resp.StatusCode}
	if err != nil {
		r.Err = fmt.Errorf("failed to read the answer of %s: %w", g.target, err)
	}
	var v struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(body, &v) == nil {
		r.Version = v.Version
	}
	return finish(r)
}

// Stop stops sending, waits for the requests in flight and returns. It may
// be called more than once.
func (g *Generator) Stop() {
	g.cancel()
	<-g.done
}

// Done is closed when sending has ended and every request in flight is done.
func (g *Generator) Done() <-chan struct{} { return g.done }

// end is now while running, else when sending stopped.
func (g *Generator) end() time.Time {
	if t := g.stopped.Load(); t != nil {
		if now := g.now(); now.Before(*t) {
			return now
		}
		return *t
	}
	return g.now()
}

// Snapshot returns everything since Start.
func (g *Generator) Snapshot() Stats {
	s := g.rec.totalStats(latest(g.end(), g.rec.start))
	s.Sent, s.Skipped, s.InFlight = g.sent.Load(), g.skipped.Load(), g.outstanding.Load()
	return s
}

// Window returns the requests that completed in the last d (at most
// Config.History; less when the generator started more recently).
func (g *Generator) Window(d time.Duration) Stats {
	now := g.now()
	return g.rec.since(now.Add(-d), now)
}

// Since returns the requests that completed after t (within Config.History).
func (g *Generator) Since(t time.Time) Stats {
	return g.rec.since(t, g.now())
}
