package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/lease"
)

// New Leases and converging ones go before the periodic syncs of settled
// Leases, which would otherwise fill the queue ahead of them.
func TestSyncPriority(t *testing.T) {
	cases := map[string]struct {
		res  lease.Result
		want int
	}{
		"settled, next sync":       {lease.Result{RequeueAfter: lease.SyncInterval}, handler.LowPriority},
		"converging":               {lease.Result{RequeueAfter: lease.ConvergeInterval}, 0},
		"first failed sync":        {lease.Result{RequeueAfter: lease.Backoff(1), SyncFailed: true}, handler.LowPriority},
		"long backoff":             {lease.Result{RequeueAfter: time.Minute, SyncFailed: true}, handler.LowPriority},
		"deadline about to expire": {lease.Result{RequeueAfter: 10 * time.Millisecond}, 0},
		"closed, no requeue":       {lease.Result{}, 0},
	}
	for name, tc := range cases {
		if got := syncPriority(tc.res); got != tc.want {
			t.Errorf("%s: priority %d, want %d", name, got, tc.want)
		}
	}
}

// Periodic flushes take at most flushSlots workers: one that finds every
// slot taken waits, unless it is overdue; progress never waits.
func TestFlushesWaitForASlot(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(-d)} }
	written := func(d time.Duration) *flotillav1.LeaseStatus {
		return &flotillav1.LeaseStatus{Phase: flotillav1.LeaseActive, RunningReplicas: 1, ReadyReplicas: 1,
			Usage: flotillav1.LeaseUsage{ReplicaSeconds: 5, MeteredUntil: ago(d), Cost: "0.005"}, LastSyncTime: ago(d)}
	}
	flushOf := func(old *flotillav1.LeaseStatus) *flotillav1.LeaseStatus {
		st := old.DeepCopy()
		st.Usage = flotillav1.LeaseUsage{ReplicaSeconds: 40, MeteredUntil: ago(0), Cost: "0.04"}
		st.LastSyncTime = ago(0)
		return st
	}
	r := &LeaseReconciler{Now: func() time.Time { return now }, flushing: make(chan struct{}, flushSlots)}
	take := func(old *flotillav1.LeaseStatus, want, what string) func() {
		t.Helper()
		kind, release := r.flushSlot(flushOf(old), old, lease.Result{})
		if kind != want {
			t.Fatalf("%s with %d slots taken: %s, want %s", what, len(r.flushing), kind, want)
		}
		return release
	}
	var onTime, overdue []func()
	for range flushSlots / 2 {
		onTime = append(onTime, take(written(lease.MeterFlush), writeFlush, "flush on time"))
	}
	take(written(lease.MeterFlush), writePostponed, "flush on time")
	for range flushSlots / 2 {
		overdue = append(overdue, take(written(lease.MaxFlushDelay), writeFlush, "overdue flush"))
	}
	// Overdue and no slot free: written beside them, taking none.
	take(written(lease.MaxFlushDelay), writeFlush, "overdue flush")()
	if n := len(r.flushing); n != flushSlots {
		t.Errorf("%d slots taken after an overdue flush found none, want %d", n, flushSlots)
	}
	old := written(lease.MeterFlush)
	lost := flushOf(old)
	lost.ReadyReplicas = 0
	if kind, release := r.flushSlot(lost, old, lease.Result{}); kind != writeProgress {
		t.Errorf("a replica no longer ready with every slot taken: %s, want it written", kind)
	} else {
		release()
	}
	overdue[0]()
	take(written(lease.MeterFlush), writePostponed, "flush on time")
	overdue = append(overdue[1:], take(written(lease.MaxFlushDelay), writeFlush, "overdue flush"))
	for _, release := range append(onTime, overdue...) {
		release()
	}
	take(written(lease.MeterFlush), writeFlush, "flush on time")
	if n := len(r.flushing); n != 1 {
		t.Errorf("%d slots taken, want 1: a write without a slot released one", n)
	}
}
