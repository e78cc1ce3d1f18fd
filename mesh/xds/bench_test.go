package xds

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Environment of the fleet process BenchmarkADSFleet starts.
const (
	envFleetAddr    = "WEIR_XDS_FLEET_ADDR"
	envFleetClients = "WEIR_XDS_FLEET_CLIENTS"
	envFleetPerConn = "WEIR_XDS_FLEET_STREAMS_PER_CONN"
)

// BenchmarkADSFleet serves a mesh of 50 Services (one under a Canary) to
// 1,000 simulated sidecars and measures, over 50 weight changes, the time
// from SetWeight until every sidecar ACKed a route version carrying the
// weight, the controller's heap per connected sidecar, and its CPU per
// push.
//
// The sidecars run in a separate process (this test binary, running
// TestADSFleetClients), so the heap and CPU figures are the controller's
// alone. Each sidecar is one raw ADS stream that subscribes to listeners,
// routes, clusters and endpoints and ACKs every response; 20 streams share
// one gRPC connection (50 connections for 1,000 sidecars). Set
// WEIR_XDS_BENCH_CLIENTS for another fleet size.
func BenchmarkADSFleet(b *testing.B) {
	clients := 1000
	if v, err := strconv.Atoi(os.Getenv("WEIR_XDS_BENCH_CLIENTS")); err == nil && v > 0 {
		clients = v
	}
	const perConn, changes = 20, 50
	for range b.N {
		runFleet(b, clients, perConn, changes)
	}
}

func runFleet(b *testing.B, clients, perConn, changes int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	in := podinfo()
	for i := range 49 {
		name := fmt.Sprintf("svc-%02d", i)
		in.Services = append(in.Services, service("bench", name, 8080))
		in.EndpointSlices = append(in.EndpointSlices, slice("bench", name+"-x", name, 8080,
			ep(fmt.Sprintf("10.1.%d.1", i)), ep(fmt.Sprintf("10.1.%d.2", i)), ep(fmt.Sprintf("10.1.%d.3", i))))
	}
	srv := NewServer(&fixedSource{in: in}, nil, NewMetrics(prometheus.NewRegistry()), Options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	sctx, stop := context.WithCancel(ctx)
	go func() { served <- srv.Serve(sctx, lis) }()
	defer func() {
		stop()
		<-served
	}()
	waitConfirmed(ctx, b, srv, 0) // the first snapshot is published

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestADSFleetClients$", "-test.timeout=10m")
	cmd.Env = append(os.Environ(),
		envFleetAddr+"="+lis.Addr().String(),
		envFleetClients+"="+strconv.Itoa(clients),
		envFleetPerConn+"="+strconv.Itoa(perConn))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()

	// Wait until every sidecar holds the routes.
	connectStart := time.Now()
	for {
		conf, err := srv.SetWeight(ctx, podinfoKey, 0)
		if err != nil {
			b.Fatal(err)
		}
		if conf.Total == clients && conf.Acked == clients {
			break
		}
		select {
		case <-ctx.Done():
			b.Fatalf("the fleet did not connect: %+v", conf)
		case <-time.After(10 * time.Millisecond):
		}
	}
	connectTime := time.Since(connectStart)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	cpuBefore := cpuTime()
	var total, publishToAck []time.Duration
	for i := range changes {
		w := int32(10 + (i%9)*10)
		start := time.Now()
		conf := waitConfirmed(ctx, b, srv, w)
		if conf.Acked != clients || conf.Total != clients {
			b.Fatalf("weight %d confirmed by %d of %d, want all %d", w, conf.Acked, conf.Total, clients)
		}
		srv.mu.Lock()
		published := srv.routesAt
		srv.mu.Unlock()
		total = append(total, conf.Since.Sub(start))
		publishToAck = append(publishToAck, conf.Since.Sub(published))
	}
	cpu := cpuTime() - cpuBefore

	heapPerClient := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / int64(clients)
	b.ReportMetric(float64(percentile(total, 50).Microseconds())/1000, "ms-median-to-all-acked")
	b.ReportMetric(float64(percentile(total, 99).Microseconds())/1000, "ms-p99-to-all-acked")
	b.ReportMetric(float64(heapPerClient), "heap-bytes/client")
	b.ReportMetric(float64((cpu/time.Duration(changes)).Microseconds())/1000, "cpu-ms/push")
	fmt.Printf("\nxDS fleet: %d sidecars (raw ADS streams, %d per gRPC connection, clients in a separate process), %d Services, %d weight changes\n",
		clients, perConn, len(in.Services), changes)
	fmt.Printf("  fleet connected and holding routes in   %v\n", connectTime.Round(time.Millisecond))
	fmt.Printf("  SetWeight -> every sidecar ACKed        median %v  p99 %v  (includes the %v rebuild debounce)\n",
		percentile(total, 50).Round(10*time.Microsecond), percentile(total, 99).Round(10*time.Microsecond), srv.opts.Debounce)
	fmt.Printf("  snapshot published -> every sidecar ACKed  median %v  p99 %v\n",
		percentile(publishToAck, 50).Round(10*time.Microsecond), percentile(publishToAck, 99).Round(10*time.Microsecond))
	fmt.Printf("  controller heap per connected sidecar   %d bytes (%.1f MiB for the fleet)\n", heapPerClient, float64(heapPerClient*int64(clients))/(1<<20))
	fmt.Printf("  controller CPU per push                 %v (one RDS version to %d sidecars and their %d ACKs; %v per sidecar)\n",
		(cpu / time.Duration(changes)).Round(10*time.Microsecond), clients, clients, (cpu / time.Duration(changes*clients)).Round(100*time.Nanosecond))
}

// TestADSFleetClients is the fleet of BenchmarkADSFleet; it runs only in
// the process the benchmark starts, and until its stdin closes.
func TestADSFleetClients(t *testing.T) {
	addr := os.Getenv(envFleetAddr)
	if addr == "" {
		t.Skip("the sidecar fleet of BenchmarkADSFleet")
	}
	clients, _ := strconv.Atoi(os.Getenv(envFleetClients))
	perConn, _ := strconv.Atoi(os.Getenv(envFleetPerConn))
	perConn = max(perConn, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := range clients {
		if i%perConn == 0 {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, conn)
		}
		if _, err := dialADS(ctx, conns[len(conns)-1], fmt.Sprintf("sidecar-%05d", i), false); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// cpuTime is the user and system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}
