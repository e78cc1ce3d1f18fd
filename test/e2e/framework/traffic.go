package framework

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/weir-dev/weir/test/loadgen/load"
)

// Sample is one request the load generator completed.
type Sample struct {
	At      time.Time
	Version string
	Code    int
	Latency time.Duration
}

// Traffic is steady load sent to a Service through the meshed client's
// weir-proxy, with every answer kept for later questions.
type Traffic struct {
	gen *load.Generator

	mu      sync.Mutex
	samples []Sample
}

// StartTraffic sends rate requests per second to host (e.g.
// podinfo.test:9898) through the outbound listener of the meshed client
// pod at clientIP.
func StartTraffic(ctx context.Context, clientIP, host string, rate float64) (*Traffic, error) {
	t := &Traffic{}
	gen, err := load.Start(ctx, load.Config{
		Proxy:    net.JoinHostPort(clientIP, strconv.Itoa(ProxyListenPort)),
		Host:     host,
		Rate:     rate,
		Timeout:  5 * time.Second,
		History:  30 * time.Minute,
		OnResult: t.record,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to start the load generator: %w", err)
	}
	t.gen = gen
	return t, nil
}

func (t *Traffic) record(r load.Result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.samples = append(t.samples, Sample{At: r.At, Version: r.Version, Code: r.Code, Latency: r.Latency})
}

// Stop stops sending and waits for requests in flight.
func (t *Traffic) Stop() { t.gen.Stop() }

// Generator is the underlying load generator.
func (t *Traffic) Generator() *load.Generator { return t.gen }

// Between sums up the requests that completed in [from, to).
func (t *Traffic) Between(from, to time.Time) Share {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := Share{Versions: map[string]int{}}
	for _, r := range t.samples {
		if r.At.Before(from) || !r.At.Before(to) {
			continue
		}
		s.Requests++
		if r.Code == 0 || r.Code >= 500 {
			s.Failures++
		}
		if r.Version != "" {
			s.Versions[r.Version]++
		}
	}
	return s
}

// Samples returns a copy of every completed request so far.
func (t *Traffic) Samples() []Sample {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Sample(nil), t.samples...)
}

// Share counts requests per version over a span.
type Share struct {
	Requests, Failures int
	Versions           map[string]int
}

// Percent is the share of answers from version v, 0..100.
func (s Share) Percent(v string) float64 {
	n := 0
	for _, c := range s.Versions {
		n += c
	}
	if n == 0 {
		return 0
	}
	return 100 * float64(s.Versions[v]) / float64(n)
}

func (s Share) String() string {
	return fmt.Sprintf("%d requests, %d failed, versions %v", s.Requests, s.Failures, s.Versions)
}
