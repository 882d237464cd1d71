package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/market"
	"github.com/flotilla-dev/flotilla/internal/metrics"
)

// Scheduler is the hub's single scheduling loop. Every placement decision is
// made here, by one goroutine of the leader, over one snapshot per cycle:
// Workload, Offer, Provider and Lease changes only wake it up.
//
// Why nothing is double-booked:
//   - One loop: cycles never overlap, and with leader election only one
//     manager runs it (run a single replica, or enable --leader-elect).
//   - Capacity comes from Leases, not Offer status: an Offer's free room is
//     its resources minus every live Lease naming it.
//   - The informer cache may lag behind Leases this loop just created, so
//     they are kept as "assumed" and added to the snapshot until the cache
//     shows them (the kube-scheduler's assume cache, for the same reason).
//   - After a restart the cache starts from a full list of the API server,
//     which includes every Lease the previous leader created.
//   - Lease names are derived from the Workload's UID, the Offer, the epoch
//     and a sequence number, so a create whose reply was lost is retried
//     under the same name and answered AlreadyExists, never duplicated.
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
	Now        func() time.Time

	limiters map[string]*rate.Limiter // by provider; used by the loop only
	trigger  chan struct{}
	// Events tells the Workload controller which Workloads to look at again.
	Events chan event.GenericEvent

	mu      sync.Mutex
	assumed map[types.NamespacedName]assumedLease
	// failing holds Workloads whose last Lease creation failed, until
	// when they wait: one tenant's Workload that cannot be created must
	// not take the capacity (or the providers' rate of new Leases) others
	// could use, cycle after cycle.
	failing  map[string]createFailure
	verdicts map[string]market.Unplaced
	reported map[string]string // last FailedScheduling message per workload
}

type createFailure struct {
	n     int
	until time.Time
	err   string
}

// createBackoff is the wait after n failed creations in a row.
func createBackoff(n int) time.Duration {
	return min(time.Second<<min(n-1, 9), 5*time.Minute)
}

type assumedLease struct {
	lease *flotillav1.Lease
	at    time.Time
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

// createParallelism bounds the Lease creations in flight in one cycle.
const createParallelism = 8

// NewScheduler returns a Scheduler with its channels and defaults.
func NewScheduler(c client.Client, apiReader client.Reader, ca cache.Cache, rec record.EventRecorder) *Scheduler {
	return &Scheduler{
		Client: c, APIReader: apiReader, Cache: ca, Recorder: rec,
		MinInterval: 100 * time.Millisecond, Resync: 30 * time.Second, Now: time.Now,
		LeaseRate: DefaultLeaseRate, LeaseBurst: DefaultLeaseBurst, limiters: map[string]*rate.Limiter{},
		trigger:  make(chan struct{}, 1),
		Events:   make(chan event.GenericEvent, 1024),
		assumed:  map[types.NamespacedName]assumedLease{},
		failing:  map[string]createFailure{},
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
// replicas; ok is false when it had none pending.
func (s *Scheduler) Verdict(namespace, name string) (market.Unplaced, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.verdicts[offerKey(namespace, name)]
	return u, ok
}

// Start runs the loop until ctx ends. It implements manager.Runnable and
// needs leader election (the default for runnables).
func (s *Scheduler) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("scheduler")
	ctx = ctrl.LoggerInto(ctx, log)
	if err := watchChanges(ctx, s.Cache, schedulingInputChanged, s.Trigger,
		&flotillav1.Workload{}, &flotillav1.Offer{}, &flotillav1.Provider{}, &flotillav1.Lease{}); err != nil {
		return err
	}
	log.Info("Starting scheduling loop")
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

func (s *Scheduler) cycle(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	start := time.Now()
	var providers flotillav1.ProviderList
	var offers flotillav1.OfferList
	var workloads flotillav1.WorkloadList
	var leaseList flotillav1.LeaseList
	var accounts flotillav1.AccountList
	for _, l := range []client.ObjectList{&providers, &offers, &workloads, &leaseList, &accounts} {
		if err := s.Client.List(ctx, l); err != nil {
			return fmt.Errorf("listing %T: %w", l, err)
		}
	}
	leases := s.withAssumed(leaseList.Items, start)
	recordPhases(providers.Items, leases)

	snap, states, skips := buildSnapshot(s.Now(), providers.Items, offers.Items, workloads.Items, leases)
	for _, sk := range skips {
		log.V(1).Info("Left out of the market", "kind", sk.kind, "key", sk.key, "reason", sk.reason)
	}
	s.gate(snap, states, accounts.Items, start)
	if err := s.scaleDown(ctx, states); err != nil {
		log.Error(err, "Scaling down Leases")
	}
	throttled := s.applyRateLimits(snap, start)
	applyMaxLeases(snap, providers.Items, leases)
	res := market.Match(snap)
	for key, st := range states {
		if st.blocked != nil {
			res.Unplaced[key] = *st.blocked
		}
	}
	if throttled && len(res.Unplaced) > 0 {
		// No event comes when tokens refill.
		time.AfterFunc(time.Duration(float64(time.Second)/float64(s.LeaseRate)), s.Trigger)
	}

	notify := map[string]bool{}
	createdFor := map[string]bool{}
	offerByKey := offersByKey(offers.Items)
	owners := make(map[string]string, len(providers.Items))
	for i := range providers.Items {
		owners[providers.Items[i].Name] = providers.Items[i].Spec.Owner
	}
	// Each Create is a round trip to the API server; Workloads are
	// independent, so their Leases are created in parallel (one Workload's
	// in order, as its Lease names depend on the ones before).
	byWorkload := map[string][]market.Assignment{}
	var order []string
	for _, a := range res.Assignments {
		if byWorkload[a.Workload] == nil {
			order = append(order, a.Workload)
		}
		byWorkload[a.Workload] = append(byWorkload[a.Workload], a)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	slots := make(chan struct{}, createParallelism)
	for _, key := range order {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			st := states[key]
			for _, a := range byWorkload[key] {
				if err := s.createLease(ctx, st, a, offerByKey[a.Offer], owners[a.Provider]); err != nil {
					log.Error(err, "Creating Lease", "workload", a.Workload, "offer", a.Offer)
					metrics.LeaseCreateFailed()
					s.createFailed(key, err, start)
					if st != nil {
						s.Recorder.Eventf(st.workload, "Warning", "FailedCreate", "Creating a Lease on offer %s: %s", a.Offer, bound.Error(err))
					}
					break // the rest of this Workload waits too
				}
				// A rate token is spent only on a Lease that exists.
				if lim := s.limiters[a.Provider]; lim != nil {
					lim.AllowN(start, 1)
				}
				s.createSucceeded(key)
				mu.Lock()
				createdFor[a.Workload] = true
				notify[a.Workload] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	if err := s.drain(ctx, states); err != nil {
		log.Error(err, "Draining Leases")
	}

	var pending int64
	byReason := map[string]int{}
	s.mu.Lock()
	old := s.verdicts
	s.verdicts = map[string]market.Unplaced{}
	for key, u := range res.Unplaced {
		s.verdicts[key] = u
		pending += int64(u.Pending)
		if len(u.Reasons) > 0 {
			byReason[u.Reasons[0].Code]++
		}
		if o, ok := old[key]; !ok || o.Summary() != u.Summary() || o.Pending != u.Pending {
			notify[key] = true
		}
	}
	for key := range old {
		if _, ok := res.Unplaced[key]; !ok {
			notify[key] = true
		}
	}
	var events []string
	for key, u := range res.Unplaced {
		msg := fmt.Sprintf("%d replicas pending: %s", u.Pending, u.Summary())
		if s.reported[key] != msg && !createdFor[key] {
			s.reported[key] = msg
			events = append(events, key)
		}
	}
	for key := range s.reported {
		if _, ok := res.Unplaced[key]; !ok {
			delete(s.reported, key)
		}
	}
	s.mu.Unlock()
	for _, key := range events {
		if st := states[key]; st != nil {
			u := res.Unplaced[key]
			s.Recorder.Eventf(st.workload, "Warning", "FailedScheduling", "%d replicas pending: %s", u.Pending, u.Summary())
		}
	}
	for key := range notify {
		if st := states[key]; st != nil {
			s.notify(st.workload)
		}
	}
	metrics.SchedulingCycle(time.Since(start), pending, byReason, market.ReasonCodes())
	if len(res.Assignments) > 0 || len(res.Unplaced) > 0 {
		log.V(1).Info("Scheduling cycle done", "assignments", len(res.Assignments), "unplaced", len(res.Unplaced),
			"pendingReplicas", pending, "duration", time.Since(start))
	}
	return nil
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
	return false // Workload and Offer status: written from what the loop decided
}

// applyMaxLeases tells the market how many more Leases each provider whose
// owner set spec.maxLeases may hold.
func applyMaxLeases(snap *market.Snapshot, providers []flotillav1.Provider, leases []*flotillav1.Lease) {
	limit := map[string]int32{}
	for i := range providers {
		if m := providers[i].Spec.MaxLeases; m > 0 {
			limit[providers[i].Name] = m
		}
	}
	if len(limit) == 0 {
		return
	}
	live := map[string]int32{}
	for _, l := range leases {
		if leaseLive(l) {
			live[l.Spec.ProviderRef.Name]++
		}
	}
	for i := range snap.Providers {
		p := &snap.Providers[i]
		if m, ok := limit[p.Name]; ok {
			room := max(0, m-live[p.Name])
			p.LeaseRoom = &room
		}
	}
}

// applyRateLimits tells the market how many new Leases each provider may
// still take, and reports whether any had none left.
func (s *Scheduler) applyRateLimits(snap *market.Snapshot, now time.Time) bool {
	if s.LeaseBurst <= 0 || s.LeaseRate <= 0 {
		return false
	}
	throttled := false
	seen := make(map[string]bool, len(snap.Providers))
	for i := range snap.Providers {
		p := &snap.Providers[i]
		seen[p.Name] = true
		lim := s.limiters[p.Name]
		if lim == nil {
			lim = rate.NewLimiter(s.LeaseRate, s.LeaseBurst)
			s.limiters[p.Name] = lim
		}
		n := int32(lim.TokensAt(now))
		p.LeaseLimit = &n
		if n <= 0 && p.Ready && !p.Cordoned {
			throttled = true
			metrics.ProviderRateLimited()
		}
	}
	for name := range s.limiters {
		if !seen[name] {
			delete(s.limiters, name)
		}
	}
	return throttled
}

func (s *Scheduler) notify(w *flotillav1.Workload) {
	select {
	case s.Events <- event.GenericEvent{Object: w}:
	default: // the Workload controller resyncs on its own; never block the loop
	}
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
		if seen[k] || now.Sub(a.at) > assumeTTL {
			delete(s.assumed, k)
			continue
		}
		out = append(out, a.lease)
	}
	return out
}

func (s *Scheduler) assume(l *flotillav1.Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.assumed[types.NamespacedName{Namespace: l.Namespace, Name: l.Name}] = assumedLease{lease: l, at: time.Now()}
}

func offersByKey(items []flotillav1.Offer) map[string]*flotillav1.Offer {
	m := make(map[string]*flotillav1.Offer, len(items))
	for i := range items {
		m[offerKey(items[i].Namespace, items[i].Name)] = &items[i]
	}
	return m
}

// leaseName is deterministic in the Workload's UID, the Offer, the epoch and
// the first sequence number not taken by an existing Lease.
func leaseName(st *workloadState, offer string, taken map[string]bool) string {
	base := st.workload.Name
	if len(base) > 200 {
		base = base[:200]
	}
	for seq := 0; ; seq++ {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d/%d", st.workload.UID, offer, st.epoch, seq))
		name := base + "-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:5]))
		if !taken[name] {
			return name
		}
	}
}

func (s *Scheduler) createLease(ctx context.Context, st *workloadState, a market.Assignment, offer *flotillav1.Offer, owner string) error {
	if st == nil || offer == nil {
		return fmt.Errorf("workload or offer vanished during the cycle")
	}
	w := st.workload
	taken := map[string]bool{}
	for _, l := range st.leases {
		taken[l.Name] = true
	}
	req := market.PodRequest(&w.Spec.Template.Spec)
	lease := &flotillav1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:      leaseName(st, a.Offer, taken),
			Namespace: w.Namespace,
			Labels: map[string]string{
				flotillav1.LabelWorkload: w.Name,
				flotillav1.LabelProvider: a.Provider,
				flotillav1.LabelOwner:    owner,
			},
			Annotations: map[string]string{flotillav1.AnnotationWorkloadGeneration: strconv.FormatInt(w.Generation, 10)},
			// Set at creation, which saves the Lease controller a write
			// before it can act; it adds the finalizer too for Leases made
			// otherwise.
			Finalizers: []string{LeaseFinalizer, SettlementFinalizer},
		},
		Spec: flotillav1.LeaseSpec{
			WorkloadRef:         flotillav1.LocalObjectReference{Name: w.Name},
			ProviderRef:         flotillav1.ProviderReference{Name: a.Provider},
			OfferRef:            flotillav1.ObjectReference{Namespace: offer.Namespace, Name: offer.Name},
			Class:               w.Spec.Class,
			Replicas:            a.Replicas,
			ResourcesPerReplica: req.List(),
			Prices:              offer.Spec.Prices,
			PricePerReplicaHour: flotillav1.Amount(a.PricePerReplicaHour.String()),
			Epoch:               st.epoch,
		},
	}
	if lease.Spec.Prices == nil {
		lease.Spec.Prices = flotillav1.PriceList{}
	}
	if err := controllerutil.SetControllerReference(w, lease, s.Client.Scheme()); err != nil {
		return err
	}
	err := s.Client.Create(ctx, lease)
	if apierrors.IsAlreadyExists(err) {
		// A previous attempt succeeded after all; take what the server has.
		existing := &flotillav1.Lease{}
		if gerr := s.APIReader.Get(ctx, client.ObjectKeyFromObject(lease), existing); gerr != nil {
			return fmt.Errorf("lease %s exists but cannot be read: %w", lease.Name, gerr)
		}
		s.assume(existing)
		st.leases = append(st.leases, existing)
		return nil
	}
	if err != nil {
		return err
	}
	s.assume(lease)
	st.leases = append(st.leases, lease)
	metrics.LeaseCreated()
	s.Recorder.Eventf(w, "Normal", "Scheduled", "Scheduled %d replicas on provider %s at %s credits per replica-hour (lease %s)",
		a.Replicas, a.Provider, a.PricePerReplicaHour, lease.Name)
	return nil
}

// drain deletes the Leases on cordoned or deregistering providers of each
// Workload whose other Leases already run its replicas ready.
func (s *Scheduler) drain(ctx context.Context, states map[string]*workloadState) error {
	var errs []error
	for _, st := range states {
		if len(st.draining) == 0 || st.workload.DeletionTimestamp != nil {
			continue
		}
		var readyElsewhere int32
		for _, l := range st.leases {
			if l.DeletionTimestamp == nil && !slices.Contains(st.draining, l) && l.Status.Phase == flotillav1.LeaseActive {
				readyElsewhere += min(l.Status.ReadyReplicas, l.Spec.Replicas)
			}
		}
		if readyElsewhere < st.desired {
			continue
		}
		for _, l := range st.draining {
			if err := s.Client.Delete(ctx, l); client.IgnoreNotFound(err) != nil {
				errs = append(errs, err)
				continue
			}
			s.Recorder.Eventf(st.workload, "Normal", "Drained", "Closed lease %s on provider %s: its %d replicas run ready elsewhere",
				l.Name, l.Spec.ProviderRef.Name, l.Spec.Replicas)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d drains failed, first: %w", len(errs), errs[0])
	}
	return nil
}

// scaleDown removes replicas beyond a Workload's desired count, newest
// Leases first, so that the capacity returns to the market.
func (s *Scheduler) scaleDown(ctx context.Context, states map[string]*workloadState) error {
	var errs []error
	for _, st := range states {
		if st.workload.DeletionTimestamp != nil {
			continue
		}
		surplus := st.leased - st.desired
		if surplus <= 0 {
			continue
		}
		live := slices.DeleteFunc(slices.Clone(st.leases), func(l *flotillav1.Lease) bool { return l.DeletionTimestamp != nil })
		slices.SortFunc(live, func(a, b *flotillav1.Lease) int {
			if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c != 0 {
				return c
			}
			return strings.Compare(b.Name, a.Name)
		})
		for _, l := range live {
			if surplus <= 0 {
				break
			}
			if l.Spec.Replicas <= surplus {
				if err := s.Client.Delete(ctx, l); client.IgnoreNotFound(err) != nil {
					errs = append(errs, err)
					continue
				}
				surplus -= l.Spec.Replicas
				s.Recorder.Eventf(st.workload, "Normal", "ScaledDown", "Closed lease %s (%d replicas on provider %s)", l.Name, l.Spec.Replicas, l.Spec.ProviderRef.Name)
				continue
			}
			patch := client.MergeFrom(l.DeepCopy())
			l.Spec.Replicas -= surplus
			if err := s.Client.Patch(ctx, l, patch); err != nil {
				errs = append(errs, err)
				continue
			}
			s.Recorder.Eventf(st.workload, "Normal", "ScaledDown", "Lease %s on provider %s now holds %d replicas", l.Name, l.Spec.ProviderRef.Name, l.Spec.Replicas)
			surplus = 0
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d Lease updates failed, first: %w", len(errs), errs[0])
	}
	return nil
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
