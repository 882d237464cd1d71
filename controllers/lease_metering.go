package controllers

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/metering"
	"github.com/flotilla-dev/flotilla/internal/money"
)

const (
	// leaseMeterFlush is how often usage is written while nothing changes.
	leaseMeterFlush = 30 * time.Second
	// maxObservationGap is the longest time between two looks at a Lease
	// that still counts as watched; syncs come every 1-3 s, so a longer gap
	// means the hub (or the provider) was away, and that time is not
	// charged.
	maxObservationGap = 15 * time.Second
)

// meter charges the replicas that ran since the last metering, at the count
// observed at the start of the interval (old), and prices them. It writes
// only every leaseMeterFlush, when the count changed, after a gap, or when
// the Lease closes, so that a quiet Lease stays quiet; whole seconds not
// yet written are charged with the next write.
func (r *LeaseReconciler) meter(l *flotillav1.Lease, st, old *flotillav1.LeaseStatus, now time.Time) {
	now = now.Truncate(time.Second)
	prev := r.lastSeen(l.UID)
	r.seen.Store(l.UID, now)
	watched := !prev.IsZero() && now.Sub(prev) <= maxObservationGap
	if m := st.Usage.MeteredUntil; m != nil && watched && now.Sub(m.Time) < leaseMeterFlush &&
		st.RunningReplicas == old.RunningReplicas && st.Phase != flotillav1.LeaseClosed {
		return
	}
	r.charge(l, st, func(u metering.Usage) (metering.Usage, bool) {
		return metering.Observe(u, old.RunningReplicas, prev, now, maxObservationGap)
	})
}

// meterUntilLastSeen charges what ran up to the hub's last look at the
// Lease, and nothing after: the Lease is ending or its provider is gone.
func (r *LeaseReconciler) meterUntilLastSeen(l *flotillav1.Lease, st *flotillav1.LeaseStatus) {
	seen := r.lastSeen(l.UID)
	if seen.IsZero() || st.Usage.MeteredUntil == nil || !seen.After(st.Usage.MeteredUntil.Time) {
		return
	}
	r.charge(l, st, func(u metering.Usage) (metering.Usage, bool) {
		return metering.Advance(u, st.RunningReplicas, seen)
	})
}

// charge advances the Lease's usage with step and prices it at the locked
// price.
func (r *LeaseReconciler) charge(l *flotillav1.Lease, st *flotillav1.LeaseStatus, step func(metering.Usage) (metering.Usage, bool)) {
	u := metering.Usage{ReplicaSeconds: st.Usage.ReplicaSeconds}
	if st.Usage.MeteredUntil != nil {
		u.Until = st.Usage.MeteredUntil.Time
	}
	u, changed := step(u)
	if !changed {
		return
	}
	price, err := money.Parse(string(l.Spec.PricePerReplicaHour))
	if err != nil {
		price = 0 // validated at admission; never charge on a parse error
	}
	st.Usage.ReplicaSeconds = u.ReplicaSeconds
	st.Usage.MeteredUntil = &metav1.Time{Time: u.Until}
	st.Usage.Cost = flotillav1.Amount(metering.Cost(u.ReplicaSeconds, price).String())
}
