package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weir-dev/weir/mesh/proxy/outlier"
)

// handler serves one listener.
type handler struct {
	p *Proxy
	l *listenerRuntime
}

// maxRetryBuffer is how much of a request body is kept for retries, as
// Envoy's default per-connection buffer limit.
const maxRetryBuffer = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// hopHeaders are removed in both directions (canonical keys).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Trailer", "Transfer-Encoding", "Upgrade"}

func localReply(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h["Content-Type"] = textPlain
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(code)
	io.WriteString(w, body)
}

var textPlain = []string{"text/plain"}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	lc := h.l.cfg.Load()
	if (r.ProtoMajor == 2 && !lc.http2) || (r.ProtoMajor == 1 && !lc.http1) {
		localReply(w, http.StatusHTTPVersionNotSupported, "protocol not enabled on this listener")
		return
	}
	rt, c := h.resolve(lc, r.Host, stdRequest{r})
	if rt == nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if d := rt.direct; d != nil {
		if len(d.body) > 0 {
			w.Header()["Content-Length"] = []string{strconv.Itoa(len(d.body))}
		}
		w.WriteHeader(d.status)
		w.Write(d.body)
		return
	}
	if c == nil {
		w.WriteHeader(rt.action.notFoundCode)
		return
	}
	prepareRequestHeaders(r, lc)
	forward(w, r, rt.action, c, start)
}

// resolve finds a request's route (nil: no virtual host or route matches,
// a 404) and, for a route action, the cluster it picks (nil when no such
// cluster is known: the action's cluster_not_found_response_code).
func (h *handler) resolve(lc *listenerConfig, host string, r requestView) (*route, *cluster) {
	table := lc.inline
	if table == nil {
		table = (*h.p.routes.Load())[lc.rdsName]
	}
	if table == nil {
		return nil, nil
	}
	vh := table.match(lc.hostForMatch(host))
	if vh == nil {
		return nil, nil
	}
	rt := vh.match(r)
	if rt == nil || rt.action == nil {
		return rt, nil
	}
	return rt, (*h.p.clusters.Load())[rt.action.pick()]
}

// admit counts a request against the cluster's circuit breakers; when they
// are open it charges the overflow and reports false.
func (c *cluster) admit(cc *clusterConfig) bool {
	if n := c.active.Add(1); n > cc.maxRequests || n > cc.maxConnections+cc.maxPending {
		c.active.Add(-1)
		c.stats.Overflow.Inc()
		c.stats.Response(http.StatusServiceUnavailable, -1)
		return false
	}
	return true
}

const retryLimitReply = "upstream retry limit exceeded"

const overflowReply = "upstream connect error or disconnect/reset before headers. reset reason: overflow"

// takeRetry counts a retry against max_retries; when the budget is spent it
// charges the overflow and reports false.
func (c *cluster) takeRetry(cc *clusterConfig) bool {
	if c.retries.Add(1) > cc.maxRetries {
		c.retries.Add(-1)
		c.stats.Overflow.Inc()
		return false
	}
	c.stats.Retry.Inc()
	return true
}

// failed charges an attempt to h that got no response (f is not
// failDownstream) and returns the local reply that stands for it.
func (c *cluster) failed(h *host, f failure, elapsed time.Duration) (int, string) {
	h.active.Add(-1)
	h.rqErrors.Add(1)
	code, msg := http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	switch f {
	case failConnect:
		c.stats.ConnectFail.Inc()
		c.detector.PutLocal(&h.od, outlier.LocalConnectFailed)
		msg = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	case failReset:
		c.detector.PutLocal(&h.od, outlier.LocalReset)
	case failPerTryTimeout, failGlobalTimeout:
		c.stats.Timeout.Inc()
		c.detector.PutLocal(&h.od, outlier.LocalTimeout)
		code, msg = http.StatusGatewayTimeout, "upstream request timeout"
	}
	c.stats.Response(code, elapsed)
	return code, msg
}

// responded tells the outlier detector and h's counters that h answered.
func (c *cluster) responded(h *host, code int) {
	c.detector.PutLocal(&h.od, outlier.LocalConnectSuccess)
	c.detector.PutHTTPStatus(&h.od, code)
	if code >= 500 {
		h.rqErrors.Add(1)
	}
}

// hostForMatch lower-cases the Host and strips its port as the connection
// manager's strip_*_host_port options say.
func (lc *listenerConfig) hostForMatch(host string) string {
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			host = strings.ToLower(host)
			break
		}
	}
	if lc.stripAnyPort || lc.stripMatchPort {
		if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
			if lc.stripAnyPort || host[i+1:] == strconv.Itoa(lc.port) {
				host = host[:i]
			}
		}
	}
	return host
}

// match finds the virtual host for a Host value: exact, then the longest
// suffix wildcard, then the longest prefix wildcard, then "*", as in Envoy.
func (t *routeTable) match(host string) *virtualHost {
	if vh := t.exact[host]; vh != nil {
		return vh
	}
	for _, s := range t.suffix {
		if len(host) > len(s.part) && strings.HasSuffix(host, s.part) {
			return s.vh
		}
	}
	for _, s := range t.prefix {
		if len(host) > len(s.part) && strings.HasPrefix(host, s.part) {
			return s.vh
		}
	}
	return t.dflt
}

// requestView is what route matching reads of a request: a net/http request
// (stdRequest) or one parsed on an event loop.
type requestView interface {
	escapedPath() string
	requestURI() string
	method() string
	authority() string
	// header returns a regular header's values joined with ",".
	header(name string) (string, bool)
}

// stdRequest is a net/http request as a requestView.
type stdRequest struct{ *http.Request }

func (r stdRequest) escapedPath() string { return r.URL.EscapedPath() }
func (r stdRequest) requestURI() string  { return r.URL.RequestURI() }
func (r stdRequest) method() string      { return r.Method }
func (r stdRequest) authority() string   { return r.Host }

func (r stdRequest) header(name string) (string, bool) {
	vs := r.Header[textproto.CanonicalMIMEHeaderKey(name)]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

func (vh *virtualHost) match(r requestView) *route {
	for _, rt := range vh.routes {
		if rt.matches(r) {
			return rt
		}
	}
	return nil
}

func (rt *route) matches(r requestView) bool {
	path := r.escapedPath()
	switch rt.kind {
	case pathPrefix:
		if rt.caseSensitive {
			if !strings.HasPrefix(path, rt.path) {
				return false
			}
		} else if len(path) < len(rt.path) || !strings.EqualFold(path[:len(rt.path)], rt.path) {
			return false
		}
	case pathExact:
		if rt.caseSensitive {
			if path != rt.path {
				return false
			}
		} else if !strings.EqualFold(path, rt.path) {
			return false
		}
	case pathRegex:
		if !rt.re.MatchString(path) {
			return false
		}
	}
	for i := range rt.headers {
		if !rt.headers[i].matches(r) {
			return false
		}
	}
	return true
}

func headerValue(r requestView, name string) (string, bool) {
	switch name {
	case ":authority":
		return r.authority(), true
	case ":method":
		return r.method(), true
	case ":path":
		return r.requestURI(), true
	case ":scheme":
		return "http", true
	}
	return r.header(name)
}

func (m *headerMatcher) matches(r requestView) bool {
	v, ok := headerValue(r, m.name)
	if !ok && !m.missingEmpty {
		return (m.kind == hdrPresent && !m.present) != m.invert
	}
	var match bool
	if m.ignoreCase {
		v = strings.ToLower(v)
	}
	switch m.kind {
	case hdrExact:
		match = v == m.value
	case hdrPrefix:
		match = strings.HasPrefix(v, m.value)
	case hdrSuffix:
		match = strings.HasSuffix(v, m.value)
	case hdrContains:
		match = strings.Contains(v, m.value)
	case hdrRegex:
		match = m.re.MatchString(v)
	case hdrPresent:
		match = m.present == ok
	case hdrRange:
		n, err := strconv.ParseInt(v, 10, 64)
		match = err == nil && n >= m.start && n < m.end
	}
	return match != m.invert
}

// pick chooses a cluster in proportion to the weights, per request.
func (a *routeAction) pick() string {
	if len(a.clusters) == 1 {
		return a.clusters[0].name
	}
	n := rand.Uint64N(a.total)
	for _, c := range a.clusters {
		if n < c.weight {
			return c.name
		}
		n -= c.weight
	}
	return a.clusters[len(a.clusters)-1].name
}

// prepareRequestHeaders edits the request's own (per-request) header map:
// hop-by-hop headers go, x-forwarded-for/-proto and x-request-id are set as
// Envoy's connection manager does.
func prepareRequestHeaders(r *http.Request, lc *listenerConfig) {
	hdr := r.Header
	if conn, ok := hdr["Connection"]; ok {
		for _, v := range conn {
			for _, tok := range strings.Split(v, ",") {
				if tok = strings.TrimSpace(tok); tok != "" {
					delete(hdr, textproto.CanonicalMIMEHeaderKey(tok))
				}
			}
		}
	}
	for _, k := range hopHeaders {
		delete(hdr, k)
	}
	delete(hdr, "Content-Length") // set again from the body that is sent
	if te, ok := hdr["Te"]; ok && !(len(te) == 1 && strings.EqualFold(te[0], "trailers")) {
		delete(hdr, "Te")
	}
	if lc.useRemoteAddr {
		if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			if prior, ok := hdr["X-Forwarded-For"]; ok && len(prior) > 0 {
				hdr["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
			} else {
				hdr["X-Forwarded-For"] = []string{ip}
			}
		}
	}
	if _, ok := hdr["X-Forwarded-Proto"]; !ok {
		hdr["X-Forwarded-Proto"] = httpScheme
	}
	if _, ok := hdr["X-Request-Id"]; !ok && lc.genRequestID {
		hdr["X-Request-Id"] = []string{newRequestID()}
	}
}

var httpScheme = []string{"http"}

// newRequestID returns a random UUID v4.
func newRequestID() string {
	var s [36]byte
	return string(appendRequestID(s[:0]))
}

// appendRequestID appends a random UUID v4.
func appendRequestID(dst []byte) []byte {
	const hexd = "0123456789abcdef"
	var b [16]byte
	a, c := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		b[i] = byte(a >> (8 * i))
		b[8+i] = byte(c >> (8 * i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	for i, x := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexd[x>>4], hexd[x&0x0f])
	}
	return dst
}

// failure classifies an attempt that got no response.
type failure int

const (
	failNone failure = iota
	failConnect
	failReset
	failPerTryTimeout
	failGlobalTimeout
	failDownstream
)

func classify(err error, deadline time.Time, downstream context.Context) failure {
	var op *net.OpError
	switch {
	case downstream.Err() != nil:
		return failDownstream
	case errors.As(err, &op) && op.Op == "dial":
		return failConnect
	case isTimeout(err):
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return failGlobalTimeout
		}
		return failPerTryTimeout
	}
	return failReset
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func (rp *retryPolicy) retriesFailure(f failure) bool {
	if rp == nil {
		return false
	}
	switch f {
	case failConnect:
		return rp.connectFailure || rp.on5xx || rp.gatewayError
	case failReset:
		return rp.reset || rp.on5xx || rp.gatewayError
	case failPerTryTimeout:
		return rp.on5xx || rp.gatewayError
	}
	return false
}

func (rp *retryPolicy) retriesStatus(code int) bool {
	if rp == nil {
		return false
	}
	if rp.on5xx && code >= 500 {
		return true
	}
	if rp.gatewayError && code >= 502 && code <= 504 {
		return true
	}
	if rp.on409 && code == http.StatusConflict {
		return true
	}
	if rp.retriableCodes {
		for _, c := range rp.codes {
			if int(c) == code {
				return true
			}
		}
	}
	return false
}

// backoff is Envoy's fully jittered exponential retry back-off.
func (rp *retryPolicy) backoff(retry int) time.Duration {
	ceiling := rp.base << min(retry, 30)
	if ceiling > rp.max || ceiling <= 0 {
		ceiling = rp.max
	}
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// forward sends the request upstream with retries and writes the response.
func forward(w http.ResponseWriter, r *http.Request, a *routeAction, c *cluster, start time.Time) {
	cc := c.cfg.Load()
	st := c.stats
	if !c.admit(cc) {
		w.Header()["X-Envoy-Overloaded"] = trueValue
		localReply(w, http.StatusServiceUnavailable, overflowReply)
		return
	}
	defer c.active.Add(-1)

	var deadline time.Time
	if a.timeout > 0 {
		deadline = start.Add(a.timeout)
	}
	rp := a.retry
	maxRetries := 0
	if rp != nil {
		maxRetries = rp.numRetries
	}
	var body []byte
	var stream io.Reader
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		if maxRetries > 0 && r.ContentLength <= maxRetryBuffer {
			// Buffer the body so that a retry can send it again, as Envoy
			// does up to its buffer limit; a larger body is streamed once.
			b, err := io.ReadAll(io.LimitReader(r.Body, maxRetryBuffer+1))
			if err != nil {
				return // downstream went away
			}
			if len(b) > maxRetryBuffer {
				stream, maxRetries = io.MultiReader(bytes.NewReader(b), r.Body), 0
			} else {
				body = b
			}
		} else {
			stream, maxRetries = r.Body, 0
		}
	}
	useH2 := cc.upstreamH2 || (cc.useDownstream && r.ProtoMajor == 2)
	var tried []*host
	retriesHeld := 0
	defer func() { c.retries.Add(int64(-retriesHeld)) }()

	for attempt := 0; ; attempt++ {
		var exclude []*host
		attempts := 0
		if rp != nil && rp.previousHosts {
			exclude, attempts = tried, rp.hostAttempts
		}
		h := c.pick(cc, exclude, attempts)
		if h == nil {
			st.NoneHealthy.Inc()
			st.Response(http.StatusServiceUnavailable, -1)
			localReply(w, http.StatusServiceUnavailable, "no healthy upstream")
			return
		}
		if rp != nil && rp.previousHosts {
			tried = append(tried, h)
		}
		tryDeadline := deadline
		if rp != nil && rp.perTry > 0 {
			if d := time.Now().Add(rp.perTry); tryDeadline.IsZero() || d.Before(tryDeadline) {
				tryDeadline = d
			}
		}
		var reqBody io.Reader
		contentLength := r.ContentLength
		switch {
		case body != nil:
			reqBody, contentLength = bytes.NewReader(body), int64(len(body))
		case stream != nil:
			reqBody = stream
		}
		h.active.Add(1)
		h.rqTotal.Add(1)
		st.Total.Inc()
		t0 := time.Now()
		var resp *http.Response
		var err error
		cancelTry := context.CancelFunc(nil)
		if useH2 {
			ctx := r.Context()
			if !tryDeadline.IsZero() {
				ctx, cancelTry = context.WithDeadline(ctx, tryDeadline)
			}
			out := upstreamRequest(ctx, r, h.addr, reqBody, contentLength)
			resp, err = c.tr.Load().h2.RoundTrip(out)
		} else {
			resp, err = h.pool.do(r.Context(), r, reqBody, contentLength, cc.connectTimeout, tryDeadline)
		}
		retry := false
		if err != nil {
			if cancelTry != nil {
				cancelTry()
			}
			f := classify(err, deadline, r.Context())
			if f == failDownstream {
				h.active.Add(-1)
				h.rqErrors.Add(1)
				return
			}
			code, msg := c.failed(h, f, time.Since(t0))
			if f != failGlobalTimeout && attempt < maxRetries && rp.retriesFailure(f) {
				retry = true
			} else {
				localReply(w, code, msg)
				return
			}
		} else {
			code := resp.StatusCode
			c.responded(h, code)
			if attempt < maxRetries && rp.retriesStatus(code) {
				retry = true
				st.Response(code, time.Since(t0))
				io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				h.active.Add(-1)
				if cancelTry != nil {
					cancelTry()
				}
			} else {
				ok := writeResponse(w, resp)
				h.active.Add(-1)
				if cancelTry != nil {
					cancelTry()
				}
				st.Response(code, time.Since(t0))
				if !ok {
					panic(http.ErrAbortHandler)
				}
				return
			}
		}
		if retry {
			if !c.takeRetry(cc) {
				localReply(w, http.StatusServiceUnavailable, retryLimitReply)
				return
			}
			retriesHeld++
			wait := rp.backoff(attempt)
			timedOut := !deadline.IsZero() && time.Now().Add(wait).After(deadline)
			if timedOut {
				wait = time.Until(deadline)
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
			if timedOut {
				st.Timeout.Inc()
				st.Response(http.StatusGatewayTimeout, -1)
				localReply(w, http.StatusGatewayTimeout, "upstream request timeout")
				return
			}
		}
	}
}

var trueValue = []string{"true"}

// upstreamRequest builds the request for an HTTP/2 (h2c) upstream.
func upstreamRequest(ctx context.Context, r *http.Request, addr string, body io.Reader, contentLength int64) *http.Request {
	u := *r.URL
	u.Scheme, u.Host = "http", addr
	out := &http.Request{
		Method:        r.Method,
		URL:           &u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        r.Header,
		Host:          r.Host,
		ContentLength: contentLength,
	}
	if body != nil {
		out.Body = io.NopCloser(body)
	} else {
		out.ContentLength = 0
	}
	return out.WithContext(ctx)
}

// writeResponse copies an upstream response downstream. It returns false
// when the copy failed after the headers were sent; the caller then resets
// the downstream stream, as Envoy does.
func writeResponse(w http.ResponseWriter, resp *http.Response) bool {
	defer resp.Body.Close()
	dst := w.Header()
	for k, vv := range resp.Header {
		dst[k] = vv
	}
	for _, k := range hopHeaders {
		delete(dst, k)
	}
	if len(resp.Trailer) > 0 {
		for k := range resp.Trailer {
			dst.Add("Trailer", k)
		}
	}
	w.WriteHeader(resp.StatusCode)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	flush := resp.ContentLength < 0
	var fl http.Flusher
	if flush {
		fl, _ = w.(http.Flusher)
	}
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return false
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return false
		}
	}
	for k, vv := range resp.Trailer {
		dst[http.TrailerPrefix+k] = vv
	}
	return true
}
