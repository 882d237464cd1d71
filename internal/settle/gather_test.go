package settle

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/internal/usage"
)

func TestGather(t *testing.T) {
	budget := flotillav1.Amount("5")
	web := fixture.Workload("team-a", "web", fixture.Replicas(2), fixture.Identity("web-uid", 4))
	web.Spec.Budget = &budget
	web.Status.Conditions = []metav1.Condition{{Type: flotillav1.WorkloadBudgetExhausted, Status: metav1.ConditionTrue,
		Reason: ReasonBudgetExhausted, ObservedGeneration: 3, LastTransitionTime: metav1.Time{Time: t0.Add(-time.Minute)}}}
	done := fixture.Workload("team-a", "done", fixture.Class(flotillav1.ClassBatch))
	done.Status.Phase = flotillav1.WorkloadSucceeded
	free := fixture.Workload("team-free", "web")
	o := fixture.Offer("bob-1", "std")
	metered := func(l *flotillav1.Lease) {
		l.UID = "uid-" + "a"
		l.Spec.PricePerReplicaHour = "0.5"
		l.Status.Usage = flotillav1.LeaseUsage{ReplicaSeconds: 7200, Cost: "1", MeteredUntil: &metav1.Time{Time: t0}}
	}
	deleting := func(finalizers ...string) fixture.LeaseOption {
		return func(l *flotillav1.Lease) {
			l.DeletionTimestamp = &metav1.Time{Time: t0}
			l.Finalizers = finalizers
		}
	}
	dissent := func(l *flotillav1.Lease) {
		fixture.Ended(flotillav1.OutcomeCompleted)(l)
		l.Status.Verdict = flotillav1.VerdictDissented
	}
	line := &usage.Line{Lease: "uid-a", ReplicaSeconds: 7100}
	obs := Gather(t0,
		[]flotillav1.Account{*fixture.Account("team-a", "100"), *fixture.Account("provider-bob-1", "1"), *fixture.Account("team-b", "not money")},
		[]flotillav1.Workload{*web, *done, *free},
		[]flotillav1.Lease{
			*fixture.Lease(web, o, "web-a", 2, fixture.Running(2), metered),
			*fixture.Lease(web, o, "web-gone", 1, deleting(flotillav1.FinalizerSettlement)),
			*fixture.Lease(web, o, "web-cleaning", 1, deleting(flotillav1.FinalizerProviderCleanup, flotillav1.FinalizerSettlement)),
			*fixture.Lease(done, o, "done-a", 1, dissent),
		},
		map[string]map[string]*usage.Line{"bob-1": {"uid-a": line}})
	want := Input{Now: t0,
		Credited: map[string]money.Micro{"team-a": 100 * money.PerCredit},
		Workloads: map[string]Workload{
			"team-a/web":  {Wants: true, Budget: 5 * money.PerCredit, Capped: true, Generation: 4, Stopped: ReasonBudgetExhausted, StoppedSince: t0.Add(-time.Minute), StoppedGeneration: 3},
			"team-a/done": {},
		},
		Leases: []Lease{
			{Namespace: "team-a", Workload: "web", Name: "web-a", Provider: "bob-1", Live: true, Metered: money.PerCredit, ReplicaSeconds: 7200,
				PerHour: money.PerCredit, Replicas: 2, MeteredUntil: t0, Report: line, Running: 2},
			{Namespace: "team-a", Workload: "web", Name: "web-gone", Provider: "bob-1", PerHour: money.PerCredit / 100, Replicas: 1},
			{Namespace: "team-a", Workload: "done", Name: "done-a", Provider: "bob-1", PerHour: money.PerCredit / 100, Replicas: 1, Dissent: "no digest"},
		},
	}
	if d := cmp.Diff(want, obs.Input); d != "" {
		t.Errorf("input (-want +got)\n%s", d)
	}
	if len(obs.Tenants) != 1 || obs.Tenants["team-a"] == nil {
		t.Errorf("tenants %v: only team-a has a valid Account", obs.Tenants)
	}
	if len(obs.Ending) != 1 || obs.Ending[0].Name != "web-gone" {
		t.Fatalf("ending %v, want web-gone alone (web-cleaning waits for its provider)", obs.Ending)
	}
	book := NewBook()
	if obs.Releasable(book, obs.Ending[0]) {
		t.Error("released before the book closed the Lease")
	}
	book.lease(LeaseRef("team-a", "web", "web-gone")).Closed = true
	if !obs.Releasable(book, obs.Ending[0]) {
		t.Error("not released once closed in the book")
	}
	unaccounted := fixture.Lease(free, o, "free-a", 1)
	if !obs.Releasable(NewBook(), unaccounted) {
		t.Error("a Lease of a namespace without Account is never settled, so released at once")
	}
}

func TestEnforce(t *testing.T) {
	told := func(reason string) *flotillav1.Workload {
		w := fixture.Workload("team-a", "web")
		if reason != "" {
			w.Status.Conditions = []metav1.Condition{{Type: flotillav1.WorkloadBudgetExhausted, Status: metav1.ConditionTrue, Reason: reason}}
		}
		return w
	}
	stop := func(at time.Duration) *Output {
		return &Output{Stops: map[string]Stop{"team-a/web": {Reason: ReasonInsufficientFunds, At: t0.Add(at)}}}
	}
	for name, tc := range map[string]struct {
		w    *flotillav1.Workload
		out  *Output
		want Enforcement
	}{
		"within budget":                        {w: told(""), out: &Output{}, want: Enforcement{}},
		"stop in a minute: wait":               {w: told(""), out: stop(time.Minute), want: Enforcement{Stop: stop(time.Minute).Stops["team-a/web"], Stopping: true, Wait: time.Minute}},
		"stop due, not yet told: retry":        {w: told(""), out: stop(0), want: Enforcement{Stop: stop(0).Stops["team-a/web"], Stopping: true, Retry: true}},
		"stop due, told another reason: retry": {w: told(ReasonBudgetExhausted), out: stop(0), want: Enforcement{Stop: stop(0).Stops["team-a/web"], Stopping: true, Retry: true}},
		"stop due and told: close its Leases":  {w: told(ReasonInsufficientFunds), out: stop(0), want: Enforcement{Stop: stop(0).Stops["team-a/web"], Stopping: true, CloseLeases: true}},
	} {
		t.Run(name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, Enforce(t0, tc.w, tc.out)); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}
