package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

// ShutdownTimeout bounds how long Serve waits for requests in flight once
// its context ends; it stays below Kubernetes' default grace period of 30s.
const ShutdownTimeout = 25 * time.Second

// Run reads the settings through getenv, listens on their address and serves
// until ctx ends (the command cancels it on SIGTERM or SIGINT), then shuts
// down gracefully. It returns an error for invalid settings too.
func Run(ctx context.Context, getenv func(string) string, logger *slog.Logger) error {
	settings, err := SettingsFromEnv(getenv)
	if err != nil {
		return err
	}
	if settings.Hostname, err = os.Hostname(); err != nil {
		return fmt.Errorf("failed to read the hostname: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", settings.Addr)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", settings.Addr, err)
	}
	logger.Info("listening", "addr", ln.Addr().String(), "version", settings.Version,
		"errorRate", settings.ErrorRate, "latency", settings.Latency.String(),
		"pod", settings.Pod, "namespace", settings.Namespace)
	return Serve(ctx, ln, New(settings), logger)
}

// Serve serves srv on ln until ctx ends. Then /readyz turns to 503, ln stops
// accepting, and Serve waits up to ShutdownTimeout for requests in flight.
// It takes ownership of ln.
func Serve(ctx context.Context, ln net.Listener, srv *Server, logger *slog.Logger) error {
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("failed to serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	srv.SetReady(false)
	logger.Info("shutting down: finishing requests in flight")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("failed to shut down within %s: %w", ShutdownTimeout, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("failed to serve on %s: %w", ln.Addr(), err)
	}
	logger.Info("stopped")
	return nil
}
