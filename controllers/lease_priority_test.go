package controllers

import (
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/handler"

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
