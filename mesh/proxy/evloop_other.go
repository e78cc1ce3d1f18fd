//go:build !linux

package proxy

import (
	"context"
	"net"
)

// listenerServer serves one bound listener.
type listenerServer interface {
	Serve(net.Listener) error
	SetKeepAlivesEnabled(bool)
	Shutdown(context.Context) error
	Close() error
}

// newListenerServer returns the goroutine-per-connection server; the event
// loop is Linux-only.
func newListenerServer(h *handler) listenerServer { return newH1Server(h) }
