package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WorkloadSpec is a tenant's request for capacity. Controllers never write it:
// GitOps tools own spec, controllers own status.
// +kubebuilder:validation:XValidation:rule="!has(self.verification) || self.class == 'Batch'",message="spec.verification is only allowed for class Batch"
// +kubebuilder:validation:XValidation:rule="!has(self.batch) || self.class == 'Batch'",message="spec.batch is only allowed for class Batch"
// +kubebuilder:validation:XValidation:rule="!has(self.verification) || self.replicas == 1",message="spec.replicas must be 1 with spec.verification: each copy runs the whole workload"
// +kubebuilder:validation:XValidation:rule="!has(self.expose) || self.class == 'Service'",message="spec.expose is only allowed for class Service: a Batch Workload runs to completion and serves nobody"
type WorkloadSpec struct {
	// class is Service (keep replicas running) or Batch (run to completion).
	// +optional
	// +kubebuilder:default=Service
	Class WorkloadClass `json:"class,omitempty"`

	// replicas is how many copies of the pod to run (Service) or how many pods
	// to run in parallel (Batch).
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	Replicas int32 `json:"replicas"`

	// template is the pod each replica runs. Its requests are what Leases
	// reserve on providers; privileged settings are refused at admission.
	// +required
	// +kubebuilder:validation:XValidation:rule="has(self.spec) && size(self.spec.containers) > 0",message="spec.template.spec.containers must list at least one container",fieldPath=".spec"
	Template corev1.PodTemplateSpec `json:"template"`

	// batch tunes class Batch.
	// +optional
	Batch *BatchSpec `json:"batch,omitempty"`

	// placement constrains where replicas may run.
	// +optional
	Placement PlacementSpec `json:"placement,omitempty"`

	// priority orders Workloads competing for the same capacity; higher
	// first. It may not exceed the namespace Account's maxPriority.
	// +optional
	// +kubebuilder:validation:Minimum=-1000
	// +kubebuilder:validation:Maximum=1000
	Priority int32 `json:"priority,omitempty"`

	// progressDeadlineSeconds is how long a Lease's replicas may stay not
	// ready (from its creation, or from when one stopped being ready) before
	// the Lease is closed, nothing more is charged for it, and its replicas
	// are placed elsewhere. After three such Leases at one generation the
	// Workload stops being placed until its spec changes.
	// +optional
	// +kubebuilder:default=600
	// +kubebuilder:validation:Minimum=30
	// +kubebuilder:validation:Maximum=86400
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`

	// failover tunes how replicas on a lost provider are replaced.
	// +optional
	Failover FailoverSpec `json:"failover,omitempty"`

	// network says what the replicas may reach.
	// +optional
	Network NetworkSpec `json:"network,omitempty"`

	// expose makes ports of the replicas reachable from outside their
	// providers. Only Offers that expose services take such a Workload, and
	// the hub, not the provider, decides whether each endpoint answers.
	// +optional
	Expose *ExposeSpec `json:"expose,omitempty"`

	// budget caps the total cost of this Workload in credits; unset means
	// limited only by the namespace's balance.
	// +optional
	Budget *Amount `json:"budget,omitempty"`

	// verification runs a Batch Workload on several independent owners and
	// accepts its result only when enough copies agree.
	// +optional
	Verification *VerificationSpec `json:"verification,omitempty"`
}

// BatchSpec tunes class Batch, as in a Job.
type BatchSpec struct {
	// completions is how many pods must succeed per replica set; defaults to replicas.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	Completions *int32 `json:"completions,omitempty"`

	// backoffLimit is how many pod failures a Lease tolerates.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`

	// activeDeadlineSeconds bounds how long the batch may run.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`
}

// PlacementSpec constrains where a Workload's replicas may run.
// +kubebuilder:validation:XValidation:rule="!has(self.maxReplicasPerOwner) || !has(self.maxReplicasPerProvider) || self.maxReplicasPerProvider <= self.maxReplicasPerOwner",message="spec.placement.maxReplicasPerProvider must not exceed maxReplicasPerOwner"
type PlacementSpec struct {
	// attributeSelector selects Offers by their attributes, including the
	// provider's region, zone and owner (keys region, zone, owner).
	// +optional
	AttributeSelector *metav1.LabelSelector `json:"attributeSelector,omitempty"`

	// maxPricePerReplicaHour is the most this Workload pays for one replica
	// for one hour, summed over the resources it requests.
	// +optional
	MaxPricePerReplicaHour *Amount `json:"maxPricePerReplicaHour,omitempty"`

	// maxReplicasPerProvider spreads replicas: at most this many on one provider.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxReplicasPerProvider *int32 `json:"maxReplicasPerProvider,omitempty"`

	// maxReplicasPerOwner spreads replicas: at most this many on one owner's providers.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxReplicasPerOwner *int32 `json:"maxReplicasPerOwner,omitempty"`

	// minReputation excludes providers whose reputation score is lower.
	// +optional
	MinReputation *Score `json:"minReputation,omitempty"`

	// preferredRegions are tried first, in order, among otherwise equal offers.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	PreferredRegions []string `json:"preferredRegions,omitempty"`
}

// FailoverSpec tunes failover.
type FailoverSpec struct {
	// gracePeriodSeconds is how long a replica may be out of the hub's reach
	// before it is replaced elsewhere, counted from its provider's last
	// successful probe. Replacement never starts before the
	// provider is Lost (the hub's --provider-grace-period).
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	GracePeriodSeconds *int32 `json:"gracePeriodSeconds,omitempty"`
}

// Egress is what a Workload's replicas may reach.
// +kubebuilder:validation:Enum=None;Internet
type Egress string

const (
	// EgressNone allows the cluster's DNS service only.
	EgressNone Egress = "None"
	// EgressInternet adds public addresses; only Offers with allowEgress
	// take such a Workload.
	EgressInternet Egress = "Internet"
)

// NetworkSpec says what a Workload's replicas may reach.
type NetworkSpec struct {
	// egress is None (the cluster's DNS service only) or Internet (public
	// addresses too, never the provider's private ranges).
	// +optional
	// +kubebuilder:default=None
	Egress Egress `json:"egress,omitempty"`
}

// ExposeSpec lists the ports a Service Workload serves.
// +kubebuilder:validation:XValidation:rule="!has(self.stableAddress) || !self.stableAddress || self.ports.exists(p, p.protocol == 'HTTP')",message="spec.expose.stableAddress needs an HTTP port: the hub's entry point forwards HTTP"
type ExposeSpec struct {
	// ports to expose; each must be a TCP containerPort of the template.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:XValidation:rule="self.all(p, self.exists_one(q, q.port == p.port))",message="spec.expose.ports: each port may be listed once"
	Ports []ExposedPort `json:"ports"`

	// stableAddress asks for one address on the hub that forwards to the
	// replicas whose endpoints answer, so that the tenant's URL survives a
	// failover. It forwards the first HTTP port.
	// +optional
	StableAddress bool `json:"stableAddress,omitempty"`
}

// ExposeProtocol is how an exposed port is spoken, and so how the hub
// checks it.
// +kubebuilder:validation:Enum=TCP;HTTP
type ExposeProtocol string

const (
	// ExposeTCP is checked by a TCP connect.
	ExposeTCP ExposeProtocol = "TCP"
	// ExposeHTTP is checked by an HTTP GET of healthPath, which must
	// answer 2xx or 3xx.
	ExposeHTTP ExposeProtocol = "HTTP"
)

// ExposedPort is one port of the replicas made reachable.
// +kubebuilder:validation:XValidation:rule="!has(self.healthPath) || self.protocol == 'HTTP'",message="healthPath is only for protocol HTTP"
type ExposedPort struct {
	// name of the port, a DNS label of at most 15 characters.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// port the containers listen on.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// protocol: TCP, or HTTP (checked with a GET of healthPath).
	// +optional
	// +kubebuilder:default=TCP
	Protocol ExposeProtocol `json:"protocol,omitempty"`

	// healthPath the hub GETs to check an HTTP port; "/" by default.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^/[!-~]*$`
	HealthPath string `json:"healthPath,omitempty"`
}

// VerificationSpec asks for redundant execution with a quorum.
// +kubebuilder:validation:XValidation:rule="self.quorum <= self.redundancy",message="spec.verification.quorum must not exceed spec.verification.redundancy"
type VerificationSpec struct {
	// redundancy is how many copies run, each on a different owner.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=9
	Redundancy int32 `json:"redundancy"`

	// quorum is how many copies must report the same result digest.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=9
	Quorum int32 `json:"quorum"`

	// maxExtraCopies bounds how many copies are added when results disagree.
	// +optional
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=9
	MaxExtraCopies *int32 `json:"maxExtraCopies,omitempty"`
}

// WorkloadPhase summarises a Workload's state.
// +kubebuilder:validation:Enum=Pending;Running;Ready;Succeeded;Failed
type WorkloadPhase string

const (
	// WorkloadPending has no replica placed yet.
	WorkloadPending WorkloadPhase = "Pending"
	// WorkloadRunning has replicas placed, not all of them ready.
	WorkloadRunning WorkloadPhase = "Running"
	// WorkloadReady runs all its replicas (Service).
	WorkloadReady WorkloadPhase = "Ready"
	// WorkloadSucceeded ran to completion (Batch).
	WorkloadSucceeded WorkloadPhase = "Succeeded"
	// WorkloadFailed cannot make progress without a change.
	WorkloadFailed WorkloadPhase = "Failed"
)

// Workload condition types.
const (
	// WorkloadScheduled is true when every replica has a Lease.
	WorkloadScheduled = "Scheduled"
	// WorkloadBudgetExhausted is true when the budget or balance ran out.
	WorkloadBudgetExhausted = "BudgetExhausted"
	// WorkloadVerified is true when a quorum of copies agreed on a result.
	WorkloadVerified = "Verified"
)

// Placement is one Lease's share of a Workload.
type Placement struct {
	// provider running the replicas.
	// +required
	Provider string `json:"provider"`

	// owner of the provider.
	// +optional
	Owner string `json:"owner,omitempty"`

	// lease binding the replicas.
	// +required
	Lease string `json:"lease"`

	// replicas leased.
	// +required
	Replicas int32 `json:"replicas"`

	// epoch of the lease.
	// +optional
	Epoch int64 `json:"epoch,omitempty"`

	// pricePerReplicaHour locked in the lease.
	// +optional
	PricePerReplicaHour Amount `json:"pricePerReplicaHour,omitempty"`

	// digest reported by this copy (verified Batch Workloads).
	// +optional
	Digest string `json:"digest,omitempty"`
}

// WorkloadEndpoint is one exposed port of one Lease.
type WorkloadEndpoint struct {
	// provider serving it.
	// +required
	Provider string `json:"provider"`

	// lease whose replicas serve it.
	// +required
	Lease string `json:"lease"`

	// port is the name of the exposed port.
	// +required
	Port string `json:"port"`

	// address clients reach it at: host:port, or a host name for Ingress.
	// +required
	// +kubebuilder:validation:MaxLength=300
	Address string `json:"address"`

	// reachable is the hub's last verdict on it.
	// +optional
	Reachable bool `json:"reachable,omitempty"`
}

// VerificationStatus is the progress of redundant execution.
type VerificationStatus struct {
	// copies started or to start, including extra ones.
	// +optional
	Copies int32 `json:"copies,omitempty"`
	// extraCopies added beyond the redundancy because results disagreed or
	// were missing.
	// +optional
	ExtraCopies int32 `json:"extraCopies,omitempty"`
	// votes for the verified digest, or for the leading one while none is,
	// one per owner.
	// +optional
	Votes int32 `json:"votes,omitempty"`
	// results of the copies, by Lease, in the order they were placed.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=18
	Results []CopyResult `json:"results,omitempty"`
}

// CopyResult is one copy's result.
type CopyResult struct {
	// lease running the copy.
	// +required
	Lease string `json:"lease"`
	// provider running the copy.
	// +required
	Provider string `json:"provider"`
	// owner of the provider.
	// +optional
	Owner string `json:"owner,omitempty"`
	// state of the copy: Running, Reported, Failed or Replaced (its
	// provider was lost and another copy took its place).
	// +optional
	State string `json:"state,omitempty"`
	// digest the copy reported.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Digest string `json:"digest,omitempty"`
	// verdict once a digest is verified.
	// +optional
	Verdict Verdict `json:"verdict,omitempty"`
}

// WorkloadStatus is what the hub observed of a Workload.
type WorkloadStatus struct {
	// phase summarises the conditions.
	// +optional
	Phase WorkloadPhase `json:"phase,omitempty"`

	// replicas is the desired replica count the status was computed for.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// scheduledReplicas have a live Lease.
	// +optional
	ScheduledReplicas int32 `json:"scheduledReplicas,omitempty"`

	// pendingReplicas wait for capacity.
	// +optional
	PendingReplicas int32 `json:"pendingReplicas,omitempty"`

	// readyReplicas run and pass readiness on their providers.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// succeededReplicas completed (Batch).
	// +optional
	SucceededReplicas int32 `json:"succeededReplicas,omitempty"`

	// providers is how many distinct providers run replicas.
	// +optional
	Providers int32 `json:"providers,omitempty"`

	// placements lists the live Leases.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=1000
	Placements []Placement `json:"placements,omitempty"`

	// endpoints lists where each exposed port answers, per Lease, and
	// whether the hub's last checks reached it.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=1000
	Endpoints []WorkloadEndpoint `json:"endpoints,omitempty"`

	// address is the hub's stable entry point for the Workload
	// (spec.expose.stableAddress), a path on the hub's entry address.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Address string `json:"address,omitempty"`

	// cost so far in credits.
	// +optional
	Cost Amount `json:"cost,omitempty"`

	// verifiedDigest is the result digest a quorum agreed on.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	VerifiedDigest string `json:"verifiedDigest,omitempty"`
	// verification shows every copy of a verified Batch Workload and its result.
	// +optional
	Verification *VerificationStatus `json:"verification,omitempty"`

	// conditions: Scheduled, Ready, BudgetExhausted, Verified, Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// MaxWorkloadName is the longest Workload name: every name and label
// derived from it (its Leases' names, the workload label) must fit.
const MaxWorkloadName = 52

// Workload is a tenant's pod template with replicas, constraints, a price
// ceiling and a budget, run on the providers of the federation.
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 52",message="metadata.name: a Workload name is at most 52 characters, so that the names and labels derived from it fit"
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=wl;wls,categories=flotilla
// +kubebuilder:printcolumn:name="Class",type=string,JSONPath=`.spec.class`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Providers",type=integer,JSONPath=`.status.providers`
// +kubebuilder:printcolumn:name="Cost",type=string,JSONPath=`.status.cost`
// +kubebuilder:printcolumn:name="Verified",type=string,JSONPath=`.status.verifiedDigest`,priority=1
// +kubebuilder:printcolumn:name="Endpoints",type=string,JSONPath=`.status.endpoints[*].address`,priority=1
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.address`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Workload struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the tenant's request.
	// +required
	Spec WorkloadSpec `json:"spec"`

	// status is observed by the hub.
	// +optional
	Status WorkloadStatus `json:"status,omitempty"`
}

// WorkloadList is a list of Workloads.
// +kubebuilder:object:root=true
type WorkloadList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Workload `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Workload{}, &WorkloadList{})
}
