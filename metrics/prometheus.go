package metrics

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/weir-dev/weir/canary/v1alpha1"
)

// ErrNoData is wrapped by the errors of queries that answered no sample, NaN
// or ±Inf.
var ErrNoData = errors.New("no data")

// Prometheus is a Checker that queries a Prometheus server. It is safe for
// concurrent use.
type Prometheus struct {
	api     promv1.API
	http    *http.Client
	address string
	timeout time.Duration
}

var _ Checker = (*Prometheus)(nil)

// NewPrometheus returns a Checker for the Prometheus server of o. It checks
// the options and that the credential files can be read, but does not
// contact the server.
func NewPrometheus(o Options) (*Prometheus, error) {
	u, err := url.Parse(o.Address)
	if err != nil {
		return nil, fmt.Errorf("invalid metrics server address %q: %w", o.Address, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid metrics server address %q: want http(s)://host[:port][/path]", o.Address)
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("invalid metrics server timeout %s: must not be negative", o.Timeout)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	rt, err := newTransport(o)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: rt}
	c, err := api.NewClient(api.Config{Address: o.Address, Client: hc})
	if err != nil {
		return nil, fmt.Errorf("failed to create Prometheus client for %s: %w", o.Address, err)
	}
	return &Prometheus{api: promv1.NewAPI(c), http: hc, address: o.Address, timeout: o.Timeout}, nil
}

// CloseIdleConnections closes the client's idle connections to the server.
func (p *Prometheus) CloseIdleConnections() { p.http.CloseIdleConnections() }

// Result is one metric's check with what a log line or event wants besides
// the verdict.
type Result struct {
	// Verdict is the metric's verdict.
	Verdict v1alpha1.MetricVerdict
	// Query is the PromQL that was run; empty when it could not be built.
	Query string
	// Err says why the verdict failed with NoData or QueryError; nil when
	// the query gave a value. Verdict.Message holds its text.
	Err error
}

// Check implements Checker.
func (p *Prometheus) Check(ctx context.Context, c *v1alpha1.Canary) []v1alpha1.MetricVerdict {
	results := p.Evaluate(ctx, c)
	verdicts := make([]v1alpha1.MetricVerdict, len(results))
	for i, r := range results {
		verdicts[i] = r.Verdict
	}
	return verdicts
}

// Evaluate runs the metrics of c's analysis concurrently, each bounded by
// the query timeout, and returns their results in spec order.
func (p *Prometheus) Evaluate(ctx context.Context, c *v1alpha1.Canary) []Result {
	metrics := c.Spec.Analysis.Metrics
	results := make([]Result, len(metrics))
	var wg sync.WaitGroup
	for i := range metrics {
		wg.Go(func() { results[i] = p.evaluate(ctx, c, &metrics[i]) })
	}
	wg.Wait()
	return results
}

// evaluate builds, runs and judges one metric.
func (p *Prometheus) evaluate(ctx context.Context, c *v1alpha1.Canary, m *v1alpha1.CanaryMetric) Result {
	r := Result{Verdict: v1alpha1.MetricVerdict{Metric: m.Name, Bound: formatBound(m.ThresholdRange)}}
	fail := func(reason string, err error) Result {
		r.Verdict.Reason, r.Verdict.Message, r.Err = reason, verdictMessage(err), err
		return r
	}
	if m.ThresholdRange.Min == nil && m.ThresholdRange.Max == nil {
		return fail(ReasonQueryError, errors.New("thresholdRange needs min or max"))
	}
	q, err := BuildQuery(c, m)
	if err != nil {
		return fail(ReasonQueryError, err)
	}
	r.Query = q
	v, err := p.Query(ctx, q)
	switch {
	case errors.Is(err, ErrNoData):
		return fail(ReasonNoData, err)
	case err != nil:
		return fail(ReasonQueryError, err)
	}
	r.Verdict.Value = formatValue(v)
	if !within(v, m.ThresholdRange) {
		r.Verdict.Reason = ReasonOutOfRange
		return r
	}
	r.Verdict.Passed = true
	return r
}

// maxMessage caps a verdict's message, which is kept in the Canary's status.
const maxMessage = 512

// verdictMessage is err's text, cut to maxMessage bytes.
func verdictMessage(err error) string {
	m := err.Error()
	if len(m) > maxMessage {
		m = strings.ToValidUTF8(m[:maxMessage-len("…")], "") + "…"
	}
	return m
}

// BuildQuery returns the PromQL of metric m of c: its query template if it
// has one, else the built-in query of that name.
func BuildQuery(c *v1alpha1.Canary, m *v1alpha1.CanaryMetric) (string, error) {
	vars := templateVars(c, m)
	tmpl := m.Query
	if tmpl == "" {
		var ok bool
		if tmpl, ok = builtinQueries[m.Name]; !ok {
			return "", fmt.Errorf("metric %q is not built-in (%s, %s, %s) and has no query", m.Name,
				v1alpha1.MetricRequestSuccessRate, v1alpha1.MetricErrorRate, v1alpha1.MetricRequestDuration)
		}
		vars[varCluster] = CanaryCluster(c)
	}
	q, err := Render(tmpl, vars)
	if err != nil {
		return "", fmt.Errorf("metric %q: %w", m.Name, err)
	}
	return q, nil
}

// Query runs an instant query whose answer must be a scalar or a vector of
// one sample, and returns its value. No sample, NaN or ±Inf is an error
// wrapping ErrNoData.
func (p *Prometheus) Query(ctx context.Context, promql string) (float64, error) {
	qctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, _, err := p.api.Query(qctx, promql, time.Time{}, promv1.WithTimeout(p.timeout))
	if err != nil {
		if ctx.Err() == nil && errors.Is(qctx.Err(), context.DeadlineExceeded) {
			return 0, fmt.Errorf("query to %s timed out after %s: %w", p.address, p.timeout, err)
		}
		return 0, fmt.Errorf("query to %s failed: %w%s", p.address, err, errorDetail(err))
	}
	var f float64
	switch v := v.(type) {
	case *model.Scalar:
		f = float64(v.Value)
	case model.Vector:
		switch len(v) {
		case 0:
			return 0, fmt.Errorf("%w: the query returned no series", ErrNoData)
		case 1:
			f = float64(v[0].Value)
		default:
			return 0, fmt.Errorf("the query returned %d series, want one: %s", len(v), seriesList(v))
		}
	default:
		return 0, fmt.Errorf("the query returned a %s, want a scalar or a vector of one sample", v.Type())
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%w: the query returned %s (no requests in the window?)", ErrNoData, formatValue(f))
	}
	return f, nil
}

// Query runs one instant query against the Prometheus at addr with the
// default timeout, for tests and tools; see (*Prometheus).Query.
func Query(ctx context.Context, addr, promql string) (float64, error) {
	p, err := NewPrometheus(Options{Address: addr})
	if err != nil {
		return 0, err
	}
	defer p.CloseIdleConnections()
	return p.Query(ctx, promql)
}

// errorDetail returns what the server said along with an HTTP status that
// the client does not read as an API error (e.g. 503 with the error
// envelope, or a proxy's 502 page), prefixed with ": ", or "".
func errorDetail(err error) string {
	var apiErr *promv1.Error
	if !errors.As(err, &apiErr) || apiErr.Detail == "" {
		return ""
	}
	var envelope struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(apiErr.Detail), &envelope) == nil && envelope.Error != "" {
		return ": " + envelope.Error
	}
	d := strings.TrimSpace(apiErr.Detail)
	if len(d) > 200 {
		d = strings.ToValidUTF8(d[:200], "") + "…"
	}
	return ": " + d
}

// seriesList names up to three series of v.
func seriesList(v model.Vector) string {
	var names []string
	for i, s := range v {
		if i == 3 {
			names = append(names, "…")
			break
		}
		names = append(names, s.Metric.String())
	}
	return strings.Join(names, ", ")
}

// within reports whether v lies in r (bounds included).
func within(v float64, r v1alpha1.ThresholdRange) bool {
	return (r.Min == nil || v >= *r.Min) && (r.Max == nil || v <= *r.Max)
}

// formatBound renders r as ">= min", "<= max" or "min .. max".
func formatBound(r v1alpha1.ThresholdRange) string {
	switch {
	case r.Min != nil && r.Max != nil:
		return formatValue(*r.Min) + " .. " + formatValue(*r.Max)
	case r.Min != nil:
		return ">= " + formatValue(*r.Min)
	case r.Max != nil:
		return "<= " + formatValue(*r.Max)
	}
	return ""
}

// formatValue renders v with at most six significant digits and without an
// exponent: 99.5, 750, 0.000123, 1234570.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	r, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 6, 64), 64)
	return strconv.FormatFloat(r, 'f', -1, 64)
}

// newTransport returns the HTTP transport of the client: its own connection
// pool and TLS settings, and the credentials of o added to each request.
func newTransport(o Options) (http.RoundTripper, error) {
	if o.BearerTokenFile != "" && (o.Username != "" || o.PasswordFile != "") {
		return nil, errors.New("metrics server: set either a bearer token file or basic auth, not both")
	}
	if o.PasswordFile != "" && o.Username == "" {
		return nil, errors.New("metrics server: a password file needs a username")
	}
	for _, f := range []string{o.BearerTokenFile, o.PasswordFile} {
		if f == "" {
			continue
		}
		if _, err := readSecret(f); err != nil {
			return nil, err
		}
	}
	base := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		TLSClientConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: o.InsecureSkipVerify, //nolint:gosec // opt-in by flag for self-signed servers
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	if o.BearerTokenFile == "" && o.Username == "" {
		return base, nil
	}
	return &authTransport{base: base, bearerTokenFile: o.BearerTokenFile, username: o.Username, passwordFile: o.PasswordFile}, nil
}

// authTransport adds the Authorization header to a copy of every request.
type authTransport struct {
	base            http.RoundTripper
	bearerTokenFile string
	username        string
	passwordFile    string
}

// RoundTrip implements http.RoundTripper. It never modifies req.
func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	switch {
	case t.bearerTokenFile != "":
		tok, err := readSecret(t.bearerTokenFile)
		if err != nil {
			return nil, closeBody(req, err)
		}
		r.Header.Set("Authorization", "Bearer "+tok)
	default:
		var pass string
		if t.passwordFile != "" {
			p, err := readSecret(t.passwordFile)
			if err != nil {
				return nil, closeBody(req, err)
			}
			pass = p
		}
		r.SetBasicAuth(t.username, pass)
	}
	return t.base.RoundTrip(r)
}

// closeBody closes req's body, as a RoundTripper must even on error, and
// returns err.
func closeBody(req *http.Request, err error) error {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	return err
}

// readSecret returns the content of a credential file without surrounding
// whitespace.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("failed to read metrics server credentials: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
