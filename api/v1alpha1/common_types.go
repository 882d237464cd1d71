package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
)

// Amount is an exact, non-negative decimal number of credits with at most six
// fractional digits (one micro-credit). It is a string so that no client ever
// rounds it through a float; internal/money parses it into integer
// micro-credits.
// +kubebuilder:validation:Pattern=`^(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?$`
// +kubebuilder:validation:MaxLength=19
type Amount string

// Score is a decimal in [0, 1] with at most three fractional digits, used for
// reputation.
// +kubebuilder:validation:Pattern=`^(0(\.[0-9]{1,3})?|1(\.0{1,3})?)$`
// +kubebuilder:validation:MaxLength=5
type Score string

// Weight is a non-negative decimal with at most three fractional digits,
// used for reputation evidence.
// +kubebuilder:validation:Pattern=`^[0-9]{1,12}(\.[0-9]{1,3})?$`
// +kubebuilder:validation:MaxLength=16
type Weight string

// WorkloadClass says how replicas of a Workload run on a provider.
// +kubebuilder:validation:Enum=Service;Batch
type WorkloadClass string

const (
	// ClassService keeps the requested replicas running (a Deployment).
	ClassService WorkloadClass = "Service"
	// ClassBatch runs replicas to completion (a Job).
	ClassBatch WorkloadClass = "Batch"
)

// ResourceGPU is the extended resource name for NVIDIA GPUs.
const ResourceGPU corev1.ResourceName = "nvidia.com/gpu"

// MarketResources lists the resources that Offers may sell and Leases may
// reserve. Anything else in a pod's requests is not metered.
var MarketResources = []corev1.ResourceName{
	corev1.ResourceCPU,
	corev1.ResourceMemory,
	corev1.ResourceEphemeralStorage,
	ResourceGPU,
	corev1.ResourcePods,
}

// PriceList maps a resource name to its price per unit-hour. Units are those
// of the resource: one CPU core, one GiB of memory or ephemeral storage, one
// GPU, one pod.
type PriceList map[corev1.ResourceName]Amount

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	// name of the referenced object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ObjectReference names a namespaced object anywhere on the hub.
type ObjectReference struct {
	// namespace of the referenced object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`

	// name of the referenced object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ProviderReference names a cluster-scoped Provider.
type ProviderReference struct {
	// name of the Provider.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
}

// Condition types shared by several kinds.
const (
	// ConditionReady summarises the kind's other conditions.
	ConditionReady = "Ready"
	// ConditionReconciling is true while the controller works towards the spec.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is true when progress needs a user's action.
	ConditionStalled = "Stalled"
)

// Labels and annotations Flotilla sets on hub and provider objects.
const (
	// LabelManaged marks provider-side namespaces created by a hub.
	LabelManaged = "flotilla.dev/managed"
	// LabelProvider carries a Provider's name on its Offers and Leases.
	LabelProvider = "flotilla.dev/provider"
	// LabelWorkload carries a Workload's name on its Leases.
	LabelWorkload = "flotilla.dev/workload"
	// LabelLease carries a Lease's UID on provider-side objects.
	LabelLease = "flotilla.dev/lease"
	// LabelEpoch carries a Lease's fencing epoch on provider-side objects.
	LabelEpoch = "flotilla.dev/epoch"
	// LabelHub carries the hub's id on provider-side objects.
	LabelHub = "flotilla.dev/hub"
	// LabelOwner carries, on a Lease, the owner of its provider when it was
	// placed: copies of a verified Workload must have distinct owners.
	LabelOwner = "flotilla.dev/owner"
	// AnnotationWorkloadGeneration on a Lease is the Workload's generation
	// it was placed for.
	AnnotationWorkloadGeneration = "flotilla.dev/workload-generation"
	// AnnotationReputationRecorded lists the events of a Lease its
	// provider's reputation has counted ("outcome", "verdict").
	AnnotationReputationRecorded = "flotilla.dev/reputation-recorded"
	// AnnotationLost on a Pull-mode agent's heartbeat Lease is when the
	// hub declared the provider Lost. The agent renews the heartbeat (and
	// removes it) only after a round that began after it saw it has fenced
	// its stale work.
	AnnotationLost = "flotilla.dev/lost"
)

// Finalizers the hub sets. A Lease is created with the first two: its
// provider-side namespace is removed, and its usage settled, before it goes.
const (
	// FinalizerProviderCleanup keeps a Lease until its namespace on the
	// provider is gone.
	FinalizerProviderCleanup = "flotilla.dev/provider-cleanup"
	// FinalizerSettlement keeps a Lease until its usage is settled.
	FinalizerSettlement = "flotilla.dev/settlement"
	// FinalizerDrain keeps a deregistered Provider until none of its Leases
	// holds capacity.
	FinalizerDrain = "flotilla.dev/drain"
)

// SystemNamespace is where the hub keeps provider kubeconfig Secrets.
const SystemNamespace = "flotilla-system"

// LedgerNamespace is where the hub publishes its signed ledger head and the
// index of entry hashes: public, readable by every provider and tenant.
const LedgerNamespace = "flotilla-ledger"

// JoinNamespace holds the providers' join identities and nothing else, so
// that its ServiceAccount group names exactly the join identities: RBAC
// grants them shared rules through that group rather than a binding per
// provider, which every request would walk.
const JoinNamespace = "flotilla-join"

// ProviderNamespace returns the hub namespace that holds a provider's Offers.
func ProviderNamespace(provider string) string { return "provider-" + provider }
