package proxy

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// AdminHandler serves /stats/prometheus, /ready, /config_dump, /clusters and
// /debug/pprof/ (the admin address is loopback by default).
func (p *Proxy) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /stats/prometheus", p.stats.Handler())
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		ok, state := p.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, state)
	})
	mux.HandleFunc("GET /config_dump", p.serveConfigDump)
	mux.HandleFunc("GET /clusters", p.serveClusters)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	return mux
}

// dumpTypes is the order of /config_dump.
var dumpTypes = []struct{ key, typeURL string }{
	{"listeners", resource.ListenerType},
	{"route_configs", resource.RouteType},
	{"clusters", resource.ClusterType},
	{"endpoints", resource.EndpointType},
}

type dumpEntry struct {
	Name        string          `json:"name"`
	VersionInfo string          `json:"version_info"`
	Resource    json.RawMessage `json:"resource"`
}

func (p *Proxy) serveConfigDump(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	out := map[string][]dumpEntry{}
	var err error
	for _, t := range dumpTypes {
		m := p.dump[t.typeURL]
		entries := []dumpEntry{}
		for _, name := range slices.Sorted(maps.Keys(m)) {
			d := m[name]
			var b []byte
			b, err = protojson.Marshal(d.resource)
			if err != nil {
				break
			}
			entries = append(entries, dumpEntry{Name: name, VersionInfo: d.version, Resource: b})
		}
		out[t.key] = entries
	}
	p.mu.Unlock()
	if err != nil {
		http.Error(w, fmt.Sprintf("failed to encode config: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

// serveClusters prints endpoints in Envoy's /clusters text format:
// cluster::address::field::value.
func (p *Proxy) serveClusters(w http.ResponseWriter, _ *http.Request) {
	clusters := *p.clusters.Load()
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(clusters)) {
		c := clusters[name]
		fmt.Fprintf(&b, "%s::outlier::ejections_active::%d\n", name, c.detector.Active())
		for _, h := range c.hosts.Load().all {
			flags := []string{}
			if h.od.Ejected() {
				flags = append(flags, "/failed_outlier_check")
			}
			if !h.healthy.Load() {
				flags = append(flags, "/failed_eds_health")
			}
			health := "healthy"
			if len(flags) > 0 {
				health = strings.Join(flags, "")
			}
			fmt.Fprintf(&b, "%s::%s::health_flags::%s\n", name, h.addr, health)
			fmt.Fprintf(&b, "%s::%s::rq_active::%d\n", name, h.addr, h.active.Load())
			fmt.Fprintf(&b, "%s::%s::rq_total::%d\n", name, h.addr, h.rqTotal.Load())
			fmt.Fprintf(&b, "%s::%s::rq_error::%d\n", name, h.addr, h.rqErrors.Load())
			fmt.Fprintf(&b, "%s::%s::num_ejections::%d\n", name, h.addr, h.od.NumEjections(c.detector))
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprint(w, b.String())
}
