package framework

import (
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weir-dev/weir/canary/v1alpha1"
)

// Ports used by the workloads of the e2e suite and the demo.
const (
	AppPort         = 9898
	ProxyAdminPort  = 15000
	ProxyListenPort = 15001
)

// AppVersion describes one version of the demo app: its image tag and the
// faults it is started with.
type AppVersion struct {
	Tag       string
	ErrorRate float64
	Latency   time.Duration
}

func (v AppVersion) env() []corev1.EnvVar {
	env := []corev1.EnvVar{
		{Name: "VERSION", Value: v.Tag},
		{Name: "PORT", Value: fmt.Sprint(AppPort)},
		{Name: "ERROR_RATE", Value: fmt.Sprint(v.ErrorRate)},
	}
	if v.Latency > 0 {
		env = append(env, corev1.EnvVar{Name: "LATENCY", Value: v.Latency.String()})
	}
	return append(env, podIdentityEnv()...)
}

func podIdentityEnv() []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	return []corev1.EnvVar{
		field("POD_NAME", "metadata.name"),
		field("POD_NAMESPACE", "metadata.namespace"),
		field("POD_IP", "status.podIP"),
	}
}

// sidecar is the weir-proxy container every meshed pod runs.
func sidecar(xdsAddress string) corev1.Container {
	return corev1.Container{
		Name:  "weir-proxy",
		Image: "weir.dev/weir-proxy:dev",
		Args: []string{
			"--xds-address=" + xdsAddress,
			"--node-id=$(POD_NAMESPACE).$(POD_NAME)",
			"--node-cluster=$(POD_NAMESPACE)",
			"--bind-ip=$(POD_IP)",
			fmt.Sprintf("--admin-address=$(POD_IP):%d", ProxyAdminPort),
		},
		Env:   podIdentityEnv(),
		Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: ProxyAdminPort}, {Name: "outbound", ContainerPort: ProxyListenPort}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(ProxyAdminPort)}},
			PeriodSeconds: 1,
		},
	}
}

// scrapeAnnotations make Prometheus scrape the sidecar's Envoy stats.
func scrapeAnnotations() map[string]string {
	return map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   fmt.Sprint(ProxyAdminPort),
		"prometheus.io/path":   "/stats/prometheus",
	}
}

// AppDeployment is the demo app `name` at version v, with a sidecar.
func AppDeployment(ns, name string, replicas int32, v AppVersion, xdsAddress string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers: []corev1.Container{
						{
							Name:  "app",
							Image: "weir.dev/demo-app:" + v.Tag,
							Env:   v.env(),
							Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: AppPort}},
							ReadinessProbe: &corev1.Probe{
								ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(AppPort)}},
								PeriodSeconds: 1,
							},
						},
						sidecar(xdsAddress),
					},
				},
			},
		},
	}
}

// ClientDeployment is a meshed client: a pod whose only container is a
// weir-proxy, scraped by Prometheus. The load generator sends through it,
// so its Envoy stats are the client-side view the analysis reads.
func ClientDeployment(ns, name, xdsAddress string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: scrapeAnnotations()},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](2),
					Containers:                    []corev1.Container{sidecar(xdsAddress)},
				},
			},
		},
	}
}

// CanaryOption changes the Canary built by NewCanary.
type CanaryOption func(*v1alpha1.Canary)

// WithInterval sets the analysis interval.
func WithInterval(d time.Duration) CanaryOption {
	return func(c *v1alpha1.Canary) { c.Spec.Analysis.Interval = &metav1.Duration{Duration: d} }
}

// WithThreshold sets the failed-check threshold.
func WithThreshold(n int32) CanaryOption {
	return func(c *v1alpha1.Canary) { c.Spec.Analysis.Threshold = n }
}

// WithStepWeights sets the step weights.
func WithStepWeights(ws ...int32) CanaryOption {
	return func(c *v1alpha1.Canary) { c.Spec.Analysis.StepWeights = ws }
}

// WithMetric adds a metric with a min and/or max bound (nil for none).
func WithMetric(name string, min, max *float64, window time.Duration) CanaryOption {
	return func(c *v1alpha1.Canary) {
		m := v1alpha1.CanaryMetric{Name: name, ThresholdRange: v1alpha1.ThresholdRange{Min: min, Max: max}}
		if window > 0 {
			m.Interval = &metav1.Duration{Duration: window}
		}
		c.Spec.Analysis.Metrics = append(c.Spec.Analysis.Metrics, m)
	}
}

// WithAlert sends the Canary's events to the named AlertProvider.
func WithAlert(provider, severity string) CanaryOption {
	return func(c *v1alpha1.Canary) {
		c.Spec.Analysis.Alerts = append(c.Spec.Analysis.Alerts, v1alpha1.CanaryAlert{
			Name: provider, Severity: severity, ProviderRef: v1alpha1.ProviderRef{Name: provider},
		})
	}
}

// WithOutlierDetection ejects a pod at its nth consecutive 5xx for base.
func WithOutlierDetection(n int32, interval, base time.Duration, maxPercent int32) CanaryOption {
	return func(c *v1alpha1.Canary) {
		c.Spec.Service.OutlierDetection = &v1alpha1.OutlierDetection{
			Consecutive5xxErrors: n,
			Interval:             &metav1.Duration{Duration: interval},
			BaseEjectionTime:     &metav1.Duration{Duration: base},
			MaxEjectionPercent:   maxPercent,
		}
	}
}

// WithRetries retries failed requests on another pod.
func WithRetries(attempts int32, perTry time.Duration) CanaryOption {
	return func(c *v1alpha1.Canary) {
		c.Spec.Service.Retries = &v1alpha1.HTTPRetry{
			Attempts: attempts, PerTryTimeout: &metav1.Duration{Duration: perTry}, RetryOn: "5xx,reset,connect-failure",
		}
	}
}

// WithProgressDeadline sets progressDeadlineSeconds.
func WithProgressDeadline(d time.Duration) CanaryOption {
	return func(c *v1alpha1.Canary) { c.Spec.ProgressDeadlineSeconds = ptr.To(int32(d / time.Second)) }
}

// NewCanary is a Canary for the Deployment `name` on AppPort.
func NewCanary(ns, name string, opts ...CanaryOption) *v1alpha1.Canary {
	c := &v1alpha1.Canary{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.CanaryKind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.CanarySpec{
			TargetRef: v1alpha1.TargetRef{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
			Service:   v1alpha1.CanaryService{Port: AppPort},
		},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}
