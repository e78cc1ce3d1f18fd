// Command demo-app is weir's demo HTTP service; see package
// github.com/weir-dev/weir/test/app for its environment and endpoints.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/weir-dev/weir/test/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := app.Run(ctx, os.Getenv, logger); err != nil {
		fmt.Fprintf(os.Stderr, "demo-app: %v\n", err)
		stop()
		os.Exit(1)
	}
}
