// Command localcluster starts and stops the local cluster of test/cluster in
// the background, with its state and logs in .cluster/ at the repository root.
//
//	go run ./test/cluster/cmd/localcluster up     # start, print kubeconfig and URLs
//	go run ./test/cluster/cmd/localcluster down   # stop everything
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weir-dev/weir/test/cluster"
)

// Files in the state folder.
const (
	pidFile   = "localcluster.pid"
	stateFile = "cluster.json"
	logFile   = "localcluster.log"
)

// state is what a running cluster publishes in its state folder.
type state struct {
	Pid           int    `json:"pid"`
	Kubeconfig    string `json:"kubeconfig"`
	APIServer     string `json:"apiServer"`
	PrometheusURL string `json:"prometheusURL"`
	SlackURL      string `json:"slackURL"`
	SlackWebhook  string `json:"slackWebhook"`
	SlackAPIURL   string `json:"slackAPIURL"`
	SlackToken    string `json:"slackToken"`
	PodCIDR       string `json:"podCIDR"`
	LogDir        string `json:"logDir"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

// run dispatches the subcommand.
func run(args []string) error {
	fs := flag.NewFlagSet("localcluster", flag.ContinueOnError)
	dir := fs.String("dir", "", "state and log folder (default .cluster at the repository root)")
	bin := fs.String("bin", "", "binary folder (default $WEIR_BIN, else bin at the repository root)")
	podCIDR := fs.String("pod-cidr", "", "/24 of 10.0.0.0/8 for the pod network namespace (default a free /24 of 10.213.0.0/16)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: localcluster [-dir DIR] [-bin DIR] [-pod-cidr CIDR] up|down|status")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("want exactly one of up, down, status")
	}
	if err := defaults(dir, bin); err != nil {
		return err
	}
	switch fs.Arg(0) {
	case "up":
		return up(*dir, *bin, *podCIDR)
	case "down":
		return down(*dir)
	case "status":
		return status(*dir)
	case "serve":
		return serve(*dir, *bin, *podCIDR)
	}
	fs.Usage()
	return fmt.Errorf("unknown command %q", fs.Arg(0))
}

// defaults fills in the folders from the repository root.
func defaults(dir, bin *string) error {
	if *dir != "" && *bin != "" {
		return nil
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if *dir == "" {
		*dir = filepath.Join(root, ".cluster")
	}
	if *bin == "" {
		*bin = os.Getenv("WEIR_BIN")
	}
	if *bin == "" {
		*bin = filepath.Join(root, "bin")
	}
	return nil
}

// repoRoot walks up from the working folder to weir's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("failed to get the working folder: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/weir-dev/weir\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the weir repository: pass -dir and -bin")
		}
		dir = parent
	}
}

// up starts `localcluster serve` detached and waits until it published its
// state, then prints how to reach the cluster.
func up(dir, bin, podCIDR string) error {
	if pid, ok := runningPid(dir); ok {
		fmt.Printf("local cluster already running (pid %d)\n", pid)
		return status(dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("failed to clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("failed to create %s: %w", dir, err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("failed to find this program: %w", err)
	}
	out, err := os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("failed to open the log: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(self, "-dir", dir, "-bin", bin, "-pod-cidr", podCIDR, "serve")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start the cluster in the background: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		return fmt.Errorf("failed to write the pid file: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for {
		if _, err := readState(dir); err == nil {
			return status(dir)
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the cluster failed to start (%v); see %s", err, filepath.Join(dir, logFile))
		case <-ctx.Done():
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
			return fmt.Errorf("the cluster did not start in time; see %s", filepath.Join(dir, logFile))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// serve runs the cluster in the foreground until SIGTERM or SIGINT.
func serve(dir, bin, podCIDR string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	c, err := cluster.Start(ctx, cluster.Options{Dir: dir, BinDir: bin, PodCIDR: podCIDR})
	if err != nil {
		return err
	}
	s := state{
		Pid: os.Getpid(), Kubeconfig: c.Kubeconfig(), APIServer: c.APIServerURL(), PrometheusURL: c.PrometheusURL(),
		SlackURL: c.SlackRecorder().URL(), SlackWebhook: c.SlackRecorder().WebhookURL(),
		SlackAPIURL: c.SlackRecorder().APIURL(), SlackToken: c.SlackRecorder().Token(),
		PodCIDR: c.PodCIDR(), LogDir: c.LogDir(),
	}
	if err := writeState(dir, s); err != nil {
		return errors.Join(err, c.Stop())
	}
	fmt.Println("local cluster running; stop it with 'localcluster down'")
	<-ctx.Done()
	fmt.Println("stopping the local cluster")
	_ = os.Remove(filepath.Join(dir, stateFile))
	err = c.Stop()
	_ = os.Remove(filepath.Join(dir, pidFile))
	return err
}

// down stops a running cluster: SIGTERM, then SIGKILL after a minute (its
// children die with it).
func down(dir string) error {
	pid, ok := runningPid(dir)
	if !ok {
		fmt.Println("local cluster not running")
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("failed to stop pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(time.Minute)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("pid %d did not stop within a minute; killed it", pid)
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = os.Remove(filepath.Join(dir, pidFile))
	fmt.Println("local cluster stopped")
	return nil
}

// status prints the state of a running cluster.
func status(dir string) error {
	s, err := readState(dir)
	if err != nil {
		return fmt.Errorf("local cluster not running: %w", err)
	}
	fmt.Printf("kubeconfig:     %s\n", s.Kubeconfig)
	fmt.Printf("api server:     %s\n", s.APIServer)
	fmt.Printf("prometheus:     %s\n", s.PrometheusURL)
	fmt.Printf("slack recorder: %s (webhook %s, api %s, token %s)\n", s.SlackURL, s.SlackWebhook, s.SlackAPIURL, s.SlackToken)
	fmt.Printf("pod network:    %s\n", s.PodCIDR)
	fmt.Printf("logs:           %s\n", s.LogDir)
	fmt.Printf("try:            kubectl --kubeconfig %s get pods -A -o wide\n", s.Kubeconfig)
	return nil
}

// writeState publishes s atomically.
func writeState(dir string, s state) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode the state: %w", err)
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("failed to write the state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("failed to publish the state: %w", err)
	}
	return nil
}

// readState reads the published state.
func readState(dir string) (state, error) {
	var s state
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return s, fmt.Errorf("failed to read the state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("failed to decode the state: %w", err)
	}
	return s, nil
}

// runningPid reads the pid file and reports whether that process lives.
func runningPid(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, alive(pid)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}
