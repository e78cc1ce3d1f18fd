package load

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// statsJSON is how Stats travel as JSON: durations in milliseconds, shares
// in percent.
type statsJSON struct {
	From           time.Time          `json:"from"`
	To             time.Time          `json:"to"`
	Requests       int                `json:"requests"`
	RPS            float64            `json:"rps"`
	Versions       map[string]int     `json:"versions"`
	Percent        map[string]float64 `json:"percent"`
	Codes          map[int]int        `json:"codes"`
	Failures       int                `json:"failures"`
	Errors         int                `json:"errors"`
	FailurePercent float64            `json:"failurePercent"`
	P50Ms          float64            `json:"p50Ms"`
	P90Ms          float64            `json:"p90Ms"`
	P99Ms          float64            `json:"p99Ms"`
	MaxMs          float64            `json:"maxMs"`
	LastError      string             `json:"lastError,omitempty"`
	Sent           int64              `json:"sent"`
	Skipped        int64              `json:"skipped"`
	InFlight       int64              `json:"inFlight"`
}

func ms(d time.Duration) float64     { return float64(d) / float64(time.Millisecond) }
func fromMs(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

// MarshalJSON implements json.Marshaler.
func (s Stats) MarshalJSON() ([]byte, error) {
	pct := make(map[string]float64, len(s.Versions))
	for v := range s.Versions {
		pct[v] = s.Percent(v)
	}
	return json.Marshal(statsJSON{
		From: s.From, To: s.To, Requests: s.Requests, RPS: s.RPS,
		Versions: s.Versions, Percent: pct, Codes: s.Codes,
		Failures: s.Failures, Errors: s.Errors, FailurePercent: s.FailurePercent(),
		P50Ms: ms(s.P50), P90Ms: ms(s.P90), P99Ms: ms(s.P99), MaxMs: ms(s.Max),
		LastError: s.LastError, Sent: s.Sent, Skipped: s.Skipped, InFlight: s.InFlight,
	})
}

// UnmarshalJSON implements json.Unmarshaler.
func (s *Stats) UnmarshalJSON(b []byte) error {
	var j statsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Stats{
		From: j.From, To: j.To, Requests: j.Requests, RPS: j.RPS,
		Versions: j.Versions, Codes: j.Codes, Failures: j.Failures, Errors: j.Errors,
		P50: fromMs(j.P50Ms), P90: fromMs(j.P90Ms), P99: fromMs(j.P99Ms), Max: fromMs(j.MaxMs),
		LastError: j.LastError, Sent: j.Sent, Skipped: j.Skipped, InFlight: j.InFlight,
	}
	return nil
}

// StatsHandler serves g's stats as JSON on GET: the whole run by default,
// the last d with ?window=d (a Go duration), or everything after t with
// ?since=t (RFC 3339).
func StatsHandler(g *Generator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "only GET", http.StatusMethodNotAllowed)
			return
		}
		s, err := statsFor(g, r.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s) // a failed write means the client is gone
	})
}

func statsFor(g *Generator, q url.Values) (Stats, error) {
	switch {
	case q.Get("window") != "":
		d, err := time.ParseDuration(q.Get("window"))
		if err != nil || d <= 0 {
			return Stats{}, fmt.Errorf("window %q must be a positive duration like 5s", q.Get("window"))
		}
		return g.Window(d), nil
	case q.Get("since") != "":
		t, err := time.Parse(time.RFC3339Nano, q.Get("since"))
		if err != nil {
			return Stats{}, fmt.Errorf("since %q must be an RFC 3339 time: %w", q.Get("since"), err)
		}
		return g.Since(t), nil
	default:
		return g.Snapshot(), nil
	}
}

// FetchStats reads the stats a StatsHandler serves at statsURL (e.g.
// http://127.0.0.1:9100/stats); window 0 asks for the whole run.
func FetchStats(ctx context.Context, client *http.Client, statsURL string, window time.Duration) (Stats, error) {
	u, err := url.Parse(statsURL)
	if err != nil {
		return Stats{}, fmt.Errorf("invalid stats URL %q: %w", statsURL, err)
	}
	if window > 0 {
		q := u.Query()
		q.Set("window", window.String())
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Stats{}, fmt.Errorf("failed to build a request for %s: %w", u, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Stats{}, fmt.Errorf("failed to fetch stats: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Stats{}, fmt.Errorf("failed to read stats from %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Stats{}, fmt.Errorf("stats at %s answered %s: %s", u, resp.Status, body)
	}
	var s Stats
	if err := json.Unmarshal(body, &s); err != nil {
		return Stats{}, fmt.Errorf("failed to decode stats from %s: %w", u, err)
	}
	return s, nil
}
