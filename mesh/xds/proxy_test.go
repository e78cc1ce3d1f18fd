package xds

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weir-dev/weir/mesh/proxy"
)

// TestWeirProxyAcceptsAndRoutes applies the translated resources to
// weir-proxy (which NACKs any field it does not honour) and sends requests
// through its outbound listener: the weighted route picks the canary or the
// primary by the Canary's weight.
func TestWeirProxyAcceptsAndRoutes(t *testing.T) {
	backend := func(name string) (*httptest.Server, int32) {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, name) }))
		t.Cleanup(s.Close)
		_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
		p, _ := strconv.Atoi(port)
		return s, int32(p)
	}
	_, primaryPort := backend("primary")
	_, canaryPort := backend("canary")
	listenerPort := freePort(t)

	in := Input{
		Services: []*corev1.Service{
			service("test", "podinfo", 9898), service("test", "podinfo-primary", 9898), service("test", "podinfo-canary", 9898),
		},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			slice("test", "podinfo-primary-a", "podinfo-primary", primaryPort, ep("127.0.0.1")),
			slice("test", "podinfo-canary-a", "podinfo-canary", canaryPort, ep("127.0.0.1")),
		},
		Canaries: podinfo(withTimeout(5*time.Second), withRetries(2, time.Second, "5xx,reset,connect-failure"),
			withOutlier(5, 10*time.Second, 30*time.Second, 50)).Canaries,
		ListenerPort: uint32(listenerPort),
	}
	p := proxy.New(proxy.Options{BindIP: "127.0.0.1", Log: slog.New(slog.DiscardHandler)})
	t.Cleanup(p.Close)
	client := &http.Client{Timeout: 5 * time.Second}

	for _, tc := range []struct {
		weight int32
		want   string
	}{{0, "primary"}, {100, "canary"}, {0, "primary"}} {
		in.Weights = map[types.NamespacedName]int32{podinfoKey: tc.weight}
		out := Translate(in)
		snap, err := NewSnapshot(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, step := range []struct {
			typ string
			res []proto.Message
		}{
			{resource.ClusterType, asMessages(out.Clusters)},
			{resource.EndpointType, asMessages(out.Endpoints)},
			{resource.ListenerType, asMessages(out.Listeners)},
			{resource.RouteType, asMessages(out.Routes)},
		} {
			var anys []*anypb.Any
			for _, m := range step.res {
				a, err := anypb.New(m)
				if err != nil {
					t.Fatal(err)
				}
				anys = append(anys, a)
			}
			if err := p.Apply(step.typ, snap.Versions[step.typ], anys); err != nil {
				t.Fatalf("weir-proxy rejected %s: %v", shortType(step.typ), err)
			}
		}
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", listenerPort), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "podinfo.test:9898"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != tc.want {
			t.Errorf("weight %d: %d %q, want 200 %q", tc.weight, resp.StatusCode, body, tc.want)
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
