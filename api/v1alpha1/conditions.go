package v1alpha1

import (
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition reasons, by kind. Ready, Reconciling and Stalled follow kstatus
// (sigs.k8s.io/cli-utils): Reconciling=True while the controller works
// towards the spec, Stalled=True when progress needs a person, neither once
// the object is where its spec asks; Ready summarises.

// Reasons shared by every kind's Reconciling and Stalled conditions when
// no more specific one applies.
const (
	ReasonProgressing = "Progressing"
)

// Workload reasons: of Scheduled, Ready, Verified and BudgetExhausted (the
// market's reason codes, such as InsufficientCapacity, are Scheduled
// reasons too; see internal/market).
const (
	WorkloadReasonAllScheduled          = "AllReplicasScheduled"
	WorkloadReasonWaitingForScheduler   = "WaitingForScheduler"
	WorkloadReasonAllReady              = "AllReplicasReady"
	WorkloadReasonReplicasNotReady      = "ReplicasNotReady"
	WorkloadReasonCompleted             = "Completed"
	WorkloadReasonJobFailed             = "JobFailed"
	WorkloadReasonScaledToZero          = "ScaledToZero"
	WorkloadReasonQuorumReached         = "QuorumReached"
	WorkloadReasonAwaitingResults       = "AwaitingResults"
	WorkloadReasonQuorumNotReached      = "QuorumNotReached"
	WorkloadReasonWithinBudget          = "WithinBudget"
	WorkloadReasonBudgetExhausted       = "BudgetExhausted"
	WorkloadReasonInsufficientFunds     = "InsufficientFunds"
	WorkloadReasonInvalidTemplate       = "InvalidTemplate"
	WorkloadReasonProgressDeadline      = "ProgressDeadlineExceeded"
	WorkloadReasonNoAccount             = "NoAccount"
	WorkloadReasonSettlementUnavailable = "SettlementUnavailable"
	WorkloadReasonLeaseCreateFailed     = "LeaseCreateFailed"
	WorkloadReasonNameTooLong           = "NameTooLong"
	// Events of the bank on a Workload.
	WorkloadReasonStopped = "Stopped"
	WorkloadReasonResumed = "Resumed"
)

// Provider reasons: of Reachable and Ready. Reachable's failures name why
// the hub could not talk to the provider.
const (
	ProviderReasonProbeSucceeded       = "ProbeSucceeded"
	ProviderReasonKubeconfigMissing    = "KubeconfigMissing"
	ProviderReasonKubeconfigRefused    = "KubeconfigRefused"
	ProviderReasonAPIServerNotRecorded = "APIServerNotRecorded"
	ProviderReasonAPIServerMismatch    = "APIServerMismatch"
	ProviderReasonRedirectRefused      = "RedirectRefused"
	ProviderReasonResponseRefused      = "ResponseRefused"
	ProviderReasonCredentialsRejected  = "CredentialsRejected"
	ProviderReasonUnreachable          = "Unreachable"
	ProviderReasonTimeout              = "Timeout"
	ProviderReasonRequestFailed        = "RequestFailed"
	ProviderReasonReady                = "Ready"
	ProviderReasonCordoned             = "Cordoned"
	ProviderReasonNeverReached         = "NeverReached"
	ProviderReasonWithinGracePeriod    = "WithinGracePeriod"
	ProviderReasonLost                 = "Lost"
	ProviderReasonFencingIncomplete    = "FencingIncomplete"
	ProviderReasonBackingOff           = "BackingOff"
	// Pull mode: Reachable says whether the agent's heartbeat is fresh.
	ProviderReasonHeartbeatFresh = "HeartbeatFresh"
	ProviderReasonHeartbeatStale = "HeartbeatStale"
	ProviderReasonNoHeartbeat    = "NoHeartbeat"
)

// LeaseConditionClosed is True on a Closed Lease in place of Ready,
// Reconciling and Stalled; its reason says how the Lease ended.
const LeaseConditionClosed = "Closed"

// Lease reasons, of Ready and Closed.
const (
	LeaseReasonApplied            = "Applied"
	LeaseReasonApplyFailed        = "ApplyFailed"
	LeaseReasonReadFailed         = "ReadFailed"
	LeaseReasonRenderFailed       = "RenderFailed"
	LeaseReasonWaitingForProvider = "WaitingForProvider"
	LeaseReasonProviderLost       = "ProviderLost"
	LeaseReasonFailedOver         = "FailedOver"
	LeaseReasonCompleted          = "Completed"
	LeaseReasonJobFailed          = "JobFailed"
	LeaseReasonProgressDeadline   = "ProgressDeadlineExceeded"
	LeaseReasonRefused            = "Refused"
	LeaseReasonAwaitingAgent      = "AwaitingAgent"
	// LeaseReasonUnreachable: an exposed port does not answer the hub.
	LeaseReasonUnreachable = "EndpointUnreachable"
)

// Offer reasons, of Available and Ready.
const (
	OfferReasonOpen          = "Open"
	OfferReasonExhausted     = "Exhausted"
	OfferReasonExpired       = "Expired"
	OfferReasonNotYetValid   = "NotYetValid"
	OfferReasonMisplaced     = "WrongNamespace"
	OfferReasonOvercommitted = "Overcommitted"
	OfferReasonInvalid       = "Invalid"
)

// Account reasons, of Ready.
const (
	AccountReasonCredited      = "Credited"
	AccountReasonCreditRefused = "CreditRefused"
)

// Live reports a Lease whose replicas count as placed: not Closed and not
// being deleted.
func (l *Lease) Live() bool { return l.Status.Phase != LeaseClosed && l.DeletionTimestamp == nil }

// Ended is a Closed Lease's Closed condition, which says how and when it
// ended; nil while the Lease is not Closed.
func (l *Lease) Ended() *metav1.Condition {
	return apimeta.FindStatusCondition(l.Status.Conditions, LeaseConditionClosed)
}

// HoldsCapacity reports a Lease that still holds its Offer's capacity: not
// Closed. One being deleted holds it until its provider has removed its
// namespace.
func (l *Lease) HoldsCapacity() bool { return l.Status.Phase != LeaseClosed }
