package controllers

import (
	"cmp"
	"fmt"
	"slices"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/internal/quorum"
)

// Condition reasons the Workload controller sets.
const (
	ReasonAllScheduled     = "AllReplicasScheduled"
	ReasonWaitingScheduler = "WaitingForScheduler"
	ReasonAllReady         = "AllReplicasReady"
	ReasonReplicasNotReady = "ReplicasNotReady"
	ReasonCompleted        = "Completed"
	ReasonScaledToZero     = "ScaledToZero"
)

// computeWorkloadStatus derives the whole status from the Workload's Leases
// and the scheduler's verdict on its pending replicas (summary and code of
// the main reason; hasVerdict false when the last cycle left none pending).
func computeWorkloadStatus(w *flotillav1.Workload, leases []flotillav1.Lease, summary, code string, hasVerdict bool) flotillav1.WorkloadStatus {
	st := flotillav1.WorkloadStatus{
		Replicas:           w.Spec.Replicas,
		ObservedGeneration: w.Generation,
		Conditions:         slices.Clone(w.Status.Conditions),
	}
	providers := map[string]bool{}
	var cost money.Micro
	failed := ""
	for i := range leases {
		l := &leases[i]
		if finished(l) {
			st.ScheduledReplicas += l.Spec.Replicas
			st.SucceededReplicas += l.Status.SucceededReplicas
			if l.Status.Outcome == flotillav1.OutcomeFailed {
				msg := ""
				if c := apimeta.FindStatusCondition(l.Status.Conditions, flotillav1.ConditionReady); c != nil {
					msg = c.Message
				}
				failed = "lease " + l.Name + " on " + l.Spec.ProviderRef.Name + ": " + msg
			}
			continue
		}
		if !leaseLive(l) || l.DeletionTimestamp != nil {
			continue
		}
		st.ScheduledReplicas += l.Spec.Replicas
		st.ReadyReplicas += l.Status.ReadyReplicas
		st.SucceededReplicas += l.Status.SucceededReplicas
		providers[l.Spec.ProviderRef.Name] = true
		st.Placements = append(st.Placements, flotillav1.Placement{
			Provider: l.Spec.ProviderRef.Name, Lease: l.Name, Replicas: l.Spec.Replicas,
			Epoch: l.Spec.Epoch, PricePerReplicaHour: l.Spec.PricePerReplicaHour, Digest: l.Status.Digest,
		})
	}
	for i := range leases {
		if c, err := money.Parse(string(leases[i].Status.Usage.Cost)); err == nil {
			cost += c
		}
	}
	slices.SortFunc(st.Placements, func(a, b flotillav1.Placement) int {
		if c := cmp.Compare(a.Provider, b.Provider); c != 0 {
			return c
		}
		return cmp.Compare(a.Lease, b.Lease)
	})
	st.Providers = int32(len(providers))
	want := w.Spec.Replicas
	var vd *quorum.Decision
	if verified(w) {
		ptrs := make([]*flotillav1.Lease, len(leases))
		for i := range leases {
			ptrs[i] = &leases[i]
		}
		d, results := decideVerification(w, ptrs)
		vd = &d
		want = int32(d.Copies)
		st.VerifiedDigest = d.Verified
		st.Verification = &flotillav1.VerificationStatus{
			Copies: want, ExtraCopies: max(0, want-w.Spec.Verification.Redundancy), Votes: int32(d.Votes), Results: results,
		}
	}
	st.PendingReplicas = max(0, want-st.ScheduledReplicas)
	st.Cost = flotillav1.Amount(cost.String())

	sched := metav1.Condition{Type: flotillav1.WorkloadScheduled, ObservedGeneration: w.Generation}
	switch {
	case st.PendingReplicas == 0:
		sched.Status, sched.Reason = metav1.ConditionTrue, ReasonAllScheduled
		sched.Message = pluralReplicas(st.ScheduledReplicas) + " scheduled on " + pluralProviders(st.Providers)
	case hasVerdict && code != "":
		sched.Status, sched.Reason = metav1.ConditionFalse, code
		sched.Message = pluralReplicas(st.PendingReplicas) + " pending: " + summary
	default:
		sched.Status, sched.Reason = metav1.ConditionFalse, ReasonWaitingScheduler
		sched.Message = pluralReplicas(st.PendingReplicas) + " waiting for the next scheduling cycle"
	}
	setCondition(&st.Conditions, sched)

	ready := metav1.Condition{Type: flotillav1.ConditionReady, ObservedGeneration: w.Generation}
	batch := w.Spec.Class == flotillav1.ClassBatch
	switch {
	case w.Spec.Replicas == 0:
		st.Phase = flotillav1.WorkloadReady
		ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, ReasonScaledToZero, "no replicas requested"
	case vd != nil:
		setVerification(&st, w, vd, &ready)
	case batch && failed != "":
		st.Phase = flotillav1.WorkloadFailed
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonJobFailed, failed
	case batch && st.SucceededReplicas >= w.Spec.Replicas:
		st.Phase = flotillav1.WorkloadSucceeded
		ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, ReasonCompleted, "all replicas succeeded"
	case !batch && st.ReadyReplicas >= w.Spec.Replicas:
		st.Phase = flotillav1.WorkloadReady
		ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, ReasonAllReady, pluralReplicas(st.ReadyReplicas)+" ready"
	default:
		st.Phase = flotillav1.WorkloadRunning
		if st.ScheduledReplicas == 0 {
			st.Phase = flotillav1.WorkloadPending
		}
		ready.Status, ready.Reason = metav1.ConditionFalse, ReasonReplicasNotReady
		done := st.ReadyReplicas
		if batch {
			done = st.SucceededReplicas
			ready.Message = fmt.Sprintf("%d of %d replicas succeeded", done, w.Spec.Replicas)
		} else {
			ready.Message = fmt.Sprintf("%d of %d replicas ready", done, w.Spec.Replicas)
		}
	}
	setCondition(&st.Conditions, ready)
	if vd == nil {
		apimeta.RemoveStatusCondition(&st.Conditions, flotillav1.WorkloadVerified)
	}

	// kstatus: Reconciling while not yet where the spec asks.
	rec := metav1.Condition{Type: flotillav1.ConditionReconciling, ObservedGeneration: w.Generation}
	if ready.Status == metav1.ConditionTrue {
		apimeta.RemoveStatusCondition(&st.Conditions, flotillav1.ConditionReconciling)
	} else {
		rec.Status, rec.Reason, rec.Message = metav1.ConditionTrue, sched.Reason, sched.Message
		if sched.Status == metav1.ConditionTrue {
			rec.Reason, rec.Message = ready.Reason, ready.Message
		}
		setCondition(&st.Conditions, rec)
	}
	if len(st.Conditions) == 0 {
		st.Conditions = nil
	}
	return st
}

func pluralReplicas(n int32) string {
	if n == 1 {
		return "1 replica"
	}
	return fmt.Sprintf("%d replicas", n)
}

func pluralProviders(n int32) string {
	if n == 1 {
		return "1 provider"
	}
	return fmt.Sprintf("%d providers", n)
}

// setVerification decides a verified Workload's phase, Ready and Verified
// conditions from the quorum decision: copies that fail do not fail the
// Workload, only a quorum that can no longer be reached does.
func setVerification(st *flotillav1.WorkloadStatus, w *flotillav1.Workload, d *quorum.Decision, ready *metav1.Condition) {
	v := metav1.Condition{Type: flotillav1.WorkloadVerified, ObservedGeneration: w.Generation}
	need := min(w.Spec.Verification.Quorum, w.Spec.Verification.Redundancy)
	switch {
	case d.Verified != "":
		st.Phase = flotillav1.WorkloadSucceeded
		v.Status, v.Reason = metav1.ConditionTrue, ReasonQuorumReached
		v.Message = fmt.Sprintf("%d copies on distinct owners agree on %s", d.Votes, d.Verified)
		ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, ReasonQuorumReached, v.Message
	case d.Failed != "":
		st.Phase = flotillav1.WorkloadFailed
		v.Status, v.Reason, v.Message = metav1.ConditionFalse, d.Failed, d.Message
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, d.Failed, d.Message
	default:
		st.Phase = flotillav1.WorkloadRunning
		if st.ScheduledReplicas == 0 {
			st.Phase = flotillav1.WorkloadPending
		}
		v.Status, v.Reason = metav1.ConditionFalse, ReasonAwaitingResults
		v.Message = fmt.Sprintf("%d of %d agreeing results so far; %d copies", d.Votes, need, d.Copies)
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonAwaitingResults, v.Message
	}
	setCondition(&st.Conditions, v)
}
