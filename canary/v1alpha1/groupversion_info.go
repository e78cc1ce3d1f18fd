// Package v1alpha1 holds weir's API types: the Canary and the resources it
// refers to, in the API group weir.dev.
//
// +kubebuilder:object:generate=true
// +groupName=weir.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of weir's API.
	GroupVersion = schema.GroupVersion{Group: "weir.dev", Version: "v1alpha1"}

	// SchemeBuilder adds the types of this package to a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
