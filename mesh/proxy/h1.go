package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// h1IdleTimeout closes pooled upstream connections idle for longer.
const h1IdleTimeout = 60 * time.Second

// h1Pool is one endpoint's pool of HTTP/1.1 connections. A request is
// written and its response read on the handler's goroutine, with no hand-off
// to connection goroutines; the idle stack is a buffered channel, so there is
// no lock shared between requests beyond it.
type h1Pool struct {
	addr   string
	idle   chan *h1Conn
	closed atomic.Bool // the endpoint left its cluster
}

type h1Conn struct {
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time
}

func newH1Pool(addr string) *h1Pool {
	return &h1Pool{addr: addr, idle: make(chan *h1Conn, 1024)}
}

var aLongTimeAgo = time.Unix(1, 0)

// probeAfter is how long a pooled connection may sit idle before it is
// checked for a close by the server (one non-blocking peek) before reuse.
// Busy connections are reused sooner and skip the check; a request without
// a body, or with a buffered one, is still sent again on a fresh connection
// when a reused one turns out closed.
const probeAfter = 5 * time.Millisecond

// connAlive peeks at an idle connection without blocking: the server has
// closed it (EOF), reset it, or sent unsolicited bytes unless the peek would
// block.
func connAlive(c *h1Conn) bool {
	if c.br.Buffered() > 0 {
		return false
	}
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && alive
}

// noStop stands in for context.AfterFunc's stop when the context can never
// be cancelled (requests of the HTTP/1.1 server).
func noStop() bool { return true }

func (p *h1Pool) get(ctx context.Context, connectTimeout time.Duration, deadline time.Time) (*h1Conn, bool, error) {
	for {
		select {
		case c := <-p.idle:
			idle := time.Since(c.used)
			if idle > h1IdleTimeout || (idle > probeAfter && !connAlive(c)) {
				c.nc.Close()
				continue
			}
			return c, true, nil
		default:
		}
		break
	}
	d := net.Dialer{Timeout: connectTimeout, Deadline: deadline, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, false, err
	}
	return &h1Conn{nc: nc, br: bufio.NewReaderSize(nc, 8<<10), bw: bufio.NewWriterSize(nc, 4<<10)}, false, nil
}

func (p *h1Pool) put(c *h1Conn) {
	c.used = time.Now()
	if p.closed.Load() || c.nc.SetDeadline(time.Time{}) != nil {
		c.nc.Close()
		return
	}
	select {
	case p.idle <- c:
	default:
		c.nc.Close()
	}
}

// close closes the pooled connections and those returned later.
func (p *h1Pool) close() {
	p.closed.Store(true)
	p.closeIdle()
}

// closeIdle closes every pooled connection.
func (p *h1Pool) closeIdle() {
	for {
		select {
		case c := <-p.idle:
			c.nc.Close()
		default:
			return
		}
	}
}

// do writes r (with body, contentLength bytes or -1 for chunked) and reads
// the response headers. The connection goes back to the pool when the
// response body has been read to its end and closed. A pooled connection the
// server closed while idle is replaced once when the request has no body.
func (p *h1Pool) do(ctx context.Context, r *http.Request, body io.Reader, contentLength int64, connectTimeout time.Duration, deadline time.Time) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		c, reused, err := p.get(ctx, connectTimeout, deadline)
		if err != nil {
			return nil, err
		}
		if !deadline.IsZero() {
			c.nc.SetDeadline(deadline)
		}
		stop := noStop
		if ctx.Done() != nil {
			stop = context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
		}
		err = writeRequest(c.bw, r, body, contentLength)
		var resp *http.Response
		if err == nil {
			resp, err = readResponse(c.br, r)
		}
		if err != nil {
			stop()
			c.nc.Close()
			if reused && attempt == 0 && ctx.Err() == nil && staleConn(err) && rewind(body) {
				continue
			}
			return nil, err
		}
		resp.Body = &h1Body{rc: resp.Body, c: c, pool: p, stop: stop, closeConn: resp.Close}
		return resp, nil
	}
}

// rewind readies a request body to be sent again: nothing, or a buffered
// body (what forward passes when the body was kept for retries).
func rewind(body io.Reader) bool {
	switch b := body.(type) {
	case nil:
		return true
	case *bytes.Reader:
		_, err := b.Seek(0, io.SeekStart)
		return err == nil
	}
	return false
}

func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

var crlf = "\r\n"

func writeRequest(bw *bufio.Writer, r *http.Request, body io.Reader, n int64) error {
	uri := r.RequestURI
	if uri == "" || (uri[0] != '/' && uri != "*") {
		uri = r.URL.RequestURI()
	}
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString(crlf)
	for k, vv := range r.Header {
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString(crlf)
		}
	}
	chunked := false
	switch {
	case body != nil && n >= 0:
		var num [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(num[:0], n, 10))
		bw.WriteString(crlf)
	case body != nil:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		chunked = true
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString(crlf)
	if body != nil {
		if chunked {
			cw := httputil.NewChunkedWriter(bw)
			if _, err := io.Copy(cw, body); err != nil {
				return err
			}
			cw.Close()
			bw.WriteString(crlf)
		} else if _, err := io.CopyN(bw, body, n); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func readResponse(br *bufio.Reader, r *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, r)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // 1xx informational: the final response follows
		}
		return resp, nil
	}
}

// h1Body returns its connection to the pool once read to the end.
type h1Body struct {
	rc        io.ReadCloser
	c         *h1Conn
	pool      *h1Pool
	stop      func() bool
	eof       bool
	closeConn bool
	done      bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	stopped := b.stop()
	if b.eof && !b.closeConn && stopped {
		b.pool.put(b.c)
		return nil
	}
	return b.c.nc.Close()
}
