package cluster

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/weir-dev/weir/internal/testenv"
)

// StartForTest starts a cluster in a temporary folder with the binaries of
// testenv.BinDir, fails t when it cannot, and stops it when t ends. When t
// failed, the end of every log is written to t's log. edit may change the
// options before the start.
func StartForTest(t testing.TB, edit ...func(*Options)) *Cluster {
	t.Helper()
	for _, name := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		testenv.Bin(t, name)
	}
	opts := Options{Dir: t.TempDir(), BinDir: testenv.BinDir()}
	for _, e := range edit {
		e(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		dumpLogs(t, filepath.Join(opts.Dir, "logs"))
		t.Fatalf("start local cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, c.LogDir())
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop local cluster: %v", err)
		}
	})
	return c
}

// dumpLogs writes the last lines of every log under dir to t's log.
func dumpLogs(t testing.TB, dir string) {
	t.Helper()
	var files []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".log") {
			files = append(files, path)
		}
		return nil
	})
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		lines = lines[max(0, len(lines)-15):]
		t.Logf("--- last lines of %s:\n%s", f, strings.Join(lines, "\n"))
	}
}
