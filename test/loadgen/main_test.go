package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weir-dev/weir/test/loadgen/load"
)

func TestLine(t *testing.T) {
	tests := []struct {
		name string
		s    load.Stats
		want string
	}{
		{name: "split", s: load.Stats{RPS: 50, Versions: map[string]int{"v2": 5, "v1": 45}, Codes: map[int]int{200: 49, 503: 1},
			P50: 1234 * time.Microsecond, P99: 3140 * time.Microsecond},
			want: "t=12s rps=50 v1=90.0% v2=10.0% 5xx=1 err=0 p50=1.2ms p99=3.1ms"},
		{name: "errors", s: load.Stats{RPS: 2, Codes: map[int]int{0: 2}, Errors: 2, LastError: "connection refused"},
			want: `t=12s rps=2 5xx=0 err=2 p50=0s p99=0s last-error="connection refused"`},
		{name: "slow", s: load.Stats{RPS: 10, Versions: map[string]int{"v4": 10}, P50: 812345 * time.Microsecond, P99: 1234567 * time.Microsecond},
			want: "t=12s rps=10 v4=100.0% 5xx=0 err=0 p50=812.3ms p99=1.23s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := line("t=12s", tt.s); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestFlagsRejected(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no target", []string{}, "URL, or a proxy"},
		{"stray argument", []string{"--url", "http://127.0.0.1/", "extra"}, "unexpected arguments"},
		{"bad window", []string{"--url", "http://127.0.0.1/", "--window", "0s"}, "--window"},
		{"bad rate", []string{"--url", "http://127.0.0.1/", "--rate", "-3"}, "rate"},
		{"unknown flag", []string{"--nope"}, "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func buildLoadgen(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not found in PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "loadgen")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/weir-dev/weir/test/loadgen").CombinedOutput(); err != nil {
		t.Fatalf("go build loadgen: %v\n%s", err, out)
	}
	return bin
}

// lines collects a reader's lines and passes on the first match of re.
type lines struct {
	mu  sync.Mutex
	all []string
}

func (l *lines) collect(r io.Reader, re *regexp.Regexp, found chan<- string, done chan<- struct{}) {
	defer close(done)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l.mu.Lock()
		l.all = append(l.all, sc.Text())
		l.mu.Unlock()
		if m := re.FindStringSubmatch(sc.Text()); m != nil && found != nil {
			select {
			case found <- m[1]:
			default:
			}
		}
	}
}

func (l *lines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

func TestBinary(t *testing.T) {
	bin := buildLoadgen(t)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"version":"v7"}`)
	}))
	defer target.Close()

	cmd := exec.Command(bin, "--url", target.URL+"/", "--rate", "20", "--stats-address", "127.0.0.1:0")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out, errOut lines
	statsURL, firstLine := make(chan string, 1), make(chan string, 1)
	outDone, errDone := make(chan struct{}), make(chan struct{})
	go out.collect(stdout, regexp.MustCompile(`^(t=\d+s rps=.*)`), firstLine, outDone)
	go errOut.collect(stderr, regexp.MustCompile(`stats on (\S+/stats)`), statsURL, errDone)
	exited := make(chan error, 1)
	go func() {
		<-outDone
		<-errDone
		exited <- cmd.Wait()
	}()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
		t.Logf("stdout:\n%s\nstderr:\n%s", out.text(), errOut.text())
	}()

	var url string
	select {
	case url = <-statsURL:
	case <-time.After(30 * time.Second):
		t.Fatal("no stats address logged within 30s")
	}
	select {
	case l := <-firstLine:
		if !strings.Contains(l, "v7=100.0%") {
			t.Errorf("line %q does not show v7 at 100%%", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no report line within 30s")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	s, err := load.FetchStats(t.Context(), client, url, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests == 0 || s.Percent("v7") != 100 {
		t.Errorf("stats %+v", s)
	}
	metricsURL := strings.TrimSuffix(url, "/stats") + "/metrics"
	req, err := http.NewRequestWithContext(t.Context(), "GET", metricsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), load.MetricRequests+`{code="200",version="v7"}`) {
		t.Errorf("/metrics lacks the request counter:\n%s", body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("loadgen exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("loadgen did not exit within 30s of SIGTERM")
	}
	if !regexp.MustCompile(`(?m)^total t=\d+s requests=\d+ rps=\d+ v7=100\.0% 5xx=0 err=0`).MatchString(out.text()) {
		t.Errorf("no total line in:\n%s", out.text())
	}
}

func TestBinaryDuration(t *testing.T) {
	bin := buildLoadgen(t)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"version":"v1"}`)
	}))
	defer target.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--url", target.URL+"/", "--rate", "30", "--duration", "1500ms").CombinedOutput()
	if err != nil {
		t.Fatalf("loadgen: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`(?m)^total t=\d+s requests=\d+ rps=\d+ v1=100.0%`).Match(out) {
		t.Errorf("output lacks the totals:\n%s", out)
	}
}
