package controllers

import (
	"context"
	"fmt"
	"maps"
	"math"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/placement"
)

// Scheduler is the hub's single scheduling loop. Every placement decision is
// made here, by one goroutine of the leader, over one snapshot per cycle
// (internal/placement decides; this loop gathers and carries it out):
// Workload, Offer, Provider and Lease changes only wake it up.
//
// Besides what internal/placement says against double-booking: cycles
// never overlap, and with leader election only one manager runs the loop;
// the informer cache may lag behind Leases this loop just created, so they
// are kept as "assumed" and added to the snapshot until the cache shows
// them (the kube-scheduler's assume cache, for the same reason); after a
// restart the cache starts from a full list of the API server.
type Scheduler struct {
	Client    client.Client
	APIReader client.Reader
	Cache     cache.Cache
	Recorder  record.EventRecorder
	// MinInterval between two cycles, so a burst of changes costs one cycle.
	MinInterval time.Duration
	// Resync runs a cycle at least this often (offer validity windows open
	// and close without an event).
	Resync time.Duration
	// LeaseRate and LeaseBurst rate-limit new Leases per provider (a token
	// bucket), so that a provider that just joined or came back is handed
	// work gradually rather than all at once; LeaseBurst 0 turns it off.
	LeaseRate  rate.Limit
	LeaseBurst int
	// AllowUnaccounted places Workloads of namespaces without an Account,
	// free of charge: for a private federation. By default they wait.
	AllowUnaccounted bool
	// Settlement, when set, says why the bank cannot settle now; while it
	// cannot, Workloads of accounted namespaces get no new replicas.
	Settlement func() string
	// Silent, when set, lists the providers not heard from lately, which
	// take no new replicas (placement.Input.Silent).
	Silent func(now time.Time) map[string]bool
	// Created, when set, is told of each Lease this loop created, as soon
	// as the API server answered; it must not block.
	Created func(ctx context.Context, l *flotillav1.Lease)
	Now     func() time.Time

	limiters map[string]*rate.Limiter // by provider; used by the loop only
	trigger  chan struct{}
	// Events tells the Workload controller which Workloads to look at again.
	Events chan event.GenericEvent

	mu      sync.Mutex
	assumed map[types.NamespacedName]assumedLease
	queue   []creation // Leases waiting for a creator
	// inFlight counts the Lease creations sent and not answered, by
	// provider; they hold their provider's rate tokens.
	inFlight map[string]int
	work     chan struct{} // wakes a creator
	// failing holds Workloads whose last Lease creation failed, until
	// when they wait: one tenant's Workload that cannot be created must
	// not take the capacity (or the providers' rate of new Leases) others
	// could use, cycle after cycle.
	failing  map[string]placement.Failure
	verdicts map[string]market.Unplaced
	reported map[string]string // last FailedScheduling message per workload
	// arrived is when the loop first saw each Workload that has no
	// replica scheduled yet, by namespace/name, for the time to its first
	// Lease (metrics.FirstLeaseCreated).
	arrived sync.Map
}

type assumedLease struct {
	lease *flotillav1.Lease
	at    time.Time
	// inFlight: sent to the creators and not answered yet; such a Lease
	// is assumed however long the API server takes.
	inFlight bool
}

// assumeTTL bounds how long a created Lease is assumed without the cache
// showing it; informers deliver in milliseconds, so this only matters for a
// Lease deleted before it was ever observed.
const assumeTTL = time.Minute

// The default rate of new Leases per provider: bursts of 50, then 5 a second.
const (
	DefaultLeaseRate  rate.Limit = 5
	DefaultLeaseBurst            = 50
)

// creators create Leases side by side, off the loop: on a loaded API
// server a Create takes about a second, and more in flight only share a
// saturated API server further (docs/performance.md, fifth round).
const creators = 16

// NewScheduler returns a Scheduler with its channels and defaults.
func NewScheduler(c client.Client, apiReader client.Reader, ca cache.Cache, rec record.EventRecorder) *Scheduler {
	return &Scheduler{
		Client: c, APIReader: apiReader, Cache: ca, Recorder: rec,
		MinInterval: 100 * time.Millisecond, Resync: 30 * time.Second, Now: time.Now,
		LeaseRate: DefaultLeaseRate, LeaseBurst: DefaultLeaseBurst, limiters: map[string]*rate.Limiter{},
		trigger:  make(chan struct{}, 1),
		work:     make(chan struct{}, 1),
		Events:   make(chan event.GenericEvent, 1024),
		assumed:  map[types.NamespacedName]assumedLease{},
		inFlight: map[string]int{},
		failing:  map[string]placement.Failure{},
		verdicts: map[string]market.Unplaced{},
		reported: map[string]string{},
	}
}

// Trigger asks for a cycle soon; it never blocks.
func (s *Scheduler) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Verdict returns what the last cycle said about a Workload's pending
// replicas.
func (s *Scheduler) Verdict(namespace, name string) placement.Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.verdicts[namespace+"/"+name]
	if !ok {
		return placement.Verdict{}
	}
	v := placement.Verdict{Known: true, Summary: u.Summary()}
	if len(u.Reasons) > 0 {
		v.Code = u.Reasons[0].Code
	}
	return v
}

// Start runs the loop until ctx ends. It implements manager.Runnable and
// needs leader election (the default for runnables).
func (s *Scheduler) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("scheduler")
	ctx = ctrl.LoggerInto(ctx, log)
	if err := s.watchWorkloads(ctx); err != nil {
		return err
	}
	if err := watchChanges(ctx, s.Cache, schedulingInputChanged, s.Trigger,
		&flotillav1.Offer{}, &flotillav1.Provider{}, &flotillav1.Lease{}, &flotillav1.Account{}); err != nil {
		return err
	}
	log.Info("Starting scheduling loop")
	var wg sync.WaitGroup
	defer s.drop()
	defer wg.Wait() // no creation outlives the leadership
	for range creators {
		wg.Go(func() { s.creator(ctx) })
	}
	resync := time.NewTicker(s.Resync)
	defer resync.Stop()
	s.Trigger()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.trigger:
		case <-resync.C:
		}
		if err := s.cycle(ctx); err != nil {
			log.Error(err, "Scheduling cycle failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.MinInterval):
		}
	}
}

// cycle gathers a snapshot, lets internal/placement plan it, and carries out
// the plan.
func (s *Scheduler) cycle(ctx context.Context) error {
	start := time.Now()
	in, workloads, err := s.gather(ctx, start)
	if err != nil {
		return err
	}
	plan := placement.Plan(in)
	for _, sk := range plan.Skipped {
		logr.FromContextOrDiscard(ctx).V(1).Info("Left out of the market", "kind", sk.Kind, "key", sk.Key, "reason", sk.Reason)
	}
	for range plan.Throttled {
		metrics.ProviderRateLimited()
	}
	if len(plan.Throttled) > 0 && len(plan.Unplaced) > 0 {
		// No event comes when tokens refill.
		time.AfterFunc(s.nextToken(plan.Throttled, start), s.Trigger)
	}
	s.change(ctx, plan.ScaleDown, workloads, "ScaledDown")
	dispatched := s.dispatch(plan.Create, workloads, start)
	s.change(ctx, plan.Drain, workloads, "Drained")
	s.report(plan, workloads, dispatched, time.Since(start))
	return nil
}

// gather lists the hub's objects from the cache, with the Leases this loop
// created that the cache does not show yet and the limits it keeps.
func (s *Scheduler) gather(ctx context.Context, now time.Time) (placement.Input, map[string]*flotillav1.Workload, error) {
	var providers flotillav1.ProviderList
	var offers flotillav1.OfferList
	var workloads flotillav1.WorkloadList
	var leases flotillav1.LeaseList
	var accounts flotillav1.AccountList
	// A cycle only reads what it lists (Plan changes none of its input;
	// change copies the Leases it writes), and copying every object each
	// cycle was most of its time: the Workloads' copies, pod templates and
	// all, were most of the manager's heap at a thousand providers, and
	// the Offers' 11 % of its CPU.
	for _, l := range []client.ObjectList{&leases, &workloads, &offers, &providers, &accounts} {
		if err := s.Client.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
			return placement.Input{}, nil, fmt.Errorf("listing %T: %w", l, err)
		}
	}
	in := placement.Input{Now: s.Now(), Providers: providers.Items, Offers: offers.Items, Workloads: workloads.Items,
		Leases: s.withAssumed(leases.Items, now), Accounts: accounts.Items, AllowUnaccounted: s.AllowUnaccounted,
		LeaseTokens: s.tokens(providers.Items, now)}
	if s.Settlement != nil {
		in.Settlement = s.Settlement()
	}
	if s.Silent != nil {
		in.Silent = s.Silent(now)
	}
	byKey := make(map[string]*flotillav1.Workload, len(workloads.Items))
	for i := range workloads.Items {
		w := &workloads.Items[i]
		byKey[w.Namespace+"/"+w.Name] = w
	}
	s.mu.Lock()
	in.Failing = maps.Clone(s.failing)
	for k := range s.failing {
		if byKey[k] == nil {
			delete(s.failing, k)
		}
	}
	s.mu.Unlock()
	recordPhases(providers.Items, in.Leases)
	return in, byKey, nil
}

// tokens is how many new Leases each provider may take now, from its token
// bucket; nil when the rate limit is off.
func (s *Scheduler) tokens(providers []flotillav1.Provider, now time.Time) map[string]int32 {
	if s.LeaseBurst <= 0 || s.LeaseRate <= 0 {
		return nil
	}
	out := make(map[string]int32, len(providers))
	seen := make(map[string]bool, len(providers))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range providers {
		name := providers[i].Name
		seen[name] = true
		lim := s.limiters[name]
		if lim == nil {
			lim = rate.NewLimiter(s.LeaseRate, s.LeaseBurst)
			s.limiters[name] = lim
		}
		out[name] = int32(lim.TokensAt(now)) - int32(s.inFlight[name])
	}
	for name := range s.limiters {
		if !seen[name] {
			delete(s.limiters, name)
		}
	}
	return out
}

// nextToken is how long until the first of the throttled providers has
// another whole token. A fixed 1/rate would come back just short of it
// when tokens were spent after the cycle, as creations return, and the
// next look would then find two tokens and hand out two Leases at once.
func (s *Scheduler) nextToken(throttled []string, now time.Time) time.Duration {
	period := float64(time.Second) / float64(s.LeaseRate)
	wait := period
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range throttled {
		if lim := s.limiters[name]; lim != nil {
			t := lim.TokensAt(now)
			wait = min(wait, (math.Floor(t)+1-t)*period)
		}
	}
	// A little past the token, so that the next look does not read 0.999.
	return time.Duration(wait) + 10*time.Millisecond
}

// schedulingInputChanged tells the updates a cycle could act on from the
// status the controllers write all the time (probe times, sync times,
// offer and workload status), which would keep the loop busy for nothing
// and make new Workloads wait behind useless cycles.
func schedulingInputChanged(o, n any) bool {
	oo, ok1 := o.(client.Object)
	no, ok2 := n.(client.Object)
	if !ok1 || !ok2 {
		return true
	}
	if oo.GetGeneration() != no.GetGeneration() || !oo.GetDeletionTimestamp().Equal(no.GetDeletionTimestamp()) ||
		!maps.Equal(oo.GetLabels(), no.GetLabels()) {
		return true
	}
	switch ov := o.(type) {
	case *flotillav1.Provider:
		nv := n.(*flotillav1.Provider)
		return ov.Status.Phase != nv.Status.Phase || ov.Status.Reputation.Score != nv.Status.Reputation.Score ||
			!equality.Semantic.DeepEqual(ov.Status.Capacity, nv.Status.Capacity)
	case *flotillav1.Lease:
		nv := n.(*flotillav1.Lease)
		return ov.Status.Phase != nv.Status.Phase || ov.Status.ReadyReplicas != nv.Status.ReadyReplicas
	case *flotillav1.Workload:
		// The bank stopping or resuming it.
		nv := n.(*flotillav1.Workload)
		return apimeta.IsStatusConditionTrue(ov.Status.Conditions, flotillav1.WorkloadBudgetExhausted) !=
			apimeta.IsStatusConditionTrue(nv.Status.Conditions, flotillav1.WorkloadBudgetExhausted)
	}
	return false // Workload, Offer and Account status: written from what the loop decided
}

// watchChanges calls trigger on every add and delete of the kinds, and on
// the updates changed passes, then waits for the cache to sync: the single
// loops (scheduler, bank) wake on events rather than poll.
func watchChanges(ctx context.Context, ca cache.Cache, changed func(o, n any) bool, trigger func(), objs ...client.Object) error {
	for _, obj := range objs {
		inf, err := ca.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("getting informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { trigger() },
			UpdateFunc: func(o, n any) {
				if changed(o, n) {
					trigger()
				}
			},
			DeleteFunc: func(any) { trigger() },
		}); err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
	}
	if !ca.WaitForCacheSync(ctx) {
		return fmt.Errorf("cache did not sync")
	}
	return nil
}

// watchWorkloads triggers a cycle as watchChanges does, and remembers
// when each Workload without a scheduled replica appeared, until its first
// Lease is created or it is deleted. One handler does both: a second
// one's events come on their own goroutine, after the cycle they trigger
// may have created the Lease.
func (s *Scheduler) watchWorkloads(ctx context.Context) error {
	inf, err := s.Cache.GetInformer(ctx, &flotillav1.Workload{})
	if err != nil {
		return fmt.Errorf("getting informer for Workloads: %w", err)
	}
	key := func(obj any) (string, bool) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		w, ok := obj.(*flotillav1.Workload)
		if !ok {
			return "", false
		}
		return w.Namespace + "/" + w.Name, w.Status.ScheduledReplicas == 0
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if k, fresh := key(obj); fresh {
				s.arrived.LoadOrStore(k, time.Now())
			}
			s.Trigger()
		},
		UpdateFunc: func(o, n any) {
			if schedulingInputChanged(o, n) {
				s.Trigger()
			}
		},
		DeleteFunc: func(obj any) {
			if k, _ := key(obj); k != "" {
				s.arrived.Delete(k)
			}
			s.Trigger()
		},
	})
	if err != nil {
		return fmt.Errorf("watching Workloads: %w", err)
	}
	return nil
}

// withAssumed adds the Leases created but not yet in the cache, and forgets
// those the cache now shows.
func (s *Scheduler) withAssumed(items []flotillav1.Lease, now time.Time) []*flotillav1.Lease {
	out := make([]*flotillav1.Lease, 0, len(items))
	seen := make(map[types.NamespacedName]bool, len(items))
	for i := range items {
		out = append(out, &items[i])
		seen[types.NamespacedName{Namespace: items[i].Namespace, Name: items[i].Name}] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, a := range s.assumed {
		if seen[k] || (!a.inFlight && now.Sub(a.at) > assumeTTL) {
			delete(s.assumed, k)
			continue
		}
		out = append(out, a.lease)
	}
	return out
}

// drop forgets the creations still queued when the loop stops.
func (s *Scheduler) drop() {
	s.mu.Lock()
	queue := s.queue
	s.queue = nil
	s.mu.Unlock()
	for _, c := range queue {
		s.sent(c.b, c.b.creations[c.i].Lease, false)
	}
	metrics.LeaseCreationsQueued(0)
}

func (s *Scheduler) assume(l *flotillav1.Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.assumed[types.NamespacedName{Namespace: l.Namespace, Name: l.Name}] = assumedLease{lease: l, at: time.Now()}
}

func (s *Scheduler) notify(w *flotillav1.Workload) {
	select {
	case s.Events <- event.GenericEvent{Object: w}:
	default: // the Workload controller resyncs on its own; never block the loop
	}
}
