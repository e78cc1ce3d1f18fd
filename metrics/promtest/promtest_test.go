package promtest_test

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/weir-dev/weir/metrics/promtest"
)

func client(t *testing.T, s *promtest.Server) promv1.API {
	t.Helper()
	c, err := api.NewClient(api.Config{Address: s.URL(), Client: &http.Client{Transport: &http.Transport{}}})
	if err != nil {
		t.Fatal(err)
	}
	return promv1.NewAPI(c)
}

func TestAnswers(t *testing.T) {
	s := promtest.New(t)
	s.Set("vec", promtest.Value(99.5))
	s.Set("multi", promtest.Vector(promtest.Sample{Labels: map[string]string{"a": "1"}, Value: 1}, promtest.Sample{Labels: map[string]string{"a": "2"}, Value: 2}))
	s.Set("scal", promtest.Scalar(3))
	s.Set("nan", promtest.NaN())
	s.Set("inf", promtest.Value(math.Inf(1)))
	s.Set("exec", promtest.Error(promtest.ErrorExec, "boom"))
	s.Set("proxy", promtest.HTTPStatus(http.StatusBadGateway, "bad gateway"))
	s.SetFunc(func(q string) bool { return strings.HasPrefix(q, "fn_") }, promtest.Value(7))
	n := 0
	s.Set("dyn", promtest.Dynamic(func(string) promtest.Answer { n++; return promtest.Value(float64(n)) }))
	p := client(t, s)

	tests := []struct {
		query   string
		want    string // model.Value.String() of the result
		wantErr string
	}{
		{query: "vec", want: "{} => 99.5 @["},
		{query: "multi", want: `{a="1"} => 1 @[`},
		{query: "scal", want: "scalar: 3 @["},
		{query: "nan", want: "{} => NaN @["},
		{query: "inf", want: "{} => +Inf @["},
		{query: "unknown_metric", want: ""},
		{query: "exec", wantErr: "execution: boom"},
		{query: "proxy", wantErr: "server_error: server error: 502"},
		{query: "fn_x", want: "{} => 7 @["},
		{query: "dyn", want: "{} => 1 @["},
		{query: "dyn", want: "{} => 2 @["},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			v, _, err := p.Query(t.Context(), tt.query, time.Unix(1700000000, 0))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := v.String(); !strings.HasPrefix(got, tt.want) {
				t.Errorf("result = %q, want prefix %q", got, tt.want)
			}
			if tt.query == "multi" && len(v.(model.Vector)) != 2 {
				t.Errorf("want 2 samples, got %v", v)
			}
		})
	}
	if got := s.Count("dyn"); got != 2 {
		t.Errorf("Count(dyn) = %d, want 2", got)
	}
	if r := s.Requests()[0]; r.Method != http.MethodPost || r.Time != "1700000000" {
		t.Errorf("first request = %+v, want POST at 1700000000", r)
	}
}

func TestReplaceAndDefault(t *testing.T) {
	s := promtest.New(t)
	p := client(t, s)
	s.Set("rq", promtest.Value(1))
	s.Set("rq", promtest.Value(2))
	s.SetDefault(promtest.Error(promtest.ErrorBadData, "nope"))
	v, _, err := p.Query(t.Context(), "rq_total", time.Time{})
	if err != nil || !strings.HasPrefix(v.String(), "{} => 2 @[") {
		t.Fatalf("got %v, %v; want 2", v, err)
	}
	if _, _, err := p.Query(t.Context(), "other", time.Time{}); err == nil || !strings.Contains(err.Error(), "bad_data: nope") {
		t.Fatalf("default: err = %v", err)
	}
}

func TestGETAndMissingQuery(t *testing.T) {
	s := promtest.New(t)
	s.Set("up", promtest.Value(1))
	hc := &http.Client{Transport: &http.Transport{}}
	tests := []struct {
		url      string
		wantCode int
		wantBody string
	}{
		{url: s.URL() + "/api/v1/query?" + url.Values{"query": {"up"}}.Encode(), wantCode: 200, wantBody: `"resultType":"vector"`},
		{url: s.URL() + "/api/v1/query", wantCode: 400, wantBody: `"errorType":"bad_data"`},
		{url: s.URL() + "/api/v1/query?query=up&time=yesterday", wantCode: 400, wantBody: `invalid parameter \"time\"`},
	}
	for _, tt := range tests {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, tt.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantCode || !strings.Contains(string(b), tt.wantBody) {
			t.Errorf("GET %s = %d %s, want %d with %s", tt.url, resp.StatusCode, b, tt.wantCode, tt.wantBody)
		}
	}
	if r := s.Requests()[0]; r.Method != http.MethodGet || r.Query != "up" {
		t.Errorf("request = %+v", r)
	}
}

func TestHangEndsWithClientAndClose(t *testing.T) {
	s := promtest.New(t)
	s.Set("slow", promtest.Hang())
	s.Set("late", promtest.Value(1).After(time.Hour))
	p := client(t, s)
	for _, q := range []string{"slow", "late"} {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		_, _, err := p.Query(ctx, q, time.Time{})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v, want deadline exceeded", q, err)
		}
	}
	// Close must not wait for a hanging request whose client never gives up.
	errc := make(chan error, 1)
	go func() { _, _, err := p.Query(context.Background(), "slow", time.Time{}); errc <- err }()
	for i := 0; i < 200 && s.Count("slow") < 2; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	s.Close()
	if err := <-errc; err == nil {
		t.Error("hanging query after Close: want an error")
	}
}
