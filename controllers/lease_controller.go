package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/endpoint"
	"github.com/flotilla-dev/flotilla/internal/health"
	"github.com/flotilla-dev/flotilla/internal/lease"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/internal/render"
)

// FieldManager owns everything the hub applies on providers.
const FieldManager = "flotilla"

const (
	// leaseReapplyInterval bounds how long drift on a provider may last,
	// and how long a changed ConfigMap or Secret of the tenant takes to
	// reach it.
	leaseReapplyInterval = 2 * time.Minute
	cleanupRetryBackoff  = 10 * time.Second
)

// LeaseReconciler makes a Lease real on its provider: it renders the
// Lease's objects and applies them with server-side apply, reads back how
// many replicas run and are ready, and removes its namespace on the
// provider when the Lease closes or is deleted. What the Lease's status
// says of that (metering, Lost, failover, the progress deadline) is
// decided by internal/lease.
type LeaseReconciler struct {
	Client client.Client
	// APIReader reads the tenant's ConfigMaps and Secrets a Lease refers
	// to, when it is rendered: the manager caches none of them.
	APIReader client.Reader
	Remote    *remote.Cache
	Recorder  record.EventRecorder
	HubID     string
	Now       func() time.Time

	// Prober checks exposed Leases' endpoints from the hub; Probed carries
	// the Leases whose verdicts changed. Nil: nothing is checked.
	Prober *endpoint.Prober
	Probed chan event.GenericEvent
	// Meter keeps the flushes put off across a restart; nil: a restart
	// forgoes what was not written.
	Meter *MeterCheckpoint
	// Agents is what the hub heard of Pull-mode agents' heartbeats; nil:
	// only this controller's looks count as watching its Leases.
	Agents AgentHearing

	// seen is when each Lease was last read on its provider, by UID. It
	// only ever stops charging (after a gap, or a restart that emptied
	// it), so losing it is safe.
	seen sync.Map
	// rendered is when each Pull-mode Lease's Assignment was last
	// rendered again and found unchanged, by UID: recording that in
	// status was a write per Lease every leaseReapplyInterval for nothing.
	// Losing it costs one render per Lease.
	rendered sync.Map
	// flushing holds a slot for each periodic flush being written. With
	// thousands of Leases their flushes (one per Lease every
	// lease.MeterFlush) took every worker, and a failover's Leases waited
	// 27 s in the queue behind them; a flush that finds no slot waits,
	// up to lease.MaxFlushDelay.
	flushing chan struct{}
	// assigning holds a slot for each AssignNew being written.
	assigning chan struct{}
}

// AgentHearing is what the Provider controller heard of Pull-mode agents'
// heartbeats, for metering their Leases.
type AgentHearing interface {
	// HeardThroughout reports the agent heard all the time from from to to.
	HeardThroughout(provider string, from, to time.Time) bool
	// LastHeard is its last beat when it was heard throughout since from;
	// from otherwise.
	LastHeard(provider string, from time.Time) time.Time
}

// flushSlots is how many workers may be writing flushes at once.
const flushSlots = leaseWorkers / 4

// leaseWorkers reconcile Leases side by side. A reconcile spends most of
// its time waiting on the API server (applying the Assignment or the
// provider's objects, then the status: about a second on a loaded hub),
// so eight workers placed at most eight Leases a second while a thousand
// providers' Leases were created at thirteen.
const leaseWorkers = 32

// Reconcile drives one Lease and writes its status once.
func (r *LeaseReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	l := &flotillav1.Lease{}
	if err := r.Client.Get(ctx, req.NamespacedName, l); err != nil {
		if apierrors.IsNotFound(err) && r.Prober != nil {
			r.Prober.Forget(req.String())
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithValues("provider", l.Spec.ProviderRef.Name))
	if l.DeletionTimestamp != nil {
		return r.reconcileDelete(ctx, l)
	}
	if controllerutil.AddFinalizer(l, flotillav1.FinalizerProviderCleanup) {
		if err := r.Client.Update(ctx, l); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer to lease %s: %w", req, err)
		}
	}

	old := ownStatus(&l.Status)
	st := old.DeepCopy()
	st.Namespace = render.Namespace(r.HubID, l.UID)
	if err := r.restoreHeld(ctx, l, st); err != nil {
		return ctrl.Result{}, err
	}
	res, err := r.reconcile(ctx, l, st, old)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !res.SyncFailed {
		st.ObservedGeneration = l.Generation
	}
	if !res.Unwritten && !equality.Semantic.DeepEqual(st, old) {
		kind, release := r.flushSlot(st, old, res)
		if kind == writePostponed {
			metrics.LeaseStatusWrite(kind)
			if h, ok := lease.HeldOf(l.ResourceVersion, st); ok && r.Meter != nil {
				r.Meter.Hold(l.UID, h)
			}
			// At the next look, not sooner: its flush can wait.
			return ctrl.Result{RequeueAfter: max(res.RequeueAfter, lease.SyncInterval), Priority: new(handler.LowPriority)}, nil
		}
		defer release()
		// Usage adds to what status holds: writing over a newer status
		// than the cache showed would charge an interval twice.
		if err := applyStatus(ctx, r.Client, l, st, ManagerLease, l.ResourceVersion); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: conflictRetry}, nil
			}
			return ctrl.Result{}, fmt.Errorf("writing the status of lease %s: %w", req, err)
		}
		metrics.LeaseStatusWrite(kind)
		if r.Meter != nil {
			r.Meter.Drop(l.UID)
		}
	}
	r.emit(ctx, l, res)
	return ctrl.Result{RequeueAfter: res.RequeueAfter, Priority: new(syncPriority(res))}, nil
}

// Kinds of status writes, for metrics.LeaseStatusWrite.
const (
	writeProgress  = "progress"
	writeFlush     = "flush"
	writePostponed = "postponed"
)

// flushSlot says what writing st over old is: progress, a flush (with a
// slot taken, to release once written, unless it is overdue and finds
// none), or a flush to put off until the Lease's next look.
func (r *LeaseReconciler) flushSlot(st, old *flotillav1.LeaseStatus, res lease.Result) (kind string, release func()) {
	if !lease.FlushOnly(st, old) || len(res.Events) > 0 {
		return writeProgress, func() {}
	}
	// A flush on time takes only the first half of the slots, so that an
	// overdue one (it bounds what a restart forgoes) mostly finds a slot
	// rather than writing beside them.
	overdue := lease.FlushOverdue(old, r.Now())
	if overdue || len(r.flushing) < flushSlots/2 {
		select {
		case r.flushing <- struct{}{}:
			return writeFlush, func() { <-r.flushing }
		default:
		}
	}
	if overdue {
		return writeFlush, func() {}
	}
	return writePostponed, nil
}

// syncPriority puts the periodic sync of a settled Lease behind everything
// else in the queue: with hundreds of Leases each read back every few
// seconds, a new Lease would otherwise wait behind them before its objects
// are applied (the queue wait was 2.5 s on a loaded hub in make bench-e2e).
// A delayed steady sync or backoff only delays metering a little; Lost
// comes from the Provider's probes, not from here. Converging Leases keep
// the normal priority, so Workloads turn Ready promptly.
func syncPriority(res lease.Result) int {
	if res.RequeueAfter >= lease.SyncInterval {
		return handler.LowPriority
	}
	return 0
}

// ownStatus is the part of a Lease's status this controller writes: the
// verdict is the verification's.
func ownStatus(s *flotillav1.LeaseStatus) *flotillav1.LeaseStatus {
	own := s.DeepCopy()
	own.Verdict = ""
	return own
}

// reconcile decides the Lease's status from its provider's phase and, when
// the provider is Ready, one sync with it.
func (r *LeaseReconciler) reconcile(ctx context.Context, l *flotillav1.Lease, st, old *flotillav1.LeaseStatus) (lease.Result, error) {
	p := &flotillav1.Provider{}
	perr := r.Client.Get(ctx, client.ObjectKey{Name: l.Spec.ProviderRef.Name}, p)
	if st.Phase == flotillav1.LeaseClosed {
		// Closed for good; the provider's namespace goes when it can be
		// reached (fencing catches it otherwise).
		r.forgetLooks(l.UID)
		r.forgetEndpoints(l)
		if perr == nil && p.Spec.Pull() {
			_ = r.deleteAssignment(ctx, l)
		} else if perr == nil {
			if cl, _, err := providerClient(ctx, r.Client, r.Remote, p); err == nil {
				_ = r.deleteNamespace(ctx, cl, l)
			}
		}
		return lease.Result{}, nil
	}
	if perr != nil && !apierrors.IsNotFound(perr) {
		return lease.Result{}, perr
	}
	w := &flotillav1.Workload{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: l.Spec.WorkloadRef.Name}, w); err != nil {
		if !apierrors.IsNotFound(err) {
			return lease.Result{}, err
		}
		w = nil // deleted: the scheduler drains its Leases; the defaults time this one
	}
	in := lease.Input{Lease: l, Now: r.Now(), LastSeen: r.lastSeen(l.UID)}
	in.ProgressDeadline, in.FailoverGrace = lease.Timing(w)
	switch {
	case apierrors.IsNotFound(perr):
		return lease.Lost(st, in, "provider "+l.Spec.ProviderRef.Name+" is not registered", nil), nil
	case p.Status.Phase == flotillav1.ProviderLost:
		if p.Spec.Pull() && r.Agents != nil {
			// Charged up to the agent's last beat, not only to this
			// controller's last look, up to PullSyncInterval before it.
			in.LastSeen = r.Agents.LastHeard(p.Name, in.LastSeen)
		}
		return lease.Lost(st, in, "provider "+p.Name+" is Lost", health.LastContact(&p.Status)), nil
	case p.Status.Phase == "" || p.Status.Phase == flotillav1.ProviderPending:
		return lease.Progress(st, in, lease.Wait(st, in, p.Name)), nil
	case w == nil:
		return lease.Result{}, nil
	}
	st.LostTime = nil
	if p.Spec.Pull() {
		return lease.Progress(st, in, r.syncPull(ctx, l, w, p, st, old, &in)), nil
	}
	res := r.sync(ctx, l, w, p, st, old, &in)
	return lease.Progress(st, in, res), nil
}

// sync applies the Lease's objects when they are due and reads its state
// back from the provider. A successful read moves in.LastSeen to now.
func (r *LeaseReconciler) sync(ctx context.Context, l *flotillav1.Lease, w *flotillav1.Workload, p *flotillav1.Provider,
	st, old *flotillav1.LeaseStatus, in *lease.Input) lease.Result {
	cl, _, err := providerClient(ctx, r.Client, r.Remote, p)
	if err != nil {
		r.refreshEndpoints(l, st)
		return lease.SyncFailed(st, *in, flotillav1.LeaseReasonWaitingForProvider, err)
	}
	rin := r.renderInput(l, w, r.offerOf(ctx, l))
	// Re-applying every object on every sync would cost each provider a
	// handful of writes per Lease every few seconds; apply only when what
	// they are rendered from changed, when the provider lost one, or to
	// undo drift.
	hash := render.InputHash(rin)
	due := st.AppliedHash != hash || st.LastApplyTime == nil || in.Now.Sub(st.LastApplyTime.Time) >= leaseReapplyInterval
	for attempt := 0; ; attempt++ {
		if due {
			// Only a change of what they are rendered from can drop an
			// optional object; a Lease's first apply has none to drop.
			prune := st.AppliedHash != "" && st.AppliedHash != hash
			if reason, err := r.applyObjects(ctx, cl, l, p, rin, prune); err != nil {
				r.refreshEndpoints(l, st)
				res := lease.SyncFailed(st, *in, reason, err)
				if reason == flotillav1.LeaseReasonApplyFailed {
					res.Events = append(res.Events, lease.Event{Warning: true, Reason: reason,
						Message: "Applying on provider " + p.Name + ": " + st.LastError})
				}
				return res
			}
			st.AppliedHash, st.LastApplyTime = hash, timePtr(in.Now)
		}
		obs, err := r.readBack(ctx, cl, l, render.Exposes(w, rin.Offer))
		if err == nil {
			events := r.checkEndpoints(l, w, p, rin.Offer, &obs, st, old)
			res := lease.Observed(st, old, *in, obs, p.Name)
			res.Events = append(res.Events, events...)
			r.seen.Store(l.UID, in.Now.Truncate(time.Second))
			// What ran up to this look is charged if the Lease now ends.
			in.LastSeen = in.Now
			if st.Phase == flotillav1.LeaseClosed {
				_ = r.deleteNamespace(ctx, cl, l)
			}
			return res
		}
		if !apierrors.IsNotFound(err) || due || attempt > 0 {
			r.refreshEndpoints(l, st)
			return lease.SyncFailed(st, *in, flotillav1.LeaseReasonReadFailed, err)
		}
		due = true // removed on the provider: put it back now
	}
}

// emit records the events and metrics of a decision once its status is
// written, so that a write that fails and is retried records them once.
func (r *LeaseReconciler) emit(ctx context.Context, l *flotillav1.Lease, res lease.Result) {
	if res.FailedOver {
		metrics.Failover()
	}
	if res.DeadlineExceeded {
		metrics.ProgressDeadlineExceeded()
	}
	for _, e := range res.Events {
		typ := corev1.EventTypeNormal
		if e.Warning {
			typ = corev1.EventTypeWarning
		}
		if !e.OnWorkload {
			r.Recorder.Event(l, typ, e.Reason, e.Message)
			continue
		}
		w := &flotillav1.Workload{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: l.Spec.WorkloadRef.Name}, w); err == nil {
			r.Recorder.Event(w, typ, e.Reason, e.Message)
		}
	}
}

// reconcileDelete removes the Lease's namespace on the provider, then the
// finalizer. An unreachable provider keeps the Lease until it returns; a
// deregistered one releases it at once.
func (r *LeaseReconciler) reconcileDelete(ctx context.Context, l *flotillav1.Lease) (ctrl.Result, error) {
	r.forgetEndpoints(l)
	if !controllerutil.ContainsFinalizer(l, flotillav1.FinalizerProviderCleanup) {
		return ctrl.Result{}, nil
	}
	if retry := r.cleanUp(ctx, l); retry {
		return ctrl.Result{RequeueAfter: cleanupRetryBackoff}, nil
	}
	if l.Status.Phase != flotillav1.LeaseClosed {
		// Charge what the hub saw running up to the deletion; the bank
		// settles it once this finalizer is gone.
		old := ownStatus(&l.Status)
		st := old.DeepCopy()
		lease.MeterUntilLastSeen(st, lease.Input{Lease: l, LastSeen: r.lastSeen(l.UID)})
		if !equality.Semantic.DeepEqual(st, old) {
			if err := applyStatus(ctx, r.Client, l, st, ManagerLease, l.ResourceVersion); client.IgnoreNotFound(err) != nil {
				if apierrors.IsConflict(err) {
					return ctrl.Result{RequeueAfter: conflictRetry}, nil
				}
				return ctrl.Result{}, fmt.Errorf("metering deleted lease %s/%s: %w", l.Namespace, l.Name, err)
			}
			// The finalizer goes with the next reconcile, on the Lease
			// as written.
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
	}
	r.forgetLooks(l.UID)
	controllerutil.RemoveFinalizer(l, flotillav1.FinalizerProviderCleanup)
	if err := r.Client.Update(ctx, l); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("removing finalizer from lease %s/%s: %w", l.Namespace, l.Name, err)
	}
	return ctrl.Result{}, nil
}

// cleanUp removes the Lease's namespace on its provider and reports
// whether it must be tried again.
func (r *LeaseReconciler) cleanUp(ctx context.Context, l *flotillav1.Lease) (retry bool) {
	p := &flotillav1.Provider{}
	perr := r.Client.Get(ctx, client.ObjectKey{Name: l.Spec.ProviderRef.Name}, p)
	switch {
	case apierrors.IsNotFound(perr):
		return false // the provider is gone: nobody can clean up there
	case perr != nil:
		return true
	case p.DeletionTimestamp != nil && p.Status.Phase == flotillav1.ProviderLost:
		return false // deregistered while unreachable: it will not come back to be cleaned
	case p.Spec.Pull():
		// Withdrawing the Assignment is the cleanup: its agent removes
		// the objects, or fences them when it comes back.
		return r.deleteAssignment(ctx, l) != nil
	}
	cl, _, err := providerClient(ctx, r.Client, r.Remote, p)
	if err == nil {
		err = r.deleteNamespace(ctx, cl, l)
	}
	if err != nil {
		ctrl.LoggerFrom(ctx).V(1).Info("Provider not reachable for cleanup, retrying", "error", err.Error())
		return true
	}
	return false
}

func (r *LeaseReconciler) deleteNamespace(ctx context.Context, cl *remote.Client, l *flotillav1.Lease) error {
	ns := &corev1.Namespace{}
	ns.Name = render.Namespace(r.HubID, l.UID)
	start := time.Now()
	err := cl.Delete(ctx, ns)
	metrics.RemoteRequest(l.Spec.ProviderRef.Name, "cleanup", time.Since(start))
	return client.IgnoreNotFound(err)
}

func (r *LeaseReconciler) lastSeen(uid types.UID) time.Time {
	if v, ok := r.seen.Load(uid); ok {
		return v.(time.Time)
	}
	return time.Time{}
}

// providerPhaseChanged passes Provider updates that matter to its Leases: a
// probe rewrites status every few seconds, and waking every Lease of the
// provider for each would multiply the load on it.
var providerPhaseChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	o, ok1 := e.ObjectOld.(*flotillav1.Provider)
	n, ok2 := e.ObjectNew.(*flotillav1.Provider)
	return !ok1 || !ok2 || o.Status.Phase != n.Status.Phase || o.Generation != n.Generation ||
		!o.DeletionTimestamp.Equal(n.DeletionTimestamp)
}}

// reportChanged passes an Assignment's updates that carry a new report of
// its agent, and its deletion; the hub's own writes of the spec do not
// need to wake the Lease again.
var reportChanged = predicate.Funcs{
	CreateFunc: func(event.CreateEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*flotillav1.Assignment)
		n, ok2 := e.ObjectNew.(*flotillav1.Assignment)
		return !ok1 || !ok2 || !equality.Semantic.DeepEqual(o.Status, n.Status)
	},
}

// specOrMetaChanged drops the updates a controller causes itself by writing
// the status of the objects it is For; it requeues on its own schedule.
var specOrMetaChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	o, n := e.ObjectOld, e.ObjectNew
	return o.GetGeneration() != n.GetGeneration() || !o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp()) ||
		!slices.Equal(o.GetFinalizers(), n.GetFinalizers()) || !maps.Equal(o.GetLabels(), n.GetLabels())
}}

// openLeasesOf is the Leases of a Workload that are not Closed.
func (r *LeaseReconciler) openLeasesOf(ctx context.Context, w client.Object) []reconcile.Request {
	var ls flotillav1.LeaseList
	if err := r.Client.List(ctx, &ls, client.InNamespace(w.GetNamespace()), client.MatchingFields{indexLeaseWorkload: w.GetName()},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(ls.Items))
	for i := range ls.Items {
		if ls.Items[i].Status.Phase != flotillav1.LeaseClosed {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ls.Items[i])})
		}
	}
	return out
}

// generationChanged passes spec changes only (creations and deletions
// wake the Leases through their own events).
var generationChanged = predicate.Funcs{
	CreateFunc: func(event.CreateEvent) bool { return false },
	DeleteFunc: func(event.DeleteEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool { return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() },
}

// probed is the channel of Leases whose endpoint verdicts changed.
func (r *LeaseReconciler) probed() chan event.GenericEvent {
	if r.Probed == nil {
		r.Probed = make(chan event.GenericEvent, 1024)
	}
	if r.Prober != nil {
		r.Prober.OnChange = func(key string) {
			ns, name, _ := strings.Cut(key, "/")
			select {
			case r.Probed <- event.GenericEvent{Object: &flotillav1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}}:
			default: // the Lease's own resync comes within seconds
			}
		}
	}
	return r.Probed
}

// forgetLooks drops what is remembered in memory of a Lease that ended.
func (r *LeaseReconciler) forgetLooks(uid types.UID) {
	r.seen.Delete(uid)
	r.rendered.Delete(uid)
	if r.Meter != nil {
		r.Meter.Drop(uid)
	}
}

// restoreHeld charges st, at the first look at l since the manager
// started, the flush a manager before this one put off and saved; that
// look is then the last one, from which metering goes on.
func (r *LeaseReconciler) restoreHeld(ctx context.Context, l *flotillav1.Lease, st *flotillav1.LeaseStatus) error {
	if r.Meter == nil {
		return nil
	}
	if _, looked := r.seen.Load(l.UID); looked {
		return nil
	}
	h, ok, err := r.Meter.Take(ctx, l.UID)
	if err != nil || !ok {
		return err
	}
	if at, ok := lease.Restore(st, l, h); ok {
		r.seen.Store(l.UID, at)
	}
	return nil
}

func (r *LeaseReconciler) forgetEndpoints(l *flotillav1.Lease) {
	if r.Prober != nil {
		r.Prober.Forget(l.Namespace + "/" + l.Name)
	}
}

// SetupWithManager watches Leases, the Providers they run on, the
// Workloads they render and the Assignments their agents answer.
func (r *LeaseReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.flushing = make(chan struct{}, flushSlots)
	if r.assigning == nil {
		r.assigning = make(chan struct{}, assignSlots)
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&flotillav1.Lease{}, builder.WithPredicates(specOrMetaChanged)).
		Watches(&flotillav1.Provider{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var ls flotillav1.LeaseList
			if err := r.Client.List(ctx, &ls, client.MatchingLabels{flotillav1.LabelProvider: o.GetName()}); err != nil {
				return nil
			}
			out := make([]reconcile.Request, 0, len(ls.Items))
			for _, l := range ls.Items {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&l)})
			}
			return out
		}), builder.WithPredicates(providerPhaseChanged)).
		// A Workload's spec (its template) is what its Leases render: a
		// change reaches them now, not at their next sync.
		Watches(&flotillav1.Workload{}, handler.EnqueueRequestsFromMapFunc(r.openLeasesOf), builder.WithPredicates(generationChanged)).
		Watches(&flotillav1.Assignment{}, handler.EnqueueRequestsFromMapFunc(leaseOfAssignment), builder.WithPredicates(reportChanged)).
		WatchesRawSource(source.Channel(r.probed(), &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: leaseWorkers}).
		Named("lease").
		Complete(r)
}
