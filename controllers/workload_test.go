package controllers

import (
	"context"
	"testing"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
)

// A Workload's status is written even when the cache shows it already,
// if this controller wrote another since: its own status writes wake no
// reconcile, so a skipped write would stay wrong until something else
// changed. A restarted manager wrote WaitingForScheduler before its first
// cycle, then found its verdict (InsufficientCapacity) in a cache that did
// not show that write yet.
func TestWorkloadStatusNotLostToAStaleCache(t *testing.T) {
	ctx := context.Background()
	const ns = "stale-cache"
	namespace(t, ns)
	w := newWorkload(ns, "waits", "stale-cache", 1, "1")
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(w)
	var stale *flotillav1.Workload // the Workload as a lagging cache shows it
	direct, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	c := interceptor.NewClient(direct, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, o ...client.GetOption) error {
			if got, ok := obj.(*flotillav1.Workload); ok && stale != nil {
				stale.DeepCopyInto(got)
				return nil
			}
			return c.Get(ctx, k, obj, o...)
		},
		// No Leases: the real controller lists them from the cache's index.
		List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, o ...client.ListOption) error {
			if _, ok := l.(*flotillav1.LeaseList); ok {
				return nil
			}
			return c.List(ctx, l, o...)
		},
	})
	s := &Scheduler{}
	r := &WorkloadReconciler{Client: c, Scheduler: s, Recorder: record.NewFakeRecorder(10)}
	insufficient := map[string]market.Unplaced{key.String(): {Pending: 1,
		Reasons: []market.Reason{{Code: "InsufficientCapacity", Count: 1, Message: "not enough cpu"}}}}
	reconcile := func() string {
		t.Helper()
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: key}); err != nil {
			t.Fatal(err)
		}
		got := &flotillav1.Workload{}
		if err := env.Client.Get(ctx, key, got); err != nil {
			t.Fatal(err)
		}
		if c := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadScheduled); c != nil {
			return c.Reason
		}
		return ""
	}

	s.verdicts = insufficient
	if got := reconcile(); got != "InsufficientCapacity" {
		t.Fatalf("Scheduled %q, want InsufficientCapacity", got)
	}
	stale = &flotillav1.Workload{}
	if err := env.Client.Get(ctx, key, stale); err != nil {
		t.Fatal(err)
	}
	// A new scheduler has no verdict yet; the cache keeps showing the old
	// status through what follows.
	s.verdicts = nil
	if got := reconcile(); got != flotillav1.WorkloadReasonWaitingForScheduler {
		t.Fatalf("Scheduled %q before any verdict, want WaitingForScheduler", got)
	}
	s.verdicts = insufficient
	if got := reconcile(); got != "InsufficientCapacity" {
		t.Errorf("Scheduled %q after the verdict came, want InsufficientCapacity: the write was skipped for a stale cache", got)
	}
}

// The manager's cache keeps no managedFields: nothing reads them, and they
// were a third of every Workload the scheduler copies each cycle.
func TestCacheKeepsNoManagedFields(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns = "cache-fields"
	namespace(t, ns)
	w := newWorkload(ns, "fields", "cache-fields", 1, "1")
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	mgr := newTestManager(t)
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	server := &flotillav1.Workload{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(w), server); err != nil {
		t.Fatal(err)
	}
	if len(server.ManagedFields) == 0 {
		t.Fatal("the API server kept no managedFields: nothing to check")
	}
	cached := &flotillav1.Workload{}
	if err := mgr.GetCache().Get(ctx, client.ObjectKeyFromObject(w), cached); err != nil {
		t.Fatal(err)
	}
	if len(cached.ManagedFields) != 0 {
		t.Errorf("the cache keeps %d managedFields entries of a Workload", len(cached.ManagedFields))
	}
}
