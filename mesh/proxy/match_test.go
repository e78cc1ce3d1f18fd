package proxy

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	envoy_type_matcher_v3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func freeTestPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func vhost(name string, domains ...string) *envoy_config_route_v3.VirtualHost {
	return &envoy_config_route_v3.VirtualHost{Name: name, Domains: domains, Routes: []*envoy_config_route_v3.Route{{
		Match:  &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &envoy_config_route_v3.Route_Route{Route: &envoy_config_route_v3.RouteAction{ClusterSpecifier: &envoy_config_route_v3.RouteAction_Cluster{Cluster: name}}},
	}}}
}

func TestVirtualHostByHost(t *testing.T) {
	rt, err := buildRouteTable(&envoy_config_route_v3.RouteConfiguration{Name: "outbound", VirtualHosts: []*envoy_config_route_v3.VirtualHost{
		vhost("podinfo", "podinfo", "podinfo:9898", "podinfo.test", "podinfo.test.svc.cluster.local:9898"),
		vhost("suffix", "*.example.com"),
		vhost("prefix", "api.*"),
		vhost("default", "*"),
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, want string
		strip      bool
	}{
		{"podinfo", "podinfo", false},
		{"podinfo:9898", "podinfo", false},
		{"PodInfo.Test", "podinfo", false},
		{"podinfo.test.svc.cluster.local:9898", "podinfo", false},
		{"podinfo.test.svc.cluster.local", "default", false},
		{"podinfo.test.svc.cluster.local:1234", "default", true}, // stripped, and only the :9898 form is a domain
		{"podinfo:1234", "podinfo", true},
		{"www.example.com", "suffix", false},
		{"api.example.com", "suffix", false},
		{"api.internal", "prefix", false},
		{"other", "default", false},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			lc := &listenerConfig{stripAnyPort: tt.strip}
			vh := rt.match(lc.hostForMatch(tt.host))
			if vh == nil || vh.name != tt.want {
				t.Fatalf("got %v, want %s", vh, tt.want)
			}
		})
	}
}

func TestRouteMatch(t *testing.T) {
	header := func(name string, sm *envoy_type_matcher_v3.StringMatcher, invert bool) *envoy_config_route_v3.HeaderMatcher {
		return &envoy_config_route_v3.HeaderMatcher{Name: name, InvertMatch: invert, HeaderMatchSpecifier: &envoy_config_route_v3.HeaderMatcher_StringMatch{StringMatch: sm}}
	}
	exact := func(v string) *envoy_type_matcher_v3.StringMatcher {
		return &envoy_type_matcher_v3.StringMatcher{MatchPattern: &envoy_type_matcher_v3.StringMatcher_Exact{Exact: v}}
	}
	tests := []struct {
		name    string
		match   *envoy_config_route_v3.RouteMatch
		path    string
		headers map[string]string
		want    bool
	}{
		{"prefix", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/api"}}, "/api/v1?x=1", nil, true},
		{"prefix miss", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/api"}}, "/web", nil, false},
		{"prefix case-insensitive", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/API"}, CaseSensitive: wrapperspb.Bool(false)}, "/api/v1", nil, true},
		{"path exact", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Path{Path: "/healthz"}}, "/healthz?verbose", nil, true},
		{"path exact miss", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Path{Path: "/healthz"}}, "/healthz/x", nil, false},
		{"regex", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_SafeRegex{SafeRegex: &envoy_type_matcher_v3.RegexMatcher{Regex: "/v[0-9]+/.*"}}}, "/v2/items", nil, true},
		{"header exact", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{header("x-canary", exact("always"), false)}}, "/", map[string]string{"X-Canary": "always"}, true},
		{"header exact miss", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{header("x-canary", exact("always"), false)}}, "/", map[string]string{"X-Canary": "never"}, false},
		{"header absent", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{header("x-canary", exact("always"), false)}}, "/", nil, false},
		{"header inverted", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{header("x-canary", exact("always"), true)}}, "/", map[string]string{"X-Canary": "never"}, true},
		{"header prefix ignore case", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{header("user-agent",
			&envoy_type_matcher_v3.StringMatcher{IgnoreCase: true, MatchPattern: &envoy_type_matcher_v3.StringMatcher_Prefix{Prefix: "mozilla"}}, false)}}, "/", map[string]string{"User-Agent": "Mozilla/5.0"}, true},
		{"present match", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{{Name: "x-debug", HeaderMatchSpecifier: &envoy_config_route_v3.HeaderMatcher_PresentMatch{PresentMatch: true}}}}, "/", map[string]string{"X-Debug": ""}, true},
		// The deprecated direct matchers behave like their string_match forms.
		{"deprecated exact_match", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{{Name: "x-canary", HeaderMatchSpecifier: &envoy_config_route_v3.HeaderMatcher_ExactMatch{ExactMatch: "always"}}}}, "/", map[string]string{"X-Canary": "always"}, true},
		{"deprecated exact_match is case-sensitive", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{{Name: "x-canary", HeaderMatchSpecifier: &envoy_config_route_v3.HeaderMatcher_ExactMatch{ExactMatch: "always"}}}}, "/", map[string]string{"X-Canary": "Always"}, false},
		{"deprecated prefix_match", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{{Name: "user-agent", HeaderMatchSpecifier: &envoy_config_route_v3.HeaderMatcher_PrefixMatch{PrefixMatch: "Mozilla"}}}}, "/", map[string]string{"User-Agent": "Mozilla/5.0"}, true},
		{"deprecated suffix_match miss", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{{Name: "x-env", HeaderMatchSpecifier: &envoy_config_route_v3.HeaderMatcher_SuffixMatch{SuffixMatch: "-prod"}}}}, "/", map[string]string{"X-Env": "eu-staging"}, false},
		{"deprecated contains_match", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{{Name: "x-env", HeaderMatchSpecifier: &envoy_config_route_v3.HeaderMatcher_ContainsMatch{ContainsMatch: "stag"}}}}, "/", map[string]string{"X-Env": "eu-staging"}, true},
		{"deprecated safe_regex_match", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{{Name: "x-build", HeaderMatchSpecifier: &envoy_config_route_v3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &envoy_type_matcher_v3.RegexMatcher{Regex: "[0-9]+"}}}}}, "/", map[string]string{"X-Build": "1234"}, true},
		{":method pseudo-header", &envoy_config_route_v3.RouteMatch{PathSpecifier: &envoy_config_route_v3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*envoy_config_route_v3.HeaderMatcher{header(":method", exact("GET"), false)}}, "/", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := buildRoute(&envoy_config_route_v3.Route{Match: tt.match, Action: &envoy_config_route_v3.Route_Route{Route: &envoy_config_route_v3.RouteAction{
				ClusterSpecifier: &envoy_config_route_v3.RouteAction_Cluster{Cluster: "c"}}}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, tt.path, nil)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			if got := r.matches(stdRequest{req}); got != tt.want {
				t.Errorf("matches = %v, want %v", got, tt.want)
			}
		})
	}
}
