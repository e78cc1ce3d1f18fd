package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Restart back-off of crashed containers: doubling from the first value up
// to the last, reset after a run of backoffReset.
const (
	backoffInitial = time.Second
	backoffMax     = 20 * time.Second
	backoffReset   = 30 * time.Second
)

// container runs one container of a pod as a local process in the pod
// network namespace, restarting it as the pod's restart policy says.
type container struct {
	r       *podRunner
	spec    corev1.Container
	logPath string

	// Set by prepare.
	bin     string
	argv    []string
	env     []string
	waiting *corev1.ContainerStateWaiting // why it cannot start, if it cannot

	mu       sync.Mutex
	cmd      *exec.Cmd
	stopping bool
	started  time.Time
	ready    bool
	restarts int32
	last     *corev1.ContainerStateTerminated // the previous run
	final    *corev1.ContainerStateTerminated // set when it will not run again
}

// containerInfo is what the pod status needs besides the container status.
type containerInfo struct {
	everStarted bool
}

// newContainer makes a container of r.
func newContainer(r *podRunner, spec corev1.Container) *container {
	name := r.pod.Namespace + "_" + r.pod.Name + "_" + spec.Name + ".log"
	return &container{r: r, spec: spec, logPath: filepath.Join(r.a.cfg.LogDir, name)}
}

// prepare resolves the image, environment and command line.
func (c *container) prepare(ctx context.Context, base []string) {
	a := c.r.a
	bin, err := resolveImage(a.cfg.Images, a.cfg.BinDir, c.spec.Image)
	if err != nil {
		c.setWaiting("ErrImagePull", err.Error())
		return
	}
	env, err := containerEnv(ctx, a.client, c.r.pod, c.r.ip.String(), a.cfg.Network.NodeIP().String(), c.spec, base)
	if err != nil {
		c.setWaiting("CreateContainerConfigError", err.Error())
		return
	}
	argv, bin, err := commandLine(c.spec, bin, a.cfg.BinDir, envMap(env))
	if err != nil {
		c.setWaiting("RunContainerError", err.Error())
		return
	}
	c.mu.Lock()
	c.bin, c.argv, c.env = bin, argv, env
	c.mu.Unlock()
}

// setWaiting records why the container cannot start.
func (c *container) setWaiting(reason, msg string) {
	c.mu.Lock()
	c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
	c.mu.Unlock()
	c.r.a.log.Printf("pod %s container %s: %s: %s", c.r.name(), c.spec.Name, reason, msg)
	c.r.markDirty()
}

// run starts the process and restarts it until the pod stops or the
// restart policy says it is done.
func (c *container) run() {
	c.mu.Lock()
	cannot := c.bin == ""
	c.mu.Unlock()
	if cannot {
		return
	}
	backoff := backoffInitial
	for {
		ran, code, err := c.runOnce()
		if err != nil {
			c.setWaiting("RunContainerError", err.Error())
		}
		if !c.shouldRestart(code, err) {
			return
		}
		if ran > backoffReset {
			backoff = backoffInitial
		}
		c.setWaiting("CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container %s", backoff, c.spec.Name))
		select {
		case <-c.r.stopCh:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, backoffMax)
		c.mu.Lock()
		c.restarts++
		c.mu.Unlock()
	}
}

// shouldRestart applies the restart policy after a run ended with code.
func (c *container) shouldRestart(code int32, startErr error) bool {
	select {
	case <-c.r.stopCh:
		return false
	default:
	}
	switch c.r.pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0 || startErr != nil
	}
	return true
}

// runOnce starts the process, probes it and waits for it to exit. It
// returns how long it ran and its exit code.
func (c *container) runOnce() (time.Duration, int32, error) {
	cmd, err := c.start()
	if err != nil || cmd == nil {
		return 0, 0, err
	}
	started := time.Now()
	pctx, cancel := context.WithCancel(context.Background())
	go c.probe(pctx, c.spec.ReadinessProbe, c.setReady, true)
	go c.probe(pctx, c.spec.LivenessProbe, c.onLiveness, false)
	waitErr := cmd.Wait()
	cancel()
	if err := killGroup(c.spec.Name, cmd.Process.Pid); err != nil {
		c.r.a.log.Printf("pod %s: %v", c.r.name(), err)
	}
	term := terminated(cmd, waitErr, started)
	c.mu.Lock()
	c.cmd, c.ready = nil, false
	c.last = term
	if c.stoppingLocked() || !c.shouldRestart(term.ExitCode, nil) {
		c.final = term
	}
	c.mu.Unlock()
	c.r.a.log.Printf("pod %s container %s exited: code %d %s", c.r.name(), c.spec.Name, term.ExitCode, term.Reason)
	c.r.markDirty()
	return time.Since(started), term.ExitCode, nil
}

// stoppingLocked reports whether the pod is stopping; c.mu must be held.
func (c *container) stoppingLocked() bool {
	select {
	case <-c.r.stopCh:
		return true
	default:
		return c.stopping
	}
}

// start starts the process unless the pod is stopping; nil, nil then.
func (c *container) start() (*exec.Cmd, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stoppingLocked() {
		return nil, nil
	}
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to open the container log: %w", err)
	}
	defer logFile.Close()
	cmd := c.r.a.cfg.Network.Command(c.bin, c.argv...)
	cmd.Env = c.env
	cmd.Dir = c.r.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start %s: %w", c.bin, err)
	}
	c.cmd, c.started, c.waiting, c.ready = cmd, time.Now(), nil, false
	c.r.a.log.Printf("pod %s container %s started: pid %d, %s %v", c.r.name(), c.spec.Name, cmd.Process.Pid, c.bin, c.argv)
	c.r.markDirty()
	return cmd, nil
}

// stop signals the process group and keeps the container from restarting.
func (c *container) stop(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
	c.ready = false
	if c.cmd != nil {
		_ = syscall.Kill(-c.cmd.Process.Pid, sig)
	}
}

// currentPid is the running process's id, or 0.
func (c *container) currentPid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// setReady records a readiness probe verdict.
func (c *container) setReady(ok bool) {
	c.mu.Lock()
	changed := c.ready != ok && c.cmd != nil && !c.stopping
	if changed {
		c.ready = ok
	}
	c.mu.Unlock()
	if changed {
		c.r.markDirty()
	}
}

// onLiveness kills the process when its liveness probe failed.
func (c *container) onLiveness(ok bool) {
	if ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		c.r.a.log.Printf("pod %s container %s: liveness probe failed, killing it", c.r.name(), c.spec.Name)
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// status is the container's status as the API shows it.
func (c *container) status() (corev1.ContainerStatus, containerInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := corev1.ContainerStatus{
		Name: c.spec.Name, Image: c.spec.Image, RestartCount: c.restarts,
		Ready: c.ready, Started: ptr.To(c.cmd != nil),
	}
	if c.bin != "" {
		cs.ImageID = "local://" + c.bin
	}
	switch {
	case c.cmd != nil:
		cs.ContainerID = containerID(c.cmd.Process.Pid)
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.started)}
	case c.final != nil:
		cs.ContainerID = c.final.ContainerID
		cs.State.Terminated = c.final
	case c.waiting != nil:
		cs.State.Waiting = c.waiting
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	if c.last != nil && c.last != c.final {
		cs.LastTerminationState.Terminated = c.last
	}
	return cs, containerInfo{everStarted: c.cmd != nil || c.last != nil}
}

// containerID names a process the way container runtimes name containers.
func containerID(pid int) string { return "local://" + strconv.Itoa(pid) }

// PidOf parses a ContainerStatus.ContainerID written by the node agent into
// the process id of the container.
func PidOf(containerID string) (int, error) {
	var pid int
	if _, err := fmt.Sscanf(containerID, "local://%d", &pid); err != nil {
		return 0, fmt.Errorf("container id %q is not a local process: %w", containerID, err)
	}
	return pid, nil
}

// terminated describes how a process ended.
func terminated(cmd *exec.Cmd, waitErr error, started time.Time) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{
		ContainerID: containerID(cmd.Process.Pid),
		StartedAt:   metav1.NewTime(started), FinishedAt: metav1.Now(),
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Signal = int32(ws.Signal())
		t.ExitCode = 128 + int32(ws.Signal())
	} else if cmd.ProcessState != nil {
		t.ExitCode = int32(cmd.ProcessState.ExitCode())
	}
	t.Reason = "Completed"
	if t.ExitCode != 0 {
		t.Reason = "Error"
		if waitErr != nil {
			t.Message = waitErr.Error()
		}
	}
	return t
}
