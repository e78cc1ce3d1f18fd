// Package testenv finds the pinned binaries and programs that tests run.
//
// Tests never skip when a binary is missing: a missing binary is a failed
// test with a message that says how to build it.
package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
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
