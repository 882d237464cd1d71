package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/lease"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// startCheckpoint runs a MeterCheckpoint on the test API server, saving
// every 100 ms, in its own namespace; the returned function stops it (its
// last save done).
func startCheckpoint(t *testing.T, ns string) (*MeterCheckpoint, func()) {
	t.Helper()
	m := &MeterCheckpoint{Client: env.Client, Reader: env.Client, Namespace: ns, Log: logr.Discard(), Interval: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	var once bool
	return m, func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("checkpoint stopped with %v", err)
		}
	}
}

func checkpointEntries(t *testing.T, ns string) map[string]string {
	t.Helper()
	var list corev1.ConfigMapList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(ns), client.HasLabels{LabelMeterCheckpoint}); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, cm := range list.Items {
		for k, v := range cm.Data {
			out[k] = v
		}
	}
	return out
}

// The flushes the Lease controller put off outlive the manager: saved
// while it runs, left out once their Lease is gone, and given back once
// each to the Lease controller of the next manager, which charges them.
func TestMeterCheckpointOutlivesARestart(t *testing.T) {
	ctx := context.Background()
	const ns, sys = "meter-ckpt", "meter-ckpt-system"
	namespace(t, ns)
	namespace(t, sys)
	w := newWorkload(ns, "web", "meter-ckpt", 2, "100m")
	l := fixture.Lease(w, fixture.Offer("mc-1", "std"), "web-a", 2, fixture.Running(2))
	st := l.Status
	if err := env.Client.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Truncate(time.Second)
	l.Status = st
	l.Status.Usage = flotillav1.LeaseUsage{ReplicaSeconds: 100, MeteredUntil: &metav1.Time{Time: t0.Add(-time.Minute)}, Cost: "0.000277"}
	if err := env.Client.Status().Update(ctx, l); err != nil {
		t.Fatal(err)
	}

	m, stop := startCheckpoint(t, sys)
	defer stop()
	kept := lease.Held{RV: l.ResourceVersion, ReplicaSeconds: 220, Until: t0}
	m.Hold(l.UID, kept)
	m.Hold("gone-uid", lease.Held{RV: "1", ReplicaSeconds: 5, Until: t0})
	hubenv.Await(t, 10*time.Second, "the held flush saved", func() (bool, string) {
		got := checkpointEntries(t, sys)
		return got[string(l.UID)] == kept.String() && len(got) == 1, fmt.Sprint(got)
	})
	stop()

	// The next manager.
	next, stopNext := startCheckpoint(t, sys)
	defer stopNext()
	r := &LeaseReconciler{Meter: next}
	restored := ownStatus(&l.Status)
	if err := r.restoreHeld(ctx, l, restored); err != nil {
		t.Fatal(err)
	}
	if restored.Usage.ReplicaSeconds != 220 || !restored.Usage.MeteredUntil.Time.Equal(t0) || restored.Usage.Cost != "0.000611" {
		t.Errorf("after a restart the Lease's usage is %+v, want the 220 replica-seconds until %s held before it", restored.Usage, t0)
	}
	if got := r.lastSeen(l.UID); !got.Equal(t0) {
		t.Errorf("metering goes on from %s, want the held look at %s", got, t0)
	}
	if _, ok, _ := next.Take(ctx, l.UID); ok {
		t.Error("a held flush was given back twice")
	}
	// Taken and not held again (its flush was written): the next save
	// leaves it out.
	hubenv.Await(t, 10*time.Second, "the taken flush gone from the checkpoint", func() (bool, string) {
		got := checkpointEntries(t, sys)
		return len(got) == 0, fmt.Sprint(got)
	})

	// A flush computed over a status written since is not charged.
	next.Hold(l.UID, lease.Held{RV: "1", ReplicaSeconds: 500, Until: t0.Add(time.Second)})
	stopNext()
	third, stopThird := startCheckpoint(t, sys)
	defer stopThird()
	r = &LeaseReconciler{Meter: third}
	again := ownStatus(&l.Status)
	if err := r.restoreHeld(ctx, l, again); err != nil {
		t.Fatal(err)
	}
	if again.Usage.ReplicaSeconds != 100 {
		t.Errorf("a flush held over another status was charged: %+v", again.Usage)
	}
	if got := r.lastSeen(l.UID); !got.IsZero() {
		t.Errorf("metering goes on from %s after an entry not charged, want a fresh start", got)
	}
}

// A Lease controller waits for the checkpoint to be read before its first
// look at a Lease: a look before would forgo the held flush for good.
func TestLeaseLooksWaitForTheCheckpoint(t *testing.T) {
	m := &MeterCheckpoint{}
	r := &LeaseReconciler{Meter: m}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	l := &flotillav1.Lease{ObjectMeta: metav1.ObjectMeta{UID: types.UID("unread")}}
	if err := r.restoreHeld(ctx, l, &flotillav1.LeaseStatus{}); err == nil {
		t.Error("a look went ahead of reading the checkpoint")
	}
}
