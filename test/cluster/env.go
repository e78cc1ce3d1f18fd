package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// resolveImage maps an image (repository[:tag][@digest]) to a binary through
// images (repository → binary name in binDir, or an absolute path).
func resolveImage(images map[string]string, binDir, image string) (string, error) {
	repo := imageRepository(image)
	name, ok := images[repo]
	if !ok {
		known := make([]string, 0, len(images))
		for k := range images {
			known = append(known, k)
		}
		slices.Sort(known)
		return "", fmt.Errorf("image %q is not known to the local node (known: %s)", image, strings.Join(known, ", "))
	}
	bin := name
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(binDir, name)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("image %q maps to %s, which is missing (run 'make build'): %w", image, bin, err)
	}
	return bin, nil
}

// imageRepository strips the tag and digest from an image reference.
func imageRepository(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		image = image[:i]
	}
	return image
}

// commandLine returns the arguments and binary of a container. Without a
// command the image's binary runs with args; a command replaces it: its
// first word names the image's binary, another binary in binDir, or an
// absolute path. $(VAR) references are expanded from env.
func commandLine(spec corev1.Container, bin, binDir string, env map[string]string) ([]string, string, error) {
	var argv []string
	if len(spec.Command) > 0 {
		first := expand(spec.Command[0], env)
		switch {
		case first == bin || filepath.Base(first) == filepath.Base(bin):
		case fileExists(filepath.Join(binDir, filepath.Base(first))):
			bin = filepath.Join(binDir, filepath.Base(first))
		case filepath.IsAbs(first) && fileExists(first):
			bin = first
		default:
			return nil, "", fmt.Errorf("command %q not found in the image or in %s", first, binDir)
		}
		for _, a := range spec.Command[1:] {
			argv = append(argv, expand(a, env))
		}
	}
	for _, a := range spec.Args {
		argv = append(argv, expand(a, env))
	}
	return argv, bin, nil
}

// fileExists reports whether path exists.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// containerEnv is base followed by the container's envFrom and env, with
// fieldRef, configMapKeyRef and secretKeyRef resolved.
func containerEnv(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, podIP, hostIP string, spec corev1.Container, base []string) ([]string, error) {
	env := slices.Clone(base)
	for _, from := range spec.EnvFrom {
		vars, err := envFrom(ctx, client, pod.Namespace, from)
		if err != nil {
			return nil, err
		}
		env = append(env, vars...)
	}
	for _, e := range spec.Env {
		value, err := envValue(ctx, client, pod, podIP, hostIP, e, envMap(env))
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		env = append(env, e.Name+"="+value)
	}
	return env, nil
}

// envValue resolves one env entry.
func envValue(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, podIP, hostIP string, e corev1.EnvVar, env map[string]string) (string, error) {
	from := e.ValueFrom
	switch {
	case from == nil:
		return expand(e.Value, env), nil
	case from.FieldRef != nil:
		return fieldValue(pod, podIP, hostIP, from.FieldRef.FieldPath)
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return "", optional(ref.Optional, fmt.Errorf("failed to get configmap %s: %w", ref.Name, err))
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			return "", optional(ref.Optional, fmt.Errorf("configmap %s has no key %s", ref.Name, ref.Key))
		}
		return v, nil
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		s, err := client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return "", optional(ref.Optional, fmt.Errorf("failed to get secret %s: %w", ref.Name, err))
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			return "", optional(ref.Optional, fmt.Errorf("secret %s has no key %s", ref.Name, ref.Key))
		}
		return string(v), nil
	}
	return "", fmt.Errorf("unsupported valueFrom")
}

// optional drops err when the reference is optional.
func optional(opt *bool, err error) error {
	if opt != nil && *opt {
		return nil
	}
	return err
}

// envFrom lists the variables of a configmap or secret.
func envFrom(ctx context.Context, client kubernetes.Interface, ns string, from corev1.EnvFromSource) ([]string, error) {
	var env []string
	switch {
	case from.ConfigMapRef != nil:
		cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if err != nil {
			return nil, optional(from.ConfigMapRef.Optional, fmt.Errorf("failed to get configmap %s: %w", from.ConfigMapRef.Name, err))
		}
		for k, v := range cm.Data {
			env = append(env, from.Prefix+k+"="+v)
		}
	case from.SecretRef != nil:
		s, err := client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			return nil, optional(from.SecretRef.Optional, fmt.Errorf("failed to get secret %s: %w", from.SecretRef.Name, err))
		}
		for k, v := range s.Data {
			env = append(env, from.Prefix+k+"="+string(v))
		}
	}
	slices.Sort(env)
	return env, nil
}

// fieldValue resolves a downward-API field path.
func fieldValue(pod *corev1.Pod, podIP, hostIP, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(key, "']") {
			return m[strings.TrimSuffix(key, "']")], nil
		}
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// envMap turns KEY=value pairs into a map, later pairs winning.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// expand replaces $(VAR) with its value from env as Kubernetes does: $$
// escapes a dollar, and unknown references stay as written.
func expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteByte('$')
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
