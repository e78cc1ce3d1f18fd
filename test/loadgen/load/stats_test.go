package load

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func sec(f float64) time.Time { return t0.Add(time.Duration(f * float64(time.Second))) }

// tenSeconds records one request per second at t0+1s..t0+10s: latency i ms,
// v2 on the fifth and tenth, a 500 on the ninth.
func tenSeconds(history time.Duration) *recorder {
	r := newRecorder(t0, history)
	for i := 1; i <= 10; i++ {
		rec := record{at: sec(float64(i)), latency: time.Duration(i) * time.Millisecond, code: 200, version: "v1"}
		if i%5 == 0 {
			rec.version = "v2"
		}
		if i == 9 {
			rec.code = 500
		}
		r.add(rec)
	}
	return r
}

func TestWindowMath(t *testing.T) {
	ms := func(i int) time.Duration { return time.Duration(i) * time.Millisecond }
	tests := []struct {
		name          string
		history       time.Duration
		from, now     time.Time
		wantFrom      time.Time
		wantRequests  int
		wantVersions  map[string]int
		wantFailures  int
		wantRPS       float64
		p50, p90, p99 time.Duration
	}{
		{name: "last 3s", history: time.Minute, from: sec(7), now: sec(10), wantFrom: sec(7),
			wantRequests: 3, wantVersions: map[string]int{"v1": 2, "v2": 1}, wantFailures: 1, wantRPS: 1,
			p50: ms(9), p90: ms(10), p99: ms(10)},
		{name: "all", history: time.Minute, from: t0, now: sec(10), wantFrom: t0,
			wantRequests: 10, wantVersions: map[string]int{"v1": 8, "v2": 2}, wantFailures: 1, wantRPS: 1,
			p50: ms(5), p90: ms(9), p99: ms(10)},
		{name: "longer than the run is clamped to its start", history: time.Minute, from: sec(-3600), now: sec(10), wantFrom: t0,
			wantRequests: 10, wantVersions: map[string]int{"v1": 8, "v2": 2}, wantFailures: 1, wantRPS: 1,
			p50: ms(5), p90: ms(9), p99: ms(10)},
		{name: "a window in the past leaves later requests out", history: time.Minute, from: sec(2.5), now: sec(4.5), wantFrom: sec(2.5),
			wantRequests: 2, wantVersions: map[string]int{"v1": 2}, wantRPS: 1, p50: ms(3), p90: ms(4), p99: ms(4)},
		{name: "the start of a window is exclusive", history: time.Minute, from: sec(9), now: sec(10), wantFrom: sec(9),
			wantRequests: 1, wantVersions: map[string]int{"v2": 1}, wantRPS: 1, p50: ms(10), p90: ms(10), p99: ms(10)},
		{name: "empty", history: time.Minute, from: sec(10), now: sec(12), wantFrom: sec(10),
			wantVersions: map[string]int{}},
		{name: "clamped to history", history: 5 * time.Second, from: t0, now: sec(10), wantFrom: sec(5),
			wantRequests: 5, wantVersions: map[string]int{"v1": 4, "v2": 1}, wantFailures: 1, wantRPS: 1,
			p50: ms(8), p90: ms(10), p99: ms(10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tenSeconds(tt.history).since(tt.from, tt.now)
			if !s.From.Equal(tt.wantFrom) || !s.To.Equal(tt.now) {
				t.Errorf("span %s..%s, want %s..%s", s.From, s.To, tt.wantFrom, tt.now)
			}
			if s.Requests != tt.wantRequests || s.Failures != tt.wantFailures || !equalCounts(s.Versions, tt.wantVersions) {
				t.Errorf("requests %d failures %d versions %v, want %d %d %v",
					s.Requests, s.Failures, s.Versions, tt.wantRequests, tt.wantFailures, tt.wantVersions)
			}
			if math.Abs(s.RPS-tt.wantRPS) > 1e-9 {
				t.Errorf("rps %v, want %v", s.RPS, tt.wantRPS)
			}
			if s.P50 != tt.p50 || s.P90 != tt.p90 || s.P99 != tt.p99 {
				t.Errorf("p50/p90/p99 %s/%s/%s, want %s/%s/%s", s.P50, s.P90, s.P99, tt.p50, tt.p90, tt.p99)
			}
		})
	}
}

func TestShares(t *testing.T) {
	tests := []struct {
		name     string
		versions map[string]int
		v        string
		want     float64
	}{
		{"none", nil, "v1", 0},
		{"90/10", map[string]int{"v1": 90, "v2": 10}, "v2", 10},
		{"absent version", map[string]int{"v1": 3}, "v2", 0},
		{"thirds", map[string]int{"a": 1, "b": 2}, "b", 200.0 / 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Stats{Versions: tt.versions}).Percent(tt.v); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Percent(%q) = %v, want %v", tt.v, got, tt.want)
			}
		})
	}
}

func TestRecorderPrunes(t *testing.T) {
	r := newRecorder(t0, 10*time.Second)
	for i := range 1000 {
		r.add(record{at: sec(float64(i)), code: 200})
	}
	if n := len(r.records); n > 25 {
		t.Errorf("keeps %d records for a history of 10 at one per second", n)
	}
	if s := r.totalStats(sec(1000)); s.Requests != 1000 {
		t.Errorf("total %d, want 1000", s.Requests)
	}
}

func TestTotalPercentiles(t *testing.T) {
	r := newRecorder(t0, time.Minute)
	for i := 1; i <= 1000; i++ {
		r.add(record{at: sec(float64(i) / 100), latency: time.Duration(i) * time.Millisecond, code: 200})
	}
	s := r.totalStats(sec(10))
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{{"p50", s.P50, 500 * time.Millisecond}, {"p90", s.P90, 900 * time.Millisecond}, {"p99", s.P99, 990 * time.Millisecond}} {
		if rel := math.Abs(float64(c.got-c.want)) / float64(c.want); rel > 0.01 {
			t.Errorf("%s %s, want %s within 1%%", c.name, c.got, c.want)
		}
	}
	if s.Max != time.Second || s.RPS != 100 {
		t.Errorf("max %s rps %v, want 1s and 100", s.Max, s.RPS)
	}
}

func TestMetricsObserve(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Observe(Result{Code: 200, Version: "v1", Latency: time.Millisecond})
	m.Observe(Result{Code: 200, Version: "v1", Latency: time.Millisecond})
	m.Observe(Result{Code: 0})
	if got := counterValue(t, m.requests.WithLabelValues("v1", "200")); got != 2 {
		t.Errorf("v1/200 = %v, want 2", got)
	}
	if got := counterValue(t, m.requests.WithLabelValues("", "0")); got != 1 {
		t.Errorf("no answer = %v, want 1", got)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering twice must fail")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
