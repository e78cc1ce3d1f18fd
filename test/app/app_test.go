package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

var testSettings = Settings{Version: "v1", Pod: "podinfo-abc", Namespace: "test", Hostname: "host1"}

// sleepRecorder records the waits a Server asks for and returns at once.
type sleepRecorder struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleepRecorder) sleep(_ context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waits = append(s.waits, d)
	return nil
}

func (s *sleepRecorder) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

func do(t *testing.T, h http.Handler, method, path, body string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	return rec.Code, rec.Body.String()
}

func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("body %q is not the expected JSON: %v", body, err)
	}
	return v
}

func TestEndpoints(t *testing.T) {
	base := Answer{Version: "v1", Pod: "podinfo-abc", Namespace: "test", Hostname: "host1"}
	with := func(f func(*Answer)) *Answer { a := base; f(&a); return &a }
	tests := []struct {
		name       string
		method     string
		path       string
		wantCode   int
		wantAnswer *Answer
		wantInBody string
		wantWaits  []time.Duration
	}{
		{name: "root", method: "GET", path: "/", wantCode: 200, wantAnswer: &base},
		{name: "root by POST", method: "POST", path: "/", wantCode: 200, wantAnswer: &base},
		{name: "unknown path", method: "GET", path: "/nope", wantCode: 404},
		{name: "healthz", method: "GET", path: "/healthz", wantCode: 200, wantInBody: `"ok"`},
		{name: "readyz", method: "GET", path: "/readyz", wantCode: 200, wantInBody: `"ready"`},
		{name: "healthz by PUT", method: "PUT", path: "/healthz", wantCode: 405},
		{name: "status 503", method: "GET", path: "/status/503", wantCode: 503,
			wantAnswer: with(func(a *Answer) { a.Status = 503 })},
		{name: "status 201", method: "GET", path: "/status/201", wantCode: 201,
			wantAnswer: with(func(a *Answer) { a.Status = 201 })},
		{name: "status not a number", method: "GET", path: "/status/abc", wantCode: 400, wantInBody: "between 200 and 599"},
		{name: "status out of range", method: "GET", path: "/status/700", wantCode: 400, wantInBody: "between 200 and 599"},
		{name: "status informational", method: "GET", path: "/status/100", wantCode: 400},
		{name: "delay", method: "GET", path: "/delay/250ms", wantCode: 200,
			wantAnswer: with(func(a *Answer) { a.Delay = "250ms" }), wantWaits: []time.Duration{250 * time.Millisecond}},
		{name: "delay not a duration", method: "GET", path: "/delay/soon", wantCode: 400, wantInBody: "duration like 200ms"},
		{name: "delay negative", method: "GET", path: "/delay/-1s", wantCode: 400},
		{name: "delay too long", method: "GET", path: "/delay/1h", wantCode: 400},
		{name: "metrics", method: "GET", path: "/metrics", wantCode: 200, wantInBody: MetricInfo + `{version="v1"} 1`},
		{name: "admin get", method: "GET", path: "/admin/config", wantCode: 200,
			wantInBody: `{"version":"v1","errorRate":0,"latency":"0s","ready":true}`},
		{name: "admin delete", method: "DELETE", path: "/admin/config", wantCode: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sr := &sleepRecorder{}
			srv := New(testSettings, WithSleep(sr.sleep))
			code, body := do(t, srv, tt.method, tt.path, "")
			if code != tt.wantCode {
				t.Fatalf("%s %s: code %d, want %d (body %q)", tt.method, tt.path, code, tt.wantCode, body)
			}
			if tt.wantAnswer != nil {
				if got := decode[Answer](t, body); got != *tt.wantAnswer {
					t.Errorf("answer %+v, want %+v", got, *tt.wantAnswer)
				}
			}
			if !strings.Contains(body, tt.wantInBody) {
				t.Errorf("body %q does not contain %q", body, tt.wantInBody)
			}
			if got := sr.got(); len(got) != len(tt.wantWaits) || (len(got) > 0 && got[0] != tt.wantWaits[0]) {
				t.Errorf("waits %v, want %v", got, tt.wantWaits)
			}
		})
	}
}

func TestErrorRateDistribution(t *testing.T) {
	const n = 2000
	tests := []struct {
		rate      float64
		tolerance float64
	}{{0, 0}, {0.1, 0.02}, {0.5, 0.03}, {0.9, 0.02}, {1, 0}}
	for _, tt := range tests {
		t.Run(formatFloat(tt.rate), func(t *testing.T) {
			s := testSettings
			s.ErrorRate = tt.rate
			srv := New(s, WithRand(SeededRand(42)))
			failed := 0
			for range n {
				code, body := do(t, srv, "GET", "/", "")
				switch code {
				case 200:
				case 500:
					failed++
					if a := decode[Answer](t, body); a.Version != "v1" || a.Error == "" {
						t.Fatalf("a failed answer must carry the version and an error: %q", body)
					}
				default:
					t.Fatalf("code %d", code)
				}
			}
			got := float64(failed) / n
			if got < tt.rate-tt.tolerance || got > tt.rate+tt.tolerance {
				t.Errorf("error share %.3f over %d requests, want %.2f ± %.2f", got, n, tt.rate, tt.tolerance)
			}
		})
	}
}

func TestLatencyInjected(t *testing.T) {
	sr := &sleepRecorder{}
	s := testSettings
	s.Latency = 200 * time.Millisecond
	srv := New(s, WithSleep(sr.sleep))
	for _, path := range []string{"/", "/healthz", "/readyz", "/status/200", "/"} {
		if code, _ := do(t, srv, "GET", path, ""); code != 200 {
			t.Fatalf("%s: code %d", path, code)
		}
	}
	if got := sr.got(); len(got) != 2 || got[0] != s.Latency || got[1] != s.Latency {
		t.Errorf("waits %v, want two of %s (only / is slowed down)", got, s.Latency)
	}
}

func TestLatencyRealClock(t *testing.T) {
	s := testSettings
	s.Latency = 60 * time.Millisecond
	srv := New(s)
	start := time.Now()
	if code, _ := do(t, srv, "GET", "/", ""); code != 200 {
		t.Fatalf("code %d", code)
	}
	if took := time.Since(start); took < s.Latency {
		t.Errorf("answered after %s, want at least %s", took, s.Latency)
	}
}

func TestLatencyClientGone(t *testing.T) {
	s := testSettings
	s.Latency = time.Minute
	srv := New(s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, "GET", "/", nil))
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler kept waiting after its client left")
	}
}

func TestAdminChanges(t *testing.T) {
	srv := New(testSettings, WithRand(SeededRand(1)))
	steps := []struct {
		name     string
		body     string
		want     string
		rootCode int
		readyz   int
	}{
		{name: "all errors", body: `{"errorRate":1}`,
			want: `{"version":"v1","errorRate":1,"latency":"0s","ready":true}`, rootCode: 500, readyz: 200},
		{name: "latency kept errors", body: `{"latency":"1ms"}`,
			want: `{"version":"v1","errorRate":1,"latency":"1ms","ready":true}`, rootCode: 500, readyz: 200},
		{name: "not ready, no errors", body: `{"errorRate":0,"ready":false}`,
			want: `{"version":"v1","errorRate":0,"latency":"1ms","ready":false}`, rootCode: 200, readyz: 503},
		{name: "all at once", body: `{"errorRate":0,"latency":"0s","ready":true}`,
			want: `{"version":"v1","errorRate":0,"latency":"0s","ready":true}`, rootCode: 200, readyz: 200},
		{name: "empty object changes nothing", body: `{}`,
			want: `{"version":"v1","errorRate":0,"latency":"0s","ready":true}`, rootCode: 200, readyz: 200},
	}
	for i, st := range steps {
		method := "PUT"
		if i%2 == 1 {
			method = "POST"
		}
		code, body := do(t, srv, method, "/admin/config", st.body)
		if code != 200 || strings.TrimSpace(body) != st.want {
			t.Fatalf("%s: %s %s answered %d %s, want 200 %s", st.name, method, st.body, code, body, st.want)
		}
		if _, got := do(t, srv, "GET", "/admin/config", ""); strings.TrimSpace(got) != st.want {
			t.Errorf("%s: GET /admin/config = %s, want %s", st.name, got, st.want)
		}
		if code, _ := do(t, srv, "GET", "/", ""); code != st.rootCode {
			t.Errorf("%s: / answered %d, want %d", st.name, code, st.rootCode)
		}
		if code, _ := do(t, srv, "GET", "/readyz", ""); code != st.readyz {
			t.Errorf("%s: /readyz answered %d, want %d", st.name, code, st.readyz)
		}
	}
}

func TestAdminBadInput(t *testing.T) {
	tests := []struct {
		name, body, wantInMsg string
	}{
		{"rate above 1", `{"errorRate":1.5}`, "between 0 and 1"},
		{"rate negative", `{"errorRate":-0.1}`, "between 0 and 1"},
		{"rate as string", `{"errorRate":"0.5"}`, "body must be JSON"},
		{"latency not a duration", `{"latency":"slow"}`, "not a duration"},
		{"latency as number", `{"latency":800}`, "body must be JSON"},
		{"latency negative", `{"latency":"-1s"}`, "between 0 and"},
		{"latency too long", `{"latency":"10m"}`, "between 0 and"},
		{"ready as string", `{"ready":"no"}`, "body must be JSON"},
		{"unknown field", `{"error_rate":0.5}`, "unknown field"},
		{"not JSON", `errorRate=0.5`, "body must be JSON"},
		{"empty", ``, "body must be JSON"},
		{"two objects", `{"ready":false}{"ready":true}`, "single JSON object"},
		{"one bad field spoils all", `{"ready":false,"errorRate":2}`, "between 0 and 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := New(testSettings)
			before := srv.Behaviour()
			code, body := do(t, srv, "PUT", "/admin/config", tt.body)
			if code != 400 {
				t.Fatalf("code %d, want 400 (body %q)", code, body)
			}
			if msg := decode[map[string]string](t, body)["error"]; !strings.Contains(msg, tt.wantInMsg) {
				t.Errorf("message %q does not contain %q", msg, tt.wantInMsg)
			}
			if after := srv.Behaviour(); after != before {
				t.Errorf("behaviour changed on bad input: %+v -> %+v", before, after)
			}
		})
	}
}

func TestMetricsCount(t *testing.T) {
	srv := New(testSettings, WithRand(SeededRand(3)))
	for _, p := range []string{"/", "/", "/status/503", "/healthz"} {
		do(t, srv, "GET", p, "")
	}
	do(t, srv, "PUT", "/admin/config", `{"errorRate":0.25,"latency":"1ms","ready":false}`)
	_, body := do(t, srv, "GET", "/metrics", "")
	for _, want := range []string{
		MetricRequests + `{code="200",handler="root"} 2`,
		MetricRequests + `{code="503",handler="status"} 1`,
		MetricRequests + `{code="200",handler="healthz"} 1`,
		MetricDuration + `_count{handler="root"} 2`,
		MetricInfo + `{version="v1"} 1`,
		MetricErrorRate + ` 0.25`,
		MetricLatency + ` 0.001`,
		MetricReady + ` 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestOverHTTP(t *testing.T) {
	ts := httptest.NewServer(New(testSettings))
	defer ts.Close()
	client := ts.Client()
	req, err := http.NewRequestWithContext(t.Context(), "GET", ts.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	if a := decode[Answer](t, string(body)); a.Version != "v1" {
		t.Errorf("version %q", a.Version)
	}
}
