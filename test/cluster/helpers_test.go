package cluster

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestExpand(t *testing.T) {
	env := map[string]string{"IP": "198.18.0.2", "PORT": "8080"}
	for in, want := range map[string]string{
		"$(IP):$(PORT)":  "198.18.0.2:8080",
		"$$(IP)":         "$(IP)",
		"$(MISSING)":     "$(MISSING)",
		"$(IP":           "$(IP",
		"plain $ dollar": "plain $ dollar",
		"end$":           "end$",
		"":               "",
	} {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImageRepository(t *testing.T) {
	for in, want := range map[string]string{
		"weir.dev/demo-app:v1":                 "weir.dev/demo-app",
		"weir.dev/demo-app":                    "weir.dev/demo-app",
		"localhost:5000/weir-proxy:v2":         "localhost:5000/weir-proxy",
		"localhost:5000/weir-proxy":            "localhost:5000/weir-proxy",
		"weir.dev/demo-app:v1@sha256:0123abcd": "weir.dev/demo-app",
	} {
		if got := imageRepository(in); got != want {
			t.Errorf("imageRepository(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveImageAndCommand(t *testing.T) {
	bin := t.TempDir()
	for _, name := range []string{"demo-app", "weir-proxy"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	images := map[string]string{"weir.dev/demo-app": "demo-app", "weir.dev/missing": "missing"}
	path, err := resolveImage(images, bin, "weir.dev/demo-app:v3")
	if err != nil || path != filepath.Join(bin, "demo-app") {
		t.Errorf("resolveImage = %q, %v", path, err)
	}
	if _, err := resolveImage(images, bin, "docker.io/nginx:1"); err == nil {
		t.Error("unknown image accepted")
	}
	if _, err := resolveImage(images, bin, "weir.dev/missing:v1"); err == nil {
		t.Error("image without binary accepted")
	}
	env := map[string]string{"POD_IP": "198.18.0.9"}
	tests := []struct {
		name     string
		spec     corev1.Container
		wantBin  string
		wantArgv []string
		wantErr  bool
	}{
		{"args only", corev1.Container{Args: []string{"-addr", "$(POD_IP):9"}}, "demo-app", []string{"-addr", "198.18.0.9:9"}, false},
		{"command names the image binary", corev1.Container{Command: []string{"/demo-app", "-v"}, Args: []string{"x"}}, "demo-app", []string{"-v", "x"}, false},
		{"command names another binary", corev1.Container{Command: []string{"weir-proxy"}}, "weir-proxy", nil, false},
		{"unknown command", corev1.Container{Command: []string{"sh", "-c", "true"}}, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, got, err := commandLine(tt.spec, filepath.Join(bin, "demo-app"), bin, env)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if tt.wantErr {
				return
			}
			if got != filepath.Join(bin, tt.wantBin) || !slices.Equal(argv, tt.wantArgv) {
				t.Errorf("got %s %q, want %s %q", got, argv, tt.wantBin, tt.wantArgv)
			}
		})
	}
}

func TestFieldValue(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1",
			Labels: map[string]string{"app": "demo"}, Annotations: map[string]string{"a/b": "c"}},
		Spec: corev1.PodSpec{NodeName: "n", ServiceAccountName: "sa"},
	}
	for path, want := range map[string]string{
		"metadata.name": "p", "metadata.namespace": "ns", "metadata.uid": "u1",
		"spec.nodeName": "n", "spec.serviceAccountName": "sa",
		"status.podIP": "198.18.0.5", "status.podIPs": "198.18.0.5", "status.hostIP": "198.18.0.1",
		"metadata.labels['app']": "demo", "metadata.annotations['a/b']": "c",
	} {
		got, err := fieldValue(pod, "198.18.0.5", "198.18.0.1", path)
		if err != nil || got != want {
			t.Errorf("fieldValue(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := fieldValue(pod, "", "", "status.phase"); err == nil {
		t.Error("unsupported field path accepted")
	}
}

func TestPodNetworkAllocate(t *testing.T) {
	n := &podNetwork{prefix: netip.MustParsePrefix("127.77.0.0/29"), inUse: map[netip.Addr]bool{}}
	n.next = n.prefix.Addr().Next()
	var got []string
	for range 5 {
		a, err := n.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	want := []string{"127.77.0.2", "127.77.0.3", "127.77.0.4", "127.77.0.5", "127.77.0.6"}
	if !slices.Equal(got, want) {
		t.Fatalf("allocated %v, want %v (not the node's .1, not the broadcast .7)", got, want)
	}
	if _, err := n.Allocate(); err == nil {
		t.Fatal("allocated from a full network")
	}
	n.Release(netip.MustParseAddr("127.77.0.4"))
	if a, err := n.Allocate(); err != nil || a.String() != "127.77.0.4" {
		t.Errorf("after release got %v, %v", a, err)
	}
}
