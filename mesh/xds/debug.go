package xds

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// debugState is the JSON served on /debug/xds.
type debugState struct {
	PublishedAt time.Time                    `json:"publishedAt,omitzero"`
	Versions    map[string]string            `json:"versions"`
	Weights     map[string]int32             `json:"weights"`
	Desired     []debugWeight                `json:"desired"`
	Proxies     []debugProxy                 `json:"proxies"`
	Resources   map[string][]json.RawMessage `json:"resources"`
}

type debugWeight struct {
	Canary      string    `json:"canary"`
	Weight      int32     `json:"weight"`
	SetAt       time.Time `json:"setAt"`
	ConfirmedAt time.Time `json:"confirmedAt,omitzero"`
	Acked       int       `json:"acked"`
	Total       int       `json:"total"`
}

type debugProxy struct {
	Stream   int64             `json:"stream"`
	Node     string            `json:"node"`
	Opened   time.Time         `json:"opened"`
	Acked    map[string]string `json:"acked"`
	NACKs    int               `json:"nacks"`
	LastNACK string            `json:"lastNack,omitempty"`
}

// DebugHandler serves the published snapshot, the weights asked for and the
// connected sidecars as JSON.
func (s *Server) DebugHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		st := debugState{Versions: map[string]string{}, Weights: map[string]int32{}, Resources: map[string][]json.RawMessage{}}
		s.mu.Lock()
		cur := s.current
		st.PublishedAt = s.publishedAt
		for c, d := range s.desired {
			st.Desired = append(st.Desired, debugWeight{Canary: c.String(), Weight: d.weight, SetAt: d.setAt, ConfirmedAt: d.confirmedAt, Acked: d.acked, Total: d.total})
		}
		for id, p := range s.streams {
			acked := map[string]string{}
			for t, v := range p.acked {
				acked[shortType(t)] = v
			}
			st.Proxies = append(st.Proxies, debugProxy{Stream: id, Node: p.node, Opened: p.opened, Acked: acked, NACKs: p.nacks, LastNACK: p.lastNack})
		}
		s.mu.Unlock()
		slices.SortFunc(st.Desired, func(a, b debugWeight) int { return compareStrings(a.Canary, b.Canary) })
		slices.SortFunc(st.Proxies, func(a, b debugProxy) int { return int(a.Stream - b.Stream) })

		if cur != nil {
			for t, v := range cur.Versions {
				st.Versions[shortType(t)] = v
			}
			for c, wt := range cur.Output.Weights {
				st.Weights[c.String()] = wt
			}
			add := func(t string, ms []proto.Message) {
				for _, m := range ms {
					b, err := protojson.Marshal(m)
					if err != nil {
						http.Error(w, err.Error(), http.StatusInternalServerError)
						return
					}
					st.Resources[shortType(t)] = append(st.Resources[shortType(t)], b)
				}
			}
			add(resource.ListenerType, asMessages(cur.Output.Listeners))
			add(resource.RouteType, asMessages(cur.Output.Routes))
			add(resource.ClusterType, asMessages(cur.Output.Clusters))
			add(resource.EndpointType, asMessages(cur.Output.Endpoints))
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
}

func asMessages[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
