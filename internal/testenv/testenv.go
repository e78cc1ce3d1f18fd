// Package testenv finds the pinned binaries and programs that tests run.
//
// Tests never skip when a binary is missing: a missing binary is a failed
// test with a message that says how to build it.
package testenv

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// RepoRoot returns the root of the weir repository.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BinDir returns the folder holding the pinned tools and weir's own binaries:
// $WEIR_BIN when set (the Makefile sets it), else bin/ at the repository root.
func BinDir() string {
	if d := os.Getenv("WEIR_BIN"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), "bin")
}

// Bin returns the path of the named binary in BinDir, failing t when it is
// not there.
func Bin(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(BinDir(), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found in %s: run 'make tools build' first (%v)", name, BinDir(), err)
	}
	return p
}

// Eventually calls cond every interval until it reports true, and fails t
// when timeout passes (no limit when 0) or ctx ends first. An error from
// cond does not stop the wait: the last one is shown in the failure.
func Eventually(t testing.TB, ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var last error
	err := wait.PollUntilContextCancel(ctx, interval, true, func(context.Context) (bool, error) {
		ok, err := cond()
		if err != nil {
			last = err
		}
		return ok, nil
	})
	if err == nil {
		return
	}
	msg := "timed out waiting for " + what
	if timeout > 0 {
		msg = "timed out after " + timeout.String() + " waiting for " + what
	}
	if last != nil {
		msg += " (last error: " + last.Error() + ")"
	}
	t.Fatal(msg)
}

// Holds adapts a condition without errors for Eventually.
func Holds(cond func() bool) func() (bool, error) {
	return func() (bool, error) { return cond(), nil }
}
