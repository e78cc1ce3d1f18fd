package load

import (
	"maps"
	"math"
	"slices"
	"sync"
	"time"
)

// Stats sums up the requests that completed in a span of time.
type Stats struct {
	// From and To bound the span; RPS is Requests over it.
	From, To time.Time
	// Requests counts completed requests, answered or not.
	Requests int
	RPS      float64
	// Versions counts answers per "version" found in their JSON body;
	// answers without one are not counted here.
	Versions map[string]int
	// Codes counts requests per HTTP status code; 0 counts requests that got
	// no answer (connection refused, timeout, ...).
	Codes map[int]int
	// Failures counts 5xx answers plus requests without an answer; Errors
	// counts only the latter.
	Failures, Errors int
	// Latency percentiles and maximum of the completed requests. Windows
	// are exact; a Snapshot's are within 1% (a log-scale histogram).
	P50, P90, P99, Max time.Duration
	// LastError is the last transport error seen in the span, if any.
	LastError string

	// Sent, Skipped and InFlight describe the generator, not the span: they
	// are set by Snapshot only. Skipped counts ticks dropped because
	// MaxInFlight requests were outstanding.
	Sent, Skipped, InFlight int64
}

// Versioned returns how many answers named a version.
func (s Stats) Versioned() int {
	n := 0
	for _, c := range s.Versions {
		n += c
	}
	return n
}

// Percent returns the share (0..100) of answers naming version among all
// answers that named one; 0 when none did.
func (s Stats) Percent(version string) float64 {
	n := s.Versioned()
	if n == 0 {
		return 0
	}
	return 100 * float64(s.Versions[version]) / float64(n)
}

// FailurePercent returns Failures as a share (0..100) of Requests.
func (s Stats) FailurePercent() float64 {
	if s.Requests == 0 {
		return 0
	}
	return 100 * float64(s.Failures) / float64(s.Requests)
}

// VersionNames returns the versions seen, sorted.
func (s Stats) VersionNames() []string {
	names := make([]string, 0, len(s.Versions))
	for v := range s.Versions {
		names = append(names, v)
	}
	slices.Sort(names)
	return names
}

// record is one completed request as kept for windows.
type record struct {
	at      time.Time
	latency time.Duration
	code    int
	version string
	err     string
}

func (r record) failed() bool { return r.code == 0 || r.code >= 500 }

// tally is the running count of a set of records.
type tally struct {
	requests, failures, errors int
	versions                   map[string]int
	codes                      map[int]int
	max                        time.Duration
	lastErr                    string
}

func newTally() tally { return tally{versions: map[string]int{}, codes: map[int]int{}} }

func (t *tally) add(r record) {
	t.requests++
	t.codes[r.code]++
	if r.version != "" {
		t.versions[r.version]++
	}
	if r.failed() {
		t.failures++
	}
	if r.code == 0 {
		t.errors++
		t.lastErr = r.err
	}
	t.max = max(t.max, r.latency)
}

func (t tally) stats(from, to time.Time) Stats {
	s := Stats{
		From: from, To: to,
		Requests: t.requests, Failures: t.failures, Errors: t.errors,
		Versions: t.versions, Codes: t.codes, Max: t.max, LastError: t.lastErr,
	}
	if span := to.Sub(from).Seconds(); span > 0 {
		s.RPS = float64(t.requests) / span
	}
	return s
}

// recorder keeps the records of the last `history` for windows and a
// running tally plus latency histogram of everything since start.
type recorder struct {
	history time.Duration
	start   time.Time

	mu      sync.Mutex
	records []record // ordered by at
	total   tally
	hist    logHist
}

func newRecorder(start time.Time, history time.Duration) *recorder {
	return &recorder{history: history, start: start, total: newTally(), hist: logHist{}}
}

func (r *recorder) add(rec record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.records); n > 0 && rec.at.Before(r.records[n-1].at) {
		rec.at = r.records[n-1].at // concurrent requests may finish out of order by a hair
	}
	r.records = append(r.records, rec)
	r.total.add(rec)
	r.hist.add(rec.latency)
	r.prune(rec.at)
}

// prune drops records older than history before now, compacting the slice
// once the dropped prefix is large.
func (r *recorder) prune(now time.Time) {
	cut := now.Add(-r.history)
	i := 0
	for i < len(r.records) && r.records[i].at.Before(cut) {
		i++
	}
	if i > 0 && i >= len(r.records)/2 {
		r.records = append(r.records[:0:0], r.records[i:]...)
	}
}

// totalStats returns everything since start, up to now.
func (r *recorder) totalStats(now time.Time) Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.total
	t.versions, t.codes = maps.Clone(t.versions), maps.Clone(t.codes)
	s := t.stats(r.start, now)
	s.P50, s.P90, s.P99 = r.hist.quantile(0.50), r.hist.quantile(0.90), r.hist.quantile(0.99)
	return s
}

// since returns the records completed after from (clamped to start and to
// the history kept) up to now.
func (r *recorder) since(from, now time.Time) Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	from = latest(from, r.start, now.Add(-r.history))
	first, _ := slices.BinarySearchFunc(r.records, from, func(rec record, t time.Time) int {
		if rec.at.After(t) {
			return 1
		}
		return -1
	})
	t := newTally()
	var lat []time.Duration
	for _, rec := range r.records[first:] {
		if rec.at.After(now) {
			break
		}
		t.add(rec)
		lat = append(lat, rec.latency)
	}
	slices.Sort(lat)
	s := t.stats(from, now)
	s.P50, s.P90, s.P99 = quantile(lat, 0.50), quantile(lat, 0.90), quantile(lat, 0.99)
	return s
}

func latest(ts ...time.Time) time.Time {
	m := ts[0]
	for _, t := range ts[1:] {
		if t.After(m) {
			m = t
		}
	}
	return m
}

// quantile returns the nearest-rank q-quantile of sorted latencies.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// logHist is a sparse histogram of latencies in buckets 1% wide.
type logHist map[int]int

const histBase = 1.01

func (h logHist) add(d time.Duration) {
	h[int(math.Floor(math.Log(float64(max(d, 1)))/math.Log(histBase)))]++
}

// quantile returns the geometric middle of the bucket holding the
// nearest-rank q-quantile.
func (h logHist) quantile(q float64) time.Duration {
	n := 0
	keys := make([]int, 0, len(h))
	for k, c := range h {
		keys = append(keys, k)
		n += c
	}
	if n == 0 {
		return 0
	}
	slices.Sort(keys)
	rank := max(int(math.Ceil(q*float64(n))), 1)
	seen := 0
	for _, k := range keys {
		if seen += h[k]; seen >= rank {
			return time.Duration(math.Pow(histBase, float64(k)+0.5))
		}
	}
	return 0
}
