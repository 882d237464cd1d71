package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ProviderSpec is what the owner of a provider cluster declares about it.
// +kubebuilder:validation:XValidation:rule="!has(self.zone) || has(self.region)",message="spec.zone requires spec.region"
// +kubebuilder:validation:XValidation:rule="self.mode != 'Pull' || (!has(self.apiServerURL) && !has(self.kubeconfigSecretRef))",message="a Pull-mode provider has no spec.apiServerURL and no spec.kubeconfigSecretRef: the hub never connects to it"
// +kubebuilder:validation:XValidation:rule="self.mode == 'Pull' || has(self.kubeconfigSecretRef)",message="a Push-mode provider needs spec.kubeconfigSecretRef"
type ProviderSpec struct {
	// mode is how the hub reaches the provider, recorded by the
	// administrator when issuing the join credential. Push: the hub
	// connects to the provider's API server with the federation identity's
	// kubeconfig. Pull: the hub never connects; it writes Assignments in
	// the provider's namespace and the provider's agent applies them and
	// reports back, for clusters behind NAT or a firewall. Immutable:
	// re-register the provider to change it.
	// +optional
	// +kubebuilder:default=Push
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.mode is immutable; re-register the provider to change it"
	Mode ProviderMode `json:"mode,omitempty"`

	// owner identifies the person or organisation behind this provider. It is
	// the unit of independence for spreading replicas and for verification.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Owner string `json:"owner"`

	// region of the provider's nodes, for example eu-west.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Region string `json:"region,omitempty"`

	// zone within the region.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Zone string `json:"zone,omitempty"`

	// attributes are free-form facts about the provider (gpu model, arch,
	// tier) that Offers inherit and Workloads can select on. The keys owner,
	// region and zone always come from the fields above.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="!self.exists(k, k in ['owner', 'region', 'zone'])",message="spec.attributes: owner, region and zone are set by spec.owner, spec.region and spec.zone"
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 63 && size(self[k]) <= 63)",message="spec.attributes: keys and values are at most 63 characters"
	Attributes map[string]string `json:"attributes,omitempty"`

	// kubeconfigSecretRef names the Secret in flotilla-system that holds the
	// kubeconfig of the provider's federation identity. The hub reads only
	// its server, CA data and a bearer token or client certificate data.
	// Required in Push mode, absent in Pull mode.
	// +optional
	KubeconfigSecretRef *SecretKeyReference `json:"kubeconfigSecretRef,omitempty"`

	// apiServerURL is the provider's API server as the administrator
	// recorded it when issuing the join credential. The hub connects to no
	// other address: a kubeconfig naming another server is refused until
	// the administrator changes this record. A join credential cannot
	// change it.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https://[^/?#@\s]+(/[^?#\s]*)?$`
	APIServerURL string `json:"apiServerURL,omitempty"`

	// endpointRanges are the CIDRs where this provider's service endpoints
	// may be, as the administrator recorded them at join: the hub checks
	// (and forwards to) no address outside them, whatever the provider
	// reports, and a provider without any takes no Workload that exposes
	// ports. A join credential cannot change them.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="spec.endpointRanges: each must be a CIDR such as 203.0.113.0/24"
	EndpointRanges []string `json:"endpointRanges,omitempty"`

	// publicKey is the provider agent's ed25519 public key, base64 encoded,
	// used to verify its signed usage reports.
	// +optional
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9+/]{43}=$`
	PublicKey string `json:"publicKey,omitempty"`

	// maxLeases is the most Leases the provider runs at once, as its owner
	// wants; 0 means no limit.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxLeases int32 `json:"maxLeases,omitempty"`

	// unschedulable cordons the provider: no new Leases are placed on it and
	// its existing replicas are drained elsewhere.
	// +optional
	Unschedulable bool `json:"unschedulable,omitempty"`
}

// ProviderMode is how the hub reaches a provider.
// +kubebuilder:validation:Enum=Push;Pull
type ProviderMode string

const (
	// ModePush: the hub connects to the provider's API server.
	ModePush ProviderMode = "Push"
	// ModePull: the provider's agent connects to the hub and applies its
	// Assignments; the hub holds no credential for the provider.
	ModePull ProviderMode = "Pull"
)

// Pull reports whether the hub reaches the provider through its agent.
func (s *ProviderSpec) Pull() bool { return s.Mode == ModePull }

// SecretKeyReference names a key of a Secret in the flotilla-system namespace.
type SecretKeyReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key in the Secret's data holding the kubeconfig.
	// +optional
	// +kubebuilder:default=kubeconfig
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// ProviderPhase is a coarse summary of a provider's state.
// +kubebuilder:validation:Enum=Pending;Ready;Lost;Cordoned
type ProviderPhase string

const (
	// ProviderPending has not been reached yet.
	ProviderPending ProviderPhase = "Pending"
	// ProviderReady answers the hub's probes and accepts Leases.
	ProviderReady ProviderPhase = "Ready"
	// ProviderLost did not answer the hub for longer than the grace period.
	ProviderLost ProviderPhase = "Lost"
	// ProviderCordoned is reachable but takes no new Leases.
	ProviderCordoned ProviderPhase = "Cordoned"
)

// Provider condition types.
const (
	// ProviderReachable is true when the last probe of the provider's API succeeded.
	ProviderReachable = "Reachable"
)

// ProviderCapacity is what the hub measured on the provider's nodes.
type ProviderCapacity struct {
	// nodes is the number of schedulable, Ready nodes.
	// +optional
	Nodes int32 `json:"nodes,omitempty"`

	// allocatable is the sum of the nodes' allocatable resources.
	// +optional
	Allocatable corev1.ResourceList `json:"allocatable,omitempty"`

	// allocated is the sum of the requests of pods bound to those nodes.
	// +optional
	Allocated corev1.ResourceList `json:"allocated,omitempty"`

	// free is allocatable minus allocated.
	// +optional
	Free corev1.ResourceList `json:"free,omitempty"`

	// largestFreeChunk is, per resource, the most any single node has free:
	// the largest request one replica can have and still fit.
	// +optional
	LargestFreeChunk corev1.ResourceList `json:"largestFreeChunk,omitempty"`
}

// Reputation is the hub's measured trust in a provider: a beta reputation
// over decaying evidence (see docs/architecture.md, "Reputation").
type Reputation struct {
	// score in [0, 1]: (positive + uptime evidence + 1) / (all evidence + 2).
	// Newcomers start neutral at 0.5.
	// +optional
	Score Score `json:"score,omitempty"`
	// positive is the decayed weight of good evidence: completed Batch
	// Leases and results that agreed with a quorum.
	// +optional
	Positive Weight `json:"positive,omitempty"`
	// negative is the decayed weight of bad evidence: Leases lost or
	// failed, and results that disagreed with a quorum (weight 5 each).
	// +optional
	Negative Weight `json:"negative,omitempty"`
	// uptime is the decayed share of observed time the provider was Ready
	// or Cordoned rather than Lost.
	// +optional
	Uptime Score `json:"uptime,omitempty"`
	// upSeconds is the decayed time observed up; 10 hours weigh as one
	// positive event.
	// +optional
	// +kubebuilder:validation:Minimum=0
	UpSeconds int64 `json:"upSeconds,omitempty"`
	// downSeconds is the decayed time observed Lost.
	// +optional
	// +kubebuilder:validation:Minimum=0
	DownSeconds int64 `json:"downSeconds,omitempty"`
	// updatedTime is when the evidence was last decayed.
	// +optional
	UpdatedTime *metav1.Time `json:"updatedTime,omitempty"`
	// leasesCompleted counts Leases that ended normally.
	// +optional
	LeasesCompleted int64 `json:"leasesCompleted,omitempty"`
	// leasesFailed counts Leases lost or failed on this provider.
	// +optional
	LeasesFailed int64 `json:"leasesFailed,omitempty"`
	// verificationsPassed counts redundant-execution results that agreed with the quorum.
	// +optional
	VerificationsPassed int64 `json:"verificationsPassed,omitempty"`
	// verificationsFailed counts results that disagreed with the quorum.
	// +optional
	VerificationsFailed int64 `json:"verificationsFailed,omitempty"`
	// endpointsUnreachable counts Leases whose endpoints stopped answering
	// the hub while the provider reported their replicas ready (weight 5
	// each, as a dissent).
	// +optional
	EndpointsUnreachable int64 `json:"endpointsUnreachable,omitempty"`
	// recorded names the last Lease events counted ("<lease uid>/outcome",
	// "/verdict" or "/unreachable"), so that one counted just before a restart is not
	// counted again.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	Recorded []string `json:"recorded,omitempty"`
}

// ProviderStatus is what the hub observed of a provider.
type ProviderStatus struct {
	// phase summarises the conditions.
	// +optional
	Phase ProviderPhase `json:"phase,omitempty"`

	// mode the hub reaches the provider in, as recorded in spec.mode.
	// +optional
	Mode ProviderMode `json:"mode,omitempty"`

	// conditions: Ready, Reachable.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// lastHeartbeatTime is when the hub, by its own clock, saw the agent
	// renew its heartbeat. The time the agent writes is never trusted.
	// +optional
	LastHeartbeatTime *metav1.Time `json:"lastHeartbeatTime,omitempty"`

	// observedHeartbeat is the agent's heartbeat as last seen, kept only to
	// tell a new heartbeat from an old one across restarts of the hub.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	ObservedHeartbeat string `json:"observedHeartbeat,omitempty"`

	// lastProbeTime is when the hub last reached the provider's API server,
	// as recorded: about once a minute while nothing else changes, and at
	// every change of phase.
	// +optional
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`

	// capacity observed on the provider's nodes.
	// +optional
	Capacity ProviderCapacity `json:"capacity,omitempty"`

	// recentLosses counts the times the provider was Lost, each within the
	// flap window of the previous one. From the second, a returning provider
	// waits a hold-down that doubles with each loss before it takes work.
	// +optional
	RecentLosses int32 `json:"recentLosses,omitempty"`

	// lastLostTime is when the provider was last declared Lost.
	// +optional
	LastLostTime *metav1.Time `json:"lastLostTime,omitempty"`

	// readmitTime is when a provider back from being Lost may take work
	// again; unset when no hold-down applies.
	// +optional
	ReadmitTime *metav1.Time `json:"readmitTime,omitempty"`

	// reputation of the provider.
	// +optional
	Reputation Reputation `json:"reputation,omitempty"`

	// kubernetesVersion reported by the provider's API server.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`

	// observedGeneration is the generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Provider is an independently owned cluster that sells capacity on the hub.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=prov;provs,categories=flotilla
// +kubebuilder:printcolumn:name="Owner",type=string,JSONPath=`.spec.owner`
// +kubebuilder:printcolumn:name="Region",type=string,JSONPath=`.spec.region`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Free-CPU",type=string,JSONPath=`.status.capacity.free.cpu`
// +kubebuilder:printcolumn:name="Free-Mem",type=string,JSONPath=`.status.capacity.free.memory`
// +kubebuilder:printcolumn:name="Reputation",type=string,JSONPath=`.status.reputation.score`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Provider struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is declared by the provider's owner.
	// +required
	Spec ProviderSpec `json:"spec"`

	// status is observed by the hub.
	// +optional
	Status ProviderStatus `json:"status,omitempty"`
}

// ProviderList is a list of Providers.
// +kubebuilder:object:root=true
type ProviderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Provider `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Provider{}, &ProviderList{})
}
