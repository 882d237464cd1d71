package conditions

import (
	"testing"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
)

// kstatusOf computes what kstatus, and so Flux and Argo CD, make of a
// Workload carrying conds at generation, observed at observed.
func kstatusOf(t *testing.T, conds []metav1.Condition, generation, observed int64) status.Status {
	t.Helper()
	w := &flotillav1.Workload{}
	w.APIVersion, w.Kind = flotillav1.GroupVersion.String(), "Workload"
	w.Name, w.Namespace, w.Generation = "web", "team-a", generation
	w.Status.ObservedGeneration, w.Status.Conditions = observed, conds
	got, err := KStatus(w)
	if err != nil {
		t.Fatal(err)
	}
	return status.Status(got)
}

func TestApplyMeansWhatKstatusReads(t *testing.T) {
	cases := map[string]struct {
		s        Summary
		observed int64
		want     status.Status
	}{
		"ready":                    {s: Summary{State: Current, Reason: "AllReplicasReady"}, observed: 2, want: status.CurrentStatus},
		"done but not ready":       {s: Summary{State: Current, Reason: "ScaledToZero"}, observed: 2, want: status.CurrentStatus},
		"converging":               {s: Summary{State: InProgress, Reason: "ReplicasNotReady"}, observed: 2, want: status.InProgressStatus},
		"stalled":                  {s: Summary{State: Stalled, Reason: "InvalidTemplate"}, observed: 2, want: status.FailedStatus},
		"ready, spec not yet read": {s: Summary{State: Current, Reason: "AllReplicasReady"}, observed: 1, want: status.InProgressStatus},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var conds []metav1.Condition
			Apply(&conds, 2, tc.s)
			if got := kstatusOf(t, conds, 2, tc.observed); got != tc.want {
				t.Errorf("kstatus = %s, want %s; conditions %+v", got, tc.want, conds)
			}
		})
	}
}

// Moving between states leaves no condition of the last one behind: a
// Stalled=True left beside Reconciling=True, or after recovery, would keep
// a GitOps tool reporting a failure that is over.
func TestApplyMovesBetweenStates(t *testing.T) {
	steps := []struct {
		s    Summary
		want status.Status
	}{
		{Summary{State: InProgress, Reason: "ReplicasNotReady"}, status.InProgressStatus},
		{Summary{State: Stalled, Reason: "ProgressDeadlineExceeded"}, status.FailedStatus},
		{Summary{State: InProgress, Reason: "ReplicasNotReady"}, status.InProgressStatus},
		{Summary{State: Current, Reason: "AllReplicasReady"}, status.CurrentStatus},
		{Summary{State: Stalled, Reason: "JobFailed"}, status.FailedStatus},
		{Summary{State: Current, Reason: "AllReplicasReady"}, status.CurrentStatus},
	}
	var conds []metav1.Condition
	for i, st := range steps {
		Apply(&conds, 1, st.s)
		if got := kstatusOf(t, conds, 1, 1); got != st.want {
			t.Fatalf("step %d (%s): kstatus = %s, want %s", i, st.s.State, got, st.want)
		}
		rec := apimeta.IsStatusConditionTrue(conds, flotillav1.ConditionReconciling)
		stalled := apimeta.IsStatusConditionTrue(conds, flotillav1.ConditionStalled)
		if rec && stalled {
			t.Fatalf("step %d: Reconciling and Stalled both True", i)
		}
		if ready := apimeta.IsStatusConditionTrue(conds, flotillav1.ConditionReady); ready != (st.s.State == Current) {
			t.Fatalf("step %d: Ready = %v in state %s", i, ready, st.s.State)
		}
	}
	if len(conds) != 1 {
		t.Errorf("after Current only Ready should remain: %+v", conds)
	}
}

func TestApplyStateReasonAndBoundedMessage(t *testing.T) {
	var conds []metav1.Condition
	long := string(make([]byte, 100_000))
	Apply(&conds, 3, Summary{State: InProgress, Reason: "ReplicasNotReady", Message: long, StateReason: "WaitingForScheduler", StateMessage: "queued"})
	r := apimeta.FindStatusCondition(conds, flotillav1.ConditionReconciling)
	if r == nil || r.Reason != "WaitingForScheduler" || r.Message != "queued" || r.ObservedGeneration != 3 {
		t.Fatalf("Reconciling = %+v", r)
	}
	ready := apimeta.FindStatusCondition(conds, flotillav1.ConditionReady)
	if ready == nil || len(ready.Message) > bound.MaxMessage {
		t.Fatalf("Ready message not bounded: %d bytes", len(ready.Message))
	}
}
