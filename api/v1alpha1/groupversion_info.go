// Package v1alpha1 contains the flotilla.dev/v1alpha1 API: Providers sell
// capacity as Offers, tenants submit Workloads, and Leases bind replicas of a
// Workload to an Offer at a locked price.
// +kubebuilder:object:generate=true
// +groupName=flotilla.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of every Flotilla kind.
	GroupVersion = schema.GroupVersion{Group: "flotilla.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the Flotilla kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the Flotilla kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
