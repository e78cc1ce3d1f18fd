package canary

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weir-dev/weir/canary/v1alpha1"
)

// This file builds the objects weir makes for a Canary (the primary
// Deployment and three Services) from the target Deployment, and reads
// what it needs back from them. It does no I/O.

const (
	// RevisionAnnotation on the primary Deployment is the revision (hash
	// of the target's pod template) weir last copied into it.
	RevisionAnnotation = v1alpha1.AnnotationPrefix + "revision"
	// LabelCanary on every object weir makes names the Canary it belongs to.
	LabelCanary = v1alpha1.AnnotationPrefix + "canary"
	// LabelRole says which of a Canary's objects this is: primary,
	// canary or apex (the Service clients call).
	LabelRole = v1alpha1.AnnotationPrefix + "role"
	// AdoptedAnnotation marks a Service that existed before the Canary and
	// that weir points at the primary; weir points it back at the target
	// when the Canary is deleted.
	AdoptedAnnotation = v1alpha1.AnnotationPrefix + "adopted-by"

	labelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "weir"

	roleApex    = "apex"
	rolePrimary = "primary"
	roleCanary  = "canary"
)

// errInvalidTarget is a problem that only a change of the target or the
// Canary can fix.
var errInvalidTarget = errors.New("invalid target")

// TemplateHash returns the revision of a pod template: the first 10 bytes
// of the SHA-256 of its JSON, in hex. JSON leaves out unset fields, so the
// hash survives new fields in the API types.
func TemplateHash(t *corev1.PodTemplateSpec) string {
	b, err := json.Marshal(t)
	if err != nil {
		// A PodTemplateSpec always marshals.
		panic(fmt.Sprintf("marshal pod template: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:10])
}

// Images returns the images of a pod template's containers, comma-separated.
func Images(t *corev1.PodTemplateSpec) string {
	var imgs []string
	for _, c := range t.Spec.Containers {
		imgs = append(imgs, c.Image)
	}
	return strings.Join(imgs, ",")
}

// targetSelector returns the labels that select the target's pods. weir
// needs plain matchLabels to derive the primary's labels from them.
func targetSelector(d *appsv1.Deployment) (map[string]string, error) {
	s := d.Spec.Selector
	if s != nil && len(s.MatchExpressions) > 0 {
		return nil, fmt.Errorf("%w: Deployment %s selects its pods with matchExpressions; weir needs matchLabels only", errInvalidTarget, d.Name)
	}
	if s == nil || len(s.MatchLabels) == 0 {
		return nil, fmt.Errorf("%w: Deployment %s has no spec.selector.matchLabels", errInvalidTarget, d.Name)
	}
	return s.MatchLabels, nil
}

// primaryLabels derives the primary's selector from the target's: every
// value gets the suffix "-primary" (app: podinfo → app: podinfo-primary), so
// no selector of the target matches a primary pod and vice versa.
func primaryLabels(sel map[string]string) map[string]string {
	out := make(map[string]string, len(sel))
	for k, v := range sel {
		out[k] = v + v1alpha1.PrimarySuffix
	}
	return out
}

// ownLabels are the labels of every object weir makes for c.
func ownLabels(c *v1alpha1.Canary, role string) map[string]string {
	return map[string]string{LabelCanary: c.Name, LabelRole: role, labelManagedBy: managedBy}
}

// newPrimary returns the primary Deployment for c, a copy of the target
// whose pods carry the primary's labels.
func newPrimary(c *v1alpha1.Canary, target *appsv1.Deployment) (*appsv1.Deployment, error) {
	p := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: c.GetPrimaryName(), Namespace: c.Namespace},
	}
	if err := setPrimarySpec(c, p, target); err != nil {
		return nil, err
	}
	return p, nil
}

// setPrimarySpec copies the target's pod template, scale and rollout
// settings to the primary p, relabelled for the primary, and records the
// revision. The selector of p, immutable, is set only on a new p.
func setPrimarySpec(c *v1alpha1.Canary, p, target *appsv1.Deployment) error {
	sel, err := targetSelector(target)
	if err != nil {
		return err
	}
	if p.Spec.Selector == nil {
		p.Spec.Selector = &metav1.LabelSelector{MatchLabels: primaryLabels(sel)}
	}
	p.Labels = primaryObjectLabels(c, target.Labels, sel)
	p.Annotations = copyAnnotations(target.Annotations)
	p.Annotations[RevisionAnnotation] = TemplateHash(&target.Spec.Template)

	tmpl := target.Spec.Template.DeepCopy()
	tmpl.Labels = maps.Clone(tmpl.Labels)
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	maps.Copy(tmpl.Labels, primaryLabels(sel))
	p.Spec.Template = *tmpl

	// The canary is scaled to zero between rollouts: the primary keeps its
	// scale then.
	if r := target.Spec.Replicas; r == nil || *r > 0 {
		p.Spec.Replicas = target.Spec.Replicas
	}
	p.Spec.Strategy = target.Spec.Strategy
	p.Spec.MinReadySeconds = target.Spec.MinReadySeconds
	p.Spec.RevisionHistoryLimit = target.Spec.RevisionHistoryLimit
	p.Spec.ProgressDeadlineSeconds = target.Spec.ProgressDeadlineSeconds
	return nil
}

// primaryObjectLabels are the target's labels, with the selector's values
// changed for the primary, plus weir's own.
func primaryObjectLabels(c *v1alpha1.Canary, labels, sel map[string]string) map[string]string {
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, primaryLabels(sel))
	maps.Copy(out, ownLabels(c, rolePrimary))
	return out
}

// copyAnnotations copies a Deployment's annotations except those that
// belong to the object they are on.
func copyAnnotations(in map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		switch k {
		case corev1.LastAppliedConfigAnnotation, "deployment.kubernetes.io/revision":
			continue
		}
		out[k] = v
	}
	return out
}

// services returns the three Services of c: the one clients call and the
// primary's select the primary's pods, the canary's selects the target's.
func services(c *v1alpha1.Canary, target *appsv1.Deployment) ([]*corev1.Service, error) {
	sel, err := targetSelector(target)
	if err != nil {
		return nil, err
	}
	return []*corev1.Service{
		newService(c, c.GetServiceName(), roleApex, primaryLabels(sel)),
		newService(c, c.GetPrimaryServiceName(), rolePrimary, primaryLabels(sel)),
		newService(c, c.GetCanaryServiceName(), roleCanary, maps.Clone(sel)),
	}, nil
}

func newService(c *v1alpha1.Canary, name, role string, selector map[string]string) *corev1.Service {
	portName := c.Spec.Service.PortName
	if portName == "" {
		portName = "http"
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace, Labels: ownLabels(c, role)},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector,
			Ports: []corev1.ServicePort{{
				Name:       portName,
				Protocol:   corev1.ProtocolTCP,
				Port:       c.Spec.Service.Port,
				TargetPort: c.Spec.Service.GetTargetPort(),
			}},
		},
	}
}

// observe returns what the state machine needs to know of a Deployment.
// d may be nil.
func observe(d *appsv1.Deployment, revision string) Workload {
	if d == nil {
		return Workload{}
	}
	w := Workload{Exists: true, Revision: revision, Images: Images(&d.Spec.Template), Replicas: 1}
	if d.Spec.Replicas != nil {
		w.Replicas = *d.Spec.Replicas
	}
	w.Ready, w.Message = deploymentReady(d)
	return w
}

// deploymentReady tells whether a Deployment has rolled out its current
// template with all replicas available, as `kubectl rollout status` does.
func deploymentReady(d *appsv1.Deployment) (bool, string) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return false, fmt.Sprintf("Deployment %s exceeded its progress deadline: %s", d.Name, c.Message)
		}
	}
	switch {
	case d.Generation > st.ObservedGeneration:
		return false, "waiting for the Deployment's rollout to start"
	case st.UpdatedReplicas < want:
		return false, fmt.Sprintf("%d of %d replicas updated", st.UpdatedReplicas, want)
	case st.Replicas > st.UpdatedReplicas:
		return false, fmt.Sprintf("%d old replicas pending termination", st.Replicas-st.UpdatedReplicas)
	case st.AvailableReplicas < st.UpdatedReplicas:
		return false, fmt.Sprintf("%d of %d updated replicas available", st.AvailableReplicas, st.UpdatedReplicas)
	}
	return true, ""
}
