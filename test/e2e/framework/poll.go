package framework

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// httpClient is the framework's own client for health checks and admin
// calls; it never uses proxy settings from the environment.
var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}

// poll calls f at once and then every interval until it returns true or an
// error, or ctx ends.
func poll(ctx context.Context, interval time.Duration, f func(context.Context) (bool, error)) error {
	if err := wait.PollUntilContextCancel(ctx, interval, true, f); err != nil {
		return fmt.Errorf("gave up waiting: %w", err)
	}
	return nil
}

// httpOK tells whether GET url answers 200.
func httpOK(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
