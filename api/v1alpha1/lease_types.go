package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// LeaseSpec is the contract binding replicas of one Workload to one Offer.
// Everything but replicas is fixed when the Lease is created.
// +kubebuilder:validation:XValidation:rule="self.workloadRef == oldSelf.workloadRef && self.providerRef == oldSelf.providerRef && self.offerRef == oldSelf.offerRef",message="spec.workloadRef, spec.providerRef and spec.offerRef are immutable"
// +kubebuilder:validation:XValidation:rule="self.epoch == oldSelf.epoch",message="spec.epoch is immutable"
// +kubebuilder:validation:XValidation:rule="self.prices == oldSelf.prices && self.pricePerReplicaHour == oldSelf.pricePerReplicaHour",message="spec.prices and spec.pricePerReplicaHour are locked at creation"
type LeaseSpec struct {
	// workloadRef names the Workload, in the Lease's namespace.
	// +required
	WorkloadRef LocalObjectReference `json:"workloadRef"`

	// providerRef names the Provider running the replicas.
	// +required
	ProviderRef ProviderReference `json:"providerRef"`

	// offerRef names the Offer the capacity comes from.
	// +required
	OfferRef ObjectReference `json:"offerRef"`

	// class copied from the Workload.
	// +optional
	// +kubebuilder:default=Service
	Class WorkloadClass `json:"class,omitempty"`

	// replicas bound by this Lease.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	Replicas int32 `json:"replicas"`

	// resourcesPerReplica are the requests of one replica, as reserved.
	// +required
	// +kubebuilder:validation:MaxProperties=5
	ResourcesPerReplica corev1.ResourceList `json:"resourcesPerReplica"`

	// prices are the Offer's unit prices, locked at creation.
	// +required
	// +kubebuilder:validation:MaxProperties=5
	Prices PriceList `json:"prices"`

	// pricePerReplicaHour is resourcesPerReplica priced at prices.
	// +required
	PricePerReplicaHour Amount `json:"pricePerReplicaHour"`

	// epoch fences provider-side objects: anything with a lower epoch for
	// the same Workload is deleted.
	// +required
	// +kubebuilder:validation:Minimum=1
	Epoch int64 `json:"epoch"`
}

// LeaseEndpoint is one exposed port of a Lease and the hub's verdict on it.
type LeaseEndpoint struct {
	// port is the name of the exposed port.
	// +required
	// +kubebuilder:validation:MaxLength=15
	Port string `json:"port"`

	// address clients reach it at: host:port, or a host name for Ingress.
	// +required
	// +kubebuilder:validation:MaxLength=300
	Address string `json:"address"`

	// reachable is the hub's last verdict.
	// +optional
	Reachable bool `json:"reachable,omitempty"`

	// message says why it is not reachable (or not checked).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Message string `json:"message,omitempty"`
}

// LeasePhase is where a Lease is in its life.
// +kubebuilder:validation:Enum=Pending;Active;Lost;Closing;Closed
type LeasePhase string

const (
	// LeasePending is created but not yet applied on its provider.
	LeasePending LeasePhase = "Pending"
	// LeaseActive runs on its provider.
	LeaseActive LeasePhase = "Active"
	// LeaseLost is on a provider that stopped answering.
	LeaseLost LeasePhase = "Lost"
	// LeaseClosing is being removed from its provider.
	LeaseClosing LeasePhase = "Closing"
	// LeaseClosed is over; its capacity is free.
	LeaseClosed LeasePhase = "Closed"
)

// LeaseOutcome is how a closed Lease ended.
// +kubebuilder:validation:Enum=Completed;Failed;FailedOver;ProgressDeadlineExceeded;Refused
type LeaseOutcome string

const (
	// OutcomeCompleted: the Lease's Job completed (Batch).
	OutcomeCompleted LeaseOutcome = "Completed"
	// OutcomeFailed: the Lease's Job failed (Batch).
	OutcomeFailed LeaseOutcome = "Failed"
	// OutcomeFailedOver: its provider stayed Lost past the Workload's
	// failover grace period; its replicas were placed elsewhere.
	OutcomeFailedOver LeaseOutcome = "FailedOver"
	// OutcomeProgressDeadlineExceeded: its replicas were not ready within
	// the Workload's progress deadline; they were placed elsewhere.
	OutcomeProgressDeadlineExceeded LeaseOutcome = "ProgressDeadlineExceeded"
	// OutcomeRefused: the agent of its Pull-mode provider refused the
	// Assignment (it did not fit what the cluster has free); its replicas
	// were placed elsewhere. The provider's right, not a failure.
	OutcomeRefused LeaseOutcome = "Refused"
)

// Finished reports an outcome that ends the Lease's share of the work for
// good (its Job ran to an end), as opposed to one whose replicas are
// replaced.
func (o LeaseOutcome) Finished() bool { return o == OutcomeCompleted || o == OutcomeFailed }

// Replaced reports an outcome whose replicas the scheduler places again
// elsewhere, under a new epoch.
func (o LeaseOutcome) Replaced() bool {
	return o == OutcomeFailedOver || o == OutcomeProgressDeadlineExceeded || o == OutcomeRefused
}

// Verdict is how a copy's result compared with the quorum.
// +kubebuilder:validation:Enum=Agreed;Dissented
type Verdict string

const (
	// VerdictAgreed: the copy reported the verified digest.
	VerdictAgreed Verdict = "Agreed"
	// VerdictDissented: the copy reported another digest, or none.
	VerdictDissented Verdict = "Dissented"
)

// LeaseUsage is metered usage of a Lease.
type LeaseUsage struct {
	// replicaSeconds integrates the running replicas the hub observed over
	// time; time it did not observe is never charged.
	// +optional
	ReplicaSeconds int64 `json:"replicaSeconds,omitempty"`

	// cost of that usage at the locked prices, in credits, rounded down to
	// the micro-credit.
	// +optional
	Cost Amount `json:"cost,omitempty"`

	// meteredUntil is the end of the metered time.
	// +optional
	MeteredUntil *metav1.Time `json:"meteredUntil,omitempty"`
}

// LeaseStatus is what the hub observed of a Lease on its provider.
type LeaseStatus struct {
	// phase of the Lease.
	// +optional
	Phase LeasePhase `json:"phase,omitempty"`

	// outcome is how the Lease ended, once it is Closed; unset for Leases
	// deleted before (scaled down, drained, stopped by the bank).
	// +optional
	Outcome LeaseOutcome `json:"outcome,omitempty"`

	// namespace on the provider holding the Lease's objects.
	// +optional
	Namespace string `json:"namespace,omitempty"`

	// readyReplicas reported by the provider, at most spec.replicas.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// runningReplicas are pods the provider reports bound to a node and not
	// finished, at most spec.replicas: what is charged, ready or not.
	// +optional
	RunningReplicas int32 `json:"runningReplicas,omitempty"`

	// succeededReplicas reported by the provider (Batch).
	// +optional
	SucceededReplicas int32 `json:"succeededReplicas,omitempty"`

	// failedReplicas reported by the provider (Batch).
	// +optional
	FailedReplicas int32 `json:"failedReplicas,omitempty"`

	// endpoints are where the Lease's exposed ports answer, composed by the
	// hub from what the provider reports and its Offer, with the hub's own
	// verdict on each. For an exposed Workload, readyReplicas and
	// runningReplicas count only while every endpoint answers the hub's
	// checks: a provider is neither believed nor paid for replicas nobody
	// can reach.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	Endpoints []LeaseEndpoint `json:"endpoints,omitempty"`

	// unreachableCount is how many times an endpoint of this Lease stopped
	// answering the hub's checks while its provider reported replicas
	// ready. A Lease with any costs its provider reputation once, weighed
	// as a dissent: the provider's report was false.
	// +optional
	// +kubebuilder:validation:Minimum=0
	UnreachableCount int32 `json:"unreachableCount,omitempty"`

	// notReadySince is when the Lease last had fewer replicas ready than
	// leased (or was created); unset while all are. Past the Workload's
	// progressDeadlineSeconds the Lease is closed and its replicas placed
	// elsewhere.
	// +optional
	NotReadySince *metav1.Time `json:"notReadySince,omitempty"`

	// failedSyncs counts the syncs in a row that could not apply or read
	// the Lease on its provider; the next try waits longer after each.
	// +optional
	// +kubebuilder:validation:Minimum=0
	FailedSyncs int32 `json:"failedSyncs,omitempty"`

	// usage metered so far.
	// +optional
	Usage LeaseUsage `json:"usage,omitempty"`

	// digest is the result digest reported by a Batch copy.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Digest string `json:"digest,omitempty"`

	// verdict on the digest, once the Workload's quorum decided: Agreed or
	// Dissented.
	// +optional
	Verdict Verdict `json:"verdict,omitempty"`
	// lastSyncTime is when the hub last read the Lease's state from its provider.
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`

	// appliedHash is the SHA-256 of the objects last applied on the
	// provider; the hub re-applies when it changes, when the provider lost
	// an object, and every few minutes to undo drift.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AppliedHash string `json:"appliedHash,omitempty"`

	// lastApplyTime is when the objects were last applied on the provider.
	// +optional
	LastApplyTime *metav1.Time `json:"lastApplyTime,omitempty"`

	// lastError is the last error applying or reading the Lease, cut to
	// 1024 characters.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LastError string `json:"lastError,omitempty"`

	// lostTime is when the Lease's provider was declared Lost.
	// +optional
	LostTime *metav1.Time `json:"lostTime,omitempty"`

	// conditions: Ready, Reconciling.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Lease binds some replicas of one Workload to one Offer at a locked price.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=flease;fleases,categories=flotilla
// +kubebuilder:printcolumn:name="Workload",type=string,JSONPath=`.spec.workloadRef.name`
// +kubebuilder:printcolumn:name="Provider",type=string,JSONPath=`.spec.providerRef.name`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Epoch",type=integer,JSONPath=`.spec.epoch`,priority=1
// +kubebuilder:printcolumn:name="Price/h",type=string,JSONPath=`.spec.pricePerReplicaHour`,priority=1
// +kubebuilder:printcolumn:name="Endpoints",type=string,JSONPath=`.status.endpoints[*].address`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Lease struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the contract.
	// +required
	Spec LeaseSpec `json:"spec"`

	// status is observed by the hub.
	// +optional
	Status LeaseStatus `json:"status,omitempty"`
}

// LeaseList is a list of Leases.
// +kubebuilder:object:root=true
type LeaseList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Lease `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Lease{}, &LeaseList{})
}
