package lease

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/conditions"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *metav1.Time { return &metav1.Time{Time: t0.Add(d)} }

// newLease is a Service Lease of 2 replicas at 3.6 per replica-hour (0.001
// a replica-second), placed a minute before t0.
func newLease(class flotillav1.WorkloadClass, st flotillav1.LeaseStatus) *flotillav1.Lease {
	l := &flotillav1.Lease{Spec: flotillav1.LeaseSpec{Class: class, Replicas: 2, PricePerReplicaHour: "3.6",
		ProviderRef: flotillav1.ProviderReference{Name: "bob-1"}}, Status: st}
	l.Name, l.Namespace, l.Generation = "web-1", "team-a", 1
	l.CreationTimestamp = metav1.Time{Time: t0.Add(-time.Minute)}
	return l
}

func input(l *flotillav1.Lease, lastSeen time.Duration) Input {
	in := Input{Lease: l, Now: t0, ProgressDeadline: 10 * time.Minute, FailoverGrace: 5 * time.Second}
	if lastSeen != 0 {
		in.LastSeen = t0.Add(lastSeen)
	}
	return in
}

// view is what a test compares of a decision.
type view struct {
	Phase                       flotillav1.LeasePhase
	Outcome                     flotillav1.LeaseOutcome
	Ready, Reconciling, Closed  string
	KStatus                     string
	ReplicaSeconds              int64
	Cost                        flotillav1.Amount
	MeteredUntil, NotReadySince *metav1.Time
	LostTime, LastSyncTime      *metav1.Time
	FailedSyncs                 int32
	RequeueAfter                time.Duration
	Events                      []string
	FailedOver, Deadline        bool
	SyncFailed, Unwritten       bool
}

func see(t *testing.T, l *flotillav1.Lease, st *flotillav1.LeaseStatus, res Result) view {
	t.Helper()
	cond := func(typ string) string {
		if c := apimeta.FindStatusCondition(st.Conditions, typ); c != nil {
			return string(c.Status) + "/" + c.Reason
		}
		return ""
	}
	out := *l
	out.Status = *st
	if !res.SyncFailed {
		out.Status.ObservedGeneration = l.Generation
	}
	ks, err := conditions.KStatus(&out)
	if err != nil {
		t.Fatal(err)
	}
	v := view{Phase: st.Phase, Outcome: st.Outcome, Ready: cond(flotillav1.ConditionReady), Reconciling: cond(flotillav1.ConditionReconciling),
		Closed: cond(flotillav1.LeaseConditionClosed), KStatus: ks, ReplicaSeconds: st.Usage.ReplicaSeconds, Cost: st.Usage.Cost,
		MeteredUntil: st.Usage.MeteredUntil, NotReadySince: st.NotReadySince, LostTime: st.LostTime, LastSyncTime: st.LastSyncTime,
		FailedSyncs: st.FailedSyncs, RequeueAfter: res.RequeueAfter, FailedOver: res.FailedOver, Deadline: res.DeadlineExceeded,
		SyncFailed: res.SyncFailed, Unwritten: res.Unwritten}
	for _, e := range res.Events {
		who := "lease"
		if e.OnWorkload {
			who = "workload"
		}
		v.Events = append(v.Events, who+":"+e.Reason)
	}
	return v
}

func TestDecisions(t *testing.T) {
	metered := func(rs int64, until time.Duration) flotillav1.LeaseUsage {
		return flotillav1.LeaseUsage{ReplicaSeconds: rs, MeteredUntil: at(until), Cost: "0.01"}
	}
	active := flotillav1.LeaseStatus{Phase: flotillav1.LeaseActive, RunningReplicas: 2, ReadyReplicas: 2,
		Usage: metered(10, -3*time.Second), LastSyncTime: at(-10 * time.Second)}
	// accepted is a new Lease whose agent accepted it and runs nothing yet.
	accepted := func(requeue time.Duration, unwritten bool) view {
		return view{Phase: "Active", Ready: "False/Applied", Reconciling: "True/Applied", KStatus: "InProgress", Cost: "0",
			MeteredUntil: at(0), LastSyncTime: at(0), RequeueAfter: requeue, Unwritten: unwritten}
	}
	cases := map[string]struct {
		class    flotillav1.WorkloadClass
		status   flotillav1.LeaseStatus
		lastSeen time.Duration
		decide   func(st, old *flotillav1.LeaseStatus, in Input) Result
		want     view
	}{
		"provider not Ready yet: Pending, InProgress": {
			decide: func(st, _ *flotillav1.LeaseStatus, in Input) Result { return Wait(st, in, "bob-1") },
			want: view{Phase: "Pending", Ready: "False/WaitingForProvider", Reconciling: "True/WaitingForProvider", KStatus: "InProgress",
				RequeueAfter: 3 * time.Second},
		},
		"third failed sync in a row: waits 12s": {
			status: flotillav1.LeaseStatus{Phase: flotillav1.LeasePending, FailedSyncs: 2},
			decide: func(st, _ *flotillav1.LeaseStatus, in Input) Result {
				return SyncFailed(st, in, flotillav1.LeaseReasonApplyFailed, errors.New("refused"))
			},
			want: view{Phase: "Pending", Ready: "False/ApplyFailed", Reconciling: "True/ApplyFailed", KStatus: "InProgress",
				FailedSyncs: 3, RequeueAfter: 12 * time.Second, SyncFailed: true},
		},
		"every replica ready, count unchanged: Current, nothing to write but the sync time": {
			status: active, lastSeen: -3 * time.Second,
			decide: observe(Observation{Running: 2, Ready: 2}),
			want: view{Phase: "Active", Ready: "True/Applied", KStatus: "Current", ReplicaSeconds: 10, Cost: "0.01",
				MeteredUntil: at(-3 * time.Second), LastSyncTime: at(-10 * time.Second), RequeueAfter: 3 * time.Second},
		},
		"pull mode, every replica ready: looked at again when metering needs it": {
			status: active, lastSeen: -3 * time.Second,
			decide: func(st, old *flotillav1.LeaseStatus, in Input) Result {
				in.Pull = true
				return observe(Observation{Running: 2, Ready: 2})(st, old, in)
			},
			want: view{Phase: "Active", Ready: "True/Applied", KStatus: "Current", ReplicaSeconds: 10, Cost: "0.01",
				MeteredUntil: at(-3 * time.Second), LastSyncTime: at(-10 * time.Second), RequeueAfter: 15 * time.Second},
		},
		"pull mode, a replica not ready yet: its agent's report wakes it, the look is for metering": {
			status: active, lastSeen: -3 * time.Second,
			decide: func(st, old *flotillav1.LeaseStatus, in Input) Result {
				in.Pull = true
				return observe(Observation{Running: 2, Ready: 1})(st, old, in)
			},
			want: view{Phase: "Active", Ready: "False/Applied", Reconciling: "True/Applied", KStatus: "InProgress",
				ReplicaSeconds: 10, Cost: "0.01", MeteredUntil: at(-3 * time.Second), NotReadySince: at(0), LastSyncTime: at(0),
				RequeueAfter: PullSyncInterval},
		},
		"a replica stopped: the interval is charged at the count at its start": {
			status: active, lastSeen: -3 * time.Second,
			decide: observe(Observation{Running: 1, Ready: 1}),
			want: view{Phase: "Active", Ready: "False/Applied", Reconciling: "True/Applied", KStatus: "InProgress",
				ReplicaSeconds: 16, Cost: "0.016", MeteredUntil: at(0), NotReadySince: at(0), LastSyncTime: at(0), RequeueAfter: time.Second},
		},
		"P9.ready-but-unreachable: not counted, charged only up to now": {
			status: active, lastSeen: -3 * time.Second,
			decide: observe(Observation{Running: 2, Ready: 2, Unreachable: "endpoint http at 203.0.113.7:30080 does not answer the hub"}),
			want: view{Phase: "Active", Ready: "False/EndpointUnreachable", Reconciling: "True/EndpointUnreachable", KStatus: "InProgress",
				ReplicaSeconds: 16, Cost: "0.016", MeteredUntil: at(0), NotReadySince: at(0), LastSyncTime: at(0), RequeueAfter: time.Second},
		},
		"P9.still-unreachable: nothing charged": {
			status: flotillav1.LeaseStatus{Phase: flotillav1.LeaseActive, Usage: metered(10, -3*time.Second), NotReadySince: at(-time.Minute),
				LastSyncTime: at(-3 * time.Second)},
			lastSeen: -3 * time.Second,
			decide:   observe(Observation{Running: 2, Ready: 2, Unreachable: "endpoint http at 203.0.113.7:30080 does not answer the hub"}),
			want: view{Phase: "Active", Ready: "False/EndpointUnreachable", Reconciling: "True/EndpointUnreachable", KStatus: "InProgress",
				ReplicaSeconds: 10, Cost: "0.01", MeteredUntil: at(-3 * time.Second), NotReadySince: at(-time.Minute),
				LastSyncTime: at(-3 * time.Second), RequeueAfter: time.Second},
		},
		"after a gap in the hub's looks: nothing charged for it": {
			status: withUsage(active, metered(10, -60*time.Second)), lastSeen: -60 * time.Second,
			decide: observe(Observation{Running: 2, Ready: 2}),
			want: view{Phase: "Active", Ready: "True/Applied", KStatus: "Current", ReplicaSeconds: 10, Cost: "0.01",
				MeteredUntil: at(0), LastSyncTime: at(0), RequeueAfter: 3 * time.Second},
		},
		"P3.pull-heard-gap: pull mode, a gap in the hub's looks while the agent was heard: charged": {
			status: withUsage(active, metered(10, -60*time.Second)), lastSeen: -60 * time.Second,
			decide: func(st, old *flotillav1.LeaseStatus, in Input) Result {
				in.Pull, in.Heard = true, true
				return observe(Observation{Running: 2, Ready: 2})(st, old, in)
			},
			want: view{Phase: "Active", Ready: "True/Applied", KStatus: "Current", ReplicaSeconds: 130, Cost: "0.13",
				MeteredUntil: at(0), LastSyncTime: at(0), RequeueAfter: PullSyncInterval},
		},
		"heard, but the hub's first look since it started: the clock starts": {
			status: withUsage(active, metered(10, -60*time.Second)),
			decide: func(st, old *flotillav1.LeaseStatus, in Input) Result {
				in.Pull, in.Heard = true, true
				return observe(Observation{Running: 2, Ready: 2})(st, old, in)
			},
			want: view{Phase: "Active", Ready: "True/Applied", KStatus: "Current", ReplicaSeconds: 10, Cost: "0.01",
				MeteredUntil: at(0), LastSyncTime: at(0), RequeueAfter: PullSyncInterval},
		},
		"sync time stale past the refresh: moves": {
			status: withSync(active, at(-31*time.Second)), lastSeen: -3 * time.Second,
			decide: observe(Observation{Running: 2, Ready: 2}),
			want: view{Phase: "Active", Ready: "True/Applied", KStatus: "Current", ReplicaSeconds: 10, Cost: "0.01",
				MeteredUntil: at(-3 * time.Second), LastSyncTime: at(0), RequeueAfter: 3 * time.Second},
		},
		"batch job complete: Closed, Completed, Current": {
			class: flotillav1.ClassBatch, status: active, lastSeen: -3 * time.Second,
			decide: observe(Observation{Succeeded: 2, Complete: true, Digest: "sha256:ab"}),
			want: view{Phase: "Closed", Outcome: "Completed", Closed: "True/Completed", KStatus: "Current",
				ReplicaSeconds: 16, Cost: "0.016", MeteredUntil: at(0), LastSyncTime: at(0)},
		},
		"batch job failed: Closed, Failed, still Current (the Workload carries the failure)": {
			class: flotillav1.ClassBatch, status: active, lastSeen: -3 * time.Second,
			decide: observe(Observation{Failed: 2, JobFailed: true, Message: "BackoffLimitExceeded"}),
			want: view{Phase: "Closed", Outcome: "Failed", Closed: "True/JobFailed", KStatus: "Current",
				ReplicaSeconds: 16, Cost: "0.016", MeteredUntil: at(0), LastSyncTime: at(0)},
		},
		"provider lost, within the failover grace: Lost, charged up to the last look": {
			status: withUsage(active, metered(10, -20*time.Second)), lastSeen: -5 * time.Second,
			decide: lost(at(-2 * time.Second)),
			want: view{Phase: "Lost", Ready: "False/ProviderLost", Reconciling: "True/ProviderLost", KStatus: "InProgress",
				ReplicaSeconds: 40, Cost: "0.04", MeteredUntil: at(-5 * time.Second), LostTime: at(0), LastSyncTime: at(-10 * time.Second),
				RequeueAfter: 3 * time.Second, Events: []string{"lease:ProviderLost"}},
		},
		"provider lost longer than the grace since its last contact: failed over at once": {
			status: active, lastSeen: -3 * time.Second,
			decide: lost(at(-10 * time.Second)),
			want: view{Phase: "Closed", Outcome: "FailedOver", Closed: "True/FailedOver", KStatus: "Current",
				ReplicaSeconds: 10, Cost: "0.01", MeteredUntil: at(-3 * time.Second), LostTime: at(0), LastSyncTime: at(-10 * time.Second),
				Events: []string{"lease:ProviderLost", "workload:FailedOver"}, FailedOver: true},
		},
		"never ran: the progress deadline counts from placement": {
			status: flotillav1.LeaseStatus{Phase: flotillav1.LeasePending},
			decide: progress,
			want:   view{Phase: "Pending", NotReadySince: at(-time.Minute), KStatus: "Current", RequeueAfter: 9*time.Minute + 10*time.Millisecond},
		},
		"not ready past the progress deadline: closed, placed elsewhere": {
			status: flotillav1.LeaseStatus{Phase: flotillav1.LeaseActive, RunningReplicas: 2, ReadyReplicas: 1, NotReadySince: at(-10 * time.Minute),
				Usage: metered(10, -3*time.Second)},
			lastSeen: -time.Second,
			decide:   progress,
			want: view{Phase: "Closed", Outcome: "ProgressDeadlineExceeded", Closed: "True/ProgressDeadlineExceeded", KStatus: "Current",
				ReplicaSeconds: 14, Cost: "0.014", MeteredUntil: at(-time.Second), NotReadySince: at(-10 * time.Minute),
				RequeueAfter: time.Millisecond, Events: []string{"workload:ProgressDeadlineExceeded"}, Deadline: true},
		},
		"agent accepted a new Lease, nothing runs yet: status left unwritten until AnswerWait after the Assignment": {
			decide: starting(-2*time.Second, "", Observation{}),
			want:   accepted(3*time.Second, true),
		},
		"agent accepted, nothing runs past AnswerWait after the Assignment: written": {
			decide: starting(-AnswerWait, "", Observation{}),
			want:   accepted(PullSyncInterval, false),
		},
		"agent accepted a new Lease, a replica runs: written at once": {
			decide: starting(-time.Second, "", Observation{Running: 1}),
			want:   accepted(PullSyncInterval, false),
		},
		"agent accepted a new Lease with an error: written at once": {
			decide: starting(-time.Second, "pulling the image: not found", Observation{}),
			want:   accepted(PullSyncInterval, false),
		},
		"agent reports nothing running on a Lease whose status was written: written": {
			status: flotillav1.LeaseStatus{Phase: flotillav1.LeasePending},
			decide: starting(-time.Second, "", Observation{}),
			want:   accepted(PullSyncInterval, false),
		},
		"agent has not answered a new Lease's Assignment yet: status left unwritten until AnswerWait after the Assignment": {
			decide: awaiting(-2*time.Second, ""),
			want: view{Phase: "Pending", Ready: "False/AwaitingAgent", Reconciling: "True/AwaitingAgent", KStatus: "InProgress",
				RequeueAfter: 3 * time.Second, Unwritten: true},
		},
		"agent silent past AnswerWait after the Assignment: Pending written": {
			decide: awaiting(-AnswerWait, ""),
			want: view{Phase: "Pending", Ready: "False/AwaitingAgent", Reconciling: "True/AwaitingAgent", KStatus: "InProgress",
				RequeueAfter: PullSyncInterval},
		},
		"agent reported an error on a new Lease: written at once": {
			decide: awaiting(-time.Second, "applying: forbidden"),
			want: view{Phase: "Pending", Ready: "False/AwaitingAgent", Reconciling: "True/AwaitingAgent", KStatus: "InProgress",
				RequeueAfter: PullSyncInterval},
		},
		"agent has not answered a Lease whose status was written: nothing held back": {
			status: flotillav1.LeaseStatus{Phase: flotillav1.LeasePending},
			decide: awaiting(-time.Second, ""),
			want: view{Phase: "Pending", Ready: "False/AwaitingAgent", Reconciling: "True/AwaitingAgent", KStatus: "InProgress",
				RequeueAfter: PullSyncInterval},
		},
		"ready again: the deadline clock stops": {
			status: flotillav1.LeaseStatus{Phase: flotillav1.LeaseActive, ReadyReplicas: 2, NotReadySince: at(-time.Minute)},
			decide: progress,
			want:   view{Phase: "Active", KStatus: "Current"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			class := tc.class
			if class == "" {
				class = flotillav1.ClassService
			}
			l := newLease(class, tc.status)
			old := l.Status.DeepCopy()
			st := l.Status.DeepCopy()
			res := tc.decide(st, old, input(l, tc.lastSeen))
			if d := cmp.Diff(tc.want, see(t, l, st, res)); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

// A Lost Lease waiting out its grace is woken by every change of its
// Workload and Provider during a failover: each look must leave its status
// as it was, or each is a status write.
func TestLostLeaseHoldsStillUntilItFailsOver(t *testing.T) {
	l := newLease(flotillav1.ClassService, flotillav1.LeaseStatus{Phase: flotillav1.LeaseActive, ReadyReplicas: 2, RunningReplicas: 2})
	in := input(l, -2*time.Second)
	in.FailoverGrace = 20 * time.Second
	first := l.Status.DeepCopy()
	Lost(first, in, "provider bob-1 is Lost", nil)
	if c := apimeta.FindStatusCondition(first.Conditions, flotillav1.ConditionReady); c == nil ||
		!strings.HasSuffix(c.Message, "failing over at 2026-12-01T12:00:20Z") {
		t.Fatalf("the Lost Lease does not say when it fails over: %+v", first.Conditions)
	}
	for _, later := range []time.Duration{time.Second, 7 * time.Second, 19 * time.Second} {
		in.Now = t0.Add(later)
		again := first.DeepCopy()
		if res := Lost(again, in, "provider bob-1 is Lost", nil); res.FailedOver {
			t.Fatalf("failed over %s after Lost, before its grace of %s", later, in.FailoverGrace)
		}
		if d := cmp.Diff(first, again); d != "" {
			t.Errorf("a look %s after Lost changed the status (-first +again):\n%s", later, d)
		}
	}
	in.Now = t0.Add(20 * time.Second)
	if res := Lost(first.DeepCopy(), in, "provider bob-1 is Lost", nil); !res.FailedOver {
		t.Errorf("not failed over at the end of its grace")
	}
}

func observe(obs Observation) func(st, old *flotillav1.LeaseStatus, in Input) Result {
	return func(st, old *flotillav1.LeaseStatus, in Input) Result {
		return Progress(st, in, Observed(st, old, in, obs, "bob-1"))
	}
}

// starting decides for a new Pull-mode Lease whose Assignment, written
// age ago (negative), the agent accepted, as syncPull does.
func starting(age time.Duration, lastError string, obs Observation) func(st, old *flotillav1.LeaseStatus, in Input) Result {
	return func(st, old *flotillav1.LeaseStatus, in Input) Result {
		in.Pull = true
		res := Observed(st, old, in, obs, "bob-1")
		st.LastError = lastError
		return Starting(st, in, t0.Add(age), res)
	}
}

func lost(lastContact *metav1.Time) func(st, old *flotillav1.LeaseStatus, in Input) Result {
	return func(st, _ *flotillav1.LeaseStatus, in Input) Result {
		c := lastContact.Time
		return Lost(st, in, "provider bob-1 is Lost", &c)
	}
}

func progress(st, _ *flotillav1.LeaseStatus, in Input) Result { return Progress(st, in, Result{}) }

// awaiting decides for a Lease (placed a minute ago) whose Assignment was
// written age ago (negative) and not answered.
func awaiting(age time.Duration, lastError string) func(st, old *flotillav1.LeaseStatus, in Input) Result {
	return func(st, _ *flotillav1.LeaseStatus, in Input) Result {
		return Awaiting(st, in, t0.Add(age), "waiting for the agent of provider bob-1 to accept the assignment", lastError)
	}
}

func withUsage(st flotillav1.LeaseStatus, u flotillav1.LeaseUsage) flotillav1.LeaseStatus {
	st.Usage = u
	return st
}

func withSync(st flotillav1.LeaseStatus, t *metav1.Time) flotillav1.LeaseStatus {
	st.LastSyncTime = t
	return st
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int32]time.Duration{0: 3 * time.Second, 1: 3 * time.Second, 2: 6 * time.Second, 3: 12 * time.Second,
		7: 192 * time.Second, 8: MaxBackoff, 1 << 20: MaxBackoff} {
		if got := Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestTiming(t *testing.T) {
	d, g := Timing(nil)
	if d != DefaultProgressDeadline || g != DefaultFailoverGrace {
		t.Errorf("defaults: %s %s", d, g)
	}
	w := &flotillav1.Workload{}
	w.Spec.ProgressDeadlineSeconds = ptr(int32(60))
	w.Spec.Failover.GracePeriodSeconds = ptr(int32(0))
	if d, g := Timing(w); d != time.Minute || g != 0 {
		t.Errorf("set: %s %s", d, g)
	}
}

func ptr[T any](v T) *T { return &v }

func BenchmarkObserved(b *testing.B) {
	l := newLease(flotillav1.ClassService, flotillav1.LeaseStatus{Phase: flotillav1.LeaseActive, RunningReplicas: 2, ReadyReplicas: 2,
		Usage: flotillav1.LeaseUsage{ReplicaSeconds: 10, MeteredUntil: at(-3 * time.Second)}, LastSyncTime: at(-time.Second)})
	in := input(l, -3*time.Second)
	for b.Loop() {
		st := l.Status.DeepCopy()
		Progress(st, in, Observed(st, &l.Status, in, Observation{Running: 2, Ready: 2}, "bob-1"))
	}
}

func TestFlushes(t *testing.T) {
	written := flotillav1.LeaseStatus{Phase: flotillav1.LeaseActive, RunningReplicas: 2, ReadyReplicas: 2,
		Usage: flotillav1.LeaseUsage{ReplicaSeconds: 10, MeteredUntil: at(-40 * time.Second), Cost: "0.01"}, LastSyncTime: at(-40 * time.Second)}
	flushed := written.DeepCopy()
	flushed.Usage = flotillav1.LeaseUsage{ReplicaSeconds: 90, MeteredUntil: at(0), Cost: "0.09"}
	flushed.LastSyncTime = at(0)
	lessReady := flushed.DeepCopy()
	lessReady.ReadyReplicas = 1
	newGen := flushed.DeepCopy()
	newGen.ObservedGeneration = 2
	cases := map[string]struct {
		st, old        *flotillav1.LeaseStatus
		now            time.Duration
		flush, overdue bool
	}{
		"usage and sync time only: a flush, not overdue": {st: flushed, old: &written, flush: true},
		"a replica less ready: progress":                 {st: lessReady, old: &written},
		"a new generation observed: progress":            {st: newGen, old: &written},
		"usage written MaxFlushDelay ago: overdue": {st: flushed, old: &written, now: MaxFlushDelay - 40*time.Second,
			flush: true, overdue: true},
		"never metered: overdue, written at once": {st: flushed, old: &flotillav1.LeaseStatus{Phase: flotillav1.LeaseActive, RunningReplicas: 2,
			ReadyReplicas: 2, LastSyncTime: at(-time.Second)}, flush: true, overdue: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := FlushOnly(tc.st, tc.old); got != tc.flush {
				t.Errorf("FlushOnly = %v, want %v", got, tc.flush)
			}
			if got := FlushOverdue(tc.old, t0.Add(tc.now)); got != tc.overdue {
				t.Errorf("FlushOverdue = %v, want %v", got, tc.overdue)
			}
		})
	}
}
