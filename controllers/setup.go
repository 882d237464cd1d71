package controllers

import (
	"context"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
)

// Options tune the hub controllers.
type Options struct {
	// SchedulerInterval is the least time between two scheduling cycles.
	SchedulerInterval time.Duration
	// SchedulerResync runs a cycle at least this often.
	SchedulerResync time.Duration
}

// Setup registers the indexes, the scheduling loop and the reconcilers.
func Setup(ctx context.Context, mgr ctrl.Manager, opts Options) (*Scheduler, error) {
	if err := SetupIndexes(ctx, mgr); err != nil {
		return nil, err
	}
	s := NewScheduler(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetCache(), mgr.GetEventRecorderFor("flotilla-scheduler"))
	if opts.SchedulerInterval > 0 {
		s.MinInterval = opts.SchedulerInterval
	}
	if opts.SchedulerResync > 0 {
		s.Resync = opts.SchedulerResync
	}
	if err := mgr.Add(s); err != nil {
		return nil, err
	}
	if err := (&WorkloadReconciler{Client: mgr.GetClient(), Scheduler: s}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&OfferReconciler{Client: mgr.GetClient(), Now: time.Now}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	return s, nil
}
