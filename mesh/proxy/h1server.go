package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// h1Server serves a listener's HTTP/1.1 connections on one goroutine per
// connection with no background reads: a request is parsed, handled and
// answered in that goroutine. A connection that opens with the HTTP/2
// preface (h2c prior knowledge) is handed to a net/http server that speaks
// only HTTP/2.
//
// Unlike net/http it does not watch an idle client while its request is
// being handled, so a client that goes away does not cancel the upstream
// request; the route timeout still bounds it.
type h1Server struct {
	handler http.Handler
	cfg     func() *listenerConfig // idle timeout and head limit
	h2      *http.Server
	h2ln    *connListener

	noKeepAlive atomic.Bool
	closing     atomic.Bool

	mu    sync.Mutex
	ln    net.Listener
	conns map[*serverConn]struct{}
	wg    sync.WaitGroup
}

type serverConn struct {
	nc   net.Conn
	idle atomic.Bool
}

func newH1Server(h *handler) *h1Server {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	s := &h1Server{
		handler: h,
		cfg:     h.l.cfg.Load,
		h2ln:    newConnListener(),
		conns:   map[*serverConn]struct{}{},
	}
	s.h2 = &http.Server{Handler: h, Protocols: &protos, IdleTimeout: time.Hour}
	go s.h2.Serve(s.h2ln)
	return s
}

// Serve accepts connections until the listener is closed.
func (s *h1Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			if outOfResources(err) {
				// Out of descriptors or memory: the connection waits in the
				// backlog until finished requests free some.
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return err
		}
		s.adopt(nc, nil)
	}
}

func outOfResources(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// adopt serves a connection accepted elsewhere (an event loop hands over
// the ones it does not serve itself), replaying the bytes already read.
func (s *h1Server) adopt(nc net.Conn, buffered []byte) {
	if len(buffered) > 0 {
		nc = &prefixConn{Conn: nc, pre: buffered}
	}
	c := &serverConn{nc: nc}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go s.serveConn(c)
}

// headLimiter bounds a request head as max_request_headers_kb: while remain
// ≥ 0 (reading a head), a read asked for once remain bytes are in fails.
// Reads are never cut short, so bytes read ahead past a head that fits do
// not trip it; the bound is exact to within one buffer (4 KiB).
type headLimiter struct {
	r       io.Reader
	remain  int64
	tripped bool
}

var errHeadTooLarge = errors.New("request headers too large")

func (l *headLimiter) Read(p []byte) (int, error) {
	if l.remain < 0 {
		return l.r.Read(p)
	}
	if l.remain == 0 {
		l.tripped = true
		return 0, errHeadTooLarge
	}
	n, err := l.r.Read(p)
	l.remain = max(0, l.remain-int64(n))
	return n, err
}

// prefixConn reads pre before the connection.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// SetKeepAlivesEnabled(false) answers every further response with
// "Connection: close".
func (s *h1Server) SetKeepAlivesEnabled(on bool) {
	s.noKeepAlive.Store(!on)
	s.h2.SetKeepAlivesEnabled(on)
}

// Shutdown stops accepting, closes idle connections as they become idle and
// waits for the others until ctx ends.
func (s *h1Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.noKeepAlive.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	h2err := make(chan error, 1)
	go func() { h2err <- s.h2.Shutdown(ctx) }()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s.closeConns(true)
		select {
		case <-done:
			return <-h2err
		case <-ctx.Done():
			s.closeConns(false)
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close closes the listener and every connection at once.
func (s *h1Server) Close() error {
	s.closing.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	s.closeConns(false)
	return s.h2.Close()
}

func (s *h1Server) closeConns(idleOnly bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if !idleOnly || c.idle.Load() {
			c.nc.Close()
		}
	}
}

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

func (s *h1Server) serveConn(c *serverConn) {
	handedOver := false
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
		if !handedOver {
			c.nc.Close()
		}
	}()
	limit := &headLimiter{r: c.nc, remain: -1}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(limit)
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	defer func() {
		if !handedOver {
			br.Reset(nil)
			readerPool.Put(br)
		}
		bw.Reset(nil)
		writerPool.Put(bw)
	}()
	c.idle.Store(true)
	if idle := s.cfg().idleTimeout; idle > 0 {
		c.nc.SetReadDeadline(time.Now().Add(idle)) // a connection that never says anything
	}
	h2 := isH2Preface(br)
	c.nc.SetReadDeadline(time.Time{})
	if h2 {
		handedOver = true
		s.h2ln.push(&bufferedConn{Conn: c.nc, r: br})
		return
	}
	remote := c.nc.RemoteAddr().String()
	for {
		c.idle.Store(true)
		if s.closing.Load() {
			return
		}
		lc := s.cfg()
		limit.remain, limit.tripped = int64(lc.maxHeadBytes), false
		if lc.idleTimeout > 0 {
			c.nc.SetReadDeadline(time.Now().Add(lc.idleTimeout))
		}
		req, err := http.ReadRequest(br)
		limit.remain = -1
		if lc.idleTimeout > 0 {
			c.nc.SetReadDeadline(time.Time{})
		}
		c.idle.Store(false)
		if err != nil {
			var ne net.Error
			switch {
			case limit.tripped:
				io.WriteString(c.nc, "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.As(err, &ne) && ne.Timeout():
				// the client left, or stayed idle past idle_timeout
			default:
				io.WriteString(c.nc, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			}
			return
		}
		req.RemoteAddr = remote
		keepAlive := !req.Close && !s.noKeepAlive.Load()
		if req.ProtoMajor != 1 {
			io.WriteString(c.nc, "HTTP/1.1 505 HTTP Version Not Supported\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			return
		}
		if e := req.Header["Expect"]; len(e) > 0 {
			if !strings.EqualFold(e[0], "100-continue") {
				io.WriteString(c.nc, "HTTP/1.1 417 Expectation Failed\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
				return
			}
			delete(req.Header, "Expect")
			if req.ContentLength != 0 {
				bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
				if bw.Flush() != nil {
					return
				}
			}
		}
		w := &responseWriter{bw: bw, hdr: make(http.Header, 8), req: req, keepAlive: keepAlive, http10: req.ProtoMinor == 0}
		if !s.serveOne(w, req) {
			return
		}
		if !w.finish() || !w.keepAlive {
			return
		}
		// Discard what the handler left of the request body, within reason.
		if req.Body != nil && req.Body != http.NoBody {
			n, err := io.Copy(io.Discard, io.LimitReader(req.Body, 256<<10))
			if err != nil || n == 256<<10 {
				return
			}
		}
	}
}

// serveOne runs the handler; it returns false when the connection must close
// because the handler aborted.
func (s *h1Server) serveOne(w *responseWriter, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = false
			if v != http.ErrAbortHandler {
				panic(v)
			}
		}
	}()
	s.handler.ServeHTTP(w, req)
	return true
}

// isH2Preface reports whether the connection opens with the HTTP/2 client
// preface, reading no further than needed to tell: a short HTTP/1 request
// must not wait for 24 bytes.
func isH2Preface(br *bufio.Reader) bool {
	for {
		n := min(max(br.Buffered(), 1), len(h2Preface))
		p, err := br.Peek(n)
		if err != nil || !bytes.Equal(p, h2Preface[:n]) {
			return false
		}
		if n == len(h2Preface) {
			return true
		}
		if _, err := br.Peek(n + 1); err != nil { // wait for more bytes
			return false
		}
	}
}

// responseWriter writes one HTTP/1.1 response: Content-Length when the
// handler set it, chunked otherwise (close-delimited for HTTP/1.0).
type responseWriter struct {
	bw          *bufio.Writer
	hdr         http.Header
	req         *http.Request
	status      int
	wroteHeader bool
	chunked     bool
	noBody      bool
	keepAlive   bool
	http10      bool
	err         error
}

func (w *responseWriter) Header() http.Header { return w.hdr }

var dateCache atomic.Pointer[cachedDate]

type cachedDate struct {
	sec int64
	val string
}

func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.val
	}
	d := &cachedDate{sec: now.Unix(), val: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.val
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code >= 100 && code < 200 {
		return // informational responses from the handler are not relayed
	}
	w.wroteHeader = true
	w.status = code
	bw := w.bw
	bw.WriteString("HTTP/1.1 ")
	var num [20]byte
	bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString(crlf)
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	_, hasLength := w.hdr["Content-Length"]
	if !hasLength && !w.noBody {
		if w.http10 {
			w.keepAlive = false
		} else {
			w.chunked = true
		}
	}
	for k, vv := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) || k == "Connection" || k == "Transfer-Encoding" {
			continue
		}
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString(crlf)
		}
	}
	if _, ok := w.hdr["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString(crlf)
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if !w.keepAlive {
		bw.WriteString("Connection: close\r\n")
	} else if w.http10 {
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString(crlf)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody || len(p) == 0 {
		return len(p), nil
	}
	if w.chunked {
		var num [16]byte
		w.bw.Write(strconv.AppendInt(num[:0], int64(len(p)), 16))
		w.bw.WriteString(crlf)
	}
	n, err := w.bw.Write(p)
	if err == nil && w.chunked {
		_, err = w.bw.WriteString(crlf)
	}
	w.err = err
	return n, err
}

// Flush sends what is buffered (http.Flusher).
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err == nil {
		w.err = w.bw.Flush()
	}
}

// finish ends the response; it returns false when the connection failed.
func (w *responseWriter) finish() bool {
	if !w.wroteHeader {
		w.hdr["Content-Length"] = []string{"0"}
		w.WriteHeader(http.StatusOK)
	}
	if w.chunked && w.err == nil {
		w.bw.WriteString("0\r\n")
		for k, vv := range w.hdr {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vv {
					w.bw.WriteString(name)
					w.bw.WriteString(": ")
					w.bw.WriteString(v)
					w.bw.WriteString(crlf)
				}
			}
		}
		w.bw.WriteString(crlf)
	}
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	return w.err == nil
}

// connListener hands accepted connections to another server.
type connListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// bufferedConn replays bytes already read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
