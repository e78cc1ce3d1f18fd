package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Pod network: one network namespace per cluster.
//
// The API server rejects loopback addresses in EndpointSlices ("may not be
// in the loopback range"), so pods on 127.x would never become endpoints:
// pods need real addresses. The network rule of our workplace allows
// traffic only to 127.0.0.0/8 and to the project's own test hosts inside
// network namespaces that the run created itself, so no other address of
// the root namespace may ever be a target. The cluster therefore creates a
// network namespace of its own, weir-<id>, and puts every pod there:
//
//	root namespace                    netns weir-<id>
//	wr<id> 10.213.N.1/24 (NodeIP) ─── eth0 10.213.N.2/24, default via .1
//	                                  lo: local route 10.213.N.128/25
//
// N is a free third octet of 10.213.0.0/16. The local route makes every
// address of .128/25 bindable in the namespace without a command per pod;
// pods get .129 to .254. Each container process starts as
// `ip netns exec weir-<id> <bin> <args…>`, which execs in place (same pid,
// process group and parent-death signal). The node agent, the control
// plane, Prometheus and the tests stay in the root namespace and reach
// pods through the veth; pods reach the root namespace only at NodeIP,
// where the agent forwards the API server port (see forward.go) and where
// tests bind servers that pods call (the xDS server). Stop deletes the
// namespace, which takes the veth pair with it; a namespace left by a
// killed process is deleted by the next cluster that starts (see
// reapStaleNetworks). All of it needs iproute2 and CAP_NET_ADMIN.

// podSpace is where pod networks are taken from by default.
var podSpace = netip.MustParsePrefix("10.213.0.0/16")

// privateTen is where an Options.PodCIDR must lie.
var privateTen = netip.MustParsePrefix("10.0.0.0/8")

// serviceRange is the API server's service-cluster-ip-range, never a pod
// network.
var serviceRange = netip.MustParsePrefix("10.0.0.0/24")

// podNetwork is the network namespace of a cluster's pods and the
// addresses it hands out.
type podNetwork struct {
	prefix netip.Prefix // the /24: .1 root side (NodeIP), .2 the namespace's eth0
	ns     string       // network namespace name, weir-<id>
	link   string       // root side of the veth pair, wr<id>
	ipBin  string       // path of ip(8)
	closed bool

	mu    sync.Mutex
	next  netip.Addr
	inUse map[netip.Addr]bool
}

// newPodNetwork creates the pod namespace on cidr, a /24 of 10.0.0.0/8;
// an empty cidr picks a free /24 of 10.213.0.0/16. Namespaces left behind
// by killed clusters are removed first.
func newPodNetwork(ctx context.Context, cidr string) (*podNetwork, error) {
	ipBin, err := exec.LookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("the pod network needs ip(8) from iproute2: %w", err)
	}
	reapStaleNetworks(ctx, ipBin)
	if cidr != "" {
		prefix, err := netip.ParsePrefix(cidr)
		if err != nil || !prefix.Addr().Is4() || prefix.Bits() != 24 || !privateTen.Contains(prefix.Addr()) || prefix.Overlaps(serviceRange) {
			return nil, fmt.Errorf("invalid pod CIDR %q: want a /24 of 10.0.0.0/8 other than %s", cidr, serviceRange)
		}
		return createNetwork(ctx, ipBin, prefix.Masked())
	}
	var errs []error
	for range 8 {
		third := byte(mrand.IntN(256))
		prefix := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, third, 0}), 24)
		n, err := createNetwork(ctx, ipBin, prefix)
		if err == nil {
			return n, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("failed to find a free pod network in %s: %w", podSpace, errors.Join(errs...))
}

// createNetwork claims prefix, checks that no address or route of the root
// namespace overlaps it, and creates the namespace and veth pair.
func createNetwork(ctx context.Context, ipBin string, prefix netip.Prefix) (*podNetwork, error) {
	id := shortID()
	n := &podNetwork{prefix: prefix, ns: "weir-" + id, link: "wr" + id, ipBin: ipBin, inUse: map[netip.Addr]bool{}}
	n.next = n.firstPod()
	if err := claimNetwork(n); err != nil {
		return nil, err
	}
	if err := checkFree(ctx, ipBin, prefix); err != nil {
		_ = os.Remove(ownerFile(prefix))
		return nil, err
	}
	if err := n.setUp(ctx); err != nil {
		return nil, errors.Join(err, n.Close(ctx))
	}
	return n, nil
}

// setUp creates the namespace, the veth pair, the addresses and routes.
func (n *podNetwork) setUp(ctx context.Context) error {
	node, ns := n.NodeIP().String()+"/24", n.NodeIP().Next().String()+"/24"
	steps := [][]string{
		{"netns", "add", n.ns},
		{"link", "add", n.link, "type", "veth", "peer", "name", "eth0", "netns", n.ns},
		{"addr", "add", node, "dev", n.link},
		{"link", "set", n.link, "up"},
		{"-n", n.ns, "link", "set", "lo", "up"},
		{"-n", n.ns, "addr", "add", ns, "dev", "eth0"},
		{"-n", n.ns, "link", "set", "eth0", "up"},
		{"-n", n.ns, "route", "add", "default", "via", n.NodeIP().String()},
		{"-n", n.ns, "route", "add", "local", n.podRange().String(), "dev", "lo"},
	}
	for _, args := range steps {
		if err := runIP(ctx, n.ipBin, args...); err != nil {
			return fmt.Errorf("failed to set up pod network %s in namespace %s: %w", n.prefix, n.ns, err)
		}
	}
	return nil
}

// runIP runs ip(8) with args.
func runIP(ctx context.Context, ipBin string, args ...string) error {
	out, err := exec.CommandContext(ctx, ipBin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s (needs CAP_NET_ADMIN): %s: %w", strings.Join(args, " "), strings.TrimSpace(string(out)), err)
	}
	return nil
}

// shortID is 6 random hex digits: "weir-" and "wr" plus it fit the 15
// characters of an interface name.
func shortID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// checkFree fails when an address or route of the root namespace overlaps
// prefix.
func checkFree(ctx context.Context, ipBin string, prefix netip.Prefix) error {
	for _, args := range [][]string{{"-4", "-o", "addr", "show"}, {"-4", "route", "show", "table", "all"}} {
		out, err := exec.CommandContext(ctx, ipBin, args...).Output()
		if err != nil {
			return fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		for _, p := range prefixesIn(out) {
			if p.Overlaps(prefix) {
				return fmt.Errorf("pod network %s overlaps %s in use on this machine", prefix, p)
			}
		}
	}
	return nil
}

// prefixesIn finds the IPv4 prefixes and addresses in the output of
// `ip -o addr` and `ip route`, skipping default routes.
func prefixesIn(out []byte) []netip.Prefix {
	var found []netip.Prefix
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if p, err := netip.ParsePrefix(f); err == nil && p.Addr().Is4() && p.Bits() > 0 {
				found = append(found, p.Masked())
			} else if a, err := netip.ParseAddr(f); err == nil && a.Is4() && !a.IsUnspecified() {
				found = append(found, netip.PrefixFrom(a, 32))
			}
		}
	}
	return found
}

// owners is where each pod network is recorded with the identity of the
// process that created it: a file per /24, created exclusively so that two
// clusters never take the same one, and read by reapStaleNetworks to
// remove the namespaces of processes that were killed.
func owners() string { return filepath.Join(os.TempDir(), "weir-pod-networks") }

// ownerFile is the owner record of prefix.
func ownerFile(prefix netip.Prefix) string {
	return filepath.Join(owners(), strings.ReplaceAll(prefix.String(), "/", "_"))
}

// claimNetwork records this process as the owner of n's prefix, failing
// when another process owns it.
func claimNetwork(n *podNetwork) error {
	if err := os.MkdirAll(owners(), 0o755); err != nil {
		return fmt.Errorf("failed to create %s: %w", owners(), err)
	}
	f, err := os.OpenFile(ownerFile(n.prefix), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("pod network %s is taken: %w", n.prefix, err)
	}
	_, err = fmt.Fprintf(f, "%s\n%s %s\n", processIdentity(os.Getpid()), n.ns, n.link)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(ownerFile(n.prefix))
		return fmt.Errorf("failed to record the owner of %s: %w", n.prefix, err)
	}
	return nil
}

// reapStaleNetworks deletes the namespaces and veths whose owner process
// is gone, and their records.
func reapStaleNetworks(ctx context.Context, ipBin string) {
	entries, err := os.ReadDir(owners())
	if err != nil {
		return
	}
	for _, e := range entries {
		path := filepath.Join(owners(), e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		owner, names, _ := strings.Cut(string(b), "\n")
		pid, _, _ := strings.Cut(owner, " ")
		n, err := strconv.Atoi(pid)
		if err != nil || processIdentity(n) == owner {
			continue // being written, or its owner lives
		}
		if f := strings.Fields(names); len(f) == 2 {
			_ = runIP(ctx, ipBin, "netns", "del", f[0])
			if linkExists(f[1]) {
				_ = runIP(ctx, ipBin, "link", "del", f[1])
			}
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

// linkExists reports whether the root namespace has an interface name.
func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// Close deletes the namespace, and with it the veth pair, then the owner
// record. The pods' processes must have exited: a namespace lives on while
// a process runs in it.
func (n *podNetwork) Close(ctx context.Context) error {
	if n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	if namespaceExists(n.ns) {
		errs = append(errs, runIP(ctx, n.ipBin, "netns", "del", n.ns))
	}
	errs = append(errs, n.waitLinkGone(ctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("failed to remove pod network %s: %w", n.prefix, err)
	}
	_ = os.Remove(ownerFile(n.prefix))
	return nil
}

// namespaceExists reports whether a named network namespace exists.
func namespaceExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// waitLinkGone waits for the kernel to destroy the veth pair after its
// namespace went away (it does so asynchronously), deleting it itself
// after a few seconds.
func (n *podNetwork) waitLinkGone(ctx context.Context) error {
	deadline := time.Now().Add(5 * time.Second)
	for linkExists(n.link) {
		if time.Now().After(deadline) {
			return runIP(ctx, n.ipBin, "link", "del", n.link)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Command runs bin with args inside the pod namespace: `ip netns exec`
// enters it and execs bin in place, so the process keeps its pid and the
// caller's SysProcAttr.
func (n *podNetwork) Command(bin string, args ...string) *exec.Cmd {
	return exec.Command(n.ipBin, append([]string{"netns", "exec", n.ns, bin}, args...)...)
}

// NodeIP is the root side of the veth pair, the node's address: pods reach
// the root namespace there.
func (n *podNetwork) NodeIP() netip.Addr { return n.prefix.Addr().Next() }

// podRange is the upper half of the /24, local in the namespace.
func (n *podNetwork) podRange() netip.Prefix {
	a := n.prefix.Addr().As4()
	a[3] = 128
	return netip.PrefixFrom(netip.AddrFrom4(a), 25)
}

// firstPod is the first pod address, .129.
func (n *podNetwork) firstPod() netip.Addr { return n.podRange().Addr().Next() }

// Allocate returns a free pod address (.129 to .254), round robin so that
// a freed address is reused as late as possible.
func (n *podNetwork) Allocate() (netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.podRange()
	for range 1 << (32 - r.Bits()) {
		a := n.next
		n.next = a.Next()
		if !r.Contains(n.next) || isBroadcast(r, n.next) {
			n.next = n.firstPod()
		}
		if !r.Contains(a) || a == r.Addr() || isBroadcast(r, a) || n.inUse[a] {
			continue
		}
		n.inUse[a] = true
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("no free address left in pod network %s", r)
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
