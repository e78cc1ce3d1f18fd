package outlier

import (
	"testing"
	"time"
)

// fakeClock is a settable clock for the detector.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) advance(d time.Duration) { c.now = c.now.Add(d) }

func newDetector(t *testing.T, cfg Config, n int) (*Detector, []*Host, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: time.Unix(1000, 0)}
	d := New(&cfg)
	d.Now = clock.Now
	hosts := make([]*Host, n)
	for i := range hosts {
		hosts[i] = &Host{}
	}
	d.SetHosts(hosts)
	return d, hosts, clock
}

func config(mut func(*Config)) Config {
	c := Defaults()
	c.BaseEjectionTime = 10 * time.Second
	c.Interval = time.Second
	c.MaxEjectionPercent = 100
	c.Consecutive5xx = 3
	if mut != nil {
		mut(&c)
	}
	return c
}

func TestConsecutive5xx(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		results []int // HTTP codes; 0 means a local connect failure
		ejected bool
	}{
		{"ejected at the 3rd consecutive 5xx", config(nil), []int{500, 502, 503}, true},
		{"a success resets the count", config(nil), []int{500, 500, 200, 500, 500}, false},
		{"local connect failures count as 5xx", config(nil), []int{0, 0, 0}, true},
		{"local failures do not count when split", config(func(c *Config) { c.SplitExternalLocalOriginErrors = true; c.ConsecutiveLocalOriginFailure = 5 }), []int{0, 0, 0}, false},
		{"split: local failures eject at consecutive_local_origin_failure", config(func(c *Config) { c.SplitExternalLocalOriginErrors = true; c.ConsecutiveLocalOriginFailure = 2 }), []int{0, 0}, true},
		{"4xx is a success", config(nil), []int{500, 500, 404, 500}, false},
		{"enforcing 0 never ejects", config(func(c *Config) { c.EnforcingConsecutive5xx = 0 }), []int{500, 500, 500, 500}, false},
		{"gateway failures eject only when enforced", config(func(c *Config) {
			c.Consecutive5xx = 100
			c.ConsecutiveGatewayFailure = 2
			c.EnforcingConsecutiveGatewayFailure = 100
		}), []int{503, 504}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, hosts, _ := newDetector(t, tt.cfg, 2)
			for _, r := range tt.results {
				if r == 0 {
					d.PutLocal(hosts[0], LocalConnectFailed)
				} else {
					d.PutHTTPStatus(hosts[0], r)
				}
			}
			if got := hosts[0].Ejected(); got != tt.ejected {
				t.Errorf("ejected = %v, want %v", got, tt.ejected)
			}
		})
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		name       string
		hosts      int
		maxPercent uint32
		always     bool
		want       int
	}{
		{"4 hosts, 50%", 4, 50, false, 2},
		{"3 hosts, 34%: (1+1)/3 > 34%", 3, 34, false, 1},
		{"2 hosts, default 10%", 2, 10, false, 0},
		{"2 hosts, 10% with always_eject_one_host", 2, 10, true, 1},
		{"5 hosts, 100%", 5, 100, false, 5},
		{"10 hosts, 10%", 10, 10, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, hosts, _ := newDetector(t, config(func(c *Config) { c.MaxEjectionPercent = tt.maxPercent; c.AlwaysEjectOneHost = tt.always }), tt.hosts)
			for _, h := range hosts {
				for range 3 {
					d.PutHTTPStatus(h, 500)
				}
			}
			if got := d.Active(); got != tt.want {
				t.Errorf("ejected %d hosts, want %d", got, tt.want)
			}
		})
	}
}

func TestEjectionTimeBacksOff(t *testing.T) {
	cfg := config(func(c *Config) { c.MaxEjectionTime = 25 * time.Second })
	d, hosts, clock := newDetector(t, cfg, 2)
	h := hosts[0]
	eject := func() {
		t.Helper()
		for range 3 {
			d.PutHTTPStatus(h, 500)
		}
		if !h.Ejected() {
			t.Fatal("host not ejected")
		}
	}
	// Returns how long the host stayed ejected, sweeping every interval.
	ejectedFor := func() time.Duration {
		t.Helper()
		start := clock.now
		for range 1000 {
			clock.advance(cfg.Interval)
			d.Sweep()
			if !h.Ejected() {
				return clock.now.Sub(start)
			}
		}
		t.Fatal("host never came back")
		return 0
	}
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
		eject()
		if got := ejectedFor(); got != want {
			t.Errorf("ejection %d lasted %v, want %v (base × times ejected, capped by max_ejection_time)", i+1, got, want)
		}
	}
	if n := h.NumEjections(d); n != 4 {
		t.Errorf("num ejections %d, want 4", n)
	}
	// A host healthy for long enough decays its back-off.
	for range 100 {
		clock.advance(cfg.BaseEjectionTime)
		d.Sweep()
	}
	eject()
	if got := ejectedFor(); got != cfg.BaseEjectionTime {
		t.Errorf("after a long healthy period the ejection lasted %v, want base %v", got, cfg.BaseEjectionTime)
	}
}

func TestSuccessRate(t *testing.T) {
	cfg := config(func(c *Config) { c.Consecutive5xx = 1000; c.SuccessRateRequestVolume = 10 })
	d, hosts, _ := newDetector(t, cfg, 5)
	for i, h := range hosts {
		for j := range 100 {
			code := 200
			if i == 0 && j%2 == 0 {
				code = 500
			}
			d.PutHTTPStatus(h, code)
		}
	}
	d.Sweep()
	if !hosts[0].Ejected() || d.Active() != 1 {
		t.Errorf("success-rate outlier not ejected alone: active %d", d.Active())
	}
}

func TestDisabledDetectorIgnoresResults(t *testing.T) {
	d := New(nil)
	h := &Host{}
	d.SetHosts([]*Host{h})
	for range 10 {
		d.PutHTTPStatus(h, 500)
	}
	d.Sweep()
	if h.Ejected() {
		t.Error("host ejected with outlier detection off")
	}
}
