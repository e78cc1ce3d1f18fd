package proxy

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	envoy_config_cluster_v3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	envoy_config_core_v3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	envoy_config_endpoint_v3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	envoy_config_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_config_route_v3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	envoy_extensions_filters_http_router_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	envoy_extensions_filters_network_http_connection_manager_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	envoy_extensions_upstreams_http_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	envoy_type_matcher_v3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weir-dev/weir/mesh/proxy/outlier"
)

// onlyFields rejects a message that sets a field outside allowed: weir-proxy
// NACKs what it cannot honour rather than ignoring it.
func onlyFields(m proto.Message, allowed ...string) error {
	var bad []string
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, string(fd.Name())) {
			bad = append(bad, string(fd.Name()))
		}
		return true
	})
	if len(bad) > 0 {
		return fmt.Errorf("%s: unsupported field(s) %s", m.ProtoReflect().Descriptor().Name(), strings.Join(bad, ", "))
	}
	return nil
}

func duration(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

func u32(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

// listenerConfig is what one LDS listener asks for.
type listenerConfig struct {
	name           string
	address        string
	port           int
	rdsName        string
	inline         *routeTable
	useRemoteAddr  bool
	genRequestID   bool
	stripAnyPort   bool
	stripMatchPort bool
	// idleTimeout closes a downstream connection with no request in flight
	// for that long (0: never); maxHeadBytes bounds a request head (431).
	idleTimeout     time.Duration
	maxHeadBytes    int
	http1, http2    bool
	version         string
	resourceVersion string
}

const routerFilterType = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

func buildListener(l *envoy_config_listener_v3.Listener, bindIP string) (*listenerConfig, error) {
	if err := onlyFields(l, "name", "address", "filter_chains", "traffic_direction", "stat_prefix", "metadata"); err != nil {
		return nil, err
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil || sa.GetProtocol() != envoy_config_core_v3.SocketAddress_TCP || sa.GetPortValue() == 0 {
		return nil, errors.New("address must be a TCP socket_address with a port_value")
	}
	ip := sa.GetAddress()
	if bindIP != "" {
		ip = bindIP
	}
	lc := &listenerConfig{name: l.GetName(), address: net.JoinHostPort(ip, strconv.Itoa(int(sa.GetPortValue()))), port: int(sa.GetPortValue())}
	if len(l.GetFilterChains()) != 1 {
		return nil, fmt.Errorf("exactly one filter chain is supported, got %d", len(l.GetFilterChains()))
	}
	fc := l.GetFilterChains()[0]
	if err := onlyFields(fc, "filters", "name"); err != nil {
		return nil, err
	}
	if len(fc.GetFilters()) != 1 {
		return nil, fmt.Errorf("exactly one network filter (http_connection_manager) is supported, got %d", len(fc.GetFilters()))
	}
	f := fc.GetFilters()[0]
	hcm := &envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager{}
	if f.GetTypedConfig() == nil || f.GetTypedConfig().MessageIs(hcm) == false {
		return nil, fmt.Errorf("unsupported network filter %q: only envoy.filters.network.http_connection_manager", f.GetName())
	}
	if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		return nil, fmt.Errorf("failed to decode http_connection_manager: %w", err)
	}
	if err := onlyFields(hcm, "stat_prefix", "codec_type", "rds", "route_config", "http_filters", "use_remote_address", "generate_request_id", "strip_any_host_port", "strip_matching_host_port",
		"common_http_protocol_options", "max_request_headers_kb"); err != nil {
		return nil, err
	}
	// Envoy's defaults: an hour of idleness, 60 KiB of request headers.
	lc.idleTimeout, lc.maxHeadBytes = time.Hour, 60<<10
	if o := hcm.GetCommonHttpProtocolOptions(); o != nil {
		if err := onlyFields(o, "idle_timeout"); err != nil {
			return nil, err
		}
		if d := o.GetIdleTimeout(); d != nil {
			if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
				return nil, fmt.Errorf("common_http_protocol_options.idle_timeout %v is not a valid duration", d)
			}
			lc.idleTimeout = d.AsDuration()
		}
	}
	if kb := hcm.GetMaxRequestHeadersKb(); kb != nil {
		if kb.GetValue() == 0 || kb.GetValue() > 8192 {
			return nil, fmt.Errorf("max_request_headers_kb must be between 1 and 8192, got %d", kb.GetValue())
		}
		lc.maxHeadBytes = int(kb.GetValue()) << 10
	}
	switch hcm.GetCodecType() {
	case envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager_AUTO:
		lc.http1, lc.http2 = true, true
	case envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager_HTTP1:
		lc.http1 = true
	case envoy_extensions_filters_network_http_connection_manager_v3.HttpConnectionManager_HTTP2:
		lc.http2 = true
	default:
		return nil, fmt.Errorf("unsupported codec_type %s", hcm.GetCodecType())
	}
	lc.useRemoteAddr = hcm.GetUseRemoteAddress().GetValue()
	lc.genRequestID = hcm.GetGenerateRequestId() == nil || hcm.GetGenerateRequestId().GetValue()
	lc.stripAnyPort = hcm.GetStripAnyHostPort()
	lc.stripMatchPort = hcm.GetStripMatchingHostPort()
	for _, hf := range hcm.GetHttpFilters() {
		if hf.GetTypedConfig().GetTypeUrl() != routerFilterType {
			return nil, fmt.Errorf("unsupported http filter %q (%s): only envoy.filters.http.router", hf.GetName(), hf.GetTypedConfig().GetTypeUrl())
		}
	}
	if len(hcm.GetHttpFilters()) != 1 {
		return nil, fmt.Errorf("http_filters must be exactly [envoy.filters.http.router], got %d filters", len(hcm.GetHttpFilters()))
	}
	hf := hcm.GetHttpFilters()[0]
	router := &envoy_extensions_filters_http_router_v3.Router{}
	if err := hf.GetTypedConfig().UnmarshalTo(router); err != nil {
		return nil, fmt.Errorf("failed to decode router filter: %w", err)
	}
	if err := onlyFields(router); err != nil {
		return nil, err
	}
	switch {
	case hcm.GetRds() != nil:
		if err := onlyFields(hcm.GetRds(), "config_source", "route_config_name"); err != nil {
			return nil, err
		}
		if hcm.GetRds().GetConfigSource().GetAds() == nil {
			return nil, errors.New("rds.config_source must be ads")
		}
		lc.rdsName = hcm.GetRds().GetRouteConfigName()
	case hcm.GetRouteConfig() != nil:
		rt, err := buildRouteTable(hcm.GetRouteConfig(), nil)
		if err != nil {
			return nil, fmt.Errorf("route_config: %w", err)
		}
		lc.inline = rt
	default:
		return nil, errors.New("http_connection_manager needs rds or route_config")
	}
	return lc, nil
}

// routeTable is a compiled RouteConfiguration.
type routeTable struct {
	name    string
	exact   map[string]*virtualHost
	suffix  []wildHost // "*.example.com", longest first
	prefix  []wildHost // "example.*", longest first
	dflt    *virtualHost
	version string
}

type wildHost struct {
	part string
	vh   *virtualHost
}

type virtualHost struct {
	name   string
	routes []*route
	retry  *retryPolicy
}

type pathKind int

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
)

type route struct {
	name          string
	kind          pathKind
	path          string
	re            *regexp.Regexp
	caseSensitive bool
	headers       []headerMatcher
	action        *routeAction
	direct        *directResponse
}

type directResponse struct {
	status int
	body   []byte
}

type weightedCluster struct {
	name   string
	weight uint64
}

type routeAction struct {
	clusters     []weightedCluster
	total        uint64
	timeout      time.Duration
	retry        *retryPolicy
	notFoundCode int
}

type retryPolicy struct {
	on5xx, gatewayError, reset, connectFailure, retriableCodes, on409 bool
	codes                                                             []uint32
	numRetries                                                        int
	perTry                                                            time.Duration
	base, max                                                         time.Duration
	previousHosts                                                     bool
	hostAttempts                                                      int
}

type headerKind int

const (
	hdrExact headerKind = iota
	hdrPrefix
	hdrSuffix
	hdrContains
	hdrRegex
	hdrPresent
	hdrRange
)

type headerMatcher struct {
	name         string
	kind         headerKind
	value        string
	re           *regexp.Regexp
	ignoreCase   bool
	invert       bool
	present      bool
	missingEmpty bool
	start, end   int64
}

func buildRouteTable(rc *envoy_config_route_v3.RouteConfiguration, clusters map[string]bool) (*routeTable, error) {
	if err := onlyFields(rc, "name", "virtual_hosts", "validate_clusters"); err != nil {
		return nil, err
	}
	rt := &routeTable{name: rc.GetName(), exact: map[string]*virtualHost{}}
	seen := map[string]bool{}
	for _, v := range rc.GetVirtualHosts() {
		if err := onlyFields(v, "name", "domains", "routes", "retry_policy"); err != nil {
			return nil, fmt.Errorf("virtual host %q: %w", v.GetName(), err)
		}
		vh := &virtualHost{name: v.GetName()}
		if v.GetRetryPolicy() != nil {
			p, err := buildRetry(v.GetRetryPolicy())
			if err != nil {
				return nil, fmt.Errorf("virtual host %q: %w", v.GetName(), err)
			}
			vh.retry = p
		}
		for i, r := range v.GetRoutes() {
			rr, err := buildRoute(r, vh.retry)
			if err != nil {
				return nil, fmt.Errorf("virtual host %q route %d: %w", v.GetName(), i, err)
			}
			if clusters != nil && rr.action != nil {
				for _, c := range rr.action.clusters {
					if !clusters[c.name] {
						return nil, fmt.Errorf("virtual host %q route %d: unknown cluster %q (validate_clusters)", v.GetName(), i, c.name)
					}
				}
			}
			vh.routes = append(vh.routes, rr)
		}
		if len(v.GetDomains()) == 0 {
			return nil, fmt.Errorf("virtual host %q has no domains", v.GetName())
		}
		for _, d := range v.GetDomains() {
			d = strings.ToLower(d)
			if seen[d] {
				return nil, fmt.Errorf("domain %q appears in more than one virtual host", d)
			}
			seen[d] = true
			switch {
			case d == "*":
				rt.dflt = vh
			case strings.HasPrefix(d, "*"):
				rt.suffix = append(rt.suffix, wildHost{d[1:], vh})
			case strings.HasSuffix(d, "*"):
				rt.prefix = append(rt.prefix, wildHost{d[:len(d)-1], vh})
			case strings.Contains(d, "*"):
				return nil, fmt.Errorf("domain %q: a wildcard must be the first or last character", d)
			default:
				rt.exact[d] = vh
			}
		}
	}
	longest := func(a, b wildHost) int { return len(b.part) - len(a.part) }
	slices.SortStableFunc(rt.suffix, longest)
	slices.SortStableFunc(rt.prefix, longest)
	return rt, nil
}

func buildRoute(r *envoy_config_route_v3.Route, vhRetry *retryPolicy) (*route, error) {
	if err := onlyFields(r, "name", "match", "route", "direct_response"); err != nil {
		return nil, err
	}
	m := r.GetMatch()
	if m == nil {
		return nil, errors.New("route has no match")
	}
	if err := onlyFields(m, "prefix", "path", "safe_regex", "case_sensitive", "headers"); err != nil {
		return nil, err
	}
	rr := &route{name: r.GetName(), caseSensitive: m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()}
	switch ps := m.GetPathSpecifier().(type) {
	case *envoy_config_route_v3.RouteMatch_Prefix:
		rr.kind, rr.path = pathPrefix, ps.Prefix
	case *envoy_config_route_v3.RouteMatch_Path:
		rr.kind, rr.path = pathExact, ps.Path
	case *envoy_config_route_v3.RouteMatch_SafeRegex:
		re, err := compileRegex(ps.SafeRegex, !rr.caseSensitive)
		if err != nil {
			return nil, err
		}
		rr.kind, rr.re = pathRegex, re
	default:
		return nil, fmt.Errorf("unsupported path specifier %T", m.GetPathSpecifier())
	}
	if !rr.caseSensitive && rr.kind != pathRegex {
		rr.path = strings.ToLower(rr.path)
	}
	for _, h := range m.GetHeaders() {
		hm, err := buildHeaderMatcher(h)
		if err != nil {
			return nil, err
		}
		rr.headers = append(rr.headers, hm)
	}
	switch a := r.GetAction().(type) {
	case *envoy_config_route_v3.Route_Route:
		ra, err := buildRouteAction(a.Route, vhRetry)
		if err != nil {
			return nil, err
		}
		rr.action = ra
	case *envoy_config_route_v3.Route_DirectResponse:
		if err := onlyFields(a.DirectResponse, "status", "body"); err != nil {
			return nil, err
		}
		if a.DirectResponse.GetStatus() < 200 || a.DirectResponse.GetStatus() > 599 {
			return nil, fmt.Errorf("direct_response status %d out of range", a.DirectResponse.GetStatus())
		}
		dr := &directResponse{status: int(a.DirectResponse.GetStatus())}
		if b := a.DirectResponse.GetBody(); b != nil {
			switch s := b.GetSpecifier().(type) {
			case *envoy_config_core_v3.DataSource_InlineString:
				dr.body = []byte(s.InlineString)
			case *envoy_config_core_v3.DataSource_InlineBytes:
				dr.body = s.InlineBytes
			default:
				return nil, fmt.Errorf("direct_response body: unsupported data source %T", s)
			}
		}
		rr.direct = dr
	default:
		return nil, fmt.Errorf("unsupported route action %T: only route and direct_response", r.GetAction())
	}
	return rr, nil
}

func compileRegex(m *envoy_type_matcher_v3.RegexMatcher, ignoreCase bool) (*regexp.Regexp, error) {
	if err := onlyFields(m, "regex", "google_re2"); err != nil {
		return nil, err
	}
	expr := "^(?:" + m.GetRegex() + ")$"
	if ignoreCase {
		expr = "(?i)" + expr
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("invalid regex %q: %w", m.GetRegex(), err)
	}
	return re, nil
}

func buildHeaderMatcher(h *envoy_config_route_v3.HeaderMatcher) (headerMatcher, error) {
	if err := onlyFields(h, "name", "exact_match", "safe_regex_match", "range_match", "present_match", "prefix_match", "suffix_match", "contains_match", "string_match", "invert_match", "treat_missing_header_as_empty"); err != nil {
		return headerMatcher{}, err
	}
	hm := headerMatcher{name: strings.ToLower(h.GetName()), invert: h.GetInvertMatch(), missingEmpty: h.GetTreatMissingHeaderAsEmpty()}
	if sm := stringMatcherOf(h); sm != nil {
		return hm, hm.setStringMatch(h.GetName(), sm)
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *envoy_config_route_v3.HeaderMatcher_PresentMatch:
		hm.kind, hm.present = hdrPresent, s.PresentMatch
	case *envoy_config_route_v3.HeaderMatcher_RangeMatch:
		hm.kind, hm.start, hm.end = hdrRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case nil:
		hm.kind, hm.present = hdrPresent, true
	default:
		return hm, fmt.Errorf("header %q: unsupported matcher %T", h.GetName(), s)
	}
	return hm, nil
}

// stringMatcherOf returns the header matcher's string_match, or the
// StringMatcher that replaced its deprecated exact, prefix, suffix,
// contains or safe_regex field; nil for the other matchers.
func stringMatcherOf(h *envoy_config_route_v3.HeaderMatcher) *envoy_type_matcher_v3.StringMatcher {
	sm := &envoy_type_matcher_v3.StringMatcher{}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *envoy_config_route_v3.HeaderMatcher_StringMatch:
		return s.StringMatch
	case *envoy_config_route_v3.HeaderMatcher_ExactMatch:
		sm.MatchPattern = &envoy_type_matcher_v3.StringMatcher_Exact{Exact: s.ExactMatch}
	case *envoy_config_route_v3.HeaderMatcher_PrefixMatch:
		sm.MatchPattern = &envoy_type_matcher_v3.StringMatcher_Prefix{Prefix: s.PrefixMatch}
	case *envoy_config_route_v3.HeaderMatcher_SuffixMatch:
		sm.MatchPattern = &envoy_type_matcher_v3.StringMatcher_Suffix{Suffix: s.SuffixMatch}
	case *envoy_config_route_v3.HeaderMatcher_ContainsMatch:
		sm.MatchPattern = &envoy_type_matcher_v3.StringMatcher_Contains{Contains: s.ContainsMatch}
	case *envoy_config_route_v3.HeaderMatcher_SafeRegexMatch:
		sm.MatchPattern = &envoy_type_matcher_v3.StringMatcher_SafeRegex{SafeRegex: s.SafeRegexMatch}
	default:
		return nil
	}
	return sm
}

// setStringMatch makes hm match the header named name by sm.
func (hm *headerMatcher) setStringMatch(name string, sm *envoy_type_matcher_v3.StringMatcher) error {
	if err := onlyFields(sm, "exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"); err != nil {
		return err
	}
	hm.ignoreCase = sm.GetIgnoreCase()
	var err error
	switch p := sm.GetMatchPattern().(type) {
	case *envoy_type_matcher_v3.StringMatcher_Exact:
		hm.kind, hm.value = hdrExact, p.Exact
	case *envoy_type_matcher_v3.StringMatcher_Prefix:
		hm.kind, hm.value = hdrPrefix, p.Prefix
	case *envoy_type_matcher_v3.StringMatcher_Suffix:
		hm.kind, hm.value = hdrSuffix, p.Suffix
	case *envoy_type_matcher_v3.StringMatcher_Contains:
		hm.kind, hm.value = hdrContains, p.Contains
	case *envoy_type_matcher_v3.StringMatcher_SafeRegex:
		hm.kind = hdrRegex
		hm.re, err = compileRegex(p.SafeRegex, hm.ignoreCase)
	default:
		return fmt.Errorf("header %q: unsupported string matcher %T", name, p)
	}
	if hm.ignoreCase {
		hm.value = strings.ToLower(hm.value)
	}
	return err
}

func buildRouteAction(a *envoy_config_route_v3.RouteAction, vhRetry *retryPolicy) (*routeAction, error) {
	if err := onlyFields(a, "cluster", "weighted_clusters", "timeout", "retry_policy", "cluster_not_found_response_code"); err != nil {
		return nil, err
	}
	ra := &routeAction{timeout: duration(a.GetTimeout(), 15*time.Second), retry: vhRetry, notFoundCode: 503}
	if a.GetClusterNotFoundResponseCode() == envoy_config_route_v3.RouteAction_NOT_FOUND {
		ra.notFoundCode = 404
	} else if a.GetClusterNotFoundResponseCode() == envoy_config_route_v3.RouteAction_INTERNAL_SERVER_ERROR {
		ra.notFoundCode = 500
	}
	switch cs := a.GetClusterSpecifier().(type) {
	case *envoy_config_route_v3.RouteAction_Cluster:
		if cs.Cluster == "" {
			return nil, errors.New("route cluster name is empty")
		}
		ra.clusters, ra.total = []weightedCluster{{cs.Cluster, 1}}, 1
	case *envoy_config_route_v3.RouteAction_WeightedClusters:
		wc := cs.WeightedClusters
		if err := onlyFields(wc, "clusters", "total_weight"); err != nil {
			return nil, err
		}
		for _, c := range wc.GetClusters() {
			if err := onlyFields(c, "name", "weight"); err != nil {
				return nil, err
			}
			if c.GetName() == "" {
				return nil, errors.New("weighted cluster with an empty name")
			}
			ra.clusters = append(ra.clusters, weightedCluster{c.GetName(), uint64(c.GetWeight().GetValue())})
			ra.total += uint64(c.GetWeight().GetValue())
		}
		if ra.total == 0 {
			return nil, errors.New("weighted_clusters: the sum of weights must be greater than 0")
		}
		if wc.GetTotalWeight() != nil && uint64(wc.GetTotalWeight().GetValue()) != ra.total {
			return nil, fmt.Errorf("weighted_clusters: total_weight %d does not match the sum of weights %d", wc.GetTotalWeight().GetValue(), ra.total)
		}
	default:
		return nil, fmt.Errorf("unsupported cluster specifier %T", a.GetClusterSpecifier())
	}
	if a.GetRetryPolicy() != nil {
		p, err := buildRetry(a.GetRetryPolicy())
		if err != nil {
			return nil, err
		}
		ra.retry = p
	}
	return ra, nil
}

const previousHostsPredicate = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"

func buildRetry(p *envoy_config_route_v3.RetryPolicy) (*retryPolicy, error) {
	if err := onlyFields(p, "retry_on", "num_retries", "per_try_timeout", "retry_back_off", "retriable_status_codes", "retry_host_predicate", "host_selection_retry_max_attempts"); err != nil {
		return nil, err
	}
	rp := &retryPolicy{numRetries: int(u32(p.GetNumRetries(), 1)), perTry: duration(p.GetPerTryTimeout(), 0), base: 25 * time.Millisecond, hostAttempts: int(p.GetHostSelectionRetryMaxAttempts())}
	for _, on := range strings.Split(p.GetRetryOn(), ",") {
		switch strings.TrimSpace(on) {
		case "":
		case "5xx":
			rp.on5xx = true
		case "gateway-error":
			rp.gatewayError = true
		case "reset":
			rp.reset = true
		case "connect-failure":
			rp.connectFailure = true
		case "retriable-status-codes":
			rp.retriableCodes = true
		case "retriable-4xx":
			rp.on409 = true
		case "refused-stream":
			// An HTTP/2 REFUSED_STREAM: Go's h2c transport already retries a
			// refused stream; HTTP/1.1 upstreams never refuse one.
		default:
			return nil, fmt.Errorf("retry_on %q is not supported (5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes)", on)
		}
	}
	rp.codes = p.GetRetriableStatusCodes()
	if b := p.GetRetryBackOff(); b != nil {
		if err := onlyFields(b, "base_interval", "max_interval"); err != nil {
			return nil, err
		}
		rp.base = b.GetBaseInterval().AsDuration()
		if rp.base <= 0 {
			return nil, errors.New("retry_back_off.base_interval must be greater than 0")
		}
	}
	rp.max = 10 * rp.base
	if b := p.GetRetryBackOff(); b != nil && b.GetMaxInterval() != nil {
		rp.max = b.GetMaxInterval().AsDuration()
		if rp.max < rp.base {
			return nil, errors.New("retry_back_off.max_interval must not be less than base_interval")
		}
	}
	for _, hp := range p.GetRetryHostPredicate() {
		if hp.GetTypedConfig().GetTypeUrl() != previousHostsPredicate {
			return nil, fmt.Errorf("unsupported retry_host_predicate %q", hp.GetName())
		}
		rp.previousHosts = true
	}
	return rp, nil
}

type lbKind int

const (
	lbRoundRobin lbKind = iota
	lbLeastRequest
	lbRandom
)

// clusterConfig is what one CDS cluster asks for.
type clusterConfig struct {
	name           string
	edsName        string // EDS service name; empty for STATIC
	static         *envoy_config_endpoint_v3.ClusterLoadAssignment
	connectTimeout time.Duration
	lb             lbKind
	choiceCount    int
	panicThreshold float64
	upstreamH2     bool
	useDownstream  bool
	maxConnections int64
	maxPending     int64
	maxRequests    int64
	maxRetries     int64
	outlier        *outlier.Config
}

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

func buildCluster(c *envoy_config_cluster_v3.Cluster) (*clusterConfig, error) {
	if err := onlyFields(c, "name", "type", "eds_cluster_config", "load_assignment", "connect_timeout", "lb_policy", "least_request_lb_config", "common_lb_config", "outlier_detection", "circuit_breakers", "typed_extension_protocol_options", "http2_protocol_options", "metadata"); err != nil {
		return nil, err
	}
	if c.GetName() == "" {
		return nil, errors.New("cluster without a name")
	}
	cc := &clusterConfig{name: c.GetName(), connectTimeout: duration(c.GetConnectTimeout(), 5*time.Second), choiceCount: 2, panicThreshold: 50, maxConnections: 1024, maxPending: 1024, maxRequests: 1024, maxRetries: 3}
	switch c.GetType() {
	case envoy_config_cluster_v3.Cluster_EDS:
		if err := onlyFields(c.GetEdsClusterConfig(), "eds_config", "service_name"); err != nil {
			return nil, err
		}
		if c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
			return nil, errors.New("eds_cluster_config.eds_config must be ads")
		}
		if c.GetLoadAssignment() != nil {
			return nil, errors.New("an EDS cluster must not carry load_assignment")
		}
		cc.edsName = c.GetEdsClusterConfig().GetServiceName()
		if cc.edsName == "" {
			cc.edsName = c.GetName()
		}
	case envoy_config_cluster_v3.Cluster_STATIC:
		if c.GetLoadAssignment() == nil {
			return nil, errors.New("a STATIC cluster needs load_assignment")
		}
		if _, err := buildEndpoints(c.GetLoadAssignment()); err != nil {
			return nil, err
		}
		cc.static = c.GetLoadAssignment()
	default:
		return nil, fmt.Errorf("unsupported cluster type %s: only EDS and STATIC", c.GetType())
	}
	switch c.GetLbPolicy() {
	case envoy_config_cluster_v3.Cluster_ROUND_ROBIN:
	case envoy_config_cluster_v3.Cluster_LEAST_REQUEST:
		cc.lb = lbLeastRequest
		if lr := c.GetLeastRequestLbConfig(); lr != nil {
			if err := onlyFields(lr, "choice_count"); err != nil {
				return nil, err
			}
			cc.choiceCount = int(u32(lr.GetChoiceCount(), 2))
			if cc.choiceCount < 2 {
				return nil, errors.New("least_request_lb_config.choice_count must be at least 2")
			}
		}
	case envoy_config_cluster_v3.Cluster_RANDOM:
		cc.lb = lbRandom
	default:
		return nil, fmt.Errorf("unsupported lb_policy %s: ROUND_ROBIN, LEAST_REQUEST or RANDOM", c.GetLbPolicy())
	}
	if c.GetLeastRequestLbConfig() != nil && cc.lb != lbLeastRequest {
		return nil, errors.New("least_request_lb_config needs lb_policy LEAST_REQUEST")
	}
	if cl := c.GetCommonLbConfig(); cl != nil {
		if err := onlyFields(cl, "healthy_panic_threshold"); err != nil {
			return nil, err
		}
		if cl.GetHealthyPanicThreshold() != nil {
			cc.panicThreshold = cl.GetHealthyPanicThreshold().GetValue()
		}
	}
	if c.GetHttp2ProtocolOptions() != nil {
		cc.upstreamH2 = true
	}
	for k, v := range c.GetTypedExtensionProtocolOptions() {
		if k != httpProtocolOptionsKey {
			return nil, fmt.Errorf("unsupported typed_extension_protocol_options %q", k)
		}
		po := &envoy_extensions_upstreams_http_v3.HttpProtocolOptions{}
		if err := v.UnmarshalTo(po); err != nil {
			return nil, fmt.Errorf("failed to decode %s: %w", k, err)
		}
		if err := onlyFields(po, "explicit_http_config", "use_downstream_protocol_config"); err != nil {
			return nil, err
		}
		switch {
		case po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil:
			cc.upstreamH2 = true
		case po.GetExplicitHttpConfig().GetHttpProtocolOptions() != nil:
		case po.GetUseDownstreamProtocolConfig() != nil:
			cc.useDownstream = true
		default:
			return nil, fmt.Errorf("%s: only explicit_http_config (HTTP/1.1 or HTTP/2) and use_downstream_protocol_config", k)
		}
	}
	if cb := c.GetCircuitBreakers(); cb != nil {
		if err := onlyFields(cb, "thresholds"); err != nil {
			return nil, err
		}
		for _, t := range cb.GetThresholds() {
			if err := onlyFields(t, "priority", "max_connections", "max_pending_requests", "max_requests", "max_retries"); err != nil {
				return nil, err
			}
			if t.GetPriority() != envoy_config_core_v3.RoutingPriority_DEFAULT {
				continue // only default-priority routes exist in weir-proxy
			}
			cc.maxConnections = int64(u32(t.GetMaxConnections(), 1024))
			cc.maxPending = int64(u32(t.GetMaxPendingRequests(), 1024))
			cc.maxRequests = int64(u32(t.GetMaxRequests(), 1024))
			cc.maxRetries = int64(u32(t.GetMaxRetries(), 3))
		}
	}
	if od := c.GetOutlierDetection(); od != nil {
		if err := onlyFields(od, "consecutive_5xx", "enforcing_consecutive_5xx", "consecutive_gateway_failure", "enforcing_consecutive_gateway_failure",
			"split_external_local_origin_errors", "consecutive_local_origin_failure", "enforcing_consecutive_local_origin_failure",
			"interval", "base_ejection_time", "max_ejection_time", "max_ejection_percent", "always_eject_one_host",
			"enforcing_success_rate", "success_rate_minimum_hosts", "success_rate_request_volume", "success_rate_stdev_factor",
			"enforcing_failure_percentage", "failure_percentage_threshold", "failure_percentage_minimum_hosts", "failure_percentage_request_volume"); err != nil {
			return nil, err
		}
		d := outlier.Defaults()
		cfg := outlier.Config{
			Consecutive5xx:                         u32(od.GetConsecutive_5Xx(), d.Consecutive5xx),
			EnforcingConsecutive5xx:                u32(od.GetEnforcingConsecutive_5Xx(), d.EnforcingConsecutive5xx),
			ConsecutiveGatewayFailure:              u32(od.GetConsecutiveGatewayFailure(), d.ConsecutiveGatewayFailure),
			EnforcingConsecutiveGatewayFailure:     u32(od.GetEnforcingConsecutiveGatewayFailure(), d.EnforcingConsecutiveGatewayFailure),
			SplitExternalLocalOriginErrors:         od.GetSplitExternalLocalOriginErrors(),
			ConsecutiveLocalOriginFailure:          u32(od.GetConsecutiveLocalOriginFailure(), d.ConsecutiveLocalOriginFailure),
			EnforcingConsecutiveLocalOriginFailure: u32(od.GetEnforcingConsecutiveLocalOriginFailure(), d.EnforcingConsecutiveLocalOriginFailure),
			Interval:                               duration(od.GetInterval(), d.Interval),
			BaseEjectionTime:                       duration(od.GetBaseEjectionTime(), d.BaseEjectionTime),
			MaxEjectionTime:                        duration(od.GetMaxEjectionTime(), d.MaxEjectionTime),
			MaxEjectionPercent:                     u32(od.GetMaxEjectionPercent(), d.MaxEjectionPercent),
			AlwaysEjectOneHost:                     od.GetAlwaysEjectOneHost().GetValue(),
			EnforcingSuccessRate:                   u32(od.GetEnforcingSuccessRate(), d.EnforcingSuccessRate),
			SuccessRateMinimumHosts:                u32(od.GetSuccessRateMinimumHosts(), d.SuccessRateMinimumHosts),
			SuccessRateRequestVolume:               u32(od.GetSuccessRateRequestVolume(), d.SuccessRateRequestVolume),
			SuccessRateStdevFactor:                 u32(od.GetSuccessRateStdevFactor(), d.SuccessRateStdevFactor),
			EnforcingFailurePercentage:             u32(od.GetEnforcingFailurePercentage(), d.EnforcingFailurePercentage),
			FailurePercentageThreshold:             u32(od.GetFailurePercentageThreshold(), d.FailurePercentageThreshold),
			FailurePercentageMinimumHosts:          u32(od.GetFailurePercentageMinimumHosts(), d.FailurePercentageMinimumHosts),
			FailurePercentageRequestVolume:         u32(od.GetFailurePercentageRequestVolume(), d.FailurePercentageRequestVolume),
		}
		if cfg.Interval <= 0 {
			return nil, errors.New("outlier_detection.interval must be greater than 0")
		}
		if cfg.MaxEjectionTime < cfg.BaseEjectionTime && od.GetMaxEjectionTime() != nil {
			return nil, errors.New("outlier_detection.max_ejection_time must not be less than base_ejection_time")
		}
		cc.outlier = &cfg
	}
	return cc, nil
}

// endpointSpec is one endpoint of a ClusterLoadAssignment.
type endpointSpec struct {
	addr    string
	healthy bool
}

func buildEndpoints(cla *envoy_config_endpoint_v3.ClusterLoadAssignment) ([]endpointSpec, error) {
	if err := onlyFields(cla, "cluster_name", "endpoints", "policy"); err != nil {
		return nil, err
	}
	if p := cla.GetPolicy(); p != nil {
		if err := onlyFields(p, "overprovisioning_factor", "endpoint_stale_after"); err != nil {
			return nil, err
		}
		if p.GetEndpointStaleAfter() != nil {
			return nil, errors.New("policy.endpoint_stale_after is not supported")
		}
	}
	var out []endpointSpec
	var weight uint32
	for _, le := range cla.GetEndpoints() {
		if err := onlyFields(le, "locality", "lb_endpoints", "load_balancing_weight", "priority", "metadata"); err != nil {
			return nil, err
		}
		if le.GetPriority() != 0 {
			return nil, fmt.Errorf("cluster %q: endpoint priority %d is not supported (only 0)", cla.GetClusterName(), le.GetPriority())
		}
		for _, e := range le.GetLbEndpoints() {
			if err := onlyFields(e, "endpoint", "health_status", "load_balancing_weight", "metadata"); err != nil {
				return nil, err
			}
			w := u32(e.GetLoadBalancingWeight(), 1)
			if weight == 0 {
				weight = w
			} else if w != weight {
				return nil, fmt.Errorf("cluster %q: unequal endpoint load_balancing_weight is not supported", cla.GetClusterName())
			}
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil || sa.GetPortValue() == 0 || sa.GetProtocol() != envoy_config_core_v3.SocketAddress_TCP {
				return nil, fmt.Errorf("cluster %q: endpoint needs a TCP socket_address with port_value", cla.GetClusterName())
			}
			if net.ParseIP(sa.GetAddress()) == nil {
				return nil, fmt.Errorf("cluster %q: endpoint address %q is not an IP", cla.GetClusterName(), sa.GetAddress())
			}
			hs := e.GetHealthStatus()
			healthy := hs == envoy_config_core_v3.HealthStatus_UNKNOWN || hs == envoy_config_core_v3.HealthStatus_HEALTHY || hs == envoy_config_core_v3.HealthStatus_DEGRADED
			out = append(out, endpointSpec{addr: net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), healthy: healthy})
		}
	}
	return out, nil
}
