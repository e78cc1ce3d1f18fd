package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestReapStaleNetworks leaves a namespace and veth pair recorded for a
// process that is gone, as a SIGKILLed cluster would: the next start must
// delete both and the record.
func TestReapStaleNetworks(t *testing.T) {
	ipBin, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("no ip(8)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := shortID()
	ns, link := "weir-"+id, "wr"+id
	record := filepath.Join(owners(), "test-"+id)
	t.Cleanup(func() {
		if namespaceExists(ns) {
			_ = runIP(context.Background(), ipBin, "netns", "del", ns)
		}
		if linkExists(link) {
			_ = runIP(context.Background(), ipBin, "link", "del", link)
		}
		_ = os.Remove(record)
	})
	for _, args := range [][]string{{"netns", "add", ns}, {"link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns}} {
		if err := runIP(ctx, ipBin, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(owners(), 0o755); err != nil {
		t.Fatal(err)
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	owner := fmt.Sprintf("%d 1\n%s %s\n", gone.Process.Pid, ns, link) // a process that has exited
	if err := os.WriteFile(record, []byte(owner), 0o644); err != nil {
		t.Fatal(err)
	}
	reapStaleNetworks(ctx, ipBin)
	deadline := time.Now().Add(5 * time.Second)
	for linkExists(link) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if namespaceExists(ns) || linkExists(link) {
		t.Errorf("namespace %s (%t) or link %s (%t) left after reaping", ns, namespaceExists(ns), link, linkExists(link))
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Errorf("record left after reaping: %v", err)
	}
}
