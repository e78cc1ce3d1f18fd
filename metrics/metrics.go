// Package metrics checks a Canary's metrics against Prometheus: the built-in
// gates (request-success-rate, error-rate, request-duration) computed from
// the Envoy statistics weir's sidecars export, and custom PromQL templates.
// Every metric gets a verdict; a query that fails, finds no data or yields
// NaN or ±Inf is a failed verdict with its own reason, never a pass.
package metrics

import (
	"context"
	"flag"
	"time"

	"github.com/weir-dev/weir/canary/v1alpha1"
)

// Reasons of a failed verdict, recorded in MetricVerdict.Reason.
const (
	// ReasonOutOfRange: the metric had a value and it was outside its bound.
	ReasonOutOfRange = "OutOfRange"
	// ReasonNoData: the query answered no sample, or NaN or ±Inf (e.g. no
	// requests reached the canary during the window).
	ReasonNoData = "NoData"
	// ReasonQueryError: the query could not be built or run, the server was
	// unreachable or slow, or it answered an error or several series.
	ReasonQueryError = "QueryError"
)

// Checker runs the metric checks of a Canary's analysis.
type Checker interface {
	// Check evaluates every metric of c.Spec.Analysis.Metrics against the
	// canary; one verdict per metric in spec order. A failed query, no
	// data, NaN/Inf or an unreachable server is a failed verdict with its
	// reason, never a pass.
	Check(ctx context.Context, c *v1alpha1.Canary) []v1alpha1.MetricVerdict
}

// DefaultAddress and DefaultTimeout are the defaults of the flags.
const (
	DefaultAddress = "http://prometheus:9090"
	DefaultTimeout = 5 * time.Second
)

// Options configure the Prometheus client.
type Options struct {
	// Address is the base URL of the Prometheus HTTP API.
	Address string
	// Timeout bounds each query; DefaultTimeout when zero.
	Timeout time.Duration
	// BearerTokenFile holds a token sent as "Authorization: Bearer". It is
	// read for every request, so a rotated token is picked up.
	BearerTokenFile string
	// Username and PasswordFile are sent as HTTP basic auth; the password
	// file is read for every request.
	Username     string
	PasswordFile string
	// InsecureSkipVerify disables TLS certificate verification.
	InsecureSkipVerify bool
}

// BindFlags registers the options as flags on fs, with their defaults.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Address, "metrics-server", DefaultAddress,
		"Base URL of the Prometheus server that the canary metrics are queried from.")
	fs.DurationVar(&o.Timeout, "metrics-server-timeout", DefaultTimeout,
		"Timeout of one Prometheus query.")
	fs.StringVar(&o.BearerTokenFile, "metrics-server-bearer-token-file", "",
		"File with a bearer token for the Prometheus server; read for every request.")
	fs.StringVar(&o.Username, "metrics-server-username", "",
		"Username for HTTP basic auth to the Prometheus server.")
	fs.StringVar(&o.PasswordFile, "metrics-server-password-file", "",
		"File with the password for HTTP basic auth to the Prometheus server; read for every request.")
	fs.BoolVar(&o.InsecureSkipVerify, "metrics-server-insecure-skip-verify", false,
		"Do not verify the Prometheus server's TLS certificate.")
}
