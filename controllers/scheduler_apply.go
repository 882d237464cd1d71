package controllers

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
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

// batch is one Workload's planned Leases of one cycle.
type batch struct {
	key       string
	workload  *flotillav1.Workload
	creations []placement.Creation
	// limiters are the creations' providers' rate limits (nil when off):
	// a token is spent only on a Lease that exists.
	limiters []*rate.Limiter
	at       time.Time
	// Under Scheduler.mu: the creations not answered yet, and whether one
	// failed (the rest are then not sent).
	left   int
	failed bool
}

// creation is one planned Lease of a batch, waiting for a creator.
type creation struct {
	b *batch
	i int
}

// dispatch hands the planned Leases to the creators and returns at once,
// so the next cycle need not wait for the API server's replies (the
// kube-scheduler binds asynchronously for the same reason). Each Lease is
// assumed before it is sent: the next cycle counts it, and one whose
// creation fails is forgotten, its capacity and rate token given back.
// Leases are created in the order planned, a Workload's side by side: on
// an idle API server a Workload's Leases take one round trip, and on a
// saturated one Workloads complete one after another rather than all late.
func (s *Scheduler) dispatch(creations []placement.Creation, workloads map[string]*flotillav1.Workload, now time.Time) map[string]bool {
	byWorkload := map[string]*batch{}
	var order []*batch
	for _, c := range creations {
		b := byWorkload[c.Workload]
		if b == nil {
			b = &batch{key: c.Workload, workload: workloads[c.Workload], at: now}
			byWorkload[c.Workload] = b
			order = append(order, b)
		}
		b.creations = append(b.creations, c)
		b.limiters = append(b.limiters, s.limiters[c.Lease.Spec.ProviderRef.Name])
	}
	dispatched := make(map[string]bool, len(order))
	s.mu.Lock()
	for _, b := range order {
		b.left = len(b.creations)
		for i, c := range b.creations {
			s.assumed[client.ObjectKeyFromObject(c.Lease)] = assumedLease{lease: c.Lease, inFlight: true}
			s.inFlight[c.Lease.Spec.ProviderRef.Name]++
			s.queue = append(s.queue, creation{b, i})
		}
		dispatched[b.key] = true
	}
	metrics.LeaseCreationsQueued(len(s.queue))
	s.mu.Unlock()
	if len(order) > 0 {
		s.wake()
	}
	return dispatched
}

// wake tells one idle creator there is work; it never blocks.
func (s *Scheduler) wake() {
	select {
	case s.work <- struct{}{}:
	default:
	}
}

// creator takes Leases off the queue until ctx ends.
func (s *Scheduler) creator(ctx context.Context) {
	for {
		s.mu.Lock()
		c, ok := creation{}, len(s.queue) > 0
		if ok {
			c = s.queue[0]
			s.queue[0] = creation{}
			s.queue = s.queue[1:]
			metrics.LeaseCreationsQueued(len(s.queue))
		}
		more := len(s.queue) > 0
		s.mu.Unlock()
		if more {
			s.wake() // the signal holds one wake-up; pass it on
		}
		if ok {
			s.createOne(ctx, c.b, c.i)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-s.work:
		}
	}
}

// createOne creates the i-th Lease of a batch, unless another of the
// batch failed: a Workload whose creation fails waits, and gives its
// capacity to others.
func (s *Scheduler) createOne(ctx context.Context, b *batch, i int) {
	c := b.creations[i]
	s.mu.Lock()
	skip := b.failed || ctx.Err() != nil
	s.mu.Unlock()
	if skip {
		s.sent(b, c.Lease, false)
		return
	}
	created, fresh, err := s.createLease(ctx, c.Lease)
	if err == nil && b.limiters[i] != nil {
		b.limiters[i].AllowN(time.Now(), 1)
	}
	if err != nil && ctx.Err() == nil {
		s.mu.Lock()
		first := !b.failed
		b.failed = true
		s.mu.Unlock()
		logr.FromContextOrDiscard(ctx).Error(err, "Creating Lease", "workload", b.key, "offer", c.Lease.Spec.OfferRef)
		metrics.LeaseCreateFailed()
		if first {
			s.createFailed(b.key, err, time.Now()) // the back-off starts now, not when the cycle planned it
		}
		if b.workload != nil {
			s.Recorder.Eventf(b.workload, "Warning", "FailedCreate", "Creating a Lease on offer %s/%s: %s",
				c.Lease.Spec.OfferRef.Namespace, c.Lease.Spec.OfferRef.Name, bound.Error(err))
		}
	}
	if err == nil {
		s.createSucceeded(b.key)
		if at, ok := s.arrived.LoadAndDelete(b.key); ok {
			metrics.FirstLeaseCreated(time.Since(at.(time.Time)))
		}
		if fresh {
			if s.Created != nil {
				s.Created(ctx, created)
			}
			metrics.LeaseCreated(time.Since(b.at))
			if b.workload != nil {
				s.Recorder.Event(b.workload, "Normal", "Scheduled", c.Event)
			}
		}
	}
	s.sent(b, c.Lease, err == nil)
}

// sent ends a creation: the provider's rate tokens count it no more as
// in flight, one that failed is no longer assumed, and the Workload is
// looked at again once its batch is done.
func (s *Scheduler) sent(b *batch, l *flotillav1.Lease, created bool) {
	s.mu.Lock()
	p := l.Spec.ProviderRef.Name
	if s.inFlight[p]--; s.inFlight[p] <= 0 {
		delete(s.inFlight, p)
	}
	if !created {
		delete(s.assumed, client.ObjectKeyFromObject(l))
	}
	b.left--
	done := b.left == 0
	s.mu.Unlock()
	if done && b.workload != nil {
		s.notify(b.workload)
	}
}

// createLease creates a planned Lease, and returns it as created and
// whether it is new. A create whose reply was lost is retried under the
// same name and answered AlreadyExists: the Lease the server has is taken.
func (s *Scheduler) createLease(ctx context.Context, planned *flotillav1.Lease) (*flotillav1.Lease, bool, error) {
	l := planned.DeepCopy() // the reply is decoded into it while cycles read the planned one
	err := s.Client.Create(ctx, l)
	if apierrors.IsAlreadyExists(err) {
		existing := &flotillav1.Lease{}
		if gerr := s.APIReader.Get(ctx, client.ObjectKeyFromObject(l), existing); gerr != nil {
			return nil, false, fmt.Errorf("lease %s exists but cannot be read: %w", l.Name, gerr)
		}
		s.assume(existing)
		return existing, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	s.assume(l)
	return l, true, nil
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
func (s *Scheduler) report(plan placement.Intents, workloads map[string]*flotillav1.Workload, dispatched map[string]bool, took time.Duration) {
	notify := map[string]bool{} // sent wakes the dispatched ones once their Leases are answered
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
		if s.reported[key] != msg && !dispatched[key] {
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
