//go:build linux

package proxy

import (
	"container/heap"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event-loop data path serves a listener's HTTP/1.1 requests the way
// nginx and Envoy do: one epoll instance per CPU on its own thread, every
// socket registered once, edge-triggered, and read only when the kernel has
// said there is something to read. A request costs four system calls (read,
// write upstream, read upstream, write downstream) and an epoll_wait shared
// by all the events it returns, with no goroutine switch. The goroutine per
// connection path (h1server.go) costs about two more reads per request, the
// ones that find nothing and park the goroutine.
//
// The loop takes the common case: HTTP/1.1, a body of known length up to
// maxFastBody, and a route to HTTP/1.1 clusters. A connection whose request
// is anything else (HTTP/2 preface, HTTP/1.0, chunked or large bodies,
// Expect, Upgrade, a direct response, an HTTP/2 cluster, a head we do not
// parse) is handed, with the bytes read so far, to the general path, which
// serves it from then on. So every odd case is decided by one tested path.

// maxFastBody is the largest request body the loop buffers (and keeps for
// retries); a larger one goes to the general path.
const maxFastBody = 64 << 10

// highWater bounds what waits to be written downstream before the loop
// stops reading the upstream response.
const highWater = 256 << 10

// newListenerServer returns the event-loop server, which falls back on the
// general one when the loops cannot be set up.
func newListenerServer(h *handler) listenerServer {
	if h.p.opts.DisableEventLoop {
		return newH1Server(h)
	}
	return &evServer{h: h, h1: newH1Server(h), stopped: make(chan struct{}), lnfd: -1}
}

type evServer struct {
	h  *handler
	h1 *h1Server // serves the connections the loops hand over

	noKeepAlive atomic.Bool
	closing     atomic.Bool // no new connections; idle ones close
	hard        atomic.Bool // every connection closes

	mu    sync.Mutex
	ln    net.Listener
	loops []*loop
	// lnfd is the loops' duplicate of the listener; accepts hold lnMu for
	// reading, so closeListener never closes it under an accept.
	lnMu    sync.RWMutex
	lnfd    int
	running sync.WaitGroup
	stopped chan struct{}
	once    sync.Once
}

// Serve runs the loops until the server is closed.
func (s *evServer) Serve(ln net.Listener) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return s.h1.Serve(ln)
	}
	lnfd, err := dupFD(tl)
	if err != nil {
		s.h.p.log.Info("event loop unavailable, serving connections on goroutines", "error", err)
		return s.h1.Serve(ln)
	}
	n := s.h.p.opts.Concurrency
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	loops := make([]*loop, 0, n)
	discard := func() {
		for _, l := range loops {
			l.closeFDs()
		}
		unix.Close(lnfd)
	}
	for range n {
		lp, err := newLoop(s, lnfd)
		if err != nil {
			discard()
			s.h.p.log.Info("event loop unavailable, serving connections on goroutines", "error", err)
			return s.h1.Serve(ln)
		}
		loops = append(loops, lp)
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		discard()
		return http.ErrServerClosed
	}
	s.ln, s.loops = ln, loops
	s.lnMu.Lock()
	s.lnfd = lnfd
	s.lnMu.Unlock()
	s.running.Add(len(loops))
	s.mu.Unlock()
	for _, lp := range loops {
		go func() {
			defer s.running.Done()
			lp.run()
		}()
	}
	s.running.Wait()
	s.closeListener()
	s.once.Do(func() { close(s.stopped) })
	return http.ErrServerClosed
}

func dupFD(tl *net.TCPListener) (int, error) {
	rc, err := tl.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("failed to duplicate the listener: %w", derr)
	}
	return fd, nil
}

func (s *evServer) SetKeepAlivesEnabled(on bool) {
	s.noKeepAlive.Store(!on)
	s.h1.SetKeepAlivesEnabled(on)
}

func (s *evServer) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, lp := range s.loops {
		lp.wake()
	}
}

// Shutdown stops accepting, closes idle connections as they become idle
// and waits for the rest until ctx ends.
func (s *evServer) Shutdown(ctx context.Context) error {
	s.noKeepAlive.Store(true)
	s.closing.Store(true)
	s.closeListener()
	s.wakeAll()
	h1err := make(chan error, 1)
	go func() { h1err <- s.h1.Shutdown(ctx) }()
	select {
	case <-s.loopsDone():
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
	return <-h1err
}

// Close closes every connection at once.
func (s *evServer) Close() error {
	s.closing.Store(true)
	s.hard.Store(true)
	s.closeListener()
	s.wakeAll()
	err := s.h1.Close()
	select {
	case <-s.loopsDone():
	case <-time.After(5 * time.Second):
	}
	return err
}

// closeListener stops accepting: the loops forget the listener and it is
// closed, so its port is free at once.
func (s *evServer) closeListener() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.lnfd >= 0 {
		for _, lp := range s.loops {
			unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, s.lnfd, nil)
		}
		unix.Close(s.lnfd)
		s.lnfd = -1
	}
}

// loopsDone is closed once every loop has returned (at once when the
// loops never started).
func (s *evServer) loopsDone() <-chan struct{} {
	s.mu.Lock()
	started := s.loops != nil
	s.mu.Unlock()
	if !started {
		s.once.Do(func() { close(s.stopped) })
	}
	return s.stopped
}

// handOver gives a connection, with the bytes already read from it, to the
// general path.
func (s *evServer) handOver(fd int, buffered []byte) {
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return
	}
	s.h1.adopt(nc, buffered)
}

// evHandler receives a registered descriptor's events.
type evHandler interface {
	onEvent(events uint32)
}

type loop struct {
	s      *evServer
	epfd   int
	wakefd int
	events [128]unix.EpollEvent
	fds    []evHandler
	gens   []int32
	gen    int32
	timers timerHeap
	now    time.Time

	clients map[*clientConn]struct{}
	idle    map[*host][]*upConn
	addrs   map[*host]unix.Sockaddr
	maint   timer

	resume     timer     // re-arms accepting after a pause
	loggedFull time.Time // last "out of descriptors" log
}

func newLoop(s *evServer, lnfd int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	lp := &loop{s: s, epfd: epfd, wakefd: wakefd,
		clients: map[*clientConn]struct{}{}, idle: map[*host][]*upConn{}, addrs: map[*host]unix.Sockaddr{}}
	lp.maint.idx = -1
	lp.maint.fire = lp.maintain
	lp.resume = timer{idx: -1, fire: lp.resumeAccept}
	if err := lp.add(wakefd, wakeHandler{lp}, unix.EPOLLIN|unix.EPOLLET); err != nil {
		lp.closeFDs()
		return nil, err
	}
	if err := lp.listen(lnfd); err != nil {
		lp.closeFDs()
		return nil, err
	}
	return lp, nil
}

func (lp *loop) closeFDs() {
	unix.Close(lp.wakefd)
	unix.Close(lp.epfd)
}

func (lp *loop) wake() {
	var one = [8]byte{1}
	unix.Write(lp.wakefd, one[:])
}

// add registers fd. The event's data carries the descriptor and a
// generation, so an event read before a descriptor was closed and its number
// reused is not delivered to the new owner.
func (lp *loop) add(fd int, h evHandler, events uint32) error {
	for len(lp.fds) <= fd {
		lp.fds = append(lp.fds, nil)
		lp.gens = append(lp.gens, 0)
	}
	lp.gen++
	lp.fds[fd], lp.gens[fd] = h, lp.gen
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: lp.gen}
	if err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		lp.fds[fd] = nil
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// release forgets fd and closes it (which also removes it from the epoll
// set: nothing else holds it).
func (lp *loop) release(fd int) {
	lp.fds[fd] = nil
	unix.Close(fd)
}

func (lp *loop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	lp.now = time.Now()
	lp.arm(&lp.maint, lp.now.Add(time.Second))
	for {
		// Under load there is nearly always something ready: ask without
		// blocking first, and block (through the runtime) only when not.
		n, err := lp.pollNow()
		if n == 0 && err == nil {
			timeout := -1
			if len(lp.timers) > 0 {
				d := lp.timers[0].at.Sub(time.Now())
				timeout = max(0, int((d+time.Millisecond-1)/time.Millisecond))
			}
			n, err = unix.EpollWait(lp.epfd, lp.events[:], timeout)
		}
		lp.now = time.Now()
		if err != nil && err != unix.EINTR {
			lp.s.h.p.log.Error("epoll_wait failed; the listener's loop stops", "error", err)
			lp.shutdown()
			return
		}
		for i := range n {
			ev := &lp.events[i]
			fd := int(ev.Fd)
			if fd < len(lp.fds) && lp.fds[fd] != nil && lp.gens[fd] == ev.Pad {
				lp.fds[fd].onEvent(ev.Events)
			}
		}
		for len(lp.timers) > 0 && !lp.timers[0].at.After(lp.now) {
			t := heap.Pop(&lp.timers).(*timer)
			t.fire()
		}
		if lp.s.closing.Load() && lp.stopping() {
			lp.shutdown()
			return
		}
	}
}

// stopping closes what the server's state says should close, and reports
// whether the loop may return.
func (lp *loop) stopping() bool {
	hard := lp.s.hard.Load()
	for c := range lp.clients {
		if hard || !c.busy {
			c.abort()
		}
	}
	return len(lp.clients) == 0
}

func (lp *loop) shutdown() {
	for c := range lp.clients {
		c.abort()
	}
	for _, ups := range lp.idle {
		for _, u := range ups {
			u.close()
		}
	}
	lp.closeFDs()
}

// maintain closes downstream connections idle for longer than the
// listener's idle_timeout, and upstream ones idle for longer than
// h1IdleTimeout or whose endpoint left its cluster.
func (lp *loop) maintain() {
	if idle := lp.s.h.l.cfg.Load().idleTimeout; idle > 0 {
		for c := range lp.clients {
			if !c.busy && c.off == len(c.out) && lp.now.Sub(c.active) > idle {
				c.close()
			}
		}
	}
	for h, ups := range lp.idle {
		keep := ups[:0]
		for _, u := range ups {
			if h.pool.closed.Load() || lp.now.Sub(u.idleSince) > h1IdleTimeout {
				u.close()
				continue
			}
			keep = append(keep, u)
		}
		clear(ups[len(keep):])
		if len(keep) == 0 {
			delete(lp.idle, h)
		} else {
			lp.idle[h] = keep
		}
	}
	lp.arm(&lp.maint, lp.now.Add(time.Second))
}

type wakeHandler struct{ lp *loop }

func (w wakeHandler) onEvent(uint32) {
	var b [8]byte
	unix.Read(w.lp.wakefd, b[:])
}

type acceptHandler struct{ lp *loop }

func (a acceptHandler) onEvent(uint32) {
	lp := a.lp
	s := lp.s
	s.lnMu.RLock()
	defer s.lnMu.RUnlock()
	if s.lnfd < 0 || s.closing.Load() {
		return
	}
	// A few at a time, so that the other loops take their share.
	for range 4 {
		fd, sa, err := unix.Accept4(s.lnfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			if outOfResources(err) {
				lp.pauseAccept(err)
			}
			return
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		c := &clientConn{lp: lp, peer: sa, active: lp.now, sock: sock{fd: fd, in: make([]byte, 4<<10)}}
		c.x.cc = c
		c.x.timer = timer{idx: -1, fire: c.x.onTimer}
		if err := lp.add(fd, c, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
			unix.Close(fd)
			return
		}
		lp.clients[c] = struct{}{}
	}
}

// acceptPause is how long a loop stops accepting when the process is out of
// descriptors or memory. The listener is level-triggered, so without a pause
// the loop would spin on a connection it cannot take; meanwhile new
// connections wait in the kernel's backlog, and descriptors freed by
// finished requests let them in.
const acceptPause = 100 * time.Millisecond

// pauseAccept stops accepting for acceptPause; s.lnMu is held for reading.
func (lp *loop) pauseAccept(err error) {
	unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, lp.s.lnfd, nil)
	if lp.now.Sub(lp.loggedFull) > 10*time.Second {
		lp.loggedFull = lp.now
		lp.s.h.p.log.Warn("accept failed; pausing new connections", "listener", lp.s.h.l.cfg.Load().name, "error", err, "pause", acceptPause)
	}
	lp.arm(&lp.resume, lp.now.Add(acceptPause))
}

func (lp *loop) resumeAccept() {
	s := lp.s
	s.lnMu.RLock()
	defer s.lnMu.RUnlock()
	if s.lnfd < 0 || s.closing.Load() {
		return
	}
	if err := lp.listen(s.lnfd); err != nil {
		lp.arm(&lp.resume, lp.now.Add(acceptPause))
	}
}

// listen registers the listener, level-triggered and exclusive: one loop
// wakes per new connection.
func (lp *loop) listen(lnfd int) error {
	return lp.add(lnfd, acceptHandler{lp}, unix.EPOLLIN|unix.EPOLLEXCLUSIVE)
}

// timer is a loop timer; idx is its place in the heap, -1 when not armed.
type timer struct {
	at   time.Time
	idx  int
	fire func()
}

type timerHeap []*timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*timer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}

func (lp *loop) arm(t *timer, at time.Time) {
	t.at = at
	if t.idx >= 0 {
		heap.Fix(&lp.timers, t.idx)
		return
	}
	heap.Push(&lp.timers, t)
}

func (lp *loop) disarm(t *timer) {
	if t.idx >= 0 {
		heap.Remove(&lp.timers, t.idx)
	}
}

// sockaddr returns the host's address for connect(2).
func (lp *loop) sockaddr(h *host) (unix.Sockaddr, error) {
	if sa, ok := lp.addrs[h]; ok {
		return sa, nil
	}
	ap, err := netip.ParseAddrPort(h.addr)
	if err != nil {
		return nil, err
	}
	var sa unix.Sockaddr
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	lp.addrs[h] = sa
	return sa, nil
}

// getIdle returns a pooled connection to h, newest first.
func (lp *loop) getIdle(h *host) *upConn {
	ups := lp.idle[h]
	for len(ups) > 0 {
		u := ups[len(ups)-1]
		ups[len(ups)-1] = nil
		ups = ups[:len(ups)-1]
		lp.idle[h] = ups
		if lp.now.Sub(u.idleSince) > h1IdleTimeout {
			u.close()
			continue
		}
		return u
	}
	return nil
}

func (lp *loop) putIdle(u *upConn) {
	if u.h.pool.closed.Load() || lp.s.hard.Load() {
		u.close()
		return
	}
	ups := lp.idle[u.h]
	if len(ups) >= 1024 {
		u.close()
		return
	}
	u.x = nil
	u.idleSince = lp.now
	lp.idle[u.h] = append(ups, u)
}

// dropIdle removes a pooled connection the server closed.
func (lp *loop) dropIdle(u *upConn) {
	ups := lp.idle[u.h]
	for i, v := range ups {
		if v == u {
			copy(ups[i:], ups[i+1:])
			ups[len(ups)-1] = nil
			lp.idle[u.h] = ups[:len(ups)-1]
			break
		}
	}
	u.close()
}

// The loop's reads and writes are on non-blocking sockets and return at
// once, so they go to the kernel directly (RawSyscall) instead of through
// the runtime's syscall bookkeeping: with it, sysmon keeps waking to take
// the P of a thread that looks blocked in a system call, and the loop
// thread then contends for it back (futex and nanosleep calls that cost as
// much as the I/O). Only the epoll_wait that may block goes through the
// runtime.

func rawRead(fd int, p []byte) (int, error)  { return rawIO(unix.SYS_READ, fd, p) }
func rawWrite(fd int, p []byte) (int, error) { return rawIO(unix.SYS_WRITE, fd, p) }

// rawIO is read(2) or write(2), by trap.
func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// pollNow returns the events that are ready without waiting.
func (lp *loop) pollNow() (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(lp.epfd), uintptr(unsafe.Pointer(&lp.events[0])), uintptr(len(lp.events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
