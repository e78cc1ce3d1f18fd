package cluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// forwarder pipes TCP connections accepted on one address to another. The
// node agent runs one on NodeIP at the API server's port, so that pods,
// which cannot reach the root namespace's 127.0.0.1, reach the API server
// (bound to 127.0.0.1 only) at https://NodeIP:port, as pods reach the
// kubernetes Service in a real cluster.
type forwarder struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// startForwarder listens on listen and forwards every connection to target.
func startForwarder(listen, target string) (*forwarder, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s to forward to %s: %w", listen, target, err)
	}
	f := &forwarder{ln: ln, target: target, conns: map[net.Conn]bool{}}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// Addr is the listening address.
func (f *forwarder) Addr() string { return f.ln.Addr().String() }

// serve accepts connections until the listener is closed.
func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			return
		}
		if !f.track(conn) {
			_ = conn.Close()
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.pipe(conn)
		}()
	}
}

// track remembers conn for Close; false once closed.
func (f *forwarder) track(conn net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[conn] = true
	return true
}

// untrack forgets conn and closes it.
func (f *forwarder) untrack(conn net.Conn) {
	f.mu.Lock()
	delete(f.conns, conn)
	f.mu.Unlock()
	_ = conn.Close()
}

// pipe copies both ways between conn and a new connection to the target.
func (f *forwarder) pipe(conn net.Conn) {
	defer f.untrack(conn)
	up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		return
	}
	if !f.track(up) {
		_ = up.Close()
		return
	}
	defer f.untrack(up)
	done := make(chan struct{}, 2)
	copyHalf := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go copyHalf(up, conn)
	go copyHalf(conn, up)
	<-done
	<-done
}

// Close stops listening, closes every open connection and waits for the
// copies to end.
func (f *forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	err := f.ln.Close()
	f.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("failed to stop forwarding to %s: %w", f.target, err)
	}
	return nil
}
