package metrics

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weir-dev/weir/canary/v1alpha1"
)

// Variables of query templates, written {{ name }} with optional spaces.
const (
	// VarNamespace is the Canary's namespace.
	VarNamespace = "namespace"
	// VarTarget is the name of the target Deployment.
	VarTarget = "target"
	// VarService is the name of the Service clients call (service.name,
	// or the target's name); the canary's pods are behind <service>-canary.
	VarService = "service"
	// VarInterval is the metric's window as a PromQL duration, e.g. 1m.
	VarInterval = "interval"
	// varCluster is the canary's Envoy cluster; built-in templates only.
	varCluster = "cluster"
)

// templateVars returns the variables of a custom query for metric m of c.
func templateVars(c *v1alpha1.Canary, m *v1alpha1.CanaryMetric) map[string]string {
	return map[string]string{
		VarNamespace: c.Namespace,
		VarTarget:    c.Spec.TargetRef.Name,
		VarService:   c.GetServiceName(),
		VarInterval:  promDuration(m.GetInterval(c.Spec.Analysis.GetInterval())),
	}
}

// CanaryCluster returns the name of the canary's Envoy cluster as the
// sidecars label it in envoy_cluster_name: <namespace>/<service>-canary:<port>,
// where <service>-canary is the Service of the canary's pods and <port> the
// Canary's service port.
func CanaryCluster(c *v1alpha1.Canary) string {
	return fmt.Sprintf("%s/%s:%d", c.Namespace, c.GetCanaryServiceName(), c.Spec.Service.Port)
}

// Render replaces every {{ name }} in tmpl with vars[name]. A variable that
// vars does not hold, or a "{{" without its "}}", is an error: a query is
// never run with a silently empty part.
func Render(tmpl string, vars map[string]string) (string, error) {
	var b strings.Builder
	rest := tmpl
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		b.WriteString(rest[:i])
		j := strings.Index(rest[i:], "}}")
		if j < 0 {
			return "", fmt.Errorf("unclosed {{ at offset %d of the query template", len(tmpl)-len(rest)+i)
		}
		name := strings.TrimSpace(rest[i+2 : i+j])
		v, ok := vars[name]
		if !ok {
			return "", fmt.Errorf("unknown variable {{ %s }} in the query template; known: %s", name, knownVars(vars))
		}
		b.WriteString(v)
		rest = rest[i+j+2:]
	}
}

func knownVars(vars map[string]string) string {
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, "{{ "+n+" }}")
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// promDuration renders d as a PromQL duration in its largest whole unit:
// 1h, 1m, 90s, 1500ms. Durations below a millisecond round up to 1ms.
func promDuration(d time.Duration) string {
	switch {
	case d <= time.Millisecond:
		return "1ms"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	default:
		return strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10) + "ms"
	}
}
