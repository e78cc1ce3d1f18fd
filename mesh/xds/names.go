// Package xds turns the cluster's Services, EndpointSlices and Canaries into
// Envoy v3 resources and serves them to the sidecar fleet over ADS.
//
// The layers follow Contour: Kubernetes objects (read from the manager's
// cache) → Input → Translate, a pure function that returns sorted protos →
// a validated, content-hashed snapshot shared by every sidecar → the
// go-control-plane gRPC server. Nothing below Translate talks to Kubernetes.
package xds

import (
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/types"
)

// Names agreed with weir-proxy and the metrics package.
const (
	// ListenerName is the name of the one outbound HTTP listener.
	ListenerName = "outbound"
	// RouteConfigName is the RDS name the listener refers to.
	RouteConfigName = "outbound"
	// DefaultListenerPort is the port the outbound listener binds.
	DefaultListenerPort = 15001

	primarySuffix = "-primary"
	canarySuffix  = "-canary"
)

// ClusterName is the name of the Envoy cluster (and of its
// ClusterLoadAssignment) of one port of a Service: "<ns>/<service>:<port>",
// e.g. "test/podinfo-canary:9898".
func ClusterName(namespace, service string, port int32) string {
	return namespace + "/" + service + ":" + strconv.Itoa(int(port))
}

// virtualHostName names the virtual host of one port of a Service; it is
// the cluster name of that port.
func virtualHostName(namespace, service string, port int32) string {
	return ClusterName(namespace, service, port)
}

// serviceDomains returns the host names of a Service port: the short name,
// name.ns, name.ns.svc and name.ns.svc.cluster.local, each with ":port",
// and, when withoutPort is set, each without it too. The result is sorted.
func serviceDomains(namespace, service string, port int32, withoutPort bool) []string {
	bare := []string{
		service,
		service + "." + namespace,
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
	}
	out := make([]string, 0, 2*len(bare))
	for _, h := range bare {
		if withoutPort {
			out = append(out, h)
		}
		out = append(out, fmt.Sprintf("%s:%d", h, port))
	}
	sortStrings(out)
	return out
}

// canaryServiceKey is the Service a Canary routes: the Canary's target name
// in the Canary's namespace.
func canaryServiceKey(namespace, target string) types.NamespacedName {
	return types.NamespacedName{Namespace: namespace, Name: target}
}
