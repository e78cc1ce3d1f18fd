package cluster

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// agentConfig configures the node agent.
type agentConfig struct {
	NodeName string
	BinDir   string
	Images   map[string]string
	LogDir   string // container logs
	RunDir   string // per-pod working folders
	Network  *podNetwork
	Server   string // API server URL as pods reach it (NodeIP), for their kubeconfigs
	CAPEM    []byte
}

// heartbeat is how often the agent renews its lease and Ready condition.
const heartbeat = 10 * time.Second

// agent is a minimal kubelet: it registers a node, binds pending pods to it
// and runs their containers as local processes inside the pod network
// namespace. The agent itself stays in the root namespace: it probes pods
// through the veth pair.
type agent struct {
	cfg    agentConfig
	client kubernetes.Interface
	log    *log.Logger
	probes *http.Client

	mu      sync.Mutex
	pods    map[types.UID]*podRunner
	binding map[types.UID]bool
	wg      sync.WaitGroup
}

// newAgent makes an agent; register and run start it.
func newAgent(client kubernetes.Interface, cfg agentConfig) *agent {
	return &agent{
		cfg:     cfg,
		client:  client,
		log:     log.New(os.Stderr, "node-agent: ", log.LstdFlags|log.Lmicroseconds),
		probes:  &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}},
		pods:    map[types.UID]*podRunner{},
		binding: map[types.UID]bool{},
	}
}

// register creates the node with a Ready status, and its lease.
func (a *agent) register(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.LogDir, 0o755); err != nil {
		return fmt.Errorf("failed to create %s: %w", a.cfg.LogDir, err)
	}
	f, err := os.OpenFile(filepath.Join(filepath.Dir(a.cfg.LogDir), "node-agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("failed to open the node agent's log: %w", err)
	}
	a.log.SetOutput(f)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   a.cfg.NodeName,
		Labels: map[string]string{"kubernetes.io/hostname": a.cfg.NodeName, "kubernetes.io/os": "linux", "weir.dev/local-node": "true"},
	}}
	created, err := a.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("failed to register node %s: %w", a.cfg.NodeName, err)
	}
	created.Status = a.nodeStatus(metav1.Now())
	if _, err := a.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("failed to set the status of node %s: %w", a.cfg.NodeName, err)
	}
	return a.renewLease(ctx)
}

// nodeStatus is the node's status with a Ready condition heartbeat at now.
func (a *agent) nodeStatus(now metav1.Time) corev1.NodeStatus {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods: resource.MustParse("1000"), corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	return corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity,
		Phase: corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "weir node agent is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: a.cfg.Network.NodeIP().String()},
			{Type: corev1.NodeHostName, Address: a.cfg.NodeName},
		},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: "v1.36.3-weir-node-agent", OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "local://processes", OSImage: "weir local node",
		},
	}
}

// renewLease creates or renews the node's lease in kube-node-lease.
func (a *agent) renewLease(ctx context.Context) error {
	leases := a.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To(a.cfg.NodeName), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now,
			},
		}
		if _, err := leases.Create(ctx, lease, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("failed to create the node lease: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to get the node lease: %w", err)
	}
	lease.Spec.RenewTime = &now
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("failed to renew the node lease: %w", err)
	}
	return nil
}

// heartbeatOnce renews the lease and the Ready condition's heartbeat.
func (a *agent) heartbeatOnce(ctx context.Context) error {
	if err := a.renewLease(ctx); err != nil {
		return err
	}
	node, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("failed to get node %s: %w", a.cfg.NodeName, err)
	}
	transition := metav1.Now()
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			transition = cond.LastTransitionTime
		}
	}
	node.Status = a.nodeStatus(metav1.Now())
	node.Status.Conditions[0].LastTransitionTime = transition
	if _, err := a.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("failed to update the status of node %s: %w", a.cfg.NodeName, err)
	}
	return nil
}

// run watches pods until ctx ends. It leaves pods running: stopAll stops them.
func (a *agent) run(ctx context.Context) {
	factory := informers.NewSharedInformerFactory(a.client, 0)
	inf := factory.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.onPod(ctx, obj) },
		UpdateFunc: func(_, obj any) { a.onPod(ctx, obj) },
		DeleteFunc: func(obj any) { a.onPodDeleted(obj) },
	})
	if err != nil {
		a.log.Printf("failed to watch pods: %v", err)
		return
	}
	factory.Start(ctx.Done())
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			factory.Shutdown()
			return
		case <-tick.C:
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := a.heartbeatOnce(hctx); err != nil && ctx.Err() == nil {
				a.log.Printf("heartbeat: %v", err)
			}
			cancel()
		}
	}
}

// onPod binds pending pods and runs or terminates the pods of this node.
func (a *agent) onPod(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	switch pod.Spec.NodeName {
	case "":
		if pod.DeletionTimestamp == nil {
			a.bind(ctx, pod)
		}
	case a.cfg.NodeName:
		a.syncPod(ctx, pod)
	}
}

// bind assigns a pending pod to this node, once.
func (a *agent) bind(ctx context.Context, pod *corev1.Pod) {
	a.mu.Lock()
	if a.binding[pod.UID] {
		a.mu.Unlock()
		return
	}
	a.binding[pod.UID] = true
	a.mu.Unlock()
	go func() {
		b := &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: a.cfg.NodeName},
		}
		err := a.client.CoreV1().Pods(pod.Namespace).Bind(ctx, b, metav1.CreateOptions{})
		if err != nil && ctx.Err() == nil {
			a.log.Printf("bind %s/%s: %v", pod.Namespace, pod.Name, err)
			a.mu.Lock()
			delete(a.binding, pod.UID)
			a.mu.Unlock()
		}
	}()
}

// syncPod starts a runner for a new pod and terminates deleted ones.
func (a *agent) syncPod(ctx context.Context, pod *corev1.Pod) {
	a.mu.Lock()
	delete(a.binding, pod.UID)
	r := a.pods[pod.UID]
	if r == nil {
		finished := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
		if ctx.Err() != nil || finished {
			a.mu.Unlock()
			return
		}
		if pod.DeletionTimestamp != nil {
			a.mu.Unlock()
			go a.deletePod(ctx, pod)
			return
		}
		var err error
		if r, err = newPodRunner(a, pod); err != nil {
			a.mu.Unlock()
			a.log.Printf("pod %s/%s: %v", pod.Namespace, pod.Name, err)
			return
		}
		a.pods[pod.UID] = r
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			r.run(ctx)
			a.forget(r)
		}()
	}
	a.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		r.terminate(gracePeriod(pod), true)
	}
}

// onPodDeleted kills the containers of a pod that is gone from the API.
func (a *agent) onPodDeleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	r := a.pods[pod.UID]
	a.mu.Unlock()
	if r != nil {
		r.terminate(0, false)
	}
}

// forget drops a finished runner and frees its address.
func (a *agent) forget(r *podRunner) {
	a.mu.Lock()
	delete(a.pods, r.uid)
	a.mu.Unlock()
	a.cfg.Network.Release(r.ip)
}

// deletePod removes a pod whose containers have stopped.
func (a *agent) deletePod(ctx context.Context, pod *corev1.Pod) {
	opts := metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &pod.UID}}
	err := a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, opts)
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
		a.log.Printf("delete %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

// stopAll stops every pod's containers within grace and waits for them.
func (a *agent) stopAll(grace time.Duration) error {
	a.mu.Lock()
	runners := make([]*podRunner, 0, len(a.pods))
	for _, r := range a.pods {
		runners = append(runners, r)
	}
	a.mu.Unlock()
	for _, r := range runners {
		r.terminate(grace, false)
	}
	done := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(grace + 15*time.Second):
		return errors.New("node agent: pods did not stop in time")
	}
}

// pids lists the process ids of every running container.
func (a *agent) pids() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	var pids []int
	for _, r := range a.pods {
		pids = append(pids, r.pids()...)
	}
	return pids
}

// gracePeriod is the pod's termination grace period.
func gracePeriod(pod *corev1.Pod) time.Duration {
	switch {
	case pod.DeletionGracePeriodSeconds != nil:
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}
