// Command bench drives one HTTP backend three ways in one run — directly,
// through weir-proxy (weighted route and outlier detection on, configured by
// an in-process go-control-plane server) and through nginx as a keep-alive
// reverse proxy — and prints requests/s, p50/p99 latency and proxy RSS for
// each, weir-proxy's ratio to nginx, and the p99 latency each proxy adds at a
// fixed 1,000 requests/s.
//
// Throughput comes from wrk (closed loop). The fixed-rate run uses a small Go
// open-loop generator (wrk2 is not packaged; Debian's wrk has no -R): each
// request is sent at its scheduled time on its own goroutine and its latency
// is measured from that time, so a stall is not hidden (no coordinated
// omission).
//
// Usage (from the repository root): go run ./mesh/proxy/bench [-duration 10s]
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_config_endpoint_v3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	envoy_config_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	envoy_extensions_filters_http_router_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	envoy_extensions_filters_network_http_connection_manager_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	envoy_service_discovery_v3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/apimachinery/pkg/util/wait"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type leg struct {
	name     string
	url      string
	rps      float64
	p50, p99 time.Duration
	rssKB    int64
	anonKB   int64
	fixedP50 time.Duration
	fixedP99 time.Duration
	fixedErr int
	// Summed over the wrk runs: the proxy's CPU time, read and write
	// system calls, and the requests wrk completed.
	cpu      time.Duration
	requests int64
	// The same run's CPU time of the backend and of wrk, over all legs.
	backendCPU, wrkCPU time.Duration
	allRequests        int64
}

func run() error {
	duration := flag.Duration("duration", 10*time.Second, "wrk time per leg, split into -rounds runs")
	rounds := flag.Int("rounds", 3, "wrk runs per leg, interleaved across legs; the median is reported (evens out noisy neighbours)")
	fixedFor := flag.Duration("fixed-duration", 15*time.Second, "time of the 1,000 rps run per leg, split into -rounds interleaved runs (median shown)")
	conns := flag.Int("connections", 64, "wrk connections")
	memLimit := flag.String("proxy-memory-limit", "", "weir-proxy's --memory-limit (bytes); empty keeps its default")
	concurrency := flag.Int("proxy-concurrency", 0, "weir-proxy's --concurrency (event loops); 0 keeps its default")
	procs := flag.Int("proxy-gomaxprocs", 0, "GOMAXPROCS for weir-proxy; 0 keeps Go's default (one per CPU)")
	sameHeaders := flag.Bool("nginx-same-headers", true, "have nginx add X-Request-Id and X-Forwarded-Proto as weir-proxy does (Envoy's defaults), so the backend gets the same requests from both")
	nginxWorkers := flag.String("nginx-workers", "auto", "nginx worker_processes (auto: one per CPU, as weir-proxy's default GOMAXPROCS)")
	profile := flag.String("cpuprofile", "", "write a CPU profile of weir-proxy under wrk to this file")
	hold := flag.Bool("hold", false, "set everything up, print the three URLs and the proxies' pids, and wait for SIGINT (to drive or trace them by hand)")
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	tmp, err := os.MkdirTemp("", "weir-bench-")
	if err != nil {
		return fmt.Errorf("failed to create temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	backendLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("failed to listen for the backend: %w", err)
	}
	body := []byte("hello from the backend\n")
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Write(body)
	})}
	go backend.Serve(backendLn)
	defer backend.Close()
	backendAddr := backendLn.Addr().String()

	// weir-proxy, configured over xDS.
	xdsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("failed to listen for xDS: %w", err)
	}
	snapCache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	grpcSrv := grpc.NewServer()
	envoy_service_discovery_v3.RegisterAggregatedDiscoveryServiceServer(grpcSrv, serverv3.NewServer(ctx, snapCache, nil))
	go grpcSrv.Serve(xdsLn)
	defer grpcSrv.Stop()
	proxyPort, err := freePort()
	if err != nil {
		return err
	}
	snap, err := cachev3.NewSnapshot("1", resources(proxyPort, backendAddr))
	if err != nil {
		return fmt.Errorf("failed to build snapshot: %w", err)
	}
	if err := snapCache.SetSnapshot(ctx, "bench", snap); err != nil {
		return fmt.Errorf("failed to set snapshot: %w", err)
	}
	bin := filepath.Join(tmp, "weir-proxy")
	if out, err := exec.CommandContext(ctx, "go", "build", "-tags", "grpcnotrace", "-o", bin, "./cmd/weir-proxy").CombinedOutput(); err != nil {
		return fmt.Errorf("failed to build weir-proxy (run from the repository root): %w: %s", err, out)
	}
	adminPort, err := freePort()
	if err != nil {
		return err
	}
	args := []string{"--xds-address", xdsLn.Addr().String(), "--node-id", "bench", "--admin-address", fmt.Sprintf("127.0.0.1:%d", adminPort)}
	if *memLimit != "" {
		args = append(args, "--memory-limit", *memLimit)
	}
	if *concurrency > 0 {
		args = append(args, "--concurrency", strconv.Itoa(*concurrency))
	}
	weir := exec.Command(bin, args...)
	if *procs > 0 {
		weir.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", *procs))
	}
	weirLog, err := os.Create(filepath.Join(tmp, "weir-proxy.log"))
	if err != nil {
		return fmt.Errorf("failed to create log: %w", err)
	}
	defer weirLog.Close()
	weir.Stdout, weir.Stderr = weirLog, weirLog
	if err := weir.Start(); err != nil {
		return fmt.Errorf("failed to start weir-proxy: %w", err)
	}
	defer stopProcess(weir)
	hc := &http.Client{Transport: &http.Transport{}, Timeout: time.Second}
	if err := waitFor(ctx, 20*time.Second, func() bool {
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", adminPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		return fmt.Errorf("weir-proxy never became ready: %w", err)
	}

	// nginx as a keep-alive reverse proxy.
	nginxPort, err := freePort()
	if err != nil {
		return err
	}
	nginx, err := startNginx(ctx, tmp, nginxPort, backendAddr, *nginxWorkers, *sameHeaders)
	if err != nil {
		return err
	}
	defer stopProcess(nginx)

	legs := []*leg{
		{name: "direct", url: "http://" + backendAddr + "/"},
		{name: "weir-proxy", url: fmt.Sprintf("http://127.0.0.1:%d/", proxyPort)},
		{name: "nginx", url: fmt.Sprintf("http://127.0.0.1:%d/", nginxPort)},
	}
	pids := map[string]int{"weir-proxy": weir.Process.Pid, "nginx": nginx.Process.Pid}
	for _, l := range legs {
		// Check each path works before measuring it.
		if err := probe(hc, l.url); err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
	}
	if *hold {
		for _, l := range legs {
			fmt.Printf("%s %s pid=%d\n", l.name, l.url, pids[l.name])
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		return nil
	}
	per := max(time.Second, *duration/time.Duration(*rounds))
	samples := map[string][]wrkResult{}
	for round := range *rounds {
		for _, l := range legs {
			fmt.Fprintf(os.Stderr, "round %d: wrk %s for %v...\n", round+1, l.name, per)
			if l.name == "weir-proxy" && *profile != "" && round == 0 {
				go saveProfile(hc, adminPort, per, *profile)
			}
			pid, proxied := pids[l.name]
			var before procSample
			if proxied {
				before = sampleTree(pid)
			}
			self := selfCPU()
			res, err := runWrk(ctx, l.name, l.url, per, *conns)
			if err != nil {
				return fmt.Errorf("%s: %w", l.name, err)
			}
			l.backendCPU += selfCPU() - self
			l.wrkCPU += res.cpu
			l.allRequests += res.requests
			if proxied {
				after := sampleTree(pid)
				l.cpu += after.cpu - before.cpu
				l.requests += res.requests
			}
			samples[l.name] = append(samples[l.name], res)
			if pid, ok := pids[l.name]; ok {
				l.rssKB, l.anonKB = max(l.rssKB, treeRSS(pid, "VmRSS:")), max(l.anonKB, treeRSS(pid, "RssAnon:"))
			}
		}
	}
	fixedPer := max(time.Second, *fixedFor/time.Duration(*rounds))
	fixed := map[string][]wrkResult{}
	for round := range *rounds {
		for _, l := range legs {
			fmt.Fprintf(os.Stderr, "round %d: 1,000 rps to %s for %v...\n", round+1, l.name, fixedPer)
			p50, p99, errs := fixedRate(ctx, l.url, 1000, fixedPer)
			fixed[l.name] = append(fixed[l.name], wrkResult{p50: p50, p99: p99})
			l.fixedErr += errs
			if pid, ok := pids[l.name]; ok {
				l.rssKB, l.anonKB = max(l.rssKB, treeRSS(pid, "VmRSS:")), max(l.anonKB, treeRSS(pid, "RssAnon:"))
			}
		}
	}
	for _, l := range legs {
		l.rps, l.p50, l.p99 = median(samples[l.name])
		_, l.fixedP50, l.fixedP99 = median(fixed[l.name])
	}

	fmt.Printf("\nweir-proxy bench: one Go backend on loopback; wrk -t2 -c%d, %d interleaved runs of %v per path (median shown); Host: podinfo (weighted route 90/10, retries and outlier detection in weir-proxy)\n\n", *conns, *rounds, per)
	loops := *concurrency
	if loops == 0 {
		loops = runtime.GOMAXPROCS(0) // weir-proxy's default on this machine too
		if *procs > 0 {
			loops = *procs
		}
	}
	headers := "only what it is configured with"
	if *sameHeaders {
		headers = "X-Request-Id and X-Forwarded-Proto, as weir-proxy does, so the backend gets the same requests (-nginx-same-headers=false: without)"
	}
	fmt.Printf("CPUs: %d, shared with wrk and the backend; weir-proxy: %d event loops; nginx: worker_processes %s (%d workers running)\n", runtime.NumCPU(), loops, *nginxWorkers, len(children(nginx.Process.Pid)))
	fmt.Printf("nginx adds %s\n\n", headers)
	fmt.Printf("%-11s %12s %10s %10s %20s   %s\n", "path", "requests/s", "p50", "p99", "RSS (anon)", "1,000 rps p50 / p99 (errors)")
	for _, l := range legs {
		rss := "-"
		if l.rssKB > 0 {
			rss = fmt.Sprintf("%.1f MB (%.1f MB)", float64(l.rssKB)/1024, float64(l.anonKB)/1024)
		}
		fmt.Printf("%-11s %12.0f %10v %10v %20s   %v / %v (%d)\n", l.name, l.rps, l.p50, l.p99, rss, l.fixedP50, l.fixedP99, l.fixedErr)
	}
	fmt.Println("\nWhere the CPU went under wrk, per completed request (user+system; the three share the 2 CPUs, so a proxy that costs less leaves more to the others):")
	fmt.Printf("%-11s %14s %14s %14s\n", "path", "proxy", "backend", "wrk")
	for _, l := range legs {
		if l.allRequests == 0 {
			continue
		}
		proxy := "-"
		if l.requests > 0 {
			proxy = (l.cpu / time.Duration(l.requests)).Round(10 * time.Nanosecond).String()
		}
		fmt.Printf("%-11s %14s %14s %14s\n", l.name, proxy, (l.backendCPU / time.Duration(l.allRequests)).Round(10*time.Nanosecond), (l.wrkCPU / time.Duration(l.allRequests)).Round(10*time.Nanosecond))
	}
	direct, w, n := legs[0], legs[1], legs[2]
	fmt.Printf("\nweir-proxy / nginx throughput: %.2f\n", w.rps/n.rps)
	fmt.Printf("added at 1,000 rps: weir-proxy p50 %v p99 %v; nginx p50 %v p99 %v (direct p50 %v p99 %v)\n",
		w.fixedP50-direct.fixedP50, w.fixedP99-direct.fixedP99, n.fixedP50-direct.fixedP50, n.fixedP99-direct.fixedP99, direct.fixedP50, direct.fixedP99)
	fmt.Printf("targets: weir-proxy ≥ nginx throughput [%s], p99 added < 1ms [%s], RSS < 30 MB [%s]\n",
		verdict(w.rps >= n.rps), verdict(w.fixedP99-direct.fixedP99 < time.Millisecond), verdict(w.rssKB < 30*1024))
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("failed to find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitFor checks cond at once and then every 50ms, for up to limit.
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) error {
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, limit, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
}

func probe(c *http.Client, url string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Host = "podinfo"
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("probe failed: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe answered %d", resp.StatusCode)
	}
	return nil
}

func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func startNginx(ctx context.Context, dir string, port int, backend, workers string, sameHeaders bool) (*exec.Cmd, error) {
	extra := ""
	if sameHeaders {
		extra = `
      proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Forwarded-Proto $scheme;`
	}
	conf := fmt.Sprintf(`daemon off;
worker_processes %[4]s;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream backend {
    server %[2]s;
    keepalive 256;
  }
  server {
    listen 127.0.0.1:%[3]d;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;%[5]s
    }
  }
}
`, dir, backend, port, workers, extra)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("failed to write nginx config: %w", err)
	}
	cmd := exec.Command("nginx", "-p", dir, "-e", filepath.Join(dir, "nginx-error.log"), "-c", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start nginx (make bench-deps installs it): %w", err)
	}
	if err := waitFor(ctx, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		c.Close()
		return true
	}); err != nil {
		stopProcess(cmd)
		log, _ := os.ReadFile(filepath.Join(dir, "nginx-error.log"))
		return nil, fmt.Errorf("nginx did not start: %s %s", stderr.String(), log)
	}
	return cmd, nil
}

var requestsLine = regexp.MustCompile(`^\s*([0-9]+) requests in `)

var latencyLine = regexp.MustCompile(`^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)

type wrkResult struct {
	cpu      time.Duration // wrk's own
	requests int64
	rps      float64
	p50, p99 time.Duration
}

// median returns the median of each figure over the runs (for an even
// count, the upper middle).
func median(rs []wrkResult) (float64, time.Duration, time.Duration) {
	rps := make([]float64, len(rs))
	p50 := make([]time.Duration, len(rs))
	p99 := make([]time.Duration, len(rs))
	for i, r := range rs {
		rps[i], p50[i], p99[i] = r.rps, r.p50, r.p99
	}
	slices.Sort(rps)
	slices.Sort(p50)
	slices.Sort(p99)
	m := len(rs) / 2
	return rps[m], p50[m], p99[m]
}

func runWrk(ctx context.Context, name, url string, d time.Duration, conns int) (wrkResult, error) {
	var res wrkResult
	cmd := exec.CommandContext(ctx, "wrk", "-t2", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(d.Seconds())), "--latency", "-H", "Host: podinfo", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return res, fmt.Errorf("wrk failed (make bench-deps installs it): %w: %s", err, out)
	}
	res.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := requestsLine.FindStringSubmatch(line); m != nil {
			res.requests, _ = strconv.ParseInt(m[1], 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "Requests/sec:"); ok {
			res.rps, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
		if strings.Contains(line, "Non-2xx") || strings.Contains(line, "Socket errors") {
			fmt.Fprintf(os.Stderr, "  %s: %s\n", name, strings.TrimSpace(line))
		}
		if m := latencyLine.FindStringSubmatch(line); m != nil {
			f, _ := strconv.ParseFloat(m[2], 64)
			unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[3]]
			v := time.Duration(f * float64(unit)).Round(time.Microsecond)
			if m[1] == "50" {
				res.p50 = v
			} else {
				res.p99 = v
			}
		}
	}
	if res.rps == 0 {
		return res, fmt.Errorf("could not parse wrk output: %s", out)
	}
	return res, nil
}

// fixedRate sends rate requests/s for d, open loop, and returns p50, p99 and
// the number of failed requests.
func fixedRate(ctx context.Context, url string, rate int, d time.Duration) (time.Duration, time.Duration, int) {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	n := int(d.Seconds() * float64(rate))
	lat := make([]time.Duration, n)
	errs := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			req.Host = "podinfo"
			resp, err := c.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			lat[i] = time.Since(at)
			if err != nil || resp.StatusCode != http.StatusOK {
				mu.Lock()
				errs++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))].Round(time.Microsecond) }
	return pct(0.50), pct(0.99), errs
}

// treeRSS sums a /proc status field (kB: "VmRSS:" or "RssAnon:") of pid
// and its children (nginx's workers).
func treeRSS(pid int, field string) int64 {
	total := rssOf(pid, field)
	for _, child := range children(pid) {
		total += rssOf(child, field)
	}
	return total
}

// procSample is a process tree's CPU time so far.
type procSample struct {
	cpu time.Duration
}

// selfCPU is this process's CPU time so far: the backend's, while wrk runs.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's utime and stime; it is
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

func sampleTree(pid int) procSample {
	var s procSample
	for _, p := range append([]int{pid}, children(pid)...) {
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); err == nil {
			if i := strings.LastIndexByte(string(stat), ')'); i >= 0 {
				// Fields after the command name start at state (3); utime
				// and stime are fields 14 and 15.
				if f := strings.Fields(string(stat[i+1:])); len(f) > 12 {
					u, _ := strconv.ParseInt(f[11], 10, 64)
					st, _ := strconv.ParseInt(f[12], 10, 64)
					s.cpu += time.Duration(u+st) * clockTick
				}
			}
		}
	}
	return s
}

// children lists the pids whose parent is pid.
func children(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name: state ppid ...
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 1 && f[1] == strconv.Itoa(pid) {
				out = append(out, child)
			}
		}
	}
	return out
}

func rssOf(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// resources is the mesh the controller would publish for one Service with a
// canary: both clusters point at the one backend.
func resources(port int, backend string) map[resource.Type][]types.Resource {
	ads := &envoy_config_core_v3.ConfigSource{ConfigSourceSpecifier: &envoy_config_core_v3.ConfigSource_Ads{Ads: &envoy_config_core_v3.AggregatedConfigSource{}}}
	router, _ := anypb.New(&envoy_extensions_filters_http_router_v3.Router{})
	hcm, _ := anypb.New(&envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager{
		StatPrefix: "outbound",
		RouteSpecifier: &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager_Rds{Rds: &envoy_extensions_filters_network_http_connection_manager_v3.Rds{
			RouteConfigName: "outbound", ConfigSource: ads}},
		HttpFilters: []*envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &envoy_extensions_filters_network_http_connection_manager_v3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	sock := func(ip string, port int) *envoy_config_core_v3.Address {
		return &envoy_config_core_v3.Address{Address: &envoy_config_core_v3.Address_SocketAddress{SocketAddress: &envoy_config_core_v3.SocketAddress{
			Address: ip, PortSpecifier: &envoy_config_core_v3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
	}
	l := &envoy_config_listener_v3.Listener{
		Name:    "outbound_15001",
		Address: sock("127.0.0.1", port),
		FilterChains: []*envoy_config_listener_v3.FilterChain{{Filters: []*envoy_config_listener_v3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &envoy_config_listener_v3.Filter_TypedConfig{TypedConfig: hcm}}}}},
	}
	const primary, canary = "test/podinfo-primary:9898", "test/podinfo-canary:9898"
	rc := &envoy_config_route_v3.RouteConfiguration{Name: "outbound", VirtualHosts: []*envoy_config_route_v3.VirtualHost{{
		Name: "test/podinfo", Domains: []string{"podinfo", "podinfo:9898", "podinfo.test", "podinfo.test.svc.cluster.local:9898"},
		Routes: []*envoy_config_route_v3.Route{{
			Match: &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &envoy_config_route_v3.Route_Route{Route: &envoy_config_route_v3.RouteAction{
				Timeout: durationpb.New(15 * time.Second),
				ClusterSpecifier: &envoy_config_route_v3.RouteAction_WeightedClusters{WeightedClusters: &envoy_config_route_v3.WeightedCluster{
					Clusters: []*envoy_config_route_v3.WeightedCluster_ClusterWeight{
						{Name: primary, Weight: wrapperspb.UInt32(90)},
						{Name: canary, Weight: wrapperspb.UInt32(10)},
					}}},
				RetryPolicy: &envoy_config_route_v3.RetryPolicy{RetryOn: "5xx,connect-failure,reset", NumRetries: wrapperspb.UInt32(2)},
			}},
		}},
	}}}
	out := map[resource.Type][]types.Resource{resource.ListenerType: {l}, resource.RouteType: {rc}}
	host, p, _ := net.SplitHostPort(backend)
	bport, _ := strconv.Atoi(p)
	for _, name := range []string{primary, canary} {
		out[resource.ClusterType] = append(out[resource.ClusterType], &envoy_config_cluster_v3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &envoy_config_cluster_v3.Cluster_Type{Type: envoy_config_cluster_v3.Cluster_EDS},
			EdsClusterConfig:     &envoy_config_cluster_v3.Cluster_EdsClusterConfig{EdsConfig: ads},
			ConnectTimeout:       durationpb.New(time.Second),
			OutlierDetection: &envoy_config_cluster_v3.OutlierDetection{
				Consecutive_5Xx:    wrapperspb.UInt32(5),
				Interval:           durationpb.New(time.Second),
				BaseEjectionTime:   durationpb.New(30 * time.Second),
				MaxEjectionPercent: wrapperspb.UInt32(50),
			},
		})
		out[resource.EndpointType] = append(out[resource.EndpointType], &envoy_config_endpoint_v3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*envoy_config_endpoint_v3.LocalityLbEndpoints{{LbEndpoints: []*envoy_config_endpoint_v3.LbEndpoint{{
				HostIdentifier: &envoy_config_endpoint_v3.LbEndpoint_Endpoint{Endpoint: &envoy_config_endpoint_v3.Endpoint{Address: sock(host, bport)}}}}}},
		})
	}
	return out
}

func saveProfile(_ *http.Client, adminPort int, d time.Duration, path string) {
	c := &http.Client{Transport: &http.Transport{}, Timeout: d + 10*time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", adminPort, int(d.Seconds())-1))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	os.WriteFile(path, b, 0o644)
}
