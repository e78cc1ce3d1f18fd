package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProcessStopKillsTheGroup starts a shell that ignores SIGTERM and has
// a child of its own: Stop must kill both after the grace period.
func TestProcessStopKillsTheGroup(t *testing.T) {
	log := filepath.Join(t.TempDir(), "sh.log")
	p, err := StartProcess("sh", log, "/bin/sh", []string{"-c", "trap '' TERM; sleep 100 & echo $!; wait"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	deadline := time.Now().Add(5 * time.Second)
	for child == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(log)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(20 * time.Millisecond)
	}
	if child == 0 || !processAlive(child) {
		t.Fatalf("no child process (log: %d)", child)
	}
	start := time.Now()
	if err := p.Stop(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("stopped after %s, before the grace period although SIGTERM is ignored", d)
	}
	for _, pid := range []int{p.Pid(), child} {
		if processAlive(pid) {
			t.Errorf("process %d alive after Stop", pid)
		}
	}
}

// TestProcessKill kills a process at once and waits for it.
func TestProcessKill(t *testing.T) {
	p, err := StartProcess("sleep", filepath.Join(t.TempDir(), "sleep.log"), "/bin/sleep", []string{"100"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed after Kill")
	}
	if processAlive(p.Pid()) {
		t.Errorf("process %d alive after Kill", p.Pid())
	}
}

// TestPortLostIsRetried checks that a component that exits because its
// port was taken is reported as errPortInUse and its step tried again.
func TestPortLostIsRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	attempts := 0
	err := runStep(ctx, func(ctx context.Context) error {
		attempts++
		log := filepath.Join(t.TempDir(), "c.log")
		p, err := StartProcess("c", log, "/bin/sh", []string{"-c", "echo 'listen tcp 127.0.0.1:1: bind: address already in use'; exit 1"}, nil)
		if err != nil {
			return err
		}
		return waitHealthy(ctx, p, plainClient(), "http://127.0.0.1:1/", "")
	})
	if !errors.Is(err, errPortInUse) || attempts != 3 {
		t.Errorf("err = %v after %d attempts, want errPortInUse after 3", err, attempts)
	}
}
