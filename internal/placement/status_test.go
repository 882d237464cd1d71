package placement

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/conditions"
	"github.com/flotilla-dev/flotilla/internal/fixture"
)

// workloadView is what a test compares of a Workload's status.
type workloadView struct {
	Phase                             flotillav1.WorkloadPhase
	Scheduled, Ready, Verified        string
	Reconciling, Stalled              string
	KStatus                           string
	ScheduledReplicas, ReadyReplicas  int32
	PendingReplicas, SucceededReplica int32
}

func viewOf(t *testing.T, w *flotillav1.Workload, st flotillav1.WorkloadStatus) workloadView {
	t.Helper()
	cond := func(typ string) string {
		if c := apimeta.FindStatusCondition(st.Conditions, typ); c != nil {
			return string(c.Status) + "/" + c.Reason
		}
		return ""
	}
	out := w.DeepCopy()
	out.Status = st
	ks, err := conditions.KStatus(out)
	if err != nil {
		t.Fatal(err)
	}
	return workloadView{Phase: st.Phase, Scheduled: cond(flotillav1.WorkloadScheduled), Ready: cond(flotillav1.ConditionReady),
		Verified: cond(flotillav1.WorkloadVerified), Reconciling: cond(flotillav1.ConditionReconciling), Stalled: cond(flotillav1.ConditionStalled),
		KStatus: ks, ScheduledReplicas: st.ScheduledReplicas, ReadyReplicas: st.ReadyReplicas, PendingReplicas: st.PendingReplicas,
		SucceededReplica: st.SucceededReplicas}
}

var (
	digestA = "sha256:" + strings.Repeat("a", 64)
	digestB = "sha256:" + strings.Repeat("b", 64)
)

// TestWorkloadStatus checks each state a Workload goes through against
// what kstatus, and so Flux and Argo CD, must make of it.
func TestWorkloadStatus(t *testing.T) {
	web := fixture.Workload("team-a", "web", fixture.Replicas(2), fixture.Identity("web-uid", 3))
	job := fixture.Workload("team-a", "job", fixture.Replicas(2), fixture.Class(flotillav1.ClassBatch), fixture.Identity("job-uid", 1))
	verified := job.DeepCopy()
	verified.Spec.Verification = &flotillav1.VerificationSpec{Redundancy: 2, Quorum: 2}
	verified.Spec.Replicas = 1
	bob, carol := fixture.Offer("bob-1", "std"), fixture.Offer("carol-1", "std")
	owned := func(owner, digest string) fixture.LeaseOption {
		return func(l *flotillav1.Lease) {
			l.Labels[flotillav1.LabelOwner] = owner
			if l.Status.Digest = digest; digest != "" || l.Status.Outcome == flotillav1.OutcomeCompleted {
				l.Status.SucceededReplicas = l.Spec.Replicas
			}
		}
	}
	failedJob := func(l *flotillav1.Lease) {
		fixture.Ended(flotillav1.OutcomeFailed)(l)
		l.Status.Conditions = []metav1.Condition{{Type: flotillav1.LeaseConditionClosed, Status: metav1.ConditionTrue,
			Reason: flotillav1.LeaseReasonJobFailed, Message: "BackoffLimitExceeded"}}
	}
	budgetStop := func(w *flotillav1.Workload) *flotillav1.Workload {
		w = w.DeepCopy()
		w.Status.Conditions = []metav1.Condition{{Type: flotillav1.WorkloadBudgetExhausted, Status: metav1.ConditionTrue,
			Reason: flotillav1.WorkloadReasonBudgetExhausted, Message: "spent 10 of a budget of 10"}}
		return w
	}
	noCapacity := Verdict{Known: true, Code: "InsufficientCapacity", Summary: "no offer has room"}
	for name, tc := range map[string]struct {
		w       *flotillav1.Workload
		leases  []*flotillav1.Lease
		verdict Verdict
		want    workloadView
	}{
		"just created: waiting for the scheduler": {
			w: web,
			want: workloadView{Phase: "Pending", Scheduled: "False/WaitingForScheduler", Ready: "False/ReplicasNotReady",
				Reconciling: "True/WaitingForScheduler", KStatus: "InProgress", PendingReplicas: 2},
		},
		"no capacity: InProgress, says why": {
			w: web, verdict: noCapacity,
			want: workloadView{Phase: "Pending", Scheduled: "False/InsufficientCapacity", Ready: "False/ReplicasNotReady",
				Reconciling: "True/InsufficientCapacity", KStatus: "InProgress", PendingReplicas: 2},
		},
		"placed, not ready yet": {
			w: web, leases: []*flotillav1.Lease{fixture.Lease(web, bob, "web-a", 2, fixture.Running(1))},
			want: workloadView{Phase: "Running", Scheduled: "True/AllReplicasScheduled", Ready: "False/ReplicasNotReady",
				Reconciling: "True/ReplicasNotReady", KStatus: "InProgress", ScheduledReplicas: 2, ReadyReplicas: 1},
		},
		"every replica ready: Current": {
			w: web, leases: []*flotillav1.Lease{fixture.Lease(web, bob, "web-a", 1, fixture.Running(1)), fixture.Lease(web, carol, "web-b", 1, fixture.Running(1))},
			want: workloadView{Phase: "Ready", Scheduled: "True/AllReplicasScheduled", Ready: "True/AllReplicasReady",
				KStatus: "Current", ScheduledReplicas: 2, ReadyReplicas: 2},
		},
		"failing over: the lost Lease's replicas pending again": {
			w: web, leases: []*flotillav1.Lease{fixture.Lease(web, bob, "web-a", 1, fixture.Running(1)),
				fixture.Lease(web, carol, "web-b", 1, fixture.Ended(flotillav1.OutcomeFailedOver))},
			want: workloadView{Phase: "Running", Scheduled: "False/WaitingForScheduler", Ready: "False/ReplicasNotReady",
				Reconciling: "True/WaitingForScheduler", KStatus: "InProgress", ScheduledReplicas: 1, ReadyReplicas: 1, PendingReplicas: 1},
		},
		"scaled to zero: Current": {
			w:    fixture.Workload("team-a", "idle", fixture.Replicas(0)),
			want: workloadView{Phase: "Ready", Scheduled: "True/AllReplicasScheduled", Ready: "True/ScaledToZero", KStatus: "Current"},
		},
		"stopped by its budget: Failed until a person acts": {
			w: budgetStop(web), leases: nil, verdict: noCapacity,
			want: workloadView{Phase: "Pending", Scheduled: "False/InsufficientCapacity", Ready: "False/ReplicasNotReady",
				Stalled: "True/BudgetExhausted", KStatus: "Failed", PendingReplicas: 2},
		},
		"no Account: Failed until one is granted": {
			w: web, verdict: Verdict{Known: true, Code: flotillav1.WorkloadReasonNoAccount, Summary: "namespace team-a has no Account"},
			want: workloadView{Phase: "Pending", Scheduled: "False/NoAccount", Ready: "False/ReplicasNotReady",
				Stalled: "True/NoAccount", KStatus: "Failed", PendingReplicas: 2},
		},
		"batch succeeded: Current": {
			w: job, leases: []*flotillav1.Lease{fixture.Lease(job, bob, "job-a", 2, fixture.Ended(flotillav1.OutcomeCompleted), owned("bob", ""))},
			want: workloadView{Phase: "Succeeded", Scheduled: "True/AllReplicasScheduled", Ready: "True/Completed",
				KStatus: "Current", ScheduledReplicas: 2, SucceededReplica: 2},
		},
		"batch failed: Failed": {
			w: job, leases: []*flotillav1.Lease{fixture.Lease(job, bob, "job-a", 2, failedJob)},
			want: workloadView{Phase: "Failed", Scheduled: "True/AllReplicasScheduled", Ready: "False/JobFailed",
				Stalled: "True/JobFailed", KStatus: "Failed", ScheduledReplicas: 2},
		},
		"verified, one copy reported: InProgress": {
			w: verified, leases: []*flotillav1.Lease{
				fixture.Lease(verified, bob, "job-a", 1, fixture.Ended(flotillav1.OutcomeCompleted), owned("bob", digestA)),
				fixture.Lease(verified, carol, "job-b", 1, fixture.Running(0), owned("carol", ""))},
			want: workloadView{Phase: "Running", Scheduled: "True/AllReplicasScheduled", Ready: "False/AwaitingResults",
				Verified: "False/AwaitingResults", Reconciling: "True/AwaitingResults", KStatus: "InProgress", ScheduledReplicas: 2, SucceededReplica: 1},
		},
		"verified, quorum reached: Current": {
			w: verified, leases: []*flotillav1.Lease{
				fixture.Lease(verified, bob, "job-a", 1, fixture.Ended(flotillav1.OutcomeCompleted), owned("bob", digestA)),
				fixture.Lease(verified, carol, "job-b", 1, fixture.Ended(flotillav1.OutcomeCompleted), owned("carol", digestA))},
			want: workloadView{Phase: "Succeeded", Scheduled: "True/AllReplicasScheduled", Ready: "True/QuorumReached",
				Verified: "True/QuorumReached", KStatus: "Current", ScheduledReplicas: 2, SucceededReplica: 2},
		},
		"verified, copies disagree past the extra copies: Failed": {
			w: func() *flotillav1.Workload {
				w := verified.DeepCopy()
				w.Spec.Verification.MaxExtraCopies = new(int32)
				return w
			}(), leases: []*flotillav1.Lease{
				fixture.Lease(verified, bob, "job-a", 1, fixture.Ended(flotillav1.OutcomeCompleted), owned("bob", digestA)),
				fixture.Lease(verified, carol, "job-b", 1, fixture.Ended(flotillav1.OutcomeCompleted), owned("carol", digestB))},
			want: workloadView{Phase: "Failed", Scheduled: "True/AllReplicasScheduled", Ready: "False/QuorumNotReached",
				Verified: "False/QuorumNotReached", Stalled: "True/QuorumNotReached", KStatus: "Failed", ScheduledReplicas: 2, SucceededReplica: 2},
		},
	} {
		t.Run(name, func(t *testing.T) {
			st := WorkloadStatus(tc.w, tc.leases, tc.verdict)
			if d := cmp.Diff(tc.want, viewOf(t, tc.w, st)); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
			if apimeta.FindStatusCondition(st.Conditions, flotillav1.WorkloadBudgetExhausted) != nil {
				t.Error("BudgetExhausted is the bank's to write")
			}
		})
	}
}
