// Package outlier implements Envoy's outlier detection for one cluster:
// consecutive 5xx, consecutive gateway failure, consecutive local-origin
// failure, success rate and failure percentage, with Envoy's ejection-time
// back-off and max_ejection_percent rule.
//
// Results are reported from the request path with atomics only; the
// detector's mutex is taken when a host crosses a threshold (rare) and by the
// interval sweep.
package outlier

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Config holds the fields of envoy.config.cluster.v3.OutlierDetection that
// the detector honours, with Envoy's defaults already applied.
type Config struct {
	Consecutive5xx                         uint32
	EnforcingConsecutive5xx                uint32
	ConsecutiveGatewayFailure              uint32
	EnforcingConsecutiveGatewayFailure     uint32
	SplitExternalLocalOriginErrors         bool
	ConsecutiveLocalOriginFailure          uint32
	EnforcingConsecutiveLocalOriginFailure uint32
	Interval                               time.Duration
	BaseEjectionTime                       time.Duration
	MaxEjectionTime                        time.Duration
	MaxEjectionPercent                     uint32
	AlwaysEjectOneHost                     bool
	EnforcingSuccessRate                   uint32
	SuccessRateMinimumHosts                uint32
	SuccessRateRequestVolume               uint32
	SuccessRateStdevFactor                 uint32
	EnforcingFailurePercentage             uint32
	FailurePercentageThreshold             uint32
	FailurePercentageMinimumHosts          uint32
	FailurePercentageRequestVolume         uint32
}

// Defaults returns Envoy's documented defaults for every field.
func Defaults() Config {
	return Config{
		Consecutive5xx:                         5,
		EnforcingConsecutive5xx:                100,
		ConsecutiveGatewayFailure:              5,
		EnforcingConsecutiveGatewayFailure:     0,
		ConsecutiveLocalOriginFailure:          5,
		EnforcingConsecutiveLocalOriginFailure: 100,
		Interval:                               10 * time.Second,
		BaseEjectionTime:                       30 * time.Second,
		MaxEjectionTime:                        300 * time.Second,
		MaxEjectionPercent:                     10,
		EnforcingSuccessRate:                   100,
		SuccessRateMinimumHosts:                5,
		SuccessRateRequestVolume:               100,
		SuccessRateStdevFactor:                 1900,
		EnforcingFailurePercentage:             0,
		FailurePercentageThreshold:             85,
		FailurePercentageMinimumHosts:          5,
		FailurePercentageRequestVolume:         50,
	}
}

// LocalResult is a failure or success that originates in the proxy rather
// than in an upstream response.
type LocalResult int

// Local-origin results, as Envoy's Result enum.
const (
	LocalConnectSuccess LocalResult = iota
	LocalConnectFailed
	LocalTimeout
	LocalReset
)

// Host is the detector's state for one endpoint. The zero value is ready.
type Host struct {
	ejected     atomic.Bool
	consec5xx   atomic.Uint32
	consecGw    atomic.Uint32
	consecLocal atomic.Uint32
	total       atomic.Uint64
	success     atomic.Uint64

	// Guarded by Detector.mu.
	numEjections   uint32
	backoff        uint32
	lastEjection   time.Time
	lastUnejection time.Time
}

// Ejected reports whether the host is currently ejected.
func (h *Host) Ejected() bool { return h.ejected.Load() }

// NumEjections is how many times the host has been ejected.
func (h *Host) NumEjections(d *Detector) uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return h.numEjections
}

// Detector runs outlier detection over the hosts of one cluster.
type Detector struct {
	mu     sync.Mutex
	cfg    atomic.Pointer[Config]
	hosts  []*Host
	active int
	// Now is the clock; tests replace it.
	Now func() time.Time
	// Chance returns true with the given percent probability; tests replace it.
	Chance func(percent uint32) bool
	// OnChange is called, without the lock held, after the set of ejected
	// hosts changed.
	OnChange func()
	// OnEject is called, without the lock held, for each enforced ejection.
	OnEject func()
}

// New returns a detector with the given config (nil disables detection).
func New(cfg *Config) *Detector {
	d := &Detector{
		Now: time.Now,
		Chance: func(p uint32) bool {
			return p >= 100 || (p > 0 && rand.Uint32N(100) < p)
		},
	}
	d.cfg.Store(cfg)
	return d
}

// Config returns the current config, nil when disabled.
func (d *Detector) Config() *Config {
	return d.cfg.Load()
}

// SetConfig replaces the config; nil disables detection and un-ejects every
// host.
func (d *Detector) SetConfig(cfg *Config) {
	d.mu.Lock()
	d.cfg.Store(cfg)
	changed := false
	if cfg == nil {
		for _, h := range d.hosts {
			if h.ejected.Load() {
				h.ejected.Store(false)
				changed = true
			}
		}
		d.active = 0
	}
	d.mu.Unlock()
	if changed && d.OnChange != nil {
		d.OnChange()
	}
}

// SetHosts replaces the monitored hosts (the cluster's endpoints).
func (d *Detector) SetHosts(hosts []*Host) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hosts = hosts
	d.active = 0
	for _, h := range hosts {
		if h.ejected.Load() {
			d.active++
		}
	}
}

// Active is the number of hosts currently ejected.
func (d *Detector) Active() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.active
}

// PutHTTPStatus records an upstream response code for h.
func (d *Detector) PutHTTPStatus(h *Host, code int) {
	cfg := d.loadCfg()
	if cfg == nil {
		return
	}
	h.total.Add(1)
	if code >= 500 && code < 600 {
		if code == 502 || code == 503 || code == 504 {
			if h.consecGw.Add(1) == cfg.ConsecutiveGatewayFailure {
				d.tryEject(h, cfg.EnforcingConsecutiveGatewayFailure)
			}
		} else if h.consecGw.Load() != 0 {
			h.consecGw.Store(0)
		}
		if h.consec5xx.Add(1) == cfg.Consecutive5xx {
			d.tryEject(h, cfg.EnforcingConsecutive5xx)
		}
		return
	}
	h.success.Add(1)
	if h.consec5xx.Load() != 0 {
		h.consec5xx.Store(0)
	}
	if h.consecGw.Load() != 0 {
		h.consecGw.Store(0)
	}
}

// PutLocal records a local-origin result for h. Unless
// split_external_local_origin_errors is set, failures count as 5xx (503 for
// connect failures and resets, 504 for timeouts) and successes are ignored,
// as in Envoy.
func (d *Detector) PutLocal(h *Host, r LocalResult) {
	cfg := d.loadCfg()
	if cfg == nil {
		return
	}
	if !cfg.SplitExternalLocalOriginErrors {
		switch r {
		case LocalConnectFailed, LocalReset:
			d.PutHTTPStatus(h, 503)
		case LocalTimeout:
			d.PutHTTPStatus(h, 504)
		}
		return
	}
	if r == LocalConnectSuccess {
		if h.consecLocal.Load() != 0 {
			h.consecLocal.Store(0)
		}
		return
	}
	if h.consecLocal.Add(1) == cfg.ConsecutiveLocalOriginFailure {
		d.tryEject(h, cfg.EnforcingConsecutiveLocalOriginFailure)
	}
}

func (d *Detector) loadCfg() *Config { return d.cfg.Load() }

func (d *Detector) tryEject(h *Host, enforcing uint32) {
	d.mu.Lock()
	ok := d.ejectLocked(h, enforcing)
	d.mu.Unlock()
	if ok {
		d.notify(1)
	}
}

func (d *Detector) notify(ejections int) {
	if d.OnEject != nil {
		for range ejections {
			d.OnEject()
		}
	}
	if d.OnChange != nil {
		d.OnChange()
	}
}

// ejectLocked applies Envoy's rule: eject only when
// (ejected+1)/hosts ≤ max_ejection_percent (or always_eject_one_host and
// nothing is ejected), and only with the enforcing probability.
func (d *Detector) ejectLocked(h *Host, enforcing uint32) bool {
	cfg := d.cfg.Load()
	if cfg == nil || h.ejected.Load() || len(d.hosts) == 0 || !d.monitored(h) {
		return false
	}
	maxPct := math.Min(100, float64(cfg.MaxEjectionPercent))
	pct := 100 * float64(d.active+1) / float64(len(d.hosts))
	if pct > maxPct && !(cfg.AlwaysEjectOneHost && d.active == 0) {
		return false
	}
	if !d.Chance(enforcing) {
		return false
	}
	d.active++
	h.ejected.Store(true)
	h.numEjections++
	base := cfg.BaseEjectionTime
	if base > 0 && time.Duration(h.backoff+1)*base < cfg.MaxEjectionTime+base {
		h.backoff++
	}
	h.lastEjection = d.Now()
	return true
}

func (d *Detector) monitored(h *Host) bool {
	for _, x := range d.hosts {
		if x == h {
			return true
		}
	}
	return false
}

// Sweep is the interval timer: it un-ejects hosts whose ejection time has
// passed, decays the back-off of healthy hosts, and runs the success-rate and
// failure-percentage algorithms over the interval's counters.
func (d *Detector) Sweep() {
	d.mu.Lock()
	cfg := d.cfg.Load()
	if cfg == nil {
		d.mu.Unlock()
		return
	}
	now := d.Now()
	changed := false
	for _, h := range d.hosts {
		if !h.ejected.Load() {
			if !h.lastUnejection.IsZero() && !h.lastUnejection.Add(cfg.BaseEjectionTime).After(now) && h.backoff > 0 {
				h.backoff--
			}
			continue
		}
		ejectFor := min(cfg.BaseEjectionTime*time.Duration(h.backoff), cfg.MaxEjectionTime)
		if !h.lastEjection.Add(ejectFor).After(now) {
			h.ejected.Store(false)
			d.active--
			h.consec5xx.Store(0)
			h.consecGw.Store(0)
			h.consecLocal.Store(0)
			h.lastUnejection = now
			changed = true
		}
	}
	ejections := d.successRateLocked(cfg) + d.failurePercentageLocked(cfg)
	for _, h := range d.hosts {
		h.total.Store(0)
		h.success.Store(0)
	}
	d.mu.Unlock()
	if changed || ejections > 0 {
		d.notify(ejections)
	}
}

type sample struct {
	h    *Host
	rate float64
}

func (d *Detector) samplesLocked(volume uint32) []sample {
	var out []sample
	for _, h := range d.hosts {
		t := h.total.Load()
		if t >= uint64(volume) && t > 0 {
			out = append(out, sample{h, 100 * float64(h.success.Load()) / float64(t)})
		}
	}
	return out
}

func (d *Detector) successRateLocked(cfg *Config) int {
	s := d.samplesLocked(cfg.SuccessRateRequestVolume)
	if len(s) == 0 || len(s) < int(cfg.SuccessRateMinimumHosts) {
		return 0
	}
	var sum float64
	for _, x := range s {
		sum += x.rate
	}
	mean := sum / float64(len(s))
	var v float64
	for _, x := range s {
		v += (x.rate - mean) * (x.rate - mean)
	}
	stdev := math.Sqrt(v / float64(len(s)))
	threshold := mean - stdev*float64(cfg.SuccessRateStdevFactor)/1000
	n := 0
	for _, x := range s {
		if x.rate < threshold && d.ejectLocked(x.h, cfg.EnforcingSuccessRate) {
			n++
		}
	}
	return n
}

func (d *Detector) failurePercentageLocked(cfg *Config) int {
	s := d.samplesLocked(cfg.FailurePercentageRequestVolume)
	if len(s) == 0 || len(s) < int(cfg.FailurePercentageMinimumHosts) {
		return 0
	}
	n := 0
	for _, x := range s {
		if 100-x.rate >= float64(cfg.FailurePercentageThreshold) && d.ejectLocked(x.h, cfg.EnforcingFailurePercentage) {
			n++
		}
	}
	return n
}
