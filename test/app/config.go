package app

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
)

// Defaults used when the environment leaves a setting out.
const (
	DefaultVersion = "v0"
	DefaultPort    = 8080
	DefaultBindIP  = "0.0.0.0"
)

// MaxLatency bounds the added latency and /delay, so a typo cannot park
// requests for hours.
const MaxLatency = 5 * time.Minute

// Settings is everything the demo app reads from its environment.
type Settings struct {
	// Version is answered by / and exported as a metric label.
	Version string
	// Pod, Namespace and Hostname are echoed in answers.
	Pod, Namespace, Hostname string
	// ErrorRate is the starting fraction (0..1) of requests to / answered 500.
	ErrorRate float64
	// Latency is the starting delay added to every request to /.
	Latency time.Duration
	// Addr is the listen address, ip:port.
	Addr string
}

// SettingsFromEnv reads VERSION, ERROR_RATE, LATENCY, PORT, BIND_IP (or
// POD_IP), POD_NAME and POD_NAMESPACE through getenv. Hostname is left for the
// caller to fill in. Every invalid value is reported, not only the first.
func SettingsFromEnv(getenv func(string) string) (Settings, error) {
	s := Settings{
		Version:   DefaultVersion,
		Pod:       getenv("POD_NAME"),
		Namespace: getenv("POD_NAMESPACE"),
	}
	if v := strings.TrimSpace(getenv("VERSION")); v != "" {
		s.Version = v
	}
	var errs []error
	if v := getenv("ERROR_RATE"); v != "" {
		rate, err := ParseErrorRate(v)
		errs = append(errs, err)
		s.ErrorRate = rate
	}
	if v := getenv("LATENCY"); v != "" {
		d, err := ParseLatency(v)
		errs = append(errs, err)
		s.Latency = d
	}
	addr, err := listenAddr(getenv)
	errs = append(errs, err)
	s.Addr = addr
	if err := errors.Join(errs...); err != nil {
		return Settings{}, fmt.Errorf("invalid environment: %w", err)
	}
	return s, nil
}

func listenAddr(getenv func(string) string) (string, error) {
	ip := DefaultBindIP
	key := "BIND_IP"
	if v := getenv("BIND_IP"); v != "" {
		ip = v
	} else if v := getenv("POD_IP"); v != "" {
		ip, key = v, "POD_IP"
	}
	var errs []error
	if net.ParseIP(ip) == nil {
		errs = append(errs, fmt.Errorf("%s=%q is not an IP address", key, ip))
	}
	port := DefaultPort
	if v := getenv("PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("PORT=%q is not a port number (0..65535)", v))
		}
		port = p
	}
	return net.JoinHostPort(ip, strconv.Itoa(port)), errors.Join(errs...)
}

// ParseErrorRate parses a fraction between 0 and 1.
func ParseErrorRate(v string) (float64, error) {
	rate, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return 0, fmt.Errorf("ERROR_RATE=%q is not a number", v)
	}
	if err := checkErrorRate(rate); err != nil {
		return 0, fmt.Errorf("ERROR_RATE=%q: %w", v, err)
	}
	return rate, nil
}

func checkErrorRate(rate float64) error {
	if math.IsNaN(rate) || rate < 0 || rate > 1 {
		return fmt.Errorf("error rate %v must be between 0 and 1", rate)
	}
	return nil
}

// ParseLatency parses a Go duration between 0 and MaxLatency.
func ParseLatency(v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("LATENCY=%q is not a duration like 200ms", v)
	}
	if err := checkLatency(d); err != nil {
		return 0, fmt.Errorf("LATENCY=%q: %w", v, err)
	}
	return d, nil
}

func checkLatency(d time.Duration) error {
	if d < 0 || d > MaxLatency {
		return fmt.Errorf("latency %s must be between 0 and %s", d, MaxLatency)
	}
	return nil
}
