package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/market"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/placement"
)

// createBackoff is the wait after n failed creations in a row.
func createBackoff(n int) time.Duration {
	return min(time.Second<<min(n-1, 9), 5*time.Minute)
}

// change removes or shrinks Leases as planned.
func (s *Scheduler) change(ctx context.Context, changes []placement.Change, workloads map[string]*flotillav1.Workload, reason string) {
	for _, c := range changes {
		l := c.Lease.DeepCopy() // c.Lease is the cache's own
		var err error
		if c.Replicas > 0 {
			patch := client.MergeFrom(l.DeepCopy())
			l.Spec.Replicas = c.Replicas
			err = s.Client.Patch(ctx, l, patch)
		} else {
			err = client.IgnoreNotFound(s.Client.Delete(ctx, l))
		}
		if err != nil {
			logr.FromContextOrDiscard(ctx).Error(err, "Changing Lease", "lease", client.ObjectKeyFromObject(l), "reason", reason)
			continue
		}
		if w := workloads[l.Namespace+"/"+l.Spec.WorkloadRef.Name]; w != nil {
			s.Recorder.Event(w, "Normal", reason, c.Event)
		}
	}
}

// create makes the planned Leases: Workloads in parallel, since each Create
// is a round trip to the API server, and one Workload's in order. A
// provider's rate token is spent only on a Lease that exists; a Workload
// whose creation fails waits, and gives its capacity to others.
func (s *Scheduler) create(ctx context.Context, creations []placement.Creation, workloads map[string]*flotillav1.Workload, now time.Time) map[string]bool {
	byWorkload := map[string][]placement.Creation{}
	var order []string
	for _, c := range creations {
		if byWorkload[c.Workload] == nil {
			order = append(order, c.Workload)
		}
		byWorkload[c.Workload] = append(byWorkload[c.Workload], c)
	}
	created := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, createParallelism)
	for _, key := range order {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			w := workloads[key]
			for _, c := range byWorkload[key] {
				fresh, err := s.createLease(ctx, c.Lease)
				if err != nil {
					logr.FromContextOrDiscard(ctx).Error(err, "Creating Lease", "workload", key, "offer", c.Lease.Spec.OfferRef)
					metrics.LeaseCreateFailed()
					s.createFailed(key, err, now)
					if w != nil {
						s.Recorder.Eventf(w, "Warning", "FailedCreate", "Creating a Lease on offer %s/%s: %s",
							c.Lease.Spec.OfferRef.Namespace, c.Lease.Spec.OfferRef.Name, bound.Error(err))
					}
					return // the rest of this Workload waits too
				}
				if lim := s.limiters[c.Lease.Spec.ProviderRef.Name]; lim != nil {
					lim.AllowN(now, 1)
				}
				s.createSucceeded(key)
				if fresh {
					metrics.LeaseCreated()
					if w != nil {
						s.Recorder.Event(w, "Normal", "Scheduled", c.Event)
					}
				}
				mu.Lock()
				created[key] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return created
}

// createLease creates a planned Lease, and says whether it is new. A
// create whose reply was lost is retried under the same name and answered
// AlreadyExists: the Lease the server has is taken.
func (s *Scheduler) createLease(ctx context.Context, l *flotillav1.Lease) (bool, error) {
	err := s.Client.Create(ctx, l)
	if apierrors.IsAlreadyExists(err) {
		existing := &flotillav1.Lease{}
		if gerr := s.APIReader.Get(ctx, client.ObjectKeyFromObject(l), existing); gerr != nil {
			return false, fmt.Errorf("lease %s exists but cannot be read: %w", l.Name, gerr)
		}
		s.assume(existing)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.assume(l)
	return true, nil
}

func (s *Scheduler) createFailed(key string, err error, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.failing[key]
	f.N++
	f.Until, f.Err = now.Add(createBackoff(f.N)), bound.Text(err.Error(), 300)
	s.failing[key] = f
	// Another cycle now gives what this Workload was assigned to others;
	// none comes by itself when its back-off ends.
	s.Trigger()
	time.AfterFunc(createBackoff(f.N), s.Trigger)
}

func (s *Scheduler) createSucceeded(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.failing, key)
}

// report keeps the cycle's verdicts for the Workload controller, records a
// FailedScheduling event when a Workload's reasons change, wakes the
// Workloads whose status may change, and records the cycle's metrics.
func (s *Scheduler) report(plan placement.Intents, workloads map[string]*flotillav1.Workload, created map[string]bool, took time.Duration) {
	notify := map[string]bool{}
	for key := range created {
		notify[key] = true
	}
	var pending int64
	byReason := map[string]int{}
	var events []string
	s.mu.Lock()
	old := s.verdicts
	s.verdicts = plan.Unplaced
	for key, u := range plan.Unplaced {
		pending += int64(u.Pending)
		if len(u.Reasons) > 0 {
			byReason[u.Reasons[0].Code]++
		}
		if o, ok := old[key]; !ok || o.Summary() != u.Summary() || o.Pending != u.Pending {
			notify[key] = true
		}
		msg := fmt.Sprintf("%d replicas pending: %s", u.Pending, u.Summary())
		if s.reported[key] != msg && !created[key] {
			s.reported[key] = msg
			events = append(events, key)
		}
	}
	for key := range old {
		if _, ok := plan.Unplaced[key]; !ok {
			notify[key] = true
		}
	}
	for key := range s.reported {
		if _, ok := plan.Unplaced[key]; !ok {
			delete(s.reported, key)
		}
	}
	s.mu.Unlock()
	for _, key := range events {
		if w := workloads[key]; w != nil {
			u := plan.Unplaced[key]
			s.Recorder.Eventf(w, "Warning", "FailedScheduling", "%d replicas pending: %s", u.Pending, u.Summary())
		}
	}
	for key := range notify {
		if w := workloads[key]; w != nil {
			s.notify(w)
		}
	}
	metrics.SchedulingCycle(took, pending, byReason, market.ReasonCodes())
}

var (
	providerPhases = []string{string(flotillav1.ProviderPending), string(flotillav1.ProviderReady), string(flotillav1.ProviderLost), string(flotillav1.ProviderCordoned)}
	leasePhases    = []string{string(flotillav1.LeasePending), string(flotillav1.LeaseActive), string(flotillav1.LeaseLost), string(flotillav1.LeaseClosing), string(flotillav1.LeaseClosed)}
)

func recordPhases(providers []flotillav1.Provider, leases []*flotillav1.Lease) {
	pc, lc := map[string]int{}, map[string]int{}
	for i := range providers {
		ph := providers[i].Status.Phase
		if ph == "" {
			ph = flotillav1.ProviderPending
		}
		pc[string(ph)]++
	}
	for _, l := range leases {
		ph := l.Status.Phase
		if ph == "" {
			ph = flotillav1.LeasePending
		}
		lc[string(ph)]++
	}
	metrics.Phases(providerPhases, leasePhases, pc, lc)
}
