//go:build !linux

package proxy

// newListenerServer returns the goroutine-per-connection server; the event
// loop is Linux-only.
func newListenerServer(h *handler) listenerServer { return newH1Server(h) }
