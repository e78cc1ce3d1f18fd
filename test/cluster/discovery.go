package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Pod discovery for Prometheus.
//
// Debian's prometheus package is built without kubernetes_sd_configs (its
// client-go is not packaged), so the cluster serves Prometheus's HTTP
// service discovery instead: one target group per pod, watched from this
// API server, carrying the same __meta_kubernetes_pod_* labels that
// kubernetes_sd_configs with role pod would. The relabelling in
// prometheusConfig is the one a real cluster would use.

// discovery serves the pods of the cluster as HTTP SD target groups.
type discovery struct {
	lister listersv1.PodLister
	ln     net.Listener
	srv    *http.Server
	cancel context.CancelFunc
}

// targetGroup is one entry of Prometheus's HTTP SD format.
type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// startDiscovery watches pods and serves them on a free loopback port.
func startDiscovery(ctx context.Context, client kubernetes.Interface) (*discovery, error) {
	runCtx, cancel := context.WithCancel(context.Background())
	factory := informers.NewSharedInformerFactory(client, 0)
	pods := factory.Core().V1().Pods()
	d := &discovery{lister: pods.Lister(), cancel: cancel}
	inf := pods.Informer()
	factory.Start(runCtx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		cancel()
		return nil, fmt.Errorf("pod discovery: cache not synced: %w", ctx.Err())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return nil, fmt.Errorf("failed to listen for pod discovery: %w", err)
	}
	d.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc("/targets", d.serveTargets)
	d.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = d.srv.Serve(ln) }()
	go func() {
		<-runCtx.Done()
		factory.Shutdown()
	}()
	return d, nil
}

// URL is the HTTP SD endpoint.
func (d *discovery) URL() string { return "http://" + d.ln.Addr().String() + "/targets" }

// Close stops serving and watching.
func (d *discovery) Close() error {
	d.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("failed to stop pod discovery: %w", err)
	}
	return nil
}

// serveTargets answers the target groups of every pod with an IP.
func (d *discovery) serveTargets(w http.ResponseWriter, _ *http.Request) {
	pods, err := d.lister.List(labels.Everything())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	sort.Slice(pods, func(i, j int) bool {
		return pods[i].Namespace+"/"+pods[i].Name < pods[j].Namespace+"/"+pods[j].Name
	})
	groups := []targetGroup{}
	for _, p := range pods {
		if p.Status.PodIP == "" {
			continue
		}
		groups = append(groups, targetGroup{Targets: []string{p.Status.PodIP}, Labels: podMetaLabels(p)})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(groups)
}

// invalidLabelChars are replaced by _ in label names, as Prometheus does.
var invalidLabelChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// podMetaLabels are the __meta_kubernetes_pod_* labels of kubernetes_sd_configs.
func podMetaLabels(p *corev1.Pod) map[string]string {
	ready := "false"
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			ready = "true"
		}
	}
	m := map[string]string{
		"__meta_kubernetes_namespace":           p.Namespace,
		"__meta_kubernetes_pod_name":            p.Name,
		"__meta_kubernetes_pod_ip":              p.Status.PodIP,
		"__meta_kubernetes_pod_uid":             string(p.UID),
		"__meta_kubernetes_pod_node_name":       p.Spec.NodeName,
		"__meta_kubernetes_pod_host_ip":         p.Status.HostIP,
		"__meta_kubernetes_pod_phase":           string(p.Status.Phase),
		"__meta_kubernetes_pod_ready":           ready,
		"__meta_kubernetes_pod_controller_kind": "",
		"__meta_kubernetes_pod_controller_name": "",
	}
	if ref := metav1.GetControllerOf(p); ref != nil {
		m["__meta_kubernetes_pod_controller_kind"] = ref.Kind
		m["__meta_kubernetes_pod_controller_name"] = ref.Name
	}
	for k, v := range p.Labels {
		name := invalidLabelChars.ReplaceAllString(k, "_")
		m["__meta_kubernetes_pod_label_"+name] = v
		m["__meta_kubernetes_pod_labelpresent_"+name] = "true"
	}
	for k, v := range p.Annotations {
		name := invalidLabelChars.ReplaceAllString(k, "_")
		m["__meta_kubernetes_pod_annotation_"+name] = v
		m["__meta_kubernetes_pod_annotationpresent_"+name] = "true"
	}
	return m
}
