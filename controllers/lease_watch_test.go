package controllers

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/assign"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/lease"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// A Workload's spec change wakes its open Leases at once, which render
// it: their own syncs of a Pull-mode Lease come only every
// lease.PullSyncInterval. Closed Leases and other Workloads' stay asleep,
// and so do status writes.
func TestAWorkloadsSpecWakesItsOpenLeases(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	mgr := newTestManager(t)
	if err := SetupIndexes(ctx, mgr); err != nil {
		t.Fatal(err)
	}
	defer run(t, mgr, ctx, cancel)()
	const ns = "lease-watch"
	namespace(t, ns)
	web := newWorkload(ns, "web", "lease-watch", 3, "100m")
	other := newWorkload(ns, "other", "lease-watch", 1, "100m")
	offer := fixture.Offer("lw-1", "std")
	for _, l := range []*flotillav1.Lease{
		fixture.Lease(web, offer, "web-a", 2, fixture.Running(2)),
		fixture.Lease(web, offer, "web-b", 1),
		fixture.Lease(web, offer, "web-old", 1, fixture.Ended(flotillav1.OutcomeFailedOver)),
		fixture.Lease(other, offer, "other-a", 1),
	} {
		st := l.Status
		if err := env.Client.Create(ctx, l); err != nil {
			t.Fatal(err)
		}
		l.Status = st
		if err := env.Client.Status().Update(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	r := &LeaseReconciler{Client: mgr.GetClient()}
	var got []string
	hubenv.Await(t, 20*time.Second, "the cache showing the Leases", func() (bool, string) {
		got = got[:0]
		for _, req := range r.openLeasesOf(ctx, web) {
			got = append(got, req.Name)
		}
		slices.Sort(got)
		return slices.Equal(got, []string{"web-a", "web-b"}), fmt.Sprint("woken: ", got)
	})

	changed := web.DeepCopy()
	changed.Generation = web.Generation + 1
	statusOnly := web.DeepCopy()
	statusOnly.Status.ReadyReplicas = 3
	for name, tc := range map[string]struct{ passed, want bool }{
		"spec changed":   {generationChanged.Update(event.UpdateEvent{ObjectOld: web, ObjectNew: changed}), true},
		"status written": {generationChanged.Update(event.UpdateEvent{ObjectOld: web, ObjectNew: statusOnly}), false},
		"created":        {generationChanged.Create(event.CreateEvent{Object: web}), false},
		"deleted":        {generationChanged.Delete(event.DeleteEvent{Object: web}), false},
	} {
		if tc.passed != tc.want {
			t.Errorf("%s: passed %v, want %v", name, tc.passed, tc.want)
		}
	}
}

// A Pull-mode Lease's Assignment is rendered again every
// leaseReapplyInterval, so that changed ConfigMaps reach it; when nothing
// changed nothing is written, not even status.lastApplyTime (that was a
// status write per Lease every two minutes). An Assignment that went is
// written again at once.
func TestPullReapplyWritesOnlyChanges(t *testing.T) {
	ctx := context.Background()
	const provider = "lw-pull"
	namespace(t, flotillav1.ProviderNamespace(provider))
	p := fixture.Provider(provider, "lw", fixture.Ready())
	p.Spec.Mode = flotillav1.ModePull
	w := newWorkload("lease-watch", "pulled", "lease-watch", 1, "100m")
	w.UID = "pulled-uid"
	l := fixture.Lease(w, fixture.Offer(provider, "std"), "pulled-a", 1)
	l.UID = "pulled-a-uid"
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	r := &LeaseReconciler{Client: env.Client, APIReader: env.Client, HubID: "hub-lw"}
	look := func(at time.Duration) *flotillav1.LeaseStatus {
		t.Helper()
		st := l.Status.DeepCopy()
		in := lease.Input{Lease: l, Now: t0.Add(at)}
		if res := r.syncPull(ctx, l, w, p, st, l.Status.DeepCopy(), &in); res.SyncFailed {
			t.Fatalf("look at %s: %s", at, st.LastError)
		}
		l.Status = *st
		return st
	}
	if st := look(0); st.LastApplyTime == nil || !st.LastApplyTime.Time.Equal(t0) {
		t.Fatalf("first look: lastApplyTime %v, want %v", st.LastApplyTime, t0)
	}
	if st := look(leaseReapplyInterval + time.Second); !st.LastApplyTime.Time.Equal(t0) {
		t.Errorf("rendered again unchanged: lastApplyTime moved to %v", st.LastApplyTime)
	}
	a := &flotillav1.Assignment{}
	key := client.ObjectKey{Namespace: flotillav1.ProviderNamespace(provider), Name: assign.Name(r.HubID, l.UID)}
	if err := env.Client.Get(ctx, key, a); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	later := leaseReapplyInterval + 5*time.Second
	if st := look(later); !st.LastApplyTime.Time.Equal(t0.Add(later)) {
		t.Errorf("the Assignment was written again, but lastApplyTime is %v", st.LastApplyTime)
	}
	if err := env.Client.Get(ctx, key, a); err != nil {
		t.Errorf("the deleted Assignment was not written again: %v", err)
	}
}
