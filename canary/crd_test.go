package canary

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/weir-dev/weir/canary/v1alpha1"
)

// validSpec is a Canary spec the API server accepts; the cases below
// change one thing in it.
const validSpec = `
targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
service: {port: 9898}
analysis:
  interval: 30s
  threshold: 5
  metrics:
  - {name: request-success-rate, thresholdRange: {min: 99}}
`

// spec returns validSpec with patch merged in (JSON merge patch: null
// removes a field).
func spec(t *testing.T, patch string) map[string]any {
	t.Helper()
	var base, p map[string]any
	if err := yaml.Unmarshal([]byte(validSpec), &base); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(patch), &p); err != nil {
		t.Fatal(err)
	}
	return mergePatch(base, p)
}

func mergePatch(base, patch map[string]any) map[string]any {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(base, k)
		case map[string]any:
			bv, ok := base[k].(map[string]any)
			if !ok {
				bv = map[string]any{}
			}
			base[k] = mergePatch(bv, pv)
		default:
			base[k] = v
		}
	}
	return base
}

func unstructuredCanary(ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(v1alpha1.CanaryKind))
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

func TestCRDValidation(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	tests := []struct {
		name  string
		patch string
		// want is the part of the API server's message that says what is
		// wrong; empty means the Canary is accepted.
		want string
	}{
		// Accepted.
		{name: "the defaults", patch: `{}`},
		{name: "stepWeights", patch: `analysis: {stepWeights: [5, 10, 50, 100]}`},
		{name: "stepWeights ending below 100", patch: `analysis: {stepWeights: [10, 50]}`},
		{name: "one step", patch: `analysis: {stepWeights: [100]}`},
		{name: "stepWeight with maxWeight", patch: `analysis: {stepWeight: 20, maxWeight: 60}`},
		{name: "interval of 1s", patch: `analysis: {interval: 1s}`},
		{name: "interval of 1m30s", patch: `analysis: {interval: 1m30s}`},
		{name: "custom metric with a query", patch: `analysis: {metrics: [{name: queue-depth, query: 'sum(rate(my_errors_total{app="{{ target }}"}[{{ interval }}]))', thresholdRange: {max: 2}}]}`},
		{name: "thresholdRange with max only", patch: `analysis: {metrics: [{name: request-duration, thresholdRange: {max: 500}, interval: 1m}]}`},
		{name: "no metrics", patch: `analysis: {metrics: null}`},
		{name: "the full example of DESIGN.md", patch: `
progressDeadlineSeconds: 600
service:
  port: 9898
  targetPort: 9898
  timeout: 5s
  retries: {attempts: 2, perTryTimeout: 1s, retryOn: "5xx,reset,connect-failure"}
  outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
analysis:
  interval: 30s
  threshold: 5
  stepWeights: [10, 50, 100]
  metrics:
  - {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}
  - {name: request-duration, thresholdRange: {max: 500}, interval: 30s}
  - {name: queue-depth, query: 'sum(rate(my_errors_total{app="{{ target }}"}[{{ interval }}]))', thresholdRange: {max: 2}}
  alerts:
  - {name: team-slack, severity: info, providerRef: {name: slack}}
`},

		// Rejected.
		{name: "stepWeights descending", patch: `analysis: {stepWeights: [50, 10]}`,
			want: "stepWeights must be strictly ascending, each between 1 and 100, e.g. [10, 50, 100]"},
		{name: "stepWeights repeated", patch: `analysis: {stepWeights: [10, 10, 50]}`,
			want: "stepWeights must be strictly ascending"},
		{name: "stepWeights above 100", patch: `analysis: {stepWeights: [10, 150]}`,
			want: "should be less than or equal to 100"},
		{name: "stepWeights with 0", patch: `analysis: {stepWeights: [0, 50]}`,
			want: "should be greater than or equal to 1"},
		{name: "both stepWeights and stepWeight", patch: `analysis: {stepWeights: [10, 50], stepWeight: 10, maxWeight: 50}`,
			want: "set either stepWeights or stepWeight with maxWeight, not both"},
		{name: "stepWeight without maxWeight", patch: `analysis: {stepWeight: 10}`,
			want: "stepWeight and maxWeight go together: set both or neither"},
		{name: "maxWeight without stepWeight", patch: `analysis: {maxWeight: 50}`,
			want: "stepWeight and maxWeight go together: set both or neither"},
		{name: "stepWeight above maxWeight", patch: `analysis: {stepWeight: 60, maxWeight: 50}`,
			want: "stepWeight must not be larger than maxWeight"},
		{name: "threshold 0", patch: `analysis: {threshold: 0}`,
			want: "spec.analysis.threshold: Invalid value: 0: spec.analysis.threshold in body should be greater than or equal to 1"},
		{name: "interval 500ms", patch: `analysis: {interval: 500ms}`,
			want: "interval must be at least 1s"},
		{name: "interval not a duration", patch: `analysis: {interval: 30 seconds}`,
			want: "spec.analysis.interval in body should match"},
		{name: "metric interval 100ms", patch: `analysis: {metrics: [{name: request-duration, thresholdRange: {max: 500}, interval: 100ms}]}`,
			want: "a metric's interval must be at least 1s"},
		{name: "custom metric without query", patch: `analysis: {metrics: [{name: queue-depth, thresholdRange: {max: 2}}]}`,
			want: "a metric that is not built-in (request-success-rate, error-rate, request-duration) needs a query"},
		{name: "thresholdRange empty", patch: `analysis: {metrics: [{name: request-success-rate, thresholdRange: {}}]}`,
			want: "thresholdRange needs min or max"},
		{name: "thresholdRange min above max", patch: `analysis: {metrics: [{name: error-rate, thresholdRange: {min: 5, max: 1}}]}`,
			want: "thresholdRange min must not be larger than max"},
		{name: "metric without thresholdRange", patch: `analysis: {metrics: [{name: request-success-rate}]}`,
			want: `spec.analysis.metrics[0].thresholdRange: Required value`},
		{name: "two metrics of one name", patch: `analysis: {metrics: [{name: error-rate, thresholdRange: {max: 1}}, {name: error-rate, thresholdRange: {max: 2}}]}`,
			want: `Duplicate value`},
		{name: "unknown targetRef kind", patch: `targetRef: {kind: StatefulSet}`,
			want: `spec.targetRef.kind: Unsupported value: "StatefulSet": supported values: "Deployment"`},
		{name: "unknown targetRef apiVersion", patch: `targetRef: {apiVersion: apps/v1beta1}`,
			want: `spec.targetRef.apiVersion: Unsupported value: "apps/v1beta1"`},
		{name: "targetRef name too long for -primary", patch: `targetRef: {name: a-very-long-deployment-name-that-leaves-no-room-for-the-suffix}`,
			want: "spec.targetRef.name: Too long"},
		{name: "targetRef without name", patch: `targetRef: {name: null}`,
			want: "spec.targetRef.name: Required value"},
		{name: "no service port", patch: `service: {port: null}`,
			want: "spec.service.port: Required value"},
		{name: "service port 0", patch: `service: {port: 0}`,
			want: "spec.service.port: Invalid value: 0"},
		{name: "bad retryOn", patch: `service: {retries: {attempts: 2, retryOn: "5xx,teapot"}}`,
			want: "spec.service.retries.retryOn in body should match"},
		{name: "bad timeout", patch: `service: {timeout: soon}`,
			want: "spec.service.timeout in body should match"},
		{name: "progressDeadlineSeconds 0", patch: `progressDeadlineSeconds: 0`,
			want: "spec.progressDeadlineSeconds: Invalid value: 0"},
		{name: "alert severity unknown", patch: `analysis: {alerts: [{name: x, severity: loud, providerRef: {name: slack}}]}`,
			want: `spec.analysis.alerts[0].severity: Unsupported value: "loud"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := unstructuredCanary(ns, fmt.Sprintf("c%03d", i), spec(t, tt.patch))
			err := c.Create(context.Background(), u)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted, want rejected with %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("rejected with\n  %v\nwant a message with\n  %s", err, tt.want)
			case err != nil:
				t.Logf("%v", err)
			}
		})
	}
}

func TestCRDDefaults(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	u := unstructuredCanary(ns, "defaults", spec(t, `analysis: {interval: null, threshold: null}`))
	if err := c.Create(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	got := &v1alpha1.Canary{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(u), got); err != nil {
		t.Fatal(err)
	}
	a := got.Spec.Analysis
	if a.GetInterval().String() != "30s" || a.Threshold != 5 || *got.Spec.ProgressDeadlineSeconds != 600 ||
		got.Spec.Service.PortName != "http" || got.Spec.TargetRef.APIVersion != "apps/v1" {
		t.Errorf("defaults not applied: %+v", got.Spec)
	}
}

func TestCRDTargetRefImmutable(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	u := unstructuredCanary(ns, "immutable", spec(t, `{}`))
	ctx := context.Background()
	if err := c.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(u.Object, "other", "spec", "targetRef", "name"); err != nil {
		t.Fatal(err)
	}
	err := c.Update(ctx, u)
	if err == nil || !strings.Contains(err.Error(), "targetRef is immutable") {
		t.Fatalf("update of targetRef: %v, want rejected as immutable", err)
	}
}

// TestKubectlApplyMessage records what a person sees when kubectl applies
// a Canary with stepWeights [50, 10].
func TestKubectlApplyMessage(t *testing.T) {
	c := newClient(t)
	ns := newNamespace(t, c)
	manifest := `apiVersion: weir.dev/v1alpha1
kind: Canary
metadata: {name: podinfo, namespace: ` + ns + `}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 30s
    stepWeights: [50, 10]
`
	f := filepath.Join(t.TempDir(), "canary.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := kubectl(t, "apply", "-f", f)
	if err == nil {
		t.Fatalf("kubectl apply accepted stepWeights [50, 10]:\n%s", out)
	}
	t.Logf("$ kubectl apply -f canary.yaml\n%s", out)
	if !strings.Contains(out, "stepWeights must be strictly ascending, each between 1 and 100, e.g. [10, 50, 100]") {
		t.Errorf("kubectl apply said %q", out)
	}

	// Unknown fields are rejected, not silently dropped.
	manifest = strings.Replace(manifest, "[50, 10]", "[10, 50]\n    stepWieghts: [10]", 1)
	if err := os.WriteFile(f, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = kubectl(t, "apply", "-f", f)
	t.Logf("$ kubectl apply -f canary.yaml  # with a misspelt field\n%s", out)
	if err == nil || !strings.Contains(out, `unknown field "spec.analysis.stepWieghts"`) {
		t.Errorf("kubectl apply with an unknown field: %v", err)
	}
}
