package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Pod addresses.
//
// Linux treats every address of 127.0.0.0/8 as local, but the API server
// rejects loopback addresses in EndpointSlices ("may not be in the loopback
// range"), so the EndpointSlice controller could not publish such pods. By
// default each cluster therefore takes a /24 of 198.18.0.0/15 (RFC 2544's
// benchmarking range, never routed on the internet) and makes it local with
// one route, `ip route add local 198.18.N.0/24 dev lo` — the same trick that
// makes 127.0.0.0/8 work. Binding to and connecting to these addresses stays
// on the loopback device. The route is removed on Stop. Adding it needs
// CAP_NET_ADMIN; a PodCIDR inside 127.0.0.0/8 needs no route, at the cost of
// pods that never show up in EndpointSlices.

// benchRange is where default pod networks are taken from.
var benchRange = netip.MustParsePrefix("198.18.0.0/15")

// loopback is 127.0.0.0/8, local without any route.
var loopback = netip.MustParsePrefix("127.0.0.0/8")

// podNetwork hands out pod addresses from one local /24 or wider prefix.
type podNetwork struct {
	prefix netip.Prefix
	routed bool // a route was added and must be removed

	mu    sync.Mutex
	next  netip.Addr
	inUse map[netip.Addr]bool
}

// newPodNetwork makes cidr local (adding a route unless it is in
// 127.0.0.0/8); an empty cidr picks a free /24 of 198.18.0.0/15.
func newPodNetwork(ctx context.Context, cidr string) (*podNetwork, error) {
	if cidr != "" {
		prefix, err := netip.ParsePrefix(cidr)
		if err != nil || !prefix.Addr().Is4() || prefix.Bits() > 30 {
			return nil, fmt.Errorf("invalid pod CIDR %q: want an IPv4 prefix of /30 or wider", cidr)
		}
		return makeLocal(ctx, prefix.Masked())
	}
	reapStaleRoutes(ctx)
	var errs []error
	for range 8 {
		third := rand.IntN(256)
		second := 18 + rand.IntN(2)
		prefix := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, byte(second), byte(third), 0}), 24)
		n, err := makeLocal(ctx, prefix)
		if err == nil {
			return n, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("failed to find a free pod network in %s: %w", benchRange, errors.Join(errs...))
}

// makeLocal adds the local route for prefix when it needs one.
func makeLocal(ctx context.Context, prefix netip.Prefix) (*podNetwork, error) {
	n := &podNetwork{prefix: prefix, inUse: map[netip.Addr]bool{}}
	n.next = prefix.Addr().Next()
	if loopback.Contains(prefix.Addr()) {
		return n, nil
	}
	if err := ipRoute(ctx, "add", prefix); err != nil {
		return nil, err
	}
	n.routed = true
	claimRoute(prefix)
	return n, nil
}

// routeOwners is where each added route is recorded with the identity of
// the process that added it, so that a route left behind by a process that
// was killed is removed by the next cluster that starts.
func routeOwners() string { return filepath.Join(os.TempDir(), "weir-local-routes") }

// routeFile is the owner record of prefix.
func routeFile(prefix netip.Prefix) string {
	return filepath.Join(routeOwners(), strings.ReplaceAll(prefix.String(), "/", "_"))
}

// claimRoute records this process as the owner of prefix's route.
func claimRoute(prefix netip.Prefix) {
	if err := os.MkdirAll(routeOwners(), 0o755); err != nil {
		return
	}
	_ = os.WriteFile(routeFile(prefix), []byte(processIdentity(os.Getpid())), 0o644)
}

// reapStaleRoutes removes the routes whose owner process is gone.
func reapStaleRoutes(ctx context.Context) {
	entries, err := os.ReadDir(routeOwners())
	if err != nil {
		return
	}
	for _, e := range entries {
		path := filepath.Join(routeOwners(), e.Name())
		owner, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		pid, _, _ := strings.Cut(string(owner), " ")
		n, err := strconv.Atoi(pid)
		if err != nil || processIdentity(n) == string(owner) {
			continue
		}
		prefix, err := netip.ParsePrefix(strings.ReplaceAll(e.Name(), "_", "/"))
		if err == nil {
			_ = ipRoute(ctx, "del", prefix)
		}
		_ = os.Remove(path)
	}
}

// processIdentity is "pid starttime" of a live process, or "" when it is
// gone: unlike a bare pid it does not match a later process reusing the id.
func processIdentity(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(fields) < 20 || fields[0] == "Z" {
		return ""
	}
	return strconv.Itoa(pid) + " " + fields[19]
}

// ipRoute adds or deletes the local route of prefix on lo.
func ipRoute(ctx context.Context, verb string, prefix netip.Prefix) error {
	out, err := exec.CommandContext(ctx, "ip", "route", verb, "local", prefix.String(), "dev", "lo").CombinedOutput()
	if err != nil {
		return fmt.Errorf("failed to %s the local route %s (needs iproute2 and CAP_NET_ADMIN): %s: %w",
			verb, prefix, strings.TrimSpace(string(out)), err)
	}
	return nil
}

// Close removes the route, if one was added.
func (n *podNetwork) Close(ctx context.Context) error {
	if !n.routed {
		return nil
	}
	n.routed = false
	_ = os.Remove(routeFile(n.prefix))
	return ipRoute(ctx, "del", n.prefix)
}

// NodeIP is the first address of the network, kept for the node.
func (n *podNetwork) NodeIP() netip.Addr { return n.prefix.Addr().Next() }

// Allocate returns a free address, round robin so that a freed address is
// reused as late as possible.
func (n *podNetwork) Allocate() (netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	first := n.NodeIP().Next()
	for range 1 << (32 - n.prefix.Bits()) {
		a := n.next
		n.next = a.Next()
		if !n.prefix.Contains(n.next) || isBroadcast(n.prefix, n.next) {
			n.next = first
		}
		if a == n.NodeIP() || !n.prefix.Contains(a) || isBroadcast(n.prefix, a) || n.inUse[a] {
			continue
		}
		n.inUse[a] = true
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("no free address left in pod network %s", n.prefix)
}

// Release returns an address to the pool.
func (n *podNetwork) Release(a netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.inUse, a)
}

// isBroadcast reports whether a is the last address of prefix.
func isBroadcast(prefix netip.Prefix, a netip.Addr) bool {
	return !prefix.Contains(a.Next())
}

// handedOut are the ports freePort returned in this process, never
// returned twice, so that the components of one or several clusters
// started by one process do not get the same port.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another process may still take it before it is used: Start retries a
// component that failed to bind (see errPortInUse).
func freePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("failed to find a free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port, nil
		}
	}
	return 0, errors.New("failed to find a free port that was not handed out before")
}
