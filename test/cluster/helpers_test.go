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
	env := map[string]string{"IP": "10.213.7.2", "PORT": "8080"}
	for in, want := range map[string]string{
		"$(IP):$(PORT)":  "10.213.7.2:8080",
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
	env := map[string]string{"POD_IP": "10.213.7.9"}
	tests := []struct {
		name     string
		spec     corev1.Container
		wantBin  string
		wantArgv []string
		wantErr  bool
	}{
		{"args only", corev1.Container{Args: []string{"-addr", "$(POD_IP):9"}}, "demo-app", []string{"-addr", "10.213.7.9:9"}, false},
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
		"status.podIP": "10.213.7.5", "status.podIPs": "10.213.7.5", "status.hostIP": "10.213.7.1",
		"metadata.labels['app']": "demo", "metadata.annotations['a/b']": "c",
	} {
		got, err := fieldValue(pod, "10.213.7.5", "10.213.7.1", path)
		if err != nil || got != want {
			t.Errorf("fieldValue(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := fieldValue(pod, "", "", "status.phase"); err == nil {
		t.Error("unsupported field path accepted")
	}
}

func TestPodNetworkAllocate(t *testing.T) {
	n := &podNetwork{prefix: netip.MustParsePrefix("10.213.7.0/24"), inUse: map[netip.Addr]bool{}}
	n.next = n.firstPod()
	var got []netip.Addr
	for range 126 {
		a, err := n.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	if got[0].String() != "10.213.7.129" || got[125].String() != "10.213.7.254" {
		t.Fatalf("allocated %s to %s, want .129 to .254 (not the node's .1, the namespace's .2, .128 or the broadcast .255)", got[0], got[125])
	}
	if _, err := n.Allocate(); err == nil {
		t.Fatal("allocated from a full network")
	}
	n.Release(netip.MustParseAddr("10.213.7.140"))
	if a, err := n.Allocate(); err != nil || a.String() != "10.213.7.140" {
		t.Errorf("after release got %v, %v", a, err)
	}
	if n.NodeIP().String() != "10.213.7.1" || n.podRange().String() != "10.213.7.128/25" {
		t.Errorf("node %s, pod range %s", n.NodeIP(), n.podRange())
	}
}

func TestPrefixesIn(t *testing.T) {
	out := []byte("default via 192.0.2.1 dev eth0\n192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2\n" +
		"local 10.213.9.7 dev lo\n2: eth0    inet 10.213.8.5/16 brd 10.213.255.255 scope global eth0\n")
	var got []string
	for _, p := range prefixesIn(out) {
		got = append(got, p.String())
	}
	want := []string{"192.0.2.1/32", "192.0.2.0/24", "192.0.2.2/32", "10.213.9.7/32", "10.213.0.0/16", "10.213.255.255/32"}
	if !slices.Equal(got, want) {
		t.Errorf("prefixes %v, want %v", got, want)
	}
}
