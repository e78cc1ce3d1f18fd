package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Controllers are the kube-controller-manager controllers the cluster runs.
var Controllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"endpointslice-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"namespace-controller",
	"garbage-collector-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
}

// serviceAccountIssuer is the issuer of service-account tokens.
const serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// startEtcd starts etcd on two free loopback ports and waits until it is healthy.
func (c *Cluster) startEtcd(ctx context.Context) error {
	clientPort, err := freePort()
	if err != nil {
		return err
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	dataDir := filepath.Join(c.dir, "etcd")
	if err := os.RemoveAll(dataDir); err != nil { // left by an attempt that lost its port
		return fmt.Errorf("failed to clear %s: %w", dataDir, err)
	}
	c.etcdURL = "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	args := []string{
		"--name=weir-local",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + c.etcdURL, "--advertise-client-urls=" + c.etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=weir-local=" + peerURL,
		"--unsafe-no-fsync=true", "--quota-backend-bytes=2147483648", "--log-level=warn",
	}
	p, err := c.startChild("etcd", filepath.Join(c.opts.BinDir, "etcd"), args)
	if err != nil {
		return err
	}
	return waitHealthy(ctx, p, plainClient(), c.etcdURL+"/health", "")
}

// startAPIServer writes tokens and starts kube-apiserver, waiting for /readyz.
func (c *Cluster) startAPIServer(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	c.apiServerURL = "https://127.0.0.1:" + strconv.Itoa(port)
	tokens := filepath.Join(c.dir, "pki", "tokens.csv")
	lines := fmt.Sprintf("%s,admin,admin,\"system:masters\"\n%s,system:kube-controller-manager,system:kube-controller-manager\n",
		c.adminToken, c.kcmToken)
	if err := os.WriteFile(tokens, []byte(lines), 0o600); err != nil {
		return fmt.Errorf("failed to write the token file: %w", err)
	}
	args := []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(c.dir, "apiserver"),
		"--tls-cert-file=" + c.pki.ServingCert, "--tls-private-key-file=" + c.pki.ServingKey,
		"--client-ca-file=" + c.pki.CACert,
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + serviceAccountIssuer,
		"--service-account-key-file=" + c.pki.SAPub, "--service-account-signing-key-file=" + c.pki.SAKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--endpoint-reconciler-type=none", // 127.0.0.1 is not a valid endpoint address
		"--allow-privileged=true", "--profiling=false", "--enable-priority-and-fairness=false",
	}
	p, err := c.startChild("kube-apiserver", filepath.Join(c.opts.BinDir, "kube-apiserver"), args)
	if err != nil {
		return err
	}
	client, err := tlsClient(c.pki.caPEM, false)
	if err != nil {
		return err
	}
	return waitHealthy(ctx, p, client, c.apiServerURL+"/readyz", c.adminToken)
}

// startControllerManager starts kube-controller-manager with Controllers,
// each controller acting as its own service account.
func (c *Cluster) startControllerManager(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(c.dir, "kube-controller-manager.kubeconfig")
	if err := writeKubeconfig(kubeconfig, c.apiServerURL, c.pki.caPEM, "system:kube-controller-manager", c.kcmToken); err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(c.dir, "kube-controller-manager"),
		"--controllers=" + strings.Join(Controllers, ","),
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + c.pki.SAKey,
		"--root-ca-file=" + c.pki.CACert,
		"--leader-elect=false",
		"--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
	}
	p, err := c.startChild("kube-controller-manager", filepath.Join(c.opts.BinDir, "kube-controller-manager"), args)
	if err != nil {
		return err
	}
	client, err := tlsClient(nil, true)
	if err != nil {
		return err
	}
	return waitHealthy(ctx, p, client, "https://127.0.0.1:"+strconv.Itoa(port)+"/healthz", "")
}

// startChild starts a component with its log in the log folder and
// remembers it for Stop.
func (c *Cluster) startChild(name, bin string, args []string) (*Process, error) {
	p, err := StartProcess(name, filepath.Join(c.logDir, name+".log"), bin, args, os.Environ())
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// waitHealthy polls url until it answers 200, p exits or ctx ends.
func waitHealthy(ctx context.Context, p *Process, client *http.Client, url, token string) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = probeOK(ctx, client, url, token); last == nil {
			return nil
		}
		select {
		case <-p.Exited():
			err := fmt.Errorf("%w before it was healthy (see %s)", p.exitError(), p.log.Name())
			if logMentions(p.log.Name(), "address already in use") {
				return fmt.Errorf("%w: %w", errPortInUse, err)
			}
			return err
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy at %s: %w (last: %v)", p.name, url, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// errPortInUse marks a component that exited because another process took
// its port between freePort and its start; Start tries it again.
var errPortInUse = errors.New("port taken by another process")

// logMentions reports whether the log at path contains s.
func logMentions(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

// probeOK does one GET of url and wants 200.
func probeOK(ctx context.Context, client *http.Client, url, token string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("bad health URL: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health check failed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health check answered %s", resp.Status)
	}
	return nil
}

// plainClient is an HTTP client without keep-alives for health checks.
func plainClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
}

// tlsClient trusts caPEM, or nothing at all when insecure is set (for the
// self-signed certificate of kube-controller-manager's health endpoint).
func tlsClient(caPEM []byte, insecure bool) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // local health checks only
	if caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("invalid CA certificate")
		}
		cfg.RootCAs = pool
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, Proxy: nil}}, nil
}
