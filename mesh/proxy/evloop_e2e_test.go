//go:build linux

package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_extensions_filters_network_http_connection_manager_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/internal/testenv"
	"github.com/weir-dev/weir/mesh/proxy"
)

// These tests drive the HTTP/1.1 data path over raw connections: what the
// event loop does itself (pipelining, framing, streaming, connection reuse,
// cancellation) and what it hands to the general path mid-connection. They
// pass on both paths (make test also runs them with
// WEIR_PROXY_EVENT_LOOP=off), except where a test says it needs the loop.

// rawConn is a client connection to the proxy's listener.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialProxy(t *testing.T, port int) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatal(err)
	}
}

// response reads one response to a request with the given method.
func (c *rawConn) response(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading the response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading the body: %v", err)
	}
	resp.Body.Close()
	return resp, string(b)
}

// echo answers "<method> <path> <body>".
func echo(t *testing.T) string {
	return addr(backend(t, "echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), b)
	}))
}

func proxyTo(t *testing.T, endpoints ...string) int {
	t.Helper()
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withEndpoints(primaryName, endpoints...)))
	waitReady(t, startProxy(t, cp.addr))
	return port
}

func TestPipelinedRequestsAreAnsweredInOrder(t *testing.T) {
	c := dialProxy(t, proxyTo(t, echo(t)))
	// Three requests in one write, the second with a body.
	c.send("GET /a?x=1 HTTP/1.1\r\nHost: podinfo\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: podinfo\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /c HTTP/1.1\r\nHost: podinfo\r\n\r\n")
	for _, want := range []string{"GET /a?x=1 ", "POST /b hello", "GET /c "} {
		resp, body := c.response(http.MethodGet)
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
}

func TestHandedOverRequestsShareTheConnection(t *testing.T) {
	c := dialProxy(t, proxyTo(t, echo(t)))
	big := strings.Repeat("x", 100<<10) // above what the loop buffers
	steps := []struct {
		name, req, want string
	}{
		{"plain", "GET /1 HTTP/1.1\r\nHost: podinfo\r\n\r\n", "GET /1 "},
		{"chunked body", "POST /2 HTTP/1.1\r\nHost: podinfo\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "POST /2 abc"},
		{"plain after", "GET /3 HTTP/1.1\r\nHost: podinfo\r\n\r\n", "GET /3 "},
		{"escaped path", "GET /a%20b HTTP/1.1\r\nHost: podinfo\r\n\r\n", "GET /a%20b "},
		{"large body", fmt.Sprintf("PUT /4 HTTP/1.1\r\nHost: podinfo\r\nContent-Length: %d\r\n\r\n%s", len(big), big), "PUT /4 " + big},
	}
	for _, s := range steps {
		c.send(s.req)
		resp, body := c.response(http.MethodGet)
		if resp.StatusCode != 200 || body != s.want {
			t.Fatalf("%s: got %d %.60q, want 200 %.60q", s.name, resp.StatusCode, body, s.want)
		}
	}
	// Expect: 100-continue gets its interim response before the body is sent.
	c.send("POST /5 HTTP/1.1\r\nHost: podinfo\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
	line, err := c.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("got %q, %v; want 100 Continue", line, err)
	}
	c.br.ReadString('\n')
	c.send("ok")
	if resp, body := c.response(http.MethodPost); resp.StatusCode != 200 || body != "POST /5 ok" {
		t.Fatalf("after 100-continue: %d %q", resp.StatusCode, body)
	}
}

func TestLargeResponsesStreamIntact(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 512<<10) // 8 MiB
	want := sha256.Sum256(payload)
	be := backend(t, "big", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/length" {
			w.Header().Set("Content-Length", fmt.Sprint(len(payload)))
		}
		for p := payload; len(p) > 0; p = p[min(len(p), 100_000):] {
			w.Write(p[:min(len(p), 100_000)])
			w.(http.Flusher).Flush()
		}
	})
	c := newClient(t, proxyTo(t, addr(be)), "podinfo")
	for _, path := range []string{"/length", "/chunked"} {
		req, _ := http.NewRequest(http.MethodGet, c.base+path, nil)
		req.Host = "podinfo"
		resp, err := c.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		// Read slowly at first, so the proxy must hold the upstream back.
		time.Sleep(200 * time.Millisecond)
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || n != int64(len(payload)) || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("%s: %d bytes, %v; want %d bytes with the same digest", path, n, err, len(payload))
		}
	}
}

func TestResponseFraming(t *testing.T) {
	be := backend(t, "framing", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "11")
			io.WriteString(w, "hello world")
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.(http.Flusher).Flush()
			w.Header().Set("X-Sum", "42")
		}
	})
	// An upstream that ends its body by closing the connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				req, err := http.ReadRequest(bufio.NewReader(nc))
				switch {
				case err != nil:
				case req.URL.Path == "/both":
					io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n")
				default:
					io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
				}
			}()
		}
	}()
	port := freePort(t)
	cp := startControlPlane(t, "")
	m := newMesh(port, withWeights(100, 0), withEndpoints(primaryName, addr(be)), withEndpoints(canaryName, ln.Addr().String()))
	cp.publish(t, m)
	waitReady(t, startProxy(t, cp.addr))

	c := dialProxy(t, port)
	c.send("HEAD /head HTTP/1.1\r\nHost: podinfo\r\n\r\n")
	if resp, body := c.response(http.MethodHead); resp.StatusCode != 200 || resp.ContentLength != 11 || body != "" {
		t.Fatalf("HEAD: %d, length %d, body %q", resp.StatusCode, resp.ContentLength, body)
	}
	for _, code := range []int{204, 304} {
		c.send(fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: podinfo\r\n\r\n", code))
		if resp, body := c.response(http.MethodGet); resp.StatusCode != code || body != "" {
			t.Fatalf("%d: got %d %q", code, resp.StatusCode, body)
		}
	}
	c.send("GET /trailer HTTP/1.1\r\nHost: podinfo\r\n\r\n")
	resp, body := c.response(http.MethodGet)
	if body != "body" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("chunked with trailer: %q, trailer %v", body, resp.Trailer)
	}
	// Still the same connection: everything above was framed exactly.
	c.send("GET /head HTTP/1.1\r\nHost: podinfo\r\n\r\n")
	if _, body := c.response(http.MethodGet); body != "hello world" {
		t.Fatalf("after the others: %q", body)
	}

	m.weights = map[string]uint32{primaryName: 0, canaryName: 100}
	m.version = "2"
	cp.publish(t, m)
	eventually(t, "route to the close-delimited upstream", func() bool {
		c := dialProxy(t, port)
		c.send("GET / HTTP/1.1\r\nHost: podinfo\r\n\r\n")
		resp, body := c.response(http.MethodGet)
		return resp.StatusCode == 200 && body == "until close"
	})
	// Content-Length beside chunked framing is void: it must not reach the client.
	c = dialProxy(t, port)
	c.send("GET /both HTTP/1.1\r\nHost: podinfo\r\n\r\n")
	var head strings.Builder
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the head: %v", err)
		}
		if head.WriteString(line); line == "\r\n" {
			break
		}
	}
	if h := strings.ToLower(head.String()); strings.Contains(h, "content-length") || !strings.Contains(h, "transfer-encoding: chunked") {
		t.Errorf("chunked response with a Content-Length forwarded as:\n%s", head.String())
	}
}

func TestUpstreamConnectionsAreReused(t *testing.T) {
	var opened atomic.Int64
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	be.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	be.Start()
	t.Cleanup(be.Close)
	c := dialProxy(t, proxyTo(t, addr(be)))
	for i := range 200 {
		c.send("GET / HTTP/1.1\r\nHost: podinfo\r\n\r\n")
		if resp, body := c.response(http.MethodGet); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := opened.Load(); n > 2 {
		t.Errorf("200 sequential requests opened %d upstream connections, want them reused (at most 2)", n)
	}
}

// TestClientGoneCancelsUpstreamRequest needs the event loop: the general
// path does not watch a client while its request is upstream.
func TestClientGoneCancelsUpstreamRequest(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	be := backend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	})
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withTimeout(30*time.Second), withEndpoints(primaryName, addr(be))))
	p := startProxyWith(t, cp.addr, proxy.Options{}) // the event loop, whatever the environment says
	waitReady(t, p)

	c := dialProxy(t, port)
	c.send("GET / HTTP/1.1\r\nHost: podinfo\r\n\r\n")
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the backend")
	}
	c.nc.Close()
	select {
	case <-cancelled:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream request went on after the client closed its connection")
	}
}

// TestMixedTrafficLeavesNothingBehind sends every kind of request the data
// path sees, and clients that give up at every point, from many connections
// at once; every answered request must be right, and once the proxy is
// closed no descriptor of its may be left open.
func TestMixedTrafficLeavesNothingBehind(t *testing.T) {
	be := echo(t)
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withTimeout(10*time.Second), withEndpoints(primaryName, be)))
	before := openFDs(t)
	p := proxy.New(proxy.Options{DisableEventLoop: os.Getenv("WEIR_PROXY_EVENT_LOOP") == "off"})
	stop := runXDS(t, p, cp.addr)
	waitReady(t, p)

	kinds := []func(c *rawConn) string{
		func(c *rawConn) string { c.send("GET /g HTTP/1.1\r\nHost: podinfo\r\n\r\n"); return "GET /g " },
		func(c *rawConn) string {
			c.send("POST /p HTTP/1.1\r\nHost: podinfo\r\nContent-Length: 4\r\n\r\nbody")
			return "POST /p body"
		},
		func(c *rawConn) string {
			c.send("POST /c HTTP/1.1\r\nHost: podinfo\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
			return "POST /c hi"
		},
		func(c *rawConn) string { c.send("GET /%41 HTTP/1.1\r\nHost: podinfo\r\n\r\n"); return "GET /%41 " },
	}
	var wg sync.WaitGroup
	var answered, abandoned atomic.Int64
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				c := &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
				switch (g + i) % 6 {
				case 4: // gives up halfway through a head
					io.WriteString(nc, "GET /half HTTP/1.1\r\nHo")
					abandoned.Add(1)
				case 5: // gives up after sending, before the answer
					io.WriteString(nc, "GET /gone HTTP/1.1\r\nHost: podinfo\r\n\r\n")
					abandoned.Add(1)
				default: // a few requests on one connection, of every kind
					for k := range 3 {
						want := kinds[(g+i+k)%len(kinds)](c)
						resp, err := http.ReadResponse(c.br, nil)
						if err != nil {
							t.Errorf("reading an answer: %v", err)
							break
						}
						b, _ := io.ReadAll(resp.Body)
						if resp.StatusCode != 200 || string(b) != want {
							t.Errorf("got %d %q, want 200 %q", resp.StatusCode, b, want)
						}
						answered.Add(1)
					}
				}
				nc.Close()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests answered, %d clients gave up", answered.Load(), abandoned.Load())
	stop()
	p.Close()
	eventually(t, "the proxy's descriptors closed", func() bool { return openFDs(t) <= before })
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting descriptors: %v", err)
	}
	return len(entries)
}

func TestIdleTimeoutAndHeaderLimit(t *testing.T) {
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withEndpoints(primaryName, echo(t)), withHCM(func(h *envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager) {
		h.CommonHttpProtocolOptions = &envoy_config_core_v3.HttpProtocolOptions{IdleTimeout: durationpb.New(300 * time.Millisecond)}
		h.MaxRequestHeadersKb = wrapperspb.UInt32(8)
	})))
	waitReady(t, startProxy(t, cp.addr))

	// A connection in use outlives the idle timeout; heads are bounded.
	c := dialProxy(t, port)
	for i := range 12 {
		c.send("GET /" + fmt.Sprint(i) + " HTTP/1.1\r\nHost: podinfo\r\nX-Big: " + strings.Repeat("a", 6<<10) + "\r\n\r\n")
		if resp, body := c.response(http.MethodGet); resp.StatusCode != 200 || body != fmt.Sprintf("GET /%d ", i) {
			t.Fatalf("request %d with a 6 KiB head: %d %q", i, resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.send("GET / HTTP/1.1\r\nHost: podinfo\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n")
	if resp, _ := c.response(http.MethodGet); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a 20 KiB head with max_request_headers_kb 8: %d, want 431", resp.StatusCode)
	}

	// A connection that sends nothing is closed once idle_timeout passed
	// (checked every second on the event loop).
	idle := dialProxy(t, port)
	start := time.Now()
	idle.nc.SetReadDeadline(start.Add(5 * time.Second))
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Fatalf("an idle connection: %v, want it closed by the proxy", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("closed after %v, before idle_timeout (300ms)", d)
	}
}

// TestOutOfDescriptorsPausesAccepting runs weir-proxy with 64 descriptors
// and opens 100 connections to it: the loop must stop accepting rather than
// spin on the listener, keep serving the connections it has, and take the
// waiting ones once descriptors are free again.
func TestOutOfDescriptorsPausesAccepting(t *testing.T) {
	bin := testenv.Bin(t, "weir-proxy")
	t.Run("event loop", func(t *testing.T) { outOfDescriptors(t, bin) })
	t.Run("goroutines", func(t *testing.T) { outOfDescriptors(t, bin, "--event-loop=false") })
}

func outOfDescriptors(t *testing.T, bin string, extra ...string) {
	port := freePort(t)
	cp := startControlPlane(t, "")
	cp.publish(t, newMesh(port, withEndpoints(primaryName, echo(t))))
	admin := freePort(t)
	var logs syncBuffer
	args := append([]string{"--nofile=64", bin, "--xds-address", cp.addr, "--node-id", nodeID,
		"--admin-address", fmt.Sprintf("127.0.0.1:%d", admin)}, extra...)
	cmd := exec.Command("prlimit", args...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting weir-proxy under prlimit: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("weir-proxy's log:\n%s", logs.String())
		}
	})
	eventually(t, "weir-proxy ready", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", admin))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	get := func(c *rawConn) int {
		c.send("GET / HTTP/1.1\r\nHost: podinfo\r\n\r\n")
		resp, _ := c.response(http.MethodGet)
		return resp.StatusCode
	}
	first := dialProxy(t, port)
	if code := get(first); code != 200 {
		t.Fatalf("before: %d", code)
	}

	var held []net.Conn
	for range 100 {
		nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err) // the kernel's backlog takes them even when the proxy cannot
		}
		held = append(held, nc)
	}
	// Give it the time to take what it can.
	time.Sleep(300 * time.Millisecond)
	cpu := func() time.Duration {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		var u, s int64
		fmt.Sscan(f[11], &u)
		fmt.Sscan(f[12], &s)
		return time.Duration(u+s) * 10 * time.Millisecond // USER_HZ is 100
	}
	before := cpu()
	time.Sleep(time.Second)
	if used := cpu() - before; used > 300*time.Millisecond {
		t.Errorf("weir-proxy used %v of CPU in 1s while out of descriptors: it spins on the listener", used)
	}
	if code := get(first); code != 200 {
		t.Errorf("an established connection while out of descriptors: %d", code)
	}
	for _, nc := range held {
		nc.Close()
	}
	eventually(t, "new connections served again", func() bool {
		nc, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return false
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(nc, "GET / HTTP/1.1\r\nHost: podinfo\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		return err == nil && resp.StatusCode == 200
	})
}

// syncBuffer is a bytes.Buffer safe for a process's output and a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
