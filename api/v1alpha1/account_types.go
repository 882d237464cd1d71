package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AccountName is the name of every Account: one per namespace.
const AccountName = "default"

// AccountSpec is what an administrator grants a tenant namespace. Provider
// namespaces (provider-<name>) get an Account made by the hub, with no
// credit, to show what the provider earned.
type AccountSpec struct {
	// credited is the total credits an administrator has granted this
	// namespace, ever. Raise it to add credits; the hub records the
	// difference in the ledger as a deposit. It can never go down.
	// +optional
	Credited Amount `json:"credited,omitempty"`

	// maxPriority is the highest spec.priority a Workload of this
	// namespace may have; one above it is refused at admission. Raising it
	// lets a tenant's Workloads go before others' for the same capacity.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=-1000
	// +kubebuilder:validation:Maximum=1000
	MaxPriority *int32 `json:"maxPriority,omitempty"`
}

// AccountStatus is the namespace's standing in the ledger.
type AccountStatus struct {
	// available credits: deposited, minus what is held in escrow and what
	// was paid.
	// +optional
	Available Amount `json:"available,omitempty"`
	// held in escrow for the namespace's live Leases.
	// +optional
	Held Amount `json:"held,omitempty"`
	// deposited in all.
	// +optional
	Deposited Amount `json:"deposited,omitempty"`
	// spent on usage, fees included.
	// +optional
	Spent Amount `json:"spent,omitempty"`
	// earned by the provider (provider namespaces).
	// +optional
	Earned Amount `json:"earned,omitempty"`
	// ledgerEntries is how many ledger entries the figures include.
	// +optional
	LedgerEntries int64 `json:"ledgerEntries,omitempty"`
	// conditions: Ready (False with reason CreditRefused when spec.credited
	// went down).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// observedGeneration is the generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Account holds a namespace's credits: granted by an administrator to a
// tenant namespace, earned by a provider. The ledger is the record; the
// status mirrors it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=acct;accts,categories=flotilla
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="an Account must be named default: one per namespace"
// +kubebuilder:printcolumn:name="Available",type=string,JSONPath=`.status.available`
// +kubebuilder:printcolumn:name="Held",type=string,JSONPath=`.status.held`
// +kubebuilder:printcolumn:name="Spent",type=string,JSONPath=`.status.spent`
// +kubebuilder:printcolumn:name="Earned",type=string,JSONPath=`.status.earned`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Account struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// spec is written by an administrator.
	// +optional
	Spec AccountSpec `json:"spec,omitempty"`
	// status is written by the hub.
	// +optional
	Status AccountStatus `json:"status,omitempty"`
}

// AccountList is a list of Accounts.
// +kubebuilder:object:root=true
type AccountList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Account `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Account{}, &AccountList{})
}
