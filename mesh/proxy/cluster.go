package proxy

import (
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weir-dev/weir/mesh/proxy/outlier"
	"github.com/weir-dev/weir/mesh/proxy/stats"
)

// host is one upstream endpoint. It outlives config updates that keep its
// address, so outlier state and pooled connections survive them.
type host struct {
	addr     string
	pool     *h1Pool
	od       outlier.Host
	healthy  atomic.Bool // EDS health status
	active   atomic.Int64
	rqTotal  atomic.Uint64
	rqErrors atomic.Uint64
}

// hostSet is an immutable view of a cluster's hosts, replaced on change.
type hostSet struct {
	all     []*host
	healthy []*host // EDS-healthy and not ejected
}

// cluster is the runtime of one CDS cluster.
type cluster struct {
	name     string
	cfg      atomic.Pointer[clusterConfig]
	tr       atomic.Pointer[transports]
	hosts    atomic.Pointer[hostSet]
	rr       atomic.Uint64
	active   atomic.Int64
	retries  atomic.Int64
	detector *outlier.Detector
	stats    *stats.Cluster

	mu        sync.Mutex // serialises endpoint and sweeper changes
	hostsMu   sync.Mutex // serialises host-set stores
	byAddr    map[string]*host
	stopSweep chan struct{}
	interval  time.Duration
}

// transports hold the cluster's shared HTTP/2 (h2c) connection pool;
// HTTP/1.1 upstreams use each host's h1Pool.
type transports struct {
	h2             *http.Transport
	connectTimeout time.Duration
}

// newH2Transport returns a shared h2c (HTTP/2 prior knowledge) pool.
func newH2Transport(connectTimeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     16 << 10,
		ReadBufferSize:      16 << 10,
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	t.Protocols = &p
	return t
}

func newCluster(name string, st *stats.Cluster) *cluster {
	c := &cluster{name: name, stats: st, byAddr: map[string]*host{}, detector: outlier.New(nil)}
	c.hosts.Store(&hostSet{})
	c.detector.OnChange = c.rebuild
	c.detector.OnEject = func() { st.Enforced.Inc() }
	return c
}

// configure applies a (new) cluster config, keeping hosts and transports
// when the connection settings did not change.
func (c *cluster) configure(cc *clusterConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg.Store(cc)
	if old := c.tr.Load(); old == nil || old.connectTimeout != cc.connectTimeout {
		c.tr.Store(&transports{h2: newH2Transport(cc.connectTimeout), connectTimeout: cc.connectTimeout})
		if old != nil {
			old.h2.CloseIdleConnections()
		}
	}
	c.detector.SetConfig(cc.outlier)
	var interval time.Duration
	if cc.outlier != nil {
		interval = cc.outlier.Interval
	}
	if interval != c.interval {
		if c.stopSweep != nil {
			close(c.stopSweep)
			c.stopSweep = nil
		}
		c.interval = interval
		if interval > 0 {
			stop := make(chan struct{})
			c.stopSweep = stop
			go c.sweep(interval, stop)
		}
	}
}

func (c *cluster) sweep(interval time.Duration, stop chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c.detector.Sweep()
		}
	}
}

// setEndpoints replaces the endpoints, reusing hosts by address.
func (c *cluster) setEndpoints(eps []endpointSpec) {
	c.mu.Lock()
	next := make(map[string]*host, len(eps))
	all := make([]*host, 0, len(eps))
	monitors := make([]*outlier.Host, 0, len(eps))
	for _, e := range eps {
		if _, dup := next[e.addr]; dup {
			continue
		}
		h := c.byAddr[e.addr]
		if h == nil {
			h = &host{addr: e.addr, pool: newH1Pool(e.addr)}
		}
		h.healthy.Store(e.healthy)
		next[e.addr] = h
		all = append(all, h)
		monitors = append(monitors, &h.od)
	}
	for addr, h := range c.byAddr {
		if next[addr] == nil {
			h.pool.close()
		}
	}
	c.byAddr = next
	c.detector.SetHosts(monitors)
	c.mu.Unlock()
	c.storeHosts(all)
}

// rebuild recomputes the healthy list after an ejection change.
func (c *cluster) rebuild() {
	c.hostsMu.Lock()
	defer c.hostsMu.Unlock()
	c.storeHostsLocked(c.hosts.Load().all)
}

func (c *cluster) storeHosts(all []*host) {
	c.hostsMu.Lock()
	defer c.hostsMu.Unlock()
	c.storeHostsLocked(all)
}

func (c *cluster) storeHostsLocked(all []*host) {
	healthy := make([]*host, 0, len(all))
	for _, h := range all {
		if h.healthy.Load() && !h.od.Ejected() {
			healthy = append(healthy, h)
		}
	}
	c.hosts.Store(&hostSet{all: all, healthy: healthy})
	c.stats.Ejections.Set(float64(c.detector.Active()))
}

// close stops the sweeper and the idle connections.
func (c *cluster) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopSweep != nil {
		close(c.stopSweep)
		c.stopSweep = nil
	}
	if t := c.tr.Load(); t != nil {
		t.h2.CloseIdleConnections()
	}
	for _, h := range c.byAddr {
		h.pool.closeIdle()
	}
}

// pick chooses a host with the cluster's load balancer, skipping exclude
// when another choice exists. Below the healthy panic threshold every host is
// a candidate, as in Envoy.
func (c *cluster) pick(cc *clusterConfig, exclude []*host, attempts int) *host {
	hs := c.hosts.Load()
	list := hs.healthy
	if len(hs.all) > 0 && float64(len(hs.healthy))*100 < cc.panicThreshold*float64(len(hs.all)) {
		list = hs.all
	}
	if len(list) == 0 {
		return nil
	}
	var h *host
	for range attempts + 1 {
		h = c.choose(cc, list)
		if !contains(exclude, h) {
			return h
		}
	}
	return h
}

func contains(hs []*host, h *host) bool {
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}

func (c *cluster) choose(cc *clusterConfig, list []*host) *host {
	n := uint64(len(list))
	if n == 1 {
		return list[0]
	}
	switch cc.lb {
	case lbLeastRequest:
		best := list[rand.Uint64N(n)]
		for i := 1; i < cc.choiceCount; i++ {
			h := list[rand.Uint64N(n)]
			if h.active.Load() < best.active.Load() {
				best = h
			}
		}
		return best
	case lbRandom:
		return list[rand.Uint64N(n)]
	default:
		return list[(c.rr.Add(1)-1)%n]
	}
}
