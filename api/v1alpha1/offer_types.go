package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// OfferSpec is a priced block of capacity on one provider.
// +kubebuilder:validation:XValidation:rule="self.resources.all(r, r in ['cpu', 'memory', 'ephemeral-storage', 'nvidia.com/gpu', 'pods'])",message="spec.resources: only cpu, memory, ephemeral-storage, nvidia.com/gpu and pods can be offered"
// +kubebuilder:validation:XValidation:rule="self.prices.all(r, r in self.resources)",message="spec.prices: every priced resource must also be in spec.resources"
// +kubebuilder:validation:XValidation:rule="!has(self.validFrom) || !has(self.validUntil) || timestamp(self.validUntil) > timestamp(self.validFrom)",message="spec.validUntil must be after spec.validFrom"
// +kubebuilder:validation:XValidation:rule="!has(self.minLeaseSeconds) || !has(self.maxLeaseSeconds) || self.minLeaseSeconds <= self.maxLeaseSeconds",message="spec.minLeaseSeconds must not exceed spec.maxLeaseSeconds"
type OfferSpec struct {
	// providerRef names the Provider selling this capacity. It must match the
	// namespace the Offer lives in (provider-<name>).
	// +required
	ProviderRef ProviderReference `json:"providerRef"`

	// resources offered in total: cpu, memory, ephemeral-storage,
	// nvidia.com/gpu, pods.
	// +required
	// +kubebuilder:validation:MinProperties=1
	// +kubebuilder:validation:MaxProperties=5
	Resources corev1.ResourceList `json:"resources"`

	// prices per unit-hour of each resource, in credits. A resource without a
	// price is free.
	// +required
	// +kubebuilder:validation:MaxProperties=5
	Prices PriceList `json:"prices"`

	// attributes describe the capacity (gpu-model, arch, tier) for
	// Workloads' attribute selectors. The keys owner, region and zone are
	// the hub administrator's record on the Provider and cannot be set here.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="!self.exists(k, k in ['owner', 'region', 'zone'])",message="spec.attributes: owner, region and zone are recorded by the hub administrator on the Provider and cannot be set by an Offer"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 63 && size(self[k]) <= 63)",message="spec.attributes: keys and values are at most 63 characters"
	Attributes map[string]string `json:"attributes,omitempty"`

	// classes of Workload this offer accepts.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=2
	// +kubebuilder:default={Service,Batch}
	Classes []WorkloadClass `json:"classes,omitempty"`

	// validFrom is when the offer opens; unset means now.
	// +optional
	ValidFrom *metav1.Time `json:"validFrom,omitempty"`

	// validUntil is when the offer closes to new Leases; unset means never.
	// +optional
	ValidUntil *metav1.Time `json:"validUntil,omitempty"`

	// minLeaseSeconds is the shortest Lease the provider accepts.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinLeaseSeconds *int64 `json:"minLeaseSeconds,omitempty"`

	// maxLeaseSeconds is the longest Lease the provider accepts.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxLeaseSeconds *int64 `json:"maxLeaseSeconds,omitempty"`

	// allowEgress lets Workloads that ask for it (spec.network.egress:
	// Internet) reach public addresses beyond the cluster's DNS service;
	// private, link-local and loopback ranges stay closed.
	// +optional
	AllowEgress bool `json:"allowEgress,omitempty"`

	// exposure is how this provider makes a Workload's ports reachable
	// from outside the cluster; without it, Workloads with spec.expose are
	// not placed here.
	// +optional
	Exposure *ExposureSpec `json:"exposure,omitempty"`

	// priorityClasses a Workload's template may name
	// (priorityClassName) on this provider. Without one listed, pods run at
	// the provider's default priority.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.all(c, !c.startsWith('system-'))",message="spec.priorityClasses: the system- classes preempt the provider's own components and cannot be offered"
	PriorityClasses []string `json:"priorityClasses,omitempty"`

	// runtimeClasses a Workload's template may name (runtimeClassName),
	// such as a sandboxed runtime.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=253
	RuntimeClasses []string `json:"runtimeClasses,omitempty"`

	// storage classes a Workload's template may claim ephemeral volumes of,
	// and how large one may be.
	// +optional
	// +listType=map
	// +listMapKey=className
	// +kubebuilder:validation:MaxItems=4
	Storage []StorageOffer `json:"storage,omitempty"`
}

// ExposureType is how a provider exposes services.
// +kubebuilder:validation:Enum=NodePort;LoadBalancer;Ingress
type ExposureType string

const (
	// ExposeNodePort: a NodePort Service, reached at the provider's host
	// address.
	ExposeNodePort ExposureType = "NodePort"
	// ExposeLoadBalancer: a LoadBalancer Service, reached at the address
	// the provider's load balancer gives it.
	ExposeLoadBalancer ExposureType = "LoadBalancer"
	// ExposeIngress: an Ingress of the provider's class, one host per
	// HTTP port under a wildcard domain; TCP ports cannot be exposed so.
	ExposeIngress ExposureType = "Ingress"
)

// ExposureSpec is how a provider exposes services, as its owner set it.
// +kubebuilder:validation:XValidation:rule="self.type != 'NodePort' || has(self.address)",message="spec.exposure.address is required for type NodePort: the host address clients reach node ports at"
// +kubebuilder:validation:XValidation:rule="self.type != 'Ingress' || (has(self.ingressClassName) && has(self.domain))",message="spec.exposure.ingressClassName and spec.exposure.domain are required for type Ingress"
// +kubebuilder:validation:XValidation:rule="!has(self.nodePorts) || self.nodePorts.min <= self.nodePorts.max",message="spec.exposure.nodePorts.min must not exceed max"
type ExposureSpec struct {
	// type of exposure: NodePort, LoadBalancer or Ingress.
	// +required
	Type ExposureType `json:"type"`

	// address (an IP) at which clients reach this cluster's node ports.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="spec.exposure.address must be an IP address"
	Address string `json:"address,omitempty"`

	// nodePorts is the cluster's NodePort range; a reported node port
	// outside it is not believed. 30000-32767 by default.
	// +optional
	NodePorts *PortRange `json:"nodePorts,omitempty"`

	// ingressClassName of the cluster's ingress controller.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	IngressClassName string `json:"ingressClassName,omitempty"`

	// domain under which each exposed port gets a host name
	// (<port>-<lease namespace>.<domain>); a wildcard DNS record of the
	// owner points it at the ingress controller.
	// +optional
	// +kubebuilder:validation:MaxLength=180
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$`
	Domain string `json:"domain,omitempty"`
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Min int32 `json:"min"`
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Max int32 `json:"max"`
}

// StorageOffer lets Workloads claim ephemeral volumes of one storage class.
type StorageOffer struct {
	// className of the StorageClass on the provider.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	ClassName string `json:"className"`

	// maxSize of one volume claim.
	// +required
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0')) && quantity(string(self)).compareTo(quantity('64Ti')) <= 0",message="maxSize must be more than 0 and at most 64Ti"
	MaxSize resource.Quantity `json:"maxSize"`
}

// Offer condition types.
const (
	// OfferAvailable is true while the offer is valid and has free capacity.
	OfferAvailable = "Available"
)

// OfferStatus is the hub's accounting of an Offer.
type OfferStatus struct {
	// allocated is the sum of resources held by live Leases on this offer.
	// +optional
	Allocated corev1.ResourceList `json:"allocated,omitempty"`

	// available is resources minus allocated.
	// +optional
	Available corev1.ResourceList `json:"available,omitempty"`

	// leases is the number of live Leases on this offer.
	// +optional
	Leases int32 `json:"leases,omitempty"`

	// conditions: Available, Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Offer is a priced block of capacity that a provider puts on the market.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=off;offs,categories=flotilla
// +kubebuilder:printcolumn:name="Provider",type=string,JSONPath=`.spec.providerRef.name`
// +kubebuilder:printcolumn:name="CPU",type=string,JSONPath=`.spec.resources.cpu`
// +kubebuilder:printcolumn:name="Memory",type=string,JSONPath=`.spec.resources.memory`
// +kubebuilder:printcolumn:name="CPU-Price",type=string,JSONPath=`.spec.prices.cpu`
// +kubebuilder:printcolumn:name="Mem-Price",type=string,JSONPath=`.spec.prices.memory`
// +kubebuilder:printcolumn:name="Avail-CPU",type=string,JSONPath=`.status.available.cpu`,priority=1
// +kubebuilder:printcolumn:name="Leases",type=integer,JSONPath=`.status.leases`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Offer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is published by the provider.
	// +required
	Spec OfferSpec `json:"spec"`

	// status is kept by the hub.
	// +optional
	Status OfferStatus `json:"status,omitempty"`
}

// OfferList is a list of Offers.
// +kubebuilder:object:root=true
type OfferList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Offer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Offer{}, &OfferList{})
}
