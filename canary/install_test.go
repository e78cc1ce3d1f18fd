package canary

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weir-dev/weir/canary/v1alpha1"
	"github.com/weir-dev/weir/internal/testenv"
	"github.com/weir-dev/weir/mesh/traffic"
)

// TestInstall applies config/default and config/samples with kubectl, as a
// person installing weir would, then runs the controller with nothing but
// the ServiceAccount's permissions from config/rbac through a promotion of
// the sample.
func TestInstall(t *testing.T) {
	c := newClient(t)
	root := testenv.RepoRoot()
	out, err := kubectl(t, "apply", "-k", filepath.Join(root, "config", "default"))
	t.Logf("$ kubectl apply -k config/default\n%s", out)
	if err != nil {
		t.Fatalf("kubectl apply -k config/default: %v", err)
	}
	ns := newNamespace(t, c)
	out, err = kubectl(t, "apply", "-n", ns, "-k", filepath.Join(root, "config", "samples"))
	t.Logf("$ kubectl apply -n %s -k config/samples\n%s", ns, out)
	if err != nil {
		t.Fatalf("kubectl apply -k config/samples: %v", err)
	}

	// Short steps for the test.
	ctx := context.Background()
	cn := &v1alpha1.Canary{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "podinfo"}, cn); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(cn.DeepCopy())
	cn.Spec.Analysis.Interval = &metav1.Duration{Duration: time.Second}
	if err := c.Patch(ctx, cn, patch); err != nil {
		t.Fatal(err)
	}

	sa := rest.CopyConfig(apiServer(t))
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:weir-system:weir-controller"}
	f := &fixture{t: t, c: c, ns: ns, deploys: rolloutDeployments(t, c, ns)}
	f.prom, f.checker = promStandIn(t, 100, 50)
	startControllerWith(t, sa, ns, &traffic.Immediate{}, f.checker)
	f.watch()
	f.waitPhase(v1alpha1.PhaseInitialized, 30*time.Second)
	f.setImage("ghcr.io/stefanprodan/podinfo:6.7.1")
	f.waitPhase(v1alpha1.PhaseSucceeded, 60*time.Second)
	if n := len(f.eventsWith(v1alpha1.EventPromoted)); n != 1 {
		t.Errorf("%d Promoted events, want 1: the ServiceAccount may lack the right to record Events", n)
	}
	logKubectl(t, ns)
}
