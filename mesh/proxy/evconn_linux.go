//go:build linux

package proxy

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// clientConn is a downstream connection served on a loop.
type clientConn struct {
	sock
	lp       *loop
	peer     unix.Sockaddr
	eof      bool      // the client closed its side
	active   time.Time // last read, or end of an exchange (idle_timeout)
	closing  bool      // close once out is written
	closed   bool
	busy     bool // x is in flight
	starting bool // in start: an exchange that ends at once must not re-enter serve
	x        exchange
	head     reqHead
}

// sock is what both ends of an exchange keep of their socket: the read
// buffer (in[r:w] is read and not yet consumed), what waits to be written
// (out[off:]) and the edge-triggered readiness seen so far.
type sock struct {
	fd       int
	in       []byte
	r, w     int
	out      []byte
	off      int
	readable bool
	writable bool
}

// Results of readIn.
const (
	readGot  = iota // bytes were added to in
	readNone        // nothing was ready, or the call was interrupted
	readEOF         // the peer closed its side, or the socket failed (see the error)
	readFull        // no room for more within the limit
)

// readIn reads once into in, first making room: compacting, then growing up
// to limit bytes of unread data (0: no bound).
func (s *sock) readIn(limit int) (int, error) {
	if s.r == s.w {
		s.r, s.w = 0, 0
		if len(s.in) > maxIdleBuffer {
			s.in = make([]byte, 4<<10)
		}
	}
	if s.w == len(s.in) {
		if s.r > 0 {
			s.w = copy(s.in, s.in[s.r:s.w])
			s.r = 0
		} else {
			size := 2 * len(s.in)
			if limit > 0 {
				if len(s.in) >= limit {
					return readFull, nil
				}
				size = min(size, limit)
			}
			s.in = append(s.in, make([]byte, size-len(s.in))...)
		}
	}
	n, err := rawRead(s.fd, s.in[s.w:])
	switch {
	case err == unix.EAGAIN:
		s.readable = false
		return readNone, nil
	case err == unix.EINTR:
		return readNone, nil
	case err != nil || n == 0:
		s.readable = false
		return readEOF, err
	}
	if n < len(s.in)-s.w {
		s.readable = false // drained: the next data brings a new edge
	}
	s.w += n
	return readGot, nil
}

// writeOut writes out[off:] while the socket takes it.
func (s *sock) writeOut() error {
	for s.off < len(s.out) && s.writable {
		n, err := rawWrite(s.fd, s.out[s.off:])
		switch {
		case err == unix.EAGAIN:
			s.writable = false
		case err == unix.EINTR:
		case err != nil:
			return err
		default:
			s.off += n
		}
	}
	return nil
}

// maxIdleBuffer is the most buffer a connection keeps between requests.
const maxIdleBuffer = 64 << 10

// body modes of a response.
const (
	bodyNone = iota
	bodyLength
	bodyChunked
	bodyEOF
)

// exchange is one request and its response, with retries.
type exchange struct {
	cc          *clientConn
	start       time.Time
	isHead      bool
	keepAlive   bool
	a           *routeAction
	c           *cluster
	cfg         *clusterConfig
	rp          *retryPolicy
	maxRetries  int
	req         []byte // the upstream request, head and body, sent again on retries
	attempt     int
	retriesHeld int
	tried       []*host
	h           *host
	up          *upConn
	reused      bool
	t0          time.Time
	deadline    time.Time // route timeout
	tryDeadline time.Time
	connDue     time.Time // connect timeout, while connecting
	backoff     bool      // waiting out a retry back-off
	backoffEnds bool      // the back-off runs into the route timeout
	timer       timer

	resp      respHead
	headSent  bool
	mode      int
	remaining int64
	chunks    chunkScanner
}

func (c *clientConn) onEvent(ev uint32) {
	if c.closed {
		return
	}
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		c.abort()
		return
	}
	if ev&unix.EPOLLOUT != 0 {
		c.writable = true
		if c.off < len(c.out) {
			c.flush()
			if c.closed {
				return
			}
			if c.busy && c.x.headSent && c.x.up != nil && len(c.out)-c.off < highWater {
				c.x.up.relay() // resume a response that waited for us
				if c.closed {
					return
				}
			}
		}
	}
	if ev&unix.EPOLLRDHUP != 0 && c.busy {
		// Envoy resets the upstream request when the downstream closes.
		c.abort()
		return
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP) != 0 {
		c.readable = true
	}
	if !c.busy {
		c.serve()
	}
}

// serve reads and starts requests until one is in flight or more bytes
// are needed.
func (c *clientConn) serve() {
	for !c.busy && !c.closed && !c.closing {
		if c.off < len(c.out) {
			return // the last response is still going out; EPOLLOUT resumes
		}
		if c.w > c.r {
			switch parseRequestHead(c.in[c.r:c.w], &c.head) {
			case parseOK:
				if c.start() {
					continue
				}
				return
			case parseElsewhere:
				c.handOver()
				return
			}
		}
		if c.eof || !c.readable {
			if c.eof {
				c.close()
			}
			return
		}
		if !c.fill(maxFastHead) {
			return
		}
	}
}

// fill reads once into the buffer, growing it up to limit bytes of unread
// data; it returns false when the connection closed.
func (c *clientConn) fill(limit int) bool {
	switch res, err := c.readIn(limit); {
	case res == readFull:
		c.handOver()
		return false
	case err != nil:
		c.close()
		return false
	case res == readEOF:
		c.eof = true
	case res == readGot:
		c.active = c.lp.now
	}
	return true
}

// handOver gives the connection to the general path.
func (c *clientConn) handOver() {
	if c.closed {
		return
	}
	c.closed = true
	delete(c.lp.clients, c)
	c.lp.fds[c.fd] = nil
	unix.EpollCtl(c.lp.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	buffered := append([]byte(nil), c.in[c.r:c.w]...)
	c.lp.s.handOver(c.fd, buffered)
}

func (c *clientConn) close() {
	if c.closed {
		return
	}
	c.closed = true
	delete(c.lp.clients, c)
	c.lp.release(c.fd)
	c.in, c.out = nil, nil
}

// abort ends the connection and any request in flight on it.
func (c *clientConn) abort() {
	if c.busy {
		c.x.cancel()
	}
	c.close()
}

func (c *clientConn) flush() {
	if err := c.writeOut(); err != nil {
		c.abort()
		return
	}
	if c.off == len(c.out) {
		c.out, c.off = c.out[:0], 0
		if cap(c.out) > maxIdleBuffer {
			c.out = nil // a large response does not pin its buffer to the connection
		}
		if c.closing {
			c.close()
		}
	}
}

// remoteIP is the client's address for x-forwarded-for.
func (c *clientConn) remoteIP() string {
	switch sa := c.peer.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr).String()
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(sa.Addr).Unmap().String()
	}
	return ""
}

// start routes the parsed request; it returns whether serve should go on.
func (c *clientConn) start() bool {
	hd := &c.head
	lp := c.lp
	h := lp.s.h
	lc := h.l.cfg.Load()
	if !lc.http1 || hd.contentLength > maxFastBody || hd.size > lc.maxHeadBytes {
		c.handOver()
		return false
	}
	total := hd.size + int(hd.contentLength)
	if c.w-c.r < total {
		// Wait for the whole body; serve parses the head again then.
		if c.eof {
			c.close()
			return false
		}
		if !c.readable {
			return false
		}
		return c.fill(total) && !c.closed // fill makes room for total bytes
	}
	c.r += total // consumed; the bytes stay put until the next fill
	body := c.in[c.r-total+hd.size : c.r]
	keepAlive := !hd.connClose && !lp.s.noKeepAlive.Load()
	rt, cl := h.resolve(lc, view(hd.host), fastRequest{hd: hd})
	if rt == nil {
		return c.localReply(http.StatusNotFound, "", nil, keepAlive)
	}
	if rt.direct != nil || (cl != nil && cl.cfg.Load().upstreamH2) {
		c.r -= total
		c.handOver()
		return false
	}
	a := rt.action
	if cl == nil {
		return c.localReply(a.notFoundCode, "", nil, keepAlive)
	}
	cc := cl.cfg.Load()
	if !cl.admit(cc) {
		return c.localReply(http.StatusServiceUnavailable, overflowReply, overloaded, keepAlive)
	}
	x := &c.x
	req := x.req[:0]
	if cap(req) > maxIdleBuffer {
		req = nil
	}
	*x = exchange{cc: c, timer: x.timer, req: req, tried: x.tried[:0], resp: respHead{fields: x.resp.fields[:0]}}
	x.start = lp.now
	x.isHead = string(hd.method) == http.MethodHead
	x.keepAlive = keepAlive
	x.a, x.c, x.cfg, x.rp = a, cl, cc, a.retry
	if x.rp != nil {
		x.maxRetries = x.rp.numRetries
	}
	x.req = buildUpstreamRequest(x.req, hd, body, lc, c)
	if a.timeout > 0 {
		x.deadline = x.start.Add(a.timeout)
	}
	c.busy = true
	c.starting = true
	x.startAttempt()
	c.starting = false
	return !c.busy && !c.closed && !c.closing
}

var overloaded = []string{"X-Envoy-Overloaded: true\r\n"}

// localReply answers from the proxy; it returns whether serve should go on.
func (c *clientConn) localReply(code int, body string, extra []string, keepAlive bool) bool {
	c.out = appendLocalReply(c.out, code, body, extra, keepAlive)
	if !keepAlive {
		c.closing = true
	}
	c.flush()
	return !c.closed && !c.closing
}

func appendLocalReply(b []byte, code int, body string, extra []string, keepAlive bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\nContent-Type: text/plain\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\nDate: "...)
	b = append(b, httpDate()...)
	b = append(b, crlf...)
	for _, e := range extra {
		b = append(b, e...)
	}
	if !keepAlive {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, crlf...)
	return append(b, body...)
}

// buildUpstreamRequest writes the request as it goes upstream: hop-by-hop
// headers removed, x-forwarded-for/-proto and x-request-id set as Envoy's
// connection manager does (and as prepareRequestHeaders does for the
// general path).
func buildUpstreamRequest(b []byte, hd *reqHead, body []byte, lc *listenerConfig, c *clientConn) []byte {
	b = append(b, hd.method...)
	b = append(b, ' ')
	b = append(b, hd.target...)
	b = append(b, " HTTP/1.1\r\n"...)
	var xff []byte
	hasXFP, hasRID := false, false
	for _, f := range hd.fields {
		n := f.name
		switch {
		case isHopHeader(n), asciiEqualFold(n, "content-length"):
			continue
		case asciiEqualFold(n, "te"):
			if !asciiEqualFold(f.value, "trailers") {
				continue
			}
		case asciiEqualFold(n, "x-forwarded-for"):
			if lc.useRemoteAddr {
				if xff != nil {
					xff = append(xff, ", "...)
				}
				xff = append(xff, f.value...)
				continue
			}
		case asciiEqualFold(n, "x-forwarded-proto"):
			hasXFP = true
		case asciiEqualFold(n, "x-request-id"):
			hasRID = true
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, crlf...)
	}
	if lc.useRemoteAddr {
		if ip := c.remoteIP(); ip != "" {
			b = append(b, "X-Forwarded-For: "...)
			if xff != nil {
				b = append(b, xff...)
				b = append(b, ", "...)
			}
			b = append(b, ip...)
			b = append(b, crlf...)
		}
	}
	if !hasXFP {
		b = append(b, "X-Forwarded-Proto: http\r\n"...)
	}
	if !hasRID && lc.genRequestID {
		b = append(b, "X-Request-Id: "...)
		b = appendRequestID(b)
		b = append(b, crlf...)
	}
	m := string(hd.method)
	if len(body) > 0 || m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, crlf...)
	}
	b = append(b, crlf...)
	return append(b, body...)
}

// isHopHeader reports whether name is one of hopHeaders, which both paths
// remove in both directions.
func isHopHeader(name []byte) bool {
	for _, h := range hopHeaders {
		if len(h) == len(name) && strings.EqualFold(h, view(name)) {
			return true
		}
	}
	return false
}

// startAttempt picks a host and sends the request to it.
func (x *exchange) startAttempt() {
	lp := x.cc.lp
	var exclude []*host
	attempts := 0
	if x.rp != nil && x.rp.previousHosts {
		exclude, attempts = x.tried, x.rp.hostAttempts
	}
	h := x.c.pick(x.cfg, exclude, attempts)
	st := x.c.stats
	if h == nil {
		st.NoneHealthy.Inc()
		st.Response(http.StatusServiceUnavailable, -1)
		x.reply(http.StatusServiceUnavailable, "no healthy upstream")
		return
	}
	if x.rp != nil && x.rp.previousHosts {
		x.tried = append(x.tried, h)
	}
	x.h = h
	x.tryDeadline = x.deadline
	if x.rp != nil && x.rp.perTry > 0 {
		if d := lp.now.Add(x.rp.perTry); x.tryDeadline.IsZero() || d.Before(x.tryDeadline) {
			x.tryDeadline = d
		}
	}
	h.active.Add(1)
	h.rqTotal.Add(1)
	st.Total.Inc()
	x.t0 = lp.now
	x.send(lp.getIdle(h))
}

// send writes the request on u, or on a new connection when u is nil.
func (x *exchange) send(u *upConn) {
	lp := x.cc.lp
	x.reused = u != nil
	x.connDue = time.Time{}
	if u == nil {
		var err error
		u, err = lp.dial(x.h)
		if err != nil {
			x.up = nil
			x.fail(failConnect)
			return
		}
		if ct := x.cfg.connectTimeout; ct > 0 {
			x.connDue = lp.now.Add(ct)
		}
	}
	u.x, x.up = x, u
	u.out, u.off = x.req, 0
	u.r, u.w = 0, 0
	u.gotBytes = false
	x.armTimer()
	if !u.connecting {
		u.flush()
	}
}

func (x *exchange) armTimer() {
	at := x.tryDeadline
	if !x.connDue.IsZero() && (at.IsZero() || x.connDue.Before(at)) {
		at = x.connDue
	}
	if at.IsZero() {
		x.cc.lp.disarm(&x.timer)
		return
	}
	x.cc.lp.arm(&x.timer, at)
}

func (x *exchange) onTimer() {
	lp := x.cc.lp
	if x.backoff {
		x.backoff = false
		if x.backoffEnds {
			st := x.c.stats
			st.Timeout.Inc()
			st.Response(http.StatusGatewayTimeout, -1)
			x.reply(http.StatusGatewayTimeout, "upstream request timeout")
			return
		}
		x.startAttempt()
		return
	}
	if x.up == nil {
		return
	}
	if x.up.connecting && !x.connDue.IsZero() && !lp.now.Before(x.connDue) {
		x.fail(failConnect)
		return
	}
	global := !x.deadline.IsZero() && !lp.now.Before(x.deadline)
	if x.headSent {
		x.cc.abort() // the response is cut short, as Envoy resets the stream
		return
	}
	if global {
		x.fail(failGlobalTimeout)
	} else {
		x.fail(failPerTryTimeout)
	}
}

// fail handles an attempt that got no response, as forward does.
func (x *exchange) fail(f failure) {
	if u := x.up; u != nil {
		x.up = nil
		u.x = nil
		u.close()
	}
	code, msg := x.c.failed(x.h, f, x.cc.lp.now.Sub(x.t0))
	if f != failGlobalTimeout && x.attempt < x.maxRetries && x.rp.retriesFailure(f) {
		x.retry()
		return
	}
	x.reply(code, msg)
}

// retry waits out the back-off and starts the next attempt.
func (x *exchange) retry() {
	lp := x.cc.lp
	if !x.c.takeRetry(x.cfg) {
		x.reply(http.StatusServiceUnavailable, retryLimitReply)
		return
	}
	x.retriesHeld++
	wait := x.rp.backoff(x.attempt)
	x.attempt++
	x.backoffEnds = !x.deadline.IsZero() && lp.now.Add(wait).After(x.deadline)
	at := lp.now.Add(wait)
	if x.backoffEnds {
		at = x.deadline
	}
	x.backoff = true
	lp.arm(&x.timer, at)
}

// reply ends the exchange with a local reply.
func (x *exchange) reply(code int, msg string) {
	c := x.cc
	x.end()
	if c.localReply(code, msg, nil, x.keepAlive && !c.lp.s.noKeepAlive.Load()) && !c.starting {
		c.serve()
	}
}

// end releases what the exchange holds; the client may start another.
func (x *exchange) end() {
	x.cc.active = x.cc.lp.now
	x.cc.lp.disarm(&x.timer)
	x.c.active.Add(-1)
	x.c.retries.Add(int64(-x.retriesHeld))
	x.retriesHeld = 0
	x.up = nil
	x.cc.busy = false
}

// cancel stops the exchange because the client went away.
func (x *exchange) cancel() {
	if u := x.up; u != nil {
		x.h.active.Add(-1)
		u.x = nil
		u.close()
	}
	x.end()
}

// onResponseHead decides, once the head is in, whether to retry or relay.
func (x *exchange) onResponseHead() bool {
	u, h, st := x.up, x.h, x.c.stats
	code := x.resp.status
	x.c.responded(h, code)
	if x.attempt < x.maxRetries && x.rp.retriesStatus(code) {
		st.Response(code, x.cc.lp.now.Sub(x.t0))
		h.active.Add(-1)
		x.up, u.x = nil, nil
		u.close()
		x.retry()
		return false
	}
	switch {
	case x.isHead || code == http.StatusNoContent || code == http.StatusNotModified:
		x.mode = bodyNone
	case x.resp.chunked:
		x.mode = bodyChunked
		x.chunks = chunkScanner{}
	case x.resp.contentLength >= 0:
		x.mode, x.remaining = bodyLength, x.resp.contentLength
		if x.remaining == 0 {
			x.mode = bodyNone
		}
	default:
		x.mode = bodyEOF
		x.keepAlive = false
	}
	if x.cc.lp.s.noKeepAlive.Load() {
		x.keepAlive = false
	}
	x.cc.out = appendResponseHead(x.cc.out, &x.resp, x.keepAlive)
	x.headSent = true
	return true
}

func appendResponseHead(b []byte, r *respHead, keepAlive bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(r.status), 10)
	b = append(b, ' ')
	if t := http.StatusText(r.status); t != "" {
		b = append(b, t...)
	} else {
		b = append(b, r.reason...)
	}
	b = append(b, crlf...)
	for _, f := range r.fields {
		n := f.name
		// A chunked body is relayed as it came, so its framing headers stay;
		// a Content-Length beside them is void (RFC 9112 §6.3) and goes.
		if isHopHeader(n) && !(r.chunked && (asciiEqualFold(n, "transfer-encoding") || asciiEqualFold(n, "trailer"))) ||
			r.chunked && asciiEqualFold(n, "content-length") {
			continue
		}
		b = append(b, n...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, crlf...)
	}
	if !r.hasDate {
		b = append(b, "Date: "...)
		b = append(b, httpDate()...)
		b = append(b, crlf...)
	}
	if !keepAlive {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, crlf...)
}

// finish ends an exchange whose response was relayed in full.
func (x *exchange) finish(reusable bool) {
	c, u, h := x.cc, x.up, x.h
	h.active.Add(-1)
	x.c.stats.Response(x.resp.status, c.lp.now.Sub(x.t0))
	u.x = nil
	if reusable {
		c.lp.putIdle(u)
	} else {
		u.close()
	}
	x.end()
	if !x.keepAlive {
		c.closing = true
	}
	c.flush()
	if !c.closed && !c.busy && !c.starting {
		c.serve()
	}
}

// upConn is an upstream connection owned by a loop.
type upConn struct {
	sock
	lp         *loop
	h          *host
	x          *exchange // nil while pooled
	connecting bool
	gotBytes   bool // any response byte arrived in this exchange
	idleSince  time.Time
	closed     bool
}

func (lp *loop) dial(h *host) (*upConn, error) {
	sa, err := lp.sockaddr(h)
	if err != nil {
		return nil, err
	}
	domain := unix.AF_INET
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	u := &upConn{lp: lp, h: h, sock: sock{fd: fd, in: make([]byte, 4<<10)}}
	switch err := unix.Connect(fd, sa); err {
	case nil:
		u.writable = true
	case unix.EINPROGRESS:
		u.connecting = true
	default:
		unix.Close(fd)
		return nil, err
	}
	if err := lp.add(fd, u, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLET); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return u, nil
}

func (u *upConn) close() {
	if u.closed {
		return
	}
	u.closed = true
	u.lp.release(u.fd)
	u.in, u.out = nil, nil
}

func (u *upConn) onEvent(ev uint32) {
	if u.closed {
		return
	}
	x := u.x
	if x == nil {
		// A pooled connection has nothing to say: the server closed it.
		u.lp.dropIdle(u)
		return
	}
	if u.connecting && ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		x.fail(failConnect)
		return
	}
	if ev&unix.EPOLLOUT != 0 {
		u.writable = true
		if u.connecting {
			u.connecting = false
			if errno, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || errno != 0 {
				x.fail(failConnect)
				return
			}
			x.connDue = time.Time{}
			x.armTimer()
		}
		if u.off < len(u.out) {
			u.flush()
			if u.x == nil {
				return
			}
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		u.readable = true
		u.relay()
	}
}

// flush writes what is left of the request.
func (u *upConn) flush() {
	if err := u.writeOut(); err != nil {
		u.failed()
	}
}

// failed handles a connection that broke before the response head: a
// pooled connection the server had closed is replaced once, as the general
// path does.
func (u *upConn) failed() {
	x := u.x
	if x == nil {
		u.close()
		return
	}
	if x.reused && !u.gotBytes && x.cc.lp.now.Sub(x.t0) < time.Second {
		x.up, u.x = nil, nil
		u.close()
		x.send(nil)
		return
	}
	x.fail(failReset)
}

// relay reads the response and moves it downstream.
func (u *upConn) relay() {
	for {
		x := u.x
		if x == nil || u.closed {
			return
		}
		c := x.cc
		if x.headSent && len(c.out)-c.off >= highWater {
			return // resumed by the client's flush
		}
		if u.r == u.w && !u.readable {
			return
		}
		if u.r == u.w || (!x.headSent && u.readable) {
			if !u.read(x) {
				return
			}
		}
		if !x.headSent {
			res, err := parseResponseHead(u.in[u.r:u.w], &x.resp)
			if err != nil {
				x.fail(failReset)
				return
			}
			if res == parseIncomplete {
				if !u.readable {
					return
				}
				continue
			}
			u.r += x.resp.size
			if x.resp.status >= 100 && x.resp.status < 200 {
				continue // 1xx: the final response follows
			}
			if !x.onResponseHead() {
				return
			}
		}
		if u.body(x) {
			return
		}
		c.flush()
		if c.closed {
			return
		}
	}
}

// read reads once; it returns false when there is nothing more to do now.
func (u *upConn) read(x *exchange) bool {
	res, err := u.readIn(0)
	switch res {
	case readNone:
		return u.r < u.w || u.readable
	case readEOF:
		if x.headSent {
			if x.mode == bodyEOF && err == nil {
				x.finish(false)
			} else {
				x.cc.abort()
			}
		} else {
			u.failed()
		}
		return false
	}
	u.gotBytes = true
	return true
}

// body moves buffered body bytes downstream; it returns true when the
// exchange ended (or broke).
func (u *upConn) body(x *exchange) bool {
	c := x.cc
	p := u.in[u.r:u.w]
	switch x.mode {
	case bodyNone:
		x.finish(len(p) == 0 && x.reusableUpstream())
		return true
	case bodyLength:
		n := int64(len(p))
		if n > x.remaining {
			n = x.remaining
		}
		c.out = append(c.out, p[:n]...)
		u.r += int(n)
		if x.remaining -= n; x.remaining == 0 {
			x.finish(u.r == u.w && x.reusableUpstream())
			return true
		}
	case bodyChunked:
		n, done, err := x.chunks.scan(p)
		c.out = append(c.out, p[:n]...)
		u.r += n
		if err != nil {
			x.cc.abort()
			return true
		}
		if done {
			x.finish(u.r == u.w && x.reusableUpstream())
			return true
		}
	case bodyEOF:
		c.out = append(c.out, p...)
		u.r = u.w
	}
	return false
}

func (x *exchange) reusableUpstream() bool {
	if x.resp.minor == 0 {
		return x.resp.keepAlive && !x.resp.connClose
	}
	return !x.resp.connClose
}
