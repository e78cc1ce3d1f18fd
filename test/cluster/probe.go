package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probe runs p every period against the container until ctx ends, and
// reports the verdict after successThreshold successes or failureThreshold
// failures in a row. Without a probe the container counts as passing when
// passWithout is set.
func (c *container) probe(ctx context.Context, p *corev1.Probe, report func(bool), passWithout bool) {
	if p == nil {
		if passWithout {
			report(true)
		}
		return
	}
	period := seconds(p.PeriodSeconds, 10)
	success, failure := int(max(p.SuccessThreshold, 1)), int(max(p.FailureThreshold, 1))
	if p.FailureThreshold == 0 {
		failure = 3
	}
	if !sleepCtx(ctx, seconds(p.InitialDelaySeconds, 0)) {
		return
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	var ok, bad int
	for {
		if err := c.probeOnce(ctx, p); err == nil {
			ok, bad = ok+1, 0
			if ok >= success {
				report(true)
			}
		} else if ctx.Err() == nil {
			ok, bad = 0, bad+1
			if bad >= failure {
				report(false)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probeOnce runs one httpGet or tcpSocket check; other handlers pass.
func (c *container) probeOnce(ctx context.Context, p *corev1.Probe) error {
	ctx, cancel := context.WithTimeout(ctx, seconds(p.TimeoutSeconds, 1))
	defer cancel()
	host := c.r.ip.String()
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		if g.Host != "" {
			host = g.Host
		}
		port, err := c.port(g.Port)
		if err != nil {
			return err
		}
		return c.httpProbe(ctx, g, net.JoinHostPort(host, strconv.Itoa(port)))
	case p.TCPSocket != nil:
		if p.TCPSocket.Host != "" {
			host = p.TCPSocket.Host
		}
		port, err := c.port(p.TCPSocket.Port)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("tcp probe failed: %w", err)
		}
		return conn.Close()
	}
	return nil
}

// httpProbe GETs the probe's path and wants a status of 200 to 399.
func (c *container) httpProbe(ctx context.Context, g *corev1.HTTPGetAction, hostPort string) error {
	scheme := "http"
	client := c.r.a.probes
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
		client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // kubelet does not verify probes either
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+hostPort+g.Path, nil)
	if err != nil {
		return fmt.Errorf("bad probe: %w", err)
	}
	for _, h := range g.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	req.Header.Set("User-Agent", "kube-probe/1.36")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http probe failed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http probe answered %s", resp.Status)
	}
	return nil
}

// port resolves a probe port, by number or by the name of a container port.
func (c *container) port(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.spec.Name, p.StrVal)
}

// seconds converts a probe field, using def when it is unset.
func seconds(v int32, def int32) time.Duration {
	if v <= 0 {
		v = def
	}
	return time.Duration(v) * time.Second
}

// sleepCtx sleeps for d unless ctx ends first; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
