package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// podRunner runs the containers of one pod and reports its status.
type podRunner struct {
	a          *agent
	pod        *corev1.Pod // as first seen; the spec does not change
	uid        types.UID
	ip         netip.Addr
	dir        string
	startTime  metav1.Time
	containers []*container

	stopCh chan struct{} // closed by terminate: containers are not restarted
	done   chan struct{} // closed when every container has stopped
	dirty  chan struct{} // the status changed

	mu          sync.Mutex
	terminating bool
	deleteAfter bool
	conds       map[corev1.PodConditionType]condState
}

// condState is a pod condition's status and when it last changed.
type condState struct {
	status corev1.ConditionStatus
	since  metav1.Time
}

// newPodRunner prepares a pod: its address, folder and containers.
func newPodRunner(a *agent, pod *corev1.Pod) (*podRunner, error) {
	ip, err := a.cfg.Network.Allocate()
	if err != nil {
		return nil, err
	}
	r := &podRunner{
		a: a, pod: pod.DeepCopy(), uid: pod.UID, ip: ip,
		dir:       filepath.Join(a.cfg.RunDir, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)),
		startTime: metav1.Now(),
		stopCh:    make(chan struct{}), done: make(chan struct{}), dirty: make(chan struct{}, 1),
		conds: map[corev1.PodConditionType]condState{},
	}
	for i := range pod.Spec.Containers {
		r.containers = append(r.containers, newContainer(r, pod.Spec.Containers[i]))
	}
	return r, nil
}

// run starts the containers and waits until they all stopped for good,
// then deletes the pod if it was deleted gracefully.
func (r *podRunner) run(ctx context.Context) {
	go r.statusLoop(ctx)
	r.markDirty()
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		r.a.log.Printf("pod %s: %v", r.name(), err)
	}
	base := r.baseEnv(ctx)
	var wg sync.WaitGroup
	for _, c := range r.containers {
		c.prepare(ctx, base)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run()
		}()
	}
	wg.Wait()
	<-r.stopCh
	close(r.done)
	r.mu.Lock()
	deleteAfter := r.deleteAfter
	r.mu.Unlock()
	if deleteAfter {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r.a.deletePod(dctx, r.pod)
		cancel()
	}
	r.a.log.Printf("pod %s stopped", r.name())
}

// terminate stops the pod's containers: SIGTERM now, SIGKILL after grace.
// deleteAfter asks for the pod to be deleted from the API once they exited.
func (r *podRunner) terminate(grace time.Duration, deleteAfter bool) {
	r.mu.Lock()
	first := !r.terminating
	if first {
		r.terminating = true
		r.deleteAfter = deleteAfter
		close(r.stopCh)
	} else if !deleteAfter {
		r.deleteAfter = false
	}
	r.mu.Unlock()
	r.markDirty()
	if first {
		r.a.log.Printf("pod %s: stopping, grace %s", r.name(), grace)
		for _, c := range r.containers {
			c.stop(syscall.SIGTERM)
		}
	}
	go func() {
		select {
		case <-r.done:
		case <-time.After(grace):
			for _, c := range r.containers {
				c.stop(syscall.SIGKILL)
			}
		}
	}()
}

// name is namespace/name.
func (r *podRunner) name() string { return r.pod.Namespace + "/" + r.pod.Name }

// pids lists the container processes of the pod that are running.
func (r *podRunner) pids() []int {
	var pids []int
	for _, c := range r.containers {
		if pid := c.currentPid(); pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// baseEnv is the environment every container of the pod starts from: a
// PATH, the pod's identity, and a kubeconfig for its service account.
func (r *podRunner) baseEnv(ctx context.Context) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + r.dir,
		"POD_NAME=" + r.pod.Name, "POD_NAMESPACE=" + r.pod.Namespace, "POD_UID=" + string(r.uid),
		"POD_IP=" + r.ip.String(), "HOST_IP=" + r.a.cfg.Network.NodeIP().String(), "NODE_NAME=" + r.a.cfg.NodeName,
	}
	if path, err := r.writeKubeconfig(ctx); err != nil {
		r.a.log.Printf("pod %s: no service-account kubeconfig: %v", r.name(), err)
	} else if path != "" {
		env = append(env, "KUBECONFIG="+path)
	}
	return env
}

// writeKubeconfig writes a kubeconfig with a token bound to the pod for its
// service account, the local stand-in for the mounted token; "" when the
// pod opts out.
func (r *podRunner) writeKubeconfig(ctx context.Context) (string, error) {
	sa := r.pod.Spec.ServiceAccountName
	if sa == "" || (r.pod.Spec.AutomountServiceAccountToken != nil && !*r.pod.Spec.AutomountServiceAccountToken) {
		return "", nil
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](24 * 3600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: r.pod.Name, UID: r.uid},
	}}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	got, err := r.a.client.CoreV1().ServiceAccounts(r.pod.Namespace).CreateToken(tctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("failed to request a token for %s: %w", sa, err)
	}
	path := filepath.Join(r.dir, "kubeconfig")
	user := "system:serviceaccount:" + r.pod.Namespace + ":" + sa
	if err := writeKubeconfig(path, r.a.cfg.Server, r.a.cfg.CAPEM, user, got.Status.Token); err != nil {
		return "", err
	}
	return path, nil
}

// markDirty asks the status loop to write the pod's status.
func (r *podRunner) markDirty() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// statusLoop writes the pod's status whenever it changed, until the pod
// has stopped or ctx ends.
func (r *podRunner) statusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.done:
			return
		case <-r.dirty:
		}
		if err := r.writeStatus(ctx); err != nil {
			if apierrors.IsNotFound(err) {
				return
			}
			if ctx.Err() == nil {
				r.a.log.Printf("pod %s: %v", r.name(), err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
				r.markDirty()
			}
		}
	}
}

// writeStatus merge-patches the pod's status subresource.
func (r *podRunner) writeStatus(ctx context.Context) error {
	body, err := json.Marshal(map[string]any{"status": r.status()})
	if err != nil {
		return fmt.Errorf("failed to encode pod status: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = r.a.client.CoreV1().Pods(r.pod.Namespace).Patch(pctx, r.pod.Name, types.MergePatchType, body, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("failed to write status: %w", err)
	}
	return nil
}

// status is the pod's current status.
func (r *podRunner) status() corev1.PodStatus {
	statuses := make([]corev1.ContainerStatus, len(r.containers))
	allReady, anyStarted, allFinal, allSucceeded := true, false, true, true
	for i, c := range r.containers {
		cs, info := c.status()
		statuses[i] = cs
		allReady = allReady && cs.Ready
		anyStarted = anyStarted || info.everStarted
		allFinal = allFinal && cs.State.Terminated != nil
		allSucceeded = allSucceeded && cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	phase := corev1.PodPending
	switch {
	case allFinal && allSucceeded:
		phase = corev1.PodSucceeded
	case allFinal:
		phase = corev1.PodFailed
	case anyStarted:
		phase = corev1.PodRunning
	}
	ready := allReady && !r.terminating
	nodeIP := r.a.cfg.Network.NodeIP().String()
	return corev1.PodStatus{
		Phase: phase,
		Conditions: []corev1.PodCondition{
			r.condLocked(corev1.PodReadyToStartContainers, true),
			r.condLocked(corev1.PodInitialized, true),
			r.condLocked(corev1.ContainersReady, allReady),
			r.condLocked(corev1.PodReady, ready),
			r.condLocked(corev1.PodScheduled, true),
		},
		HostIP: nodeIP, HostIPs: []corev1.HostIP{{IP: nodeIP}},
		PodIP: r.ip.String(), PodIPs: []corev1.PodIP{{IP: r.ip.String()}},
		StartTime:         &r.startTime,
		ContainerStatuses: statuses,
	}
}

// condLocked returns a pod condition, keeping its transition time while
// its status stays the same; r.mu must be held.
func (r *podRunner) condLocked(t corev1.PodConditionType, ok bool) corev1.PodCondition {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	prev, seen := r.conds[t]
	if !seen || prev.status != status {
		prev = condState{status: status, since: metav1.Now()}
		r.conds[t] = prev
	}
	return corev1.PodCondition{Type: t, Status: status, LastTransitionTime: prev.since}
}
