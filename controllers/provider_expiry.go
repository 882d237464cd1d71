package controllers

import (
	"cmp"
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/health"
)

// expiryScan is how often the beats kept in memory are scanned for
// providers whose grace period ended.
const expiryScan = time.Second

// expiry is a provider whose heartbeat value has not been seen renewed for
// its grace period.
type expiry struct{ provider, beat string }

// expired lists the providers whose heartbeat this process has not seen
// renewed for the grace period and that were not woken for that beat yet.
func (r *ProviderReconciler) expired(now time.Time) []expiry {
	var out []expiry
	r.beats.Range(func(k, v any) bool {
		b := v.(heartbeat)
		if !r.pastGrace(b, now) {
			return true
		}
		if w, ok := r.woken.Load(k); ok && w.(string) == b.value {
			return true
		}
		out = append(out, expiry{k.(string), b.value})
		return true
	})
	return out
}

func (r *ProviderReconciler) pastGrace(b heartbeat, now time.Time) bool {
	return now.Sub(b.seen) >= r.grace()
}

func (r *ProviderReconciler) grace() time.Duration {
	return cmp.Or(r.GracePeriod, health.DefaultGrace)
}

// watchExpiry wakes, at normal priority, each Pull-mode provider whose
// grace period ends, once per heartbeat: its look decides Lost. A
// thousand live providers each looked at when its grace would end (every
// 10 to 20 s, nearly always to find a newer beat) kept the looks that
// found the stopped ones Lost 28 s in the queue behind them; now a live
// provider's routine look comes every PullLook, behind everything else.
func (r *ProviderReconciler) watchExpiry(ctx context.Context) error {
	t := time.NewTicker(expiryScan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, e := range r.expired(r.Now()) {
			select {
			case r.expiries <- event.GenericEvent{Object: &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: e.provider}}}:
				r.woken.Store(e.provider, e.beat)
			default: // full: the next scan sends it
			}
		}
	}
}

// graceWatched reports a Pull-mode provider that the expiry scan covers:
// one with a heartbeat seen and its grace period not yet over. Past it,
// health.Decide schedules the look at the grace period's end itself (the
// hub's record of its contact may be later than this process's).
func (r *ProviderReconciler) graceWatched(provider string, now time.Time) bool {
	if r.expiries == nil {
		return false
	}
	b, ok := r.beats.Load(provider)
	return ok && !r.pastGrace(b.(heartbeat), now)
}
