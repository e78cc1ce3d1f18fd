package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weir-dev/weir/internal/testenv"
)

// serveEnv makes the test binary act as localcluster, so that `up` can
// start it again as `serve` in the background.
const serveEnv = "WEIR_LOCALCLUSTER_TEST_AS_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) == "1" {
		if err := run(os.Args[1:]); err != nil {
			os.Stderr.WriteString("localcluster: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestUpDown starts the cluster in the background, talks to it with
// kubectl, and stops it, leaving no process behind.
func TestUpDown(t *testing.T) {
	kubectl := testenv.Bin(t, "kubectl")
	dir := filepath.Join(t.TempDir(), "cluster")
	args := []string{"-dir", dir, "-bin", testenv.BinDir()}
	t.Setenv(serveEnv, "1")
	t.Cleanup(func() {
		if pid, ok := runningPid(dir); ok {
			t.Errorf("cluster (pid %d) still running; stopping it", pid)
			_ = down(dir)
		}
	})
	if err := run(append(args, "up")); err != nil {
		if b, rerr := os.ReadFile(filepath.Join(dir, logFile)); rerr == nil {
			t.Log(string(b))
		}
		t.Fatalf("up: %v", err)
	}
	pid, ok := runningPid(dir)
	if !ok {
		t.Fatal("no cluster process after up")
	}
	if err := run(append(args, "up")); err != nil {
		t.Errorf("second up: %v", err)
	}
	s, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kubectl, "--kubeconfig", s.Kubeconfig, "get", "nodes", "-o", "name").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "node/weir-local" {
		t.Errorf("kubectl get nodes: %s (%v)", out, err)
	}
	if s.PrometheusURL == "" || s.SlackWebhook == "" {
		t.Errorf("state lacks URLs: %+v", s)
	}
	if err := run(append(args, "down")); err != nil {
		t.Fatalf("down: %v", err)
	}
	if alive(pid) {
		t.Errorf("cluster process %d alive after down", pid)
	}
	if _, err := readState(dir); err == nil {
		t.Error("state file left after down")
	}
}
