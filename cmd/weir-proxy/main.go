// Command weir-proxy is weir's sidecar: an HTTP proxy that takes all of its
// configuration over xDS (ADS, state of the world) and behaves like Envoy for
// every field it accepts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/weir-dev/weir/mesh/proxy"
	"github.com/weir-dev/weir/mesh/proxy/xdsclient"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "weir-proxy:", err)
		os.Exit(1)
	}
}

// run parses args, then serves until SIGTERM or interrupt and drains.
func run(args []string) error {
	hostname, _ := os.Hostname()
	flag := flag.NewFlagSet("weir-proxy", flag.ContinueOnError)
	xdsAddress := flag.String("xds-address", "", "host:port of the xDS (ADS) control plane (required)")
	nodeID := flag.String("node-id", hostname, "xDS node id")
	nodeCluster := flag.String("node-cluster", "", "xDS node cluster")
	adminAddress := flag.String("admin-address", "127.0.0.1:15000", "address of the admin server (/stats/prometheus, /ready, /config_dump, /clusters)")
	bindIP := flag.String("bind-ip", "", "overrides the IP of every listener address")
	memoryLimit := flag.Int64("memory-limit", 0, "soft limit in bytes for the Go runtime's memory (heap, stacks); 0 keeps Go's default (below ~16 MiB the GC costs throughput); GOMEMLIMIT overrides it")
	concurrency := flag.Int("concurrency", 0, "event loops (threads) per listener, as Envoy's --concurrency; 0: one per CPU (GOMAXPROCS)")
	eventLoop := flag.Bool("event-loop", true, "serve HTTP/1.1 on epoll event loops (Linux); false serves every connection on its own goroutine")
	drainTime := flag.Duration("drain-time", 5*time.Second, "after SIGTERM, how long to keep serving with Connection: close before closing listeners")
	if err := flag.Parse(args); err != nil {
		return err
	}
	if *xdsAddress == "" {
		flag.Usage()
		return errors.New("--xds-address is required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set && *memoryLimit > 0 {
		debug.SetMemoryLimit(*memoryLimit)
	}

	if *eventLoop && os.Getenv("GOMAXPROCS") == "" {
		// The loops wait in epoll_wait as system calls that keep their P.
		// When every P is held so, sysmon takes them back every 20µs and the
		// loops fight for them on waking: futex and nanosleep calls that
		// cost as much as the proxying. One P more than loops avoids it.
		if *concurrency <= 0 {
			*concurrency = runtime.GOMAXPROCS(0)
		}
		runtime.GOMAXPROCS(*concurrency + 1)
	}
	p := proxy.New(proxy.Options{BindIP: *bindIP, Log: log, Concurrency: *concurrency, DisableEventLoop: !*eventLoop})
	adminLn, err := net.Listen("tcp", *adminAddress)
	if err != nil {
		return fmt.Errorf("failed to listen on admin address %s: %w", *adminAddress, err)
	}
	admin := &http.Server{Handler: p.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go admin.Serve(adminLn)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	xdsCtx, cancelXDS := context.WithCancel(context.Background())
	client := &xdsclient.Client{
		Address: *xdsAddress,
		Node:    &envoy_config_core_v3.Node{Id: *nodeID, Cluster: *nodeCluster, UserAgentName: "weir-proxy"},
		Handler: p,
		Log:     log,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		client.Run(xdsCtx)
	}()
	log.Info("weir-proxy started", "xds", *xdsAddress, "node", *nodeID, "admin", adminLn.Addr().String())
	<-ctx.Done()
	log.Info("draining", "drain_time", *drainTime)
	drainCtx, cancel := context.WithTimeout(context.Background(), *drainTime+30*time.Second)
	defer cancel()
	err = p.Drain(drainCtx, *drainTime)
	cancelXDS()
	<-done
	admin.Close()
	return err
}
