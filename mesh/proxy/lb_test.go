package proxy

import (
	"testing"

	"github.com/weir-dev/weir/mesh/proxy/stats"
)

func TestLoadBalancers(t *testing.T) {
	tests := []struct {
		name     string
		lb       lbKind
		busy     int64  // active requests on host 0
		wantIdle [2]int // bounds on picks of host 1 out of 1,000
	}{
		{"round robin alternates", lbRoundRobin, 5, [2]int{500, 500}},
		{"least request prefers the idle host (P2C: 3 in 4)", lbLeastRequest, 5, [2]int{700, 800}},
		{"least request without load is even", lbLeastRequest, 0, [2]int{400, 600}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster("c", stats.New().Cluster("c"))
			cc := &clusterConfig{lb: tt.lb, choiceCount: 2, panicThreshold: 50}
			c.configure(cc)
			t.Cleanup(c.close)
			c.setEndpoints([]endpointSpec{{addr: "127.0.0.1:1", healthy: true}, {addr: "127.0.0.1:2", healthy: true}})
			hs := c.hosts.Load().all
			hs[0].active.Store(tt.busy)
			idle := 0
			for range 1000 {
				if c.pick(cc, nil, 0) == hs[1] {
					idle++
				}
			}
			if idle < tt.wantIdle[0] || idle > tt.wantIdle[1] {
				t.Errorf("idle host picked %d of 1000 times, want %d..%d", idle, tt.wantIdle[0], tt.wantIdle[1])
			}
		})
	}
}

func TestPanicThreshold(t *testing.T) {
	c := newCluster("c", stats.New().Cluster("c"))
	cc := &clusterConfig{panicThreshold: 50}
	c.configure(cc)
	t.Cleanup(c.close)
	c.setEndpoints([]endpointSpec{{addr: "127.0.0.1:1", healthy: true}, {addr: "127.0.0.1:2", healthy: false}, {addr: "127.0.0.1:3", healthy: false}})
	// One healthy host of three is below the 50% panic threshold: every host
	// is a candidate, as in Envoy.
	seen := map[string]bool{}
	for range 30 {
		seen[c.pick(cc, nil, 0).addr] = true
	}
	if len(seen) != 3 {
		t.Errorf("panic routing used %v, want all three hosts", seen)
	}
	cc2 := &clusterConfig{panicThreshold: 0}
	c.configure(cc2)
	for range 30 {
		if h := c.pick(cc2, nil, 0); h.addr != "127.0.0.1:1" {
			t.Fatalf("picked unhealthy %s with the panic threshold off", h.addr)
		}
	}
}
