package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// AssignmentSpec is what a Pull-mode provider must run for one Lease: the
// hub writes it in the provider's namespace, where only that provider's
// join credential can read it.
type AssignmentSpec struct {
	// leaseRef names the Lease on the hub.
	// +required
	LeaseRef AssignmentLeaseReference `json:"leaseRef"`

	// class of the Workload: Service or Batch.
	// +required
	Class WorkloadClass `json:"class"`

	// replicas to run.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	Replicas int32 `json:"replicas"`

	// resourcesPerReplica are the requests of one replica: what the agent
	// checks against its free capacity before it accepts.
	// +required
	// +kubebuilder:validation:MaxProperties=5
	ResourcesPerReplica corev1.ResourceList `json:"resourcesPerReplica"`

	// pricePerReplicaHour locked in the Lease.
	// +required
	PricePerReplicaHour Amount `json:"pricePerReplicaHour"`

	// epoch of the Lease: a namespace on the provider with a lower one for
	// the same Lease is stale.
	// +required
	// +kubebuilder:validation:Minimum=1
	Epoch int64 `json:"epoch"`

	// namespace on the provider that holds the objects.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`

	// hash of the objects; the agent reports the one it applied.
	// +required
	// +kubebuilder:validation:MaxLength=64
	Hash string `json:"hash"`

	// objects to apply, rendered by the hub exactly as it would apply them
	// itself in Push mode; the federation identity's admission policy on
	// the provider bounds what they can be.
	// +required
	// +kubebuilder:validation:MaxItems=32
	Objects []runtime.RawExtension `json:"objects"`
}

// AssignmentLeaseReference names the Lease an Assignment carries out.
type AssignmentLeaseReference struct {
	// +required
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// +required
	// +kubebuilder:validation:MaxLength=36
	UID string `json:"uid"`
}

// AssignmentState is the agent's answer.
// +kubebuilder:validation:Enum=Accepted;Refused
type AssignmentState string

const (
	// AssignmentAccepted: the agent applied the objects and runs them.
	AssignmentAccepted AssignmentState = "Accepted"
	// AssignmentRefused: the agent will not run it (reason says why); the
	// hub places the replicas elsewhere.
	AssignmentRefused AssignmentState = "Refused"
)

// AssignmentStatus is the provider agent's report. It is hostile input:
// the hub bounds every count by the Lease and reads the rest as text.
type AssignmentStatus struct {
	// state: Accepted or Refused; unset until the agent decided.
	// +optional
	State AssignmentState `json:"state,omitempty"`

	// reason of the state, CamelCase.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^([A-Z][A-Za-z0-9]*)?$`
	Reason string `json:"reason,omitempty"`

	// message for people, one line.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// appliedHash is spec.hash as last applied on the provider.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AppliedHash string `json:"appliedHash,omitempty"`

	// runningReplicas: pods bound to a node and not finished.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	RunningReplicas int32 `json:"runningReplicas,omitempty"`

	// readyReplicas among them.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// succeededReplicas of a Batch Job.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	SucceededReplicas int32 `json:"succeededReplicas,omitempty"`

	// failedReplicas of a Batch Job.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	FailedReplicas int32 `json:"failedReplicas,omitempty"`

	// complete when the Job completed.
	// +optional
	Complete bool `json:"complete,omitempty"`

	// jobFailed when the Job failed.
	// +optional
	JobFailed bool `json:"jobFailed,omitempty"`

	// digest is the result digest of a completed Batch copy.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Digest string `json:"digest,omitempty"`

	// endpoints of the Lease's exposed ports as the cluster allocated them
	// (node ports, load-balancer addresses); the hub composes and checks
	// the addresses itself.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	Endpoints []ReportedEndpoint `json:"endpoints,omitempty"`

	// lastError applying or reading on the provider.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LastError string `json:"lastError,omitempty"`

	// reportTime is the agent's clock; the hub does not trust it.
	// +optional
	ReportTime *metav1.Time `json:"reportTime,omitempty"`
}

// ReportedEndpoint is one exposed port as its provider's cluster
// allocated it.
type ReportedEndpoint struct {
	// port is the name of the exposed port.
	// +required
	// +kubebuilder:validation:MaxLength=15
	Port string `json:"port"`

	// nodePort allocated to it (exposure NodePort).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	NodePort int32 `json:"nodePort,omitempty"`

	// ip the load balancer gave it (exposure LoadBalancer).
	// +optional
	// +kubebuilder:validation:MaxLength=45
	IP string `json:"ip,omitempty"`
}

// Assignment is one Lease on a Pull-mode provider: the hub writes the spec,
// the provider's agent alone writes the status.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=asg,categories=flotilla
// +kubebuilder:printcolumn:name="Lease",type=string,JSONPath=`.spec.leaseRef.name`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Assignment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AssignmentSpec `json:"spec"`

	// +optional
	Status AssignmentStatus `json:"status,omitempty"`
}

// AssignmentList is a list of Assignments.
// +kubebuilder:object:root=true
type AssignmentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Assignment `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Assignment{}, &AssignmentList{})
}
