package app

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildDemoApp builds the command into a temporary folder.
func buildDemoApp(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not found in PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "demo-app")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/weir-dev/weir/test/app/cmd/demo-app").CombinedOutput()
	if err != nil {
		t.Fatalf("go build demo-app: %v\n%s", err, out)
	}
	return bin
}

// startDemoApp starts bin with env and returns the process, its listen
// address (read from its log) and a channel that yields its exit. The
// process is killed at the end of the test if it is still running.
func startDemoApp(t *testing.T, bin string, env ...string) (*exec.Cmd, string, <-chan error) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start demo-app: %v", err)
	}
	exited := make(chan error, 1)
	addrc := make(chan string, 1)
	go func() {
		addrRE := regexp.MustCompile(`msg=listening addr=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			t.Logf("demo-app: %s", sc.Text())
			if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
		exited <- cmd.Wait() // after stderr is drained, as Wait requires
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case addr := <-addrc:
		return cmd, addr, exited
	case err := <-exited:
		t.Fatalf("demo-app exited before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("demo-app did not log its address within 30s")
	}
	return nil, "", nil
}

func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func TestBinary(t *testing.T) {
	bin := buildDemoApp(t)

	t.Run("serves and shuts down gracefully on SIGTERM", func(t *testing.T) {
		cmd, addr, exited := startDemoApp(t, bin,
			"VERSION=v9", "BIND_IP=127.0.0.1", "PORT=0", "POD_NAME=p1", "POD_NAMESPACE=test", "LATENCY=1ms")
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		base := "http://" + addr

		code, body := get(t, client, base+"/")
		a := decode[Answer](t, body)
		if code != 200 || a.Version != "v9" || a.Pod != "p1" || a.Namespace != "test" || a.Hostname == "" {
			t.Fatalf("/ answered %d %s", code, body)
		}
		if code, _ := get(t, client, base+"/readyz"); code != 200 {
			t.Fatalf("/readyz answered %d", code)
		}

		// A slow request in flight when SIGTERM arrives must still be answered.
		slow := make(chan int, 1)
		go func() {
			req, err := http.NewRequestWithContext(t.Context(), "GET", base+"/delay/700ms", nil)
			if err != nil {
				slow <- 0
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				slow <- 0
				return
			}
			resp.Body.Close()
			slow <- resp.StatusCode
		}()
		time.Sleep(200 * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case code := <-slow:
			if code != 200 {
				t.Errorf("the request in flight at SIGTERM got %d, want 200", code)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the request in flight at SIGTERM was not answered")
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("demo-app exited with %v after SIGTERM, want 0", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("demo-app did not exit within 30s of SIGTERM")
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after exit", addr)
		}
	})

	t.Run("rejects invalid environment", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = []string{"ERROR_RATE=2", "PORT=0", "BIND_IP=127.0.0.1"}
		out, err := cmd.CombinedOutput()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() == 0 {
			t.Fatalf("demo-app with ERROR_RATE=2 ended with %v, want a non-zero exit", err)
		}
		if !strings.Contains(string(out), `ERROR_RATE="2"`) {
			t.Errorf("message %q does not name the bad setting", out)
		}
	})
}
