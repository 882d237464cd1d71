package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
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

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/internal/render"
)

// FieldManager owns everything the hub applies on providers.
const FieldManager = "flotilla"

// LeaseFinalizer keeps a Lease until its namespace on the provider is gone.
const LeaseFinalizer = "flotilla.dev/provider-cleanup"

// Lease condition reasons.
const (
	ReasonApplied      = "Applied"
	ReasonApplyFailed  = "ApplyFailed"
	ReasonReadFailed   = "ReadFailed"
	ReasonProviderLost = "ProviderLost"
	ReasonFailedOver   = "FailedOver"
	ReasonJobCompleted = "Completed"
	ReasonJobFailed    = "JobFailed"
	ReasonWaitProvider = "WaitingForProvider"
	ReasonRenderFailed = "RenderFailed"
	ReasonNoProgress   = "ProgressDeadlineExceeded"
	leaseSyncInterval  = 3 * time.Second
	// leaseConvergeInterval is the sync period while replicas are not all
	// ready yet.
	leaseConvergeInterval = time.Second
	// leaseReapplyInterval bounds how long drift on a provider may last,
	// and how long a changed ConfigMap or Secret of the tenant takes to
	// reach it.
	leaseReapplyInterval = 2 * time.Minute
	// leaseSyncRefresh is how stale status.lastSyncTime may get while
	// nothing else changes.
	leaseSyncRefresh = 30 * time.Second
	// leaseMaxBackoff caps the wait after syncs that keep failing.
	leaseMaxBackoff     = 5 * time.Minute
	cleanupRetryBackoff = 10 * time.Second
	// defaultProgressDeadline when a Workload leaves it unset.
	defaultProgressDeadline = 10 * time.Minute
)

// LeaseReconciler makes a Lease real on its provider: it renders the
// Lease's objects and applies them with server-side apply, reads back how
// many replicas run and are ready, meters them, marks the Lease Lost while
// its provider is, fails it over after the Workload's grace period, closes
// it when its replicas miss the progress deadline, and removes its
// namespace on the provider when the Lease closes or is deleted.
type LeaseReconciler struct {
	Client client.Client
	// APIReader reads the tenant's ConfigMaps and Secrets a Lease refers
	// to, when it is rendered: the manager caches none of them.
	APIReader client.Reader
	Remote    *remote.Cache
	Recorder  record.EventRecorder
	HubID     string
	Now       func() time.Time

	// seen is when each Lease was last read on its provider, by UID. It
	// only ever stops charging (after a gap, or a restart that emptied
	// it), so losing it is safe.
	seen sync.Map
}

// Reconcile drives one Lease and writes its status once.
func (r *LeaseReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	l := &flotillav1.Lease{}
	if err := r.Client.Get(ctx, req.NamespacedName, l); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithValues("provider", l.Spec.ProviderRef.Name))
	if l.DeletionTimestamp != nil {
		return r.reconcileDelete(ctx, l)
	}
	if controllerutil.AddFinalizer(l, LeaseFinalizer) {
		if err := r.Client.Update(ctx, l); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer to lease %s: %w", req, err)
		}
	}

	old := l.Status.DeepCopy()
	st := l.Status.DeepCopy()
	st.ObservedGeneration = l.Generation
	st.Namespace = render.Namespace(r.HubID, l.UID)
	res, err := r.reconcile(ctx, l, st, old)
	if !equality.Semantic.DeepEqual(st, old) {
		patch := client.MergeFrom(l.DeepCopy())
		l.Status = *st
		if perr := r.Client.Status().Patch(ctx, l, patch); perr != nil {
			return ctrl.Result{}, errors.Join(err, fmt.Errorf("patching status of lease %s: %w", req, perr))
		}
	}
	return res, err
}

func (r *LeaseReconciler) reconcile(ctx context.Context, l *flotillav1.Lease, st, old *flotillav1.LeaseStatus) (ctrl.Result, error) {
	now := r.Now()
	p := &flotillav1.Provider{}
	perr := r.Client.Get(ctx, client.ObjectKey{Name: l.Spec.ProviderRef.Name}, p)
	if st.Phase == flotillav1.LeaseClosed {
		// Closed for good; the provider's namespace goes when it can be
		// reached (fencing catches it otherwise).
		r.seen.Delete(l.UID)
		if perr == nil {
			if cl, _, err := providerClient(ctx, r.Client, r.Remote, p); err == nil {
				_ = r.deleteNamespace(ctx, cl, l)
			}
		}
		return ctrl.Result{}, nil
	}
	if perr != nil {
		if apierrors.IsNotFound(perr) {
			return r.lost(ctx, l, st, now, "provider "+l.Spec.ProviderRef.Name+" is not registered", nil)
		}
		return ctrl.Result{}, perr
	}
	w := &flotillav1.Workload{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: l.Spec.WorkloadRef.Name}, w); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	switch p.Status.Phase {
	case flotillav1.ProviderLost:
		return r.lost(ctx, l, st, now, "provider "+p.Name+" is Lost", latest(p.Status.LastProbeTime))
	case "", flotillav1.ProviderPending:
		if st.Phase == "" {
			st.Phase = flotillav1.LeasePending
		}
		setLeaseReady(st, l, metav1.ConditionFalse, ReasonWaitProvider, "waiting for provider "+p.Name+" to become Ready")
		return r.progress(l, w, st, now, ctrl.Result{RequeueAfter: leaseSyncInterval}), nil
	}
	st.LostTime = nil
	res := r.sync(ctx, l, w, p, st, old, now)
	return r.progress(l, w, st, now, res), nil
}

// sync applies the Lease's objects when they are due and reads its state
// back from the provider.
func (r *LeaseReconciler) sync(ctx context.Context, l *flotillav1.Lease, w *flotillav1.Workload, p *flotillav1.Provider,
	st, old *flotillav1.LeaseStatus, now time.Time) ctrl.Result {
	cl, _, err := providerClient(ctx, r.Client, r.Remote, p)
	if err != nil {
		return r.failSync(l, st, ReasonWaitProvider, err)
	}
	offer := &flotillav1.Offer{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Spec.OfferRef.Namespace, Name: l.Spec.OfferRef.Name}, offer); err != nil {
		offer = nil // withdrawn: the Lease keeps what it has, and nothing the Offer opted into
	}
	in := r.renderInput(l, w, offer)
	// Re-applying every object on every sync would cost each provider a
	// handful of writes per Lease every few seconds; apply only when what
	// they are rendered from changed, when the provider lost one, or to
	// undo drift.
	hash := render.InputHash(in)
	due := st.AppliedHash != hash || st.LastApplyTime == nil || now.Sub(st.LastApplyTime.Time) >= leaseReapplyInterval
	for attempt := 0; ; attempt++ {
		if due {
			if res, failed := r.applyObjects(ctx, cl, l, p, in, st); failed {
				return res
			}
			st.AppliedHash, st.LastApplyTime = hash, &metav1.Time{Time: now}
		}
		obs, err := r.readBack(ctx, cl, l)
		if err == nil {
			r.observe(l, st, old, obs, now)
			break
		}
		if !apierrors.IsNotFound(err) || due || attempt > 0 {
			return r.failSync(l, st, ReasonReadFailed, err)
		}
		due = true // removed on the provider: put it back now
	}
	st.FailedSyncs, st.LastError = 0, ""
	// Refreshing the time on every sync would write status (and wake every
	// watcher) each second for nothing; it moves when something else does,
	// or once per leaseSyncRefresh.
	if st.LastSyncTime == nil || now.Sub(st.LastSyncTime.Time) >= leaseSyncRefresh || !syncedStatusEqual(st, old) {
		st.LastSyncTime = &metav1.Time{Time: now}
	}
	if st.Phase == flotillav1.LeaseClosed {
		_ = r.deleteNamespace(ctx, cl, l)
		return ctrl.Result{}
	}
	st.Phase = flotillav1.LeaseActive
	if l.Spec.Class != flotillav1.ClassBatch && st.ReadyReplicas >= l.Spec.Replicas {
		setLeaseReady(st, l, metav1.ConditionTrue, ReasonApplied, fmt.Sprintf("%d replicas ready on %s", st.ReadyReplicas, p.Name))
	} else {
		setLeaseReady(st, l, metav1.ConditionFalse, ReasonApplied, fmt.Sprintf("%d of %d replicas ready on %s", st.ReadyReplicas, l.Spec.Replicas, p.Name))
	}
	if st.ReadyReplicas < l.Spec.Replicas {
		// Converging: look again soon so the Workload turns Ready promptly.
		return ctrl.Result{RequeueAfter: leaseConvergeInterval}
	}
	return ctrl.Result{RequeueAfter: leaseSyncInterval}
}

// failSync records a sync that could not apply or read the Lease and waits
// longer before each next try: a provider that refuses an object is not
// sent it again every few seconds forever (the progress deadline ends the
// Lease if it never runs).
func (r *LeaseReconciler) failSync(l *flotillav1.Lease, st *flotillav1.LeaseStatus, reason string, err error) ctrl.Result {
	st.FailedSyncs = min(st.FailedSyncs+1, 1<<20)
	setLastError(st, err)
	if st.Phase == "" {
		st.Phase = flotillav1.LeasePending
	}
	setLeaseReady(st, l, metav1.ConditionFalse, reason, err.Error())
	return ctrl.Result{RequeueAfter: syncBackoff(st.FailedSyncs)}
}

// syncBackoff is the wait after n failed syncs in a row: 3s, doubling, up
// to leaseMaxBackoff.
func syncBackoff(n int32) time.Duration {
	d := leaseSyncInterval
	for i := int32(1); i < n && d < leaseMaxBackoff; i++ {
		d *= 2
	}
	return min(d, leaseMaxBackoff)
}

// lost marks the Lease Lost and, once its Workload's failover grace period
// has passed, closes it so that the scheduler replaces its replicas under a
// higher epoch. The grace period counts from the provider's last contact,
// not from the Lost verdict: the provider's own grace period has already
// been waited out, and adding the two would double the outage.
func (r *LeaseReconciler) lost(ctx context.Context, l *flotillav1.Lease, st *flotillav1.LeaseStatus, now time.Time, why string, lastContact *time.Time) (ctrl.Result, error) {
	if st.LostTime == nil {
		st.LostTime = &metav1.Time{Time: now}
		r.Recorder.Eventf(l, "Warning", ReasonProviderLost, "Lease lost: %s", why)
		// Charge what the hub saw of this Lease; nothing after.
		r.meterUntilLastSeen(l, st)
	}
	st.Phase = flotillav1.LeaseLost
	st.ReadyReplicas, st.RunningReplicas = 0, 0
	grace := 5 * time.Second
	w := &flotillav1.Workload{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: l.Spec.WorkloadRef.Name}, w); err == nil &&
		w.Spec.Failover.GracePeriodSeconds != nil {
		grace = time.Duration(*w.Spec.Failover.GracePeriodSeconds) * time.Second
	}
	from := st.LostTime.Time
	if lastContact != nil && lastContact.Before(from) {
		from = *lastContact
	}
	if wait := from.Add(grace).Sub(now); wait > 0 {
		setLeaseReady(st, l, metav1.ConditionFalse, ReasonProviderLost, fmt.Sprintf("%s; failing over in %s", why, wait.Round(time.Second)))
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	st.Phase, st.Outcome = flotillav1.LeaseClosed, flotillav1.OutcomeFailedOver
	setLeaseReady(st, l, metav1.ConditionFalse, ReasonFailedOver, why+"; replicas replaced elsewhere under a new epoch")
	metrics.Failover()
	r.Recorder.Eventf(w, "Warning", ReasonFailedOver, "Replacing %d replicas of lease %s: %s", l.Spec.Replicas, l.Name, why)
	return ctrl.Result{}, nil
}

func setLeaseReady(st *flotillav1.LeaseStatus, l *flotillav1.Lease, s metav1.ConditionStatus, reason, msg string) {
	setCondition(&st.Conditions, metav1.Condition{
		Type: flotillav1.ConditionReady, Status: s, Reason: reason, Message: msg, ObservedGeneration: l.Generation,
	})
}

// syncedStatusEqual compares two statuses but for lastSyncTime.
func syncedStatusEqual(a, b *flotillav1.LeaseStatus) bool {
	x, y := *a, *b
	x.LastSyncTime, y.LastSyncTime = nil, nil
	return equality.Semantic.DeepEqual(x, y)
}

// reconcileDelete removes the Lease's namespace on the provider, then the
// finalizer. An unreachable provider keeps the Lease until it returns; a
// deregistered one releases it at once.
func (r *LeaseReconciler) reconcileDelete(ctx context.Context, l *flotillav1.Lease) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(l, LeaseFinalizer) {
		return ctrl.Result{}, nil
	}
	p := &flotillav1.Provider{}
	perr := r.Client.Get(ctx, client.ObjectKey{Name: l.Spec.ProviderRef.Name}, p)
	var cl *remote.Client
	var err error
	if perr == nil {
		cl, _, err = providerClient(ctx, r.Client, r.Remote, p)
	}
	switch {
	case apierrors.IsNotFound(perr):
		// The provider is gone: nobody can clean up there.
	case perr == nil && p.DeletionTimestamp != nil && p.Status.Phase == flotillav1.ProviderLost:
		// Deregistered while unreachable: it will not come back to be cleaned.
	case perr != nil || err != nil:
		return ctrl.Result{RequeueAfter: cleanupRetryBackoff}, nil
	default:
		if derr := r.deleteNamespace(ctx, cl, l); derr != nil {
			ctrl.LoggerFrom(ctx).V(1).Info("Provider not reachable for cleanup, retrying", "error", derr.Error())
			return ctrl.Result{RequeueAfter: cleanupRetryBackoff}, nil
		}
	}
	if l.Status.Phase != flotillav1.LeaseClosed {
		// Charge what the hub saw running up to the deletion; the bank
		// settles it once this finalizer is gone.
		st := l.Status.DeepCopy()
		r.meterUntilLastSeen(l, st)
		if !equality.Semantic.DeepEqual(st, &l.Status) {
			patch := client.MergeFrom(l.DeepCopy())
			l.Status = *st
			if err := r.Client.Status().Patch(ctx, l, patch); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, fmt.Errorf("metering deleted lease %s/%s: %w", l.Namespace, l.Name, err)
			}
		}
	}
	r.seen.Delete(l.UID)
	controllerutil.RemoveFinalizer(l, LeaseFinalizer)
	if err := r.Client.Update(ctx, l); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("removing finalizer from lease %s/%s: %w", l.Namespace, l.Name, err)
	}
	return ctrl.Result{}, nil
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

// specOrMetaChanged drops the updates a controller causes itself by writing
// the status of the objects it is For; it requeues on its own schedule.
var specOrMetaChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	o, n := e.ObjectOld, e.ObjectNew
	return o.GetGeneration() != n.GetGeneration() || !o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp()) ||
		!slices.Equal(o.GetFinalizers(), n.GetFinalizers()) || !maps.Equal(o.GetLabels(), n.GetLabels())
}}

// SetupWithManager watches Leases and the Providers they run on.
func (r *LeaseReconciler) SetupWithManager(mgr ctrl.Manager) error {
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
		WithOptions(controller.Options{MaxConcurrentReconciles: 8}).
		Named("lease").
		Complete(r)
}
