// Command loadgen sends steady HTTP traffic at a fixed rate and prints, once
// a second, which versions answered, how many failed and the p99 latency:
//
//	t=12s rps=50 v1=90.0% v2=10.0% 5xx=0 err=0 p99=3.1ms
//
// It sends to a plain URL, or through a proxy with the Host header set to a
// service name:
//
//	loadgen --url http://127.0.0.1:8080/ --rate 50 --duration 60s
//	loadgen --proxy 127.0.0.1:15001 --host podinfo.test:9898
//
// It runs for --duration, or until SIGINT or SIGTERM when that is 0, then
// prints the totals. With --stats-address it serves its stats as JSON on
// /stats (?window=5s for the last 5s) and Prometheus metrics on /metrics.
// The work is done by package github.com/weir-dev/weir/test/loadgen/load.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weir-dev/weir/test/loadgen/load"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		stop()
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	cfg          load.Config
	window       time.Duration
	statsAddress string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.cfg.URL, "url", "", "URL to send to, e.g. http://127.0.0.1:8080/ (with --proxy: gives path and Host)")
	fs.StringVar(&o.cfg.Proxy, "proxy", "", "host:port of a proxy to send through, e.g. weir-proxy's 127.0.0.1:15001")
	fs.StringVar(&o.cfg.Host, "host", "", "Host header, e.g. podinfo.test:9898 (required with --proxy and no --url)")
	fs.StringVar(&o.cfg.Method, "method", "GET", "HTTP method")
	fs.Float64Var(&o.cfg.Rate, "rate", load.DefaultRate, "requests per second")
	fs.DurationVar(&o.cfg.Duration, "duration", 0, "how long to send; 0 sends until SIGINT or SIGTERM")
	fs.DurationVar(&o.cfg.Timeout, "timeout", load.DefaultTimeout, "timeout of each request")
	fs.IntVar(&o.cfg.MaxInFlight, "max-in-flight", load.DefaultMaxInFlight, "most requests outstanding; further ticks are skipped")
	fs.DurationVar(&o.cfg.History, "history", load.DefaultHistory, "how far back /stats?window= can look")
	fs.DurationVar(&o.window, "window", time.Second, "span each printed line sums up")
	fs.StringVar(&o.statsAddress, "stats-address", "", "serve /stats (JSON) and /metrics here, e.g. 127.0.0.1:9100")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.window <= 0 {
		return options{}, fmt.Errorf("--window %s must be positive", o.window)
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	metrics, err := load.NewMetrics(reg)
	if err != nil {
		return err
	}
	o.cfg.OnResult = metrics.Observe
	var ln net.Listener
	if o.statsAddress != "" { // listen before sending, so a taken port fails fast
		var lc net.ListenConfig
		if ln, err = lc.Listen(ctx, "tcp", o.statsAddress); err != nil {
			return fmt.Errorf("failed to listen on %s: %w", o.statsAddress, err)
		}
	}
	g, err := load.Start(ctx, o.cfg)
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	defer g.Stop()
	if ln != nil {
		fmt.Fprintf(stderr, "loadgen: stats on http://%s/stats, metrics on http://%s/metrics\n", ln.Addr(), ln.Addr())
		stopStats := serveStats(ln, g, reg)
		defer stopStats()
	}
	report(g, o.window, stdout)
	g.Stop()
	total := g.Snapshot()
	fmt.Fprintln(stdout, line(fmt.Sprintf("total %s requests=%d", elapsed(total), total.Requests), total))
	return nil
}

// report prints a line every second until the generator is done.
func report(g *load.Generator, window time.Duration, w io.Writer) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-g.Done():
			return
		case <-tick.C:
			fmt.Fprintln(w, line(elapsed(g.Snapshot()), g.Window(window)))
		}
	}
}

func elapsed(total load.Stats) string {
	return fmt.Sprintf("t=%s", total.To.Sub(total.From).Round(time.Second))
}

// line formats stats as `t=12s rps=50 v1=90.0% v2=10.0% 5xx=0 err=0 p99=3.1ms`.
func line(prefix string, s load.Stats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s rps=%.0f", prefix, s.RPS)
	for _, v := range s.VersionNames() {
		fmt.Fprintf(&b, " %s=%.1f%%", v, s.Percent(v))
	}
	fivexx := 0
	for code, n := range s.Codes {
		if code >= 500 {
			fivexx += n
		}
	}
	fmt.Fprintf(&b, " 5xx=%d err=%d p50=%s p99=%s", fivexx, s.Errors, roundLatency(s.P50), roundLatency(s.P99))
	if s.Errors > 0 && s.LastError != "" {
		fmt.Fprintf(&b, " last-error=%q", s.LastError)
	}
	return b.String()
}

func roundLatency(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// serveStats serves /stats and /metrics on ln and returns a function that
// shuts the server down.
func serveStats(ln net.Listener, g *load.Generator, reg *prometheus.Registry) func() {
	mux := http.NewServeMux()
	mux.Handle("/stats", load.StatsHandler(g))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // ends with ErrServerClosed at shutdown
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx) // best effort on the way out
		<-done
	}
}
