package placement

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/conditions"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/internal/quorum"
	"github.com/flotilla-dev/flotilla/internal/trust"
)

// Verdict is what the last scheduling cycle said of a Workload's pending
// replicas.
type Verdict struct {
	// Known is false when the last cycle left none of its replicas pending.
	Known         bool
	Code, Summary string
}

// stallingReasons are Scheduled reasons a person must act on: the
// Workload will not be placed as it is.
var stallingReasons = []string{
	flotillav1.WorkloadReasonNoAccount, flotillav1.WorkloadReasonInvalidTemplate,
	flotillav1.WorkloadReasonProgressDeadline, flotillav1.WorkloadReasonNameTooLong,
}

// WorkloadStatus derives a Workload's status from its Leases and the
// scheduler's verdict: every field but the BudgetExhausted condition, which
// the bank writes. Ready, Reconciling and Stalled follow kstatus: a
// Workload placing, waiting for capacity or failing over is InProgress;
// Ready, or a Batch Workload Succeeded (and Verified), is Current; one
// Failed, short of a quorum, stopped by its budget or funds, or refused a
// place until its spec or Account changes, is Stalled.
func WorkloadStatus(w *flotillav1.Workload, leases []*flotillav1.Lease, v Verdict) flotillav1.WorkloadStatus {
	st := flotillav1.WorkloadStatus{Replicas: w.Spec.Replicas, ObservedGeneration: w.Generation,
		Conditions: slices.Clone(w.Status.Conditions)}
	apimeta.RemoveStatusCondition(&st.Conditions, flotillav1.WorkloadBudgetExhausted)
	failed := count(&st, leases)
	want := w.Spec.Replicas
	var vd *quorum.Decision
	if trust.Verified(w) {
		d, results := trust.Verify(w, leases)
		vd, want = &d, int32(d.Copies)
		st.VerifiedDigest = d.Verified
		st.Verification = &flotillav1.VerificationStatus{
			Copies: want, ExtraCopies: max(0, want-w.Spec.Verification.Redundancy), Votes: int32(d.Votes), Results: results,
		}
	}
	st.PendingReplicas = max(0, want-st.ScheduledReplicas)
	sched := scheduled(&st, v)
	if r := lastRefusal(w, leases); sched.True && r != "" {
		// Placed elsewhere: the agent's reason stays visible.
		sched.Message += "; " + r
	}
	conditions.SetFact(&st.Conditions, w.Generation, flotillav1.WorkloadScheduled, sched)
	sum := readiness(&st, w, vd, failed)
	if vd == nil {
		apimeta.RemoveStatusCondition(&st.Conditions, flotillav1.WorkloadVerified)
	}
	switch budget := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadBudgetExhausted); {
	case sum.State != conditions.InProgress:
	case budget != nil && budget.Status == metav1.ConditionTrue:
		sum.State, sum.StateReason, sum.StateMessage = conditions.Stalled, budget.Reason, budget.Message
	case !sched.True && slices.Contains(stallingReasons, sched.Reason):
		sum.State, sum.StateReason, sum.StateMessage = conditions.Stalled, sched.Reason, sched.Message
	case !sched.True:
		// Not yet where the spec asks: say what the pending replicas wait for.
		sum.StateReason, sum.StateMessage = sched.Reason, sched.Message
	}
	conditions.Apply(&st.Conditions, w.Generation, sum)
	return st
}

// count adds up the Workload's Leases into st, and returns why a finished
// Batch Lease failed, if one did.
func count(st *flotillav1.WorkloadStatus, leases []*flotillav1.Lease) (failed string) {
	providers := map[string]bool{}
	var cost money.Micro
	for _, l := range leases {
		if c, err := money.Parse(string(l.Status.Usage.Cost)); err == nil {
			cost += c
		}
		if l.Status.Phase == flotillav1.LeaseClosed && l.Status.Outcome.Finished() {
			st.ScheduledReplicas += l.Spec.Replicas
			st.SucceededReplicas += l.Status.SucceededReplicas
			if l.Status.Outcome == flotillav1.OutcomeFailed {
				msg := ""
				if c := l.Ended(); c != nil {
					msg = c.Message
				}
				failed = "lease " + l.Name + " on " + l.Spec.ProviderRef.Name + ": " + msg
			}
			continue
		}
		if !l.Live() {
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
		if l.Status.Phase != flotillav1.LeaseActive {
			continue // a Lost Lease's endpoints are not offered to anyone
		}
		for _, e := range l.Status.Endpoints {
			st.Endpoints = append(st.Endpoints, flotillav1.WorkloadEndpoint{Provider: l.Spec.ProviderRef.Name, Lease: l.Name,
				Port: e.Port, Address: e.Address, Reachable: e.Reachable})
		}
	}
	slices.SortFunc(st.Placements, func(a, b flotillav1.Placement) int {
		return cmp.Or(cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Lease, b.Lease))
	})
	slices.SortFunc(st.Endpoints, func(a, b flotillav1.WorkloadEndpoint) int {
		return cmp.Or(cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Lease, b.Lease), cmp.Compare(a.Port, b.Port))
	})
	st.Endpoints = st.Endpoints[:min(len(st.Endpoints), 1000)]
	st.Providers = int32(len(providers))
	st.Cost = flotillav1.Amount(cost.String())
	return failed
}

// lastRefusal describes the latest Lease of the Workload's generation an
// agent refused, or "".
func lastRefusal(w *flotillav1.Workload, leases []*flotillav1.Lease) string {
	var last *metav1.Condition
	var name string
	gen := strconv.FormatInt(w.Generation, 10)
	for _, l := range leases {
		c := l.Ended()
		if l.Status.Outcome != flotillav1.OutcomeRefused || c == nil || l.Annotations[flotillav1.AnnotationWorkloadGeneration] != gen {
			continue
		}
		if last == nil || c.LastTransitionTime.After(last.LastTransitionTime.Time) {
			last, name = c, l.Name
		}
	}
	if last == nil {
		return ""
	}
	return "lease " + name + ": " + last.Message
}

// scheduled is the Scheduled condition: every replica with a Lease, or why
// some wait.
func scheduled(st *flotillav1.WorkloadStatus, v Verdict) conditions.Fact {
	switch {
	case st.PendingReplicas == 0:
		return conditions.Fact{True: true, Reason: flotillav1.WorkloadReasonAllScheduled,
			Message: replicas(st.ScheduledReplicas) + " scheduled on " + providers(st.Providers)}
	case v.Known && v.Code != "":
		return conditions.Fact{Reason: v.Code, Message: replicas(st.PendingReplicas) + " pending: " + v.Summary}
	}
	return conditions.Fact{Reason: flotillav1.WorkloadReasonWaitingForScheduler,
		Message: replicas(st.PendingReplicas) + " waiting for the next scheduling cycle"}
}

// readiness sets the phase and decides Ready, and whether the Workload is
// done (Current), on its way (InProgress) or failed (Stalled).
func readiness(st *flotillav1.WorkloadStatus, w *flotillav1.Workload, vd *quorum.Decision, failed string) conditions.Summary {
	batch := w.Spec.Class == flotillav1.ClassBatch
	switch {
	case w.Spec.Replicas == 0:
		st.Phase = flotillav1.WorkloadReady
		return conditions.Summary{Reason: flotillav1.WorkloadReasonScaledToZero, Message: "no replicas requested"}
	case vd != nil:
		return verification(st, w, vd)
	case batch && failed != "":
		st.Phase = flotillav1.WorkloadFailed
		return conditions.Summary{State: conditions.Stalled, Reason: flotillav1.WorkloadReasonJobFailed, Message: failed}
	case batch && st.SucceededReplicas >= w.Spec.Replicas:
		st.Phase = flotillav1.WorkloadSucceeded
		return conditions.Summary{Reason: flotillav1.WorkloadReasonCompleted, Message: "all replicas succeeded"}
	case !batch && st.ReadyReplicas >= w.Spec.Replicas:
		st.Phase = flotillav1.WorkloadReady
		return conditions.Summary{Reason: flotillav1.WorkloadReasonAllReady, Message: replicas(st.ReadyReplicas) + " ready"}
	}
	st.Phase = flotillav1.WorkloadRunning
	if st.ScheduledReplicas == 0 {
		st.Phase = flotillav1.WorkloadPending
	}
	msg := fmt.Sprintf("%d of %d replicas ready", st.ReadyReplicas, w.Spec.Replicas)
	if batch {
		msg = fmt.Sprintf("%d of %d replicas succeeded", st.SucceededReplicas, w.Spec.Replicas)
	}
	return conditions.Summary{State: conditions.InProgress, Reason: flotillav1.WorkloadReasonReplicasNotReady, Message: msg}
}

// verification sets a verified Workload's phase and Verified condition from
// the quorum decision: copies that fail do not fail the Workload, only a
// quorum that can no longer be reached does.
func verification(st *flotillav1.WorkloadStatus, w *flotillav1.Workload, d *quorum.Decision) conditions.Summary {
	need := min(w.Spec.Verification.Quorum, w.Spec.Verification.Redundancy)
	var sum conditions.Summary
	switch {
	case d.Verified != "":
		st.Phase = flotillav1.WorkloadSucceeded
		sum = conditions.Summary{Reason: flotillav1.WorkloadReasonQuorumReached,
			Message: fmt.Sprintf("%d copies on distinct owners agree on %s", d.Votes, d.Verified)}
	case d.Failed != "":
		st.Phase = flotillav1.WorkloadFailed
		sum = conditions.Summary{State: conditions.Stalled, Reason: d.Failed, Message: d.Message}
	default:
		st.Phase = flotillav1.WorkloadRunning
		if st.ScheduledReplicas == 0 {
			st.Phase = flotillav1.WorkloadPending
		}
		sum = conditions.Summary{State: conditions.InProgress, Reason: flotillav1.WorkloadReasonAwaitingResults,
			Message: fmt.Sprintf("%d of %d agreeing results so far; %d copies", d.Votes, need, d.Copies)}
	}
	conditions.Set(&st.Conditions, w.Generation, flotillav1.WorkloadVerified, sum.State == conditions.Current, sum.Reason, sum.Message)
	return sum
}

func replicas(n int32) string {
	if n == 1 {
		return "1 replica"
	}
	return fmt.Sprintf("%d replicas", n)
}

func providers(n int32) string {
	if n == 1 {
		return "1 provider"
	}
	return fmt.Sprintf("%d providers", n)
}
