package xds

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weir-dev/weir/mesh/proxy"
	"github.com/weir-dev/weir/mesh/proxy/xdsclient"
)

// TestWeirProxyOverADS connects a real weir-proxy (its ADS client and data
// plane) to the server: a weight change is confirmed only once the proxy
// acknowledged it, and from then on the proxy routes by it.
func TestWeirProxyOverADS(t *testing.T) {
	primaryPort, canaryPort := namedBackend(t, "primary"), namedBackend(t, "canary")
	listenerPort := freePort(t)
	in := Input{
		Services: []*corev1.Service{
			service("test", "podinfo", 9898), service("test", "podinfo-primary", 9898), service("test", "podinfo-canary", 9898),
		},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			slice("test", "podinfo-primary-a", "podinfo-primary", primaryPort, ep("127.0.0.1")),
			slice("test", "podinfo-canary-a", "podinfo-canary", canaryPort, ep("127.0.0.1")),
		},
		Canaries: podinfo(withRetries(1, time.Second, "5xx,connect-failure"), withOutlier(5, 10*time.Second, 30*time.Second, 50)).Canaries,
	}
	h := startServer(t, in, Options{ListenerPort: uint32(listenerPort)})
	ctx := testContext(t)

	p := proxy.New(proxy.Options{BindIP: "127.0.0.1", Log: slog.New(slog.DiscardHandler)})
	t.Cleanup(p.Close)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = (&xdsclient.Client{
			Address: h.conn.Target(), Node: &envoy_config_core_v3.Node{Id: "weir-proxy-1"}, Handler: p,
			Log: slog.New(slog.DiscardHandler), MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		}).Run(cctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	get := func() string {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", listenerPort), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "podinfo.test.svc.cluster.local:9898"
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	for _, step := range []struct {
		weight int32
		want   string
	}{{0, "200 primary"}, {100, "200 canary"}, {0, "200 primary"}} {
		waitAcked(ctx, t, h.srv, step.weight, 1)
		// Confirmed means the proxy applied it: no waiting from here on.
		for i := range 5 {
			if got := get(); got != step.want {
				t.Errorf("weight %d, request %d: %q, want %q", step.weight, i, got, step.want)
			}
		}
	}
}

// waitAcked calls SetWeight until n sidecars acknowledged the weight.
func waitAcked(ctx context.Context, t *testing.T, srv *Server, w int32, n int) {
	t.Helper()
	for {
		conf, err := srv.SetWeight(ctx, podinfoKey, w)
		if err != nil {
			t.Fatal(err)
		}
		if conf.Confirmed && conf.Acked == n && conf.Total == n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("weight %d not acknowledged by %d sidecars: %+v", w, n, conf)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// namedBackend serves its name on a loopback port and returns the port.
func namedBackend(t *testing.T, name string) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) })}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return int32(l.Addr().(*net.TCPAddr).Port)
}
