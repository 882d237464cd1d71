package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
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
	"github.com/flotilla-dev/flotilla/internal/metering"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/money"
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
	ReasonProviderLost = "ProviderLost"
	ReasonFailedOver   = "FailedOver"
	ReasonJobCompleted = "Completed"
	ReasonJobFailed    = "JobFailed"
	ReasonWaitProvider = "WaitingForProvider"
	ReasonRenderFailed = "RenderFailed"
	leaseSyncInterval  = 3 * time.Second
	// leaseConvergeInterval is the sync period while replicas are not all
	// ready yet.
	leaseConvergeInterval = time.Second
	// leaseReapplyInterval bounds how long drift on a provider may last.
	leaseReapplyInterval = 2 * time.Minute
	// leaseSyncRefresh is how stale status.lastSyncTime may get while
	// nothing else changes.
	leaseSyncRefresh = 30 * time.Second
	// leaseMeterFlush is how often usage is written while nothing changes.
	leaseMeterFlush     = 30 * time.Second
	cleanupRetryBackoff = 10 * time.Second
)

// LeaseReconciler makes a Lease real on its provider: it renders the
// Lease's objects and applies them with server-side apply, reads back ready,
// succeeded and failed replicas, marks the Lease Lost while its provider is,
// fails it over after the Workload's grace period, and removes its namespace
// on the provider when the Lease closes or is deleted.
type LeaseReconciler struct {
	Client   client.Client
	Remote   *remote.Cache
	Recorder record.EventRecorder
	HubID    string
	Now      func() time.Time
}

// Reconcile drives one Lease.
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

// meter charges the replicas that were ready since the last metering, at
// the count last observed (old), and prices them. It writes only every
// leaseMeterFlush, when the ready count changed, or when the Lease closes,
// so that a quiet Lease stays quiet; whole seconds not yet written are
// charged with the next write. Time while the provider is Lost is never
// charged: lost() zeroes the ready count it would be charged at.
func (r *LeaseReconciler) meter(l *flotillav1.Lease, st, old *flotillav1.LeaseStatus, now time.Time) {
	if m := st.Usage.MeteredUntil; m != nil && now.Sub(m.Time) < leaseMeterFlush &&
		st.ReadyReplicas == old.ReadyReplicas && st.Phase != flotillav1.LeaseClosed {
		return
	}
	r.meterTo(l, st, old.ReadyReplicas, now)
}

// meterTo charges ready replicas from the end of the metered time to t.
func (r *LeaseReconciler) meterTo(l *flotillav1.Lease, st *flotillav1.LeaseStatus, ready int32, t time.Time) {
	u := metering.Usage{ReplicaSeconds: st.Usage.ReplicaSeconds}
	if st.Usage.MeteredUntil != nil {
		u.Until = st.Usage.MeteredUntil.Time
	}
	// Status keeps whole seconds; so does the metered time.
	u, changed := metering.Advance(u, ready, t.Truncate(time.Second))
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

// syncedStatusEqual compares two statuses but for lastSyncTime.
func syncedStatusEqual(a, b *flotillav1.LeaseStatus) bool {
	x, y := *a, *b
	x.LastSyncTime, y.LastSyncTime = nil, nil
	return equality.Semantic.DeepEqual(x, y)
}

func (r *LeaseReconciler) reconcile(ctx context.Context, l *flotillav1.Lease, st *flotillav1.LeaseStatus, old *flotillav1.LeaseStatus) (ctrl.Result, error) {
	now := r.Now()
	p := &flotillav1.Provider{}
	perr := r.Client.Get(ctx, client.ObjectKey{Name: l.Spec.ProviderRef.Name}, p)
	if st.Phase == flotillav1.LeaseClosed {
		// Closed for good; the provider's namespace goes when it can be
		// reached (fencing catches it otherwise).
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
	switch p.Status.Phase {
	case flotillav1.ProviderLost:
		return r.lost(ctx, l, st, now, "provider "+p.Name+" is Lost", latest(p.Status.LastProbeTime, p.Status.LastHeartbeatTime))
	case "", flotillav1.ProviderPending:
		if st.Phase == "" {
			st.Phase = flotillav1.LeasePending
		}
		setLeaseReady(st, l, metav1.ConditionFalse, ReasonWaitProvider, "waiting for provider "+p.Name+" to become Ready")
		return ctrl.Result{RequeueAfter: leaseSyncInterval}, nil
	}
	st.LostTime = nil

	w := &flotillav1.Workload{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: l.Spec.WorkloadRef.Name}, w); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	cl, _, err := providerClient(ctx, r.Client, r.Remote, p)
	if err != nil {
		st.LastError = err.Error()
		setLeaseReady(st, l, metav1.ConditionFalse, ReasonWaitProvider, err.Error())
		return ctrl.Result{RequeueAfter: leaseSyncInterval}, nil
	}
	objs, hash, err := r.render(ctx, l, w)
	if err != nil {
		st.LastError = err.Error()
		if st.Phase == "" {
			st.Phase = flotillav1.LeasePending
		}
		setLeaseReady(st, l, metav1.ConditionFalse, ReasonRenderFailed, err.Error())
		return ctrl.Result{RequeueAfter: leaseSyncInterval}, nil
	}
	// Re-applying every object on every sync would cost each provider a
	// handful of writes per Lease every few seconds; apply only when the
	// objects changed, when the provider lost one, or to undo drift.
	stale := st.AppliedHash != hash || st.LastApplyTime == nil || now.Sub(st.LastApplyTime.Time) >= leaseReapplyInterval
	for attempt := 0; ; attempt++ {
		if stale {
			start := time.Now()
			err = r.apply(ctx, cl, objs)
			metrics.RemoteRequest(p.Name, "apply", time.Since(start))
			if err != nil {
				st.LastError = err.Error()
				if st.Phase == "" {
					st.Phase = flotillav1.LeasePending
				}
				setLeaseReady(st, l, metav1.ConditionFalse, ReasonApplyFailed, err.Error())
				r.Recorder.Eventf(l, "Warning", ReasonApplyFailed, "Applying on provider %s: %v", p.Name, err)
				return ctrl.Result{RequeueAfter: leaseSyncInterval}, nil
			}
			st.AppliedHash, st.LastApplyTime = hash, &metav1.Time{Time: now}
		}
		st.LastError = ""
		err = r.readBack(ctx, cl, l, st)
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) || stale || attempt > 0 {
			st.LastError = err.Error()
			return ctrl.Result{RequeueAfter: leaseSyncInterval}, nil
		}
		stale = true // removed on the provider: put it back now
	}
	r.meter(l, st, old, now)
	// Refreshing the time on every sync would write status (and wake every
	// watcher) each second for nothing; it moves when something else does,
	// or once per leaseSyncRefresh.
	if st.LastSyncTime == nil || now.Sub(st.LastSyncTime.Time) >= leaseSyncRefresh || !syncedStatusEqual(st, old) {
		st.LastSyncTime = &metav1.Time{Time: now}
	}
	if st.Phase == flotillav1.LeaseClosed {
		_ = r.deleteNamespace(ctx, cl, l)
		return ctrl.Result{}, nil
	}
	st.Phase = flotillav1.LeaseActive
	if l.Spec.Class != flotillav1.ClassBatch && st.ReadyReplicas >= l.Spec.Replicas {
		setLeaseReady(st, l, metav1.ConditionTrue, ReasonApplied, fmt.Sprintf("%d replicas ready on %s", st.ReadyReplicas, p.Name))
	} else {
		setLeaseReady(st, l, metav1.ConditionFalse, ReasonApplied, fmt.Sprintf("%d of %d replicas ready on %s", st.ReadyReplicas, l.Spec.Replicas, p.Name))
	}
	if st.ReadyReplicas < l.Spec.Replicas {
		// Converging: look again soon so the Workload turns Ready promptly.
		return ctrl.Result{RequeueAfter: leaseConvergeInterval}, nil
	}
	return ctrl.Result{RequeueAfter: leaseSyncInterval}, nil
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
		// Charge what was observed up to the last contact; nothing after.
		if lastContact != nil && st.Usage.MeteredUntil != nil && lastContact.After(st.Usage.MeteredUntil.Time) {
			r.meterTo(l, st, st.ReadyReplicas, *lastContact)
		}
	}
	st.Phase = flotillav1.LeaseLost
	st.ReadyReplicas = 0
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
	st.Phase = flotillav1.LeaseClosed
	setLeaseReady(st, l, metav1.ConditionFalse, ReasonFailedOver, why+"; replicas replaced elsewhere under a new epoch")
	metrics.Failover()
	r.Recorder.Eventf(w, "Warning", ReasonFailedOver, "Replacing %d replicas of lease %s: %s", l.Spec.Replicas, l.Name, why)
	return ctrl.Result{}, nil
}

func setLeaseReady(st *flotillav1.LeaseStatus, l *flotillav1.Lease, s metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: flotillav1.ConditionReady, Status: s, Reason: reason, Message: msg, ObservedGeneration: l.Generation,
	})
}

// render reads what the template references and renders the Lease's
// objects, with a hash of them to tell whether they changed.
func (r *LeaseReconciler) render(ctx context.Context, l *flotillav1.Lease, w *flotillav1.Workload) ([]*unstructured.Unstructured, string, error) {
	in := render.Input{HubID: r.HubID, Lease: l, Workload: w}
	cms, secs := render.References(&w.Spec.Template.Spec)
	for _, name := range cms {
		cm := corev1.ConfigMap{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: name}, &cm); err != nil {
			return nil, "", fmt.Errorf("reading ConfigMap %s referenced by the template: %w", name, err)
		}
		in.ConfigMaps = append(in.ConfigMaps, cm)
	}
	for _, name := range secs {
		s := corev1.Secret{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: name}, &s); err != nil {
			return nil, "", fmt.Errorf("reading Secret %s referenced by the template: %w", name, err)
		}
		in.Secrets = append(in.Secrets, s)
	}
	objs, err := render.Lease(in)
	if err != nil {
		return nil, "", err
	}
	h := sha256.New()
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return nil, "", err
		}
		delete(u, "status")
		unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
		b, err := json.Marshal(u)
		if err != nil {
			return nil, "", err
		}
		h.Write(b)
		out = append(out, &unstructured.Unstructured{Object: u})
	}
	return out, hex.EncodeToString(h.Sum(nil)), nil
}

// apply server-side applies the objects: the namespace first, then what
// constrains and configures pods (quota, limits, network policy, config) in
// parallel, and the Deployment or Job last, so that no pod starts before its
// quota and limits exist.
func (r *LeaseReconciler) apply(ctx context.Context, cl *remote.Client, objs []*unstructured.Unstructured) error {
	one := func(obj *unstructured.Unstructured) error {
		if err := cl.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		return nil
	}
	var first, middle, last []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace":
			first = append(first, o)
		case "Deployment", "Job":
			last = append(last, o)
		default:
			middle = append(middle, o)
		}
	}
	for _, o := range first {
		if err := one(o); err != nil {
			return err
		}
	}
	errs := make([]error, len(middle))
	var wg sync.WaitGroup
	for i, o := range middle {
		wg.Go(func() { errs[i] = one(o) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, o := range last {
		if err := one(o); err != nil {
			return err
		}
	}
	return nil
}

// readBack copies the provider's view of the Lease's workload into status;
// a finished Job closes the Lease.
func (r *LeaseReconciler) readBack(ctx context.Context, cl *remote.Client, l *flotillav1.Lease, st *flotillav1.LeaseStatus) error {
	ns := render.Namespace(r.HubID, l.UID)
	key := client.ObjectKey{Namespace: ns, Name: render.WorkloadName}
	if l.Spec.Class != flotillav1.ClassBatch {
		d := &appsv1.Deployment{}
		if err := cl.Get(ctx, key, d); err != nil {
			return fmt.Errorf("reading deployment: %w", err)
		}
		st.ReadyReplicas = d.Status.ReadyReplicas
		return nil
	}
	j := &batchv1.Job{}
	if err := cl.Get(ctx, key, j); err != nil {
		return fmt.Errorf("reading job: %w", err)
	}
	st.ReadyReplicas, st.SucceededReplicas, st.FailedReplicas = j.Status.Active, j.Status.Succeeded, j.Status.Failed
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			st.Digest = r.digest(ctx, cl, ns)
			st.Phase = flotillav1.LeaseClosed
			setLeaseReady(st, l, metav1.ConditionTrue, ReasonJobCompleted, fmt.Sprintf("%d replicas succeeded", j.Status.Succeeded))
		case batchv1.JobFailed:
			st.Phase = flotillav1.LeaseClosed
			setLeaseReady(st, l, metav1.ConditionFalse, ReasonJobFailed, c.Message)
		}
	}
	return nil
}

// digest is the termination message of the first container of a succeeded
// pod, when it looks like "sha256:<hex>".
func (r *LeaseReconciler) digest(ctx context.Context, cl *remote.Client, ns string) string {
	var pods corev1.PodList
	if err := cl.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		return ""
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodSucceeded || len(p.Status.ContainerStatuses) == 0 {
			continue
		}
		if t := p.Status.ContainerStatuses[0].State.Terminated; t != nil && strings.HasPrefix(t.Message, "sha256:") && len(t.Message) <= 128 {
			return strings.TrimSpace(t.Message)
		}
	}
	return ""
}

func (r *LeaseReconciler) deleteNamespace(ctx context.Context, cl *remote.Client, l *flotillav1.Lease) error {
	ns := &corev1.Namespace{}
	ns.Name = render.Namespace(r.HubID, l.UID)
	start := time.Now()
	err := cl.Delete(ctx, ns)
	metrics.RemoteRequest(l.Spec.ProviderRef.Name, "cleanup", time.Since(start))
	return client.IgnoreNotFound(err)
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
		// Charge up to the deletion what was running; the bank settles it
		// once this finalizer is gone.
		st := l.Status.DeepCopy()
		r.meterTo(l, st, st.ReadyReplicas, r.Now())
		if !equality.Semantic.DeepEqual(st, &l.Status) {
			patch := client.MergeFrom(l.DeepCopy())
			l.Status = *st
			if err := r.Client.Status().Patch(ctx, l, patch); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, fmt.Errorf("metering deleted lease %s/%s: %w", l.Namespace, l.Name, err)
			}
		}
	}
	controllerutil.RemoveFinalizer(l, LeaseFinalizer)
	if err := r.Client.Update(ctx, l); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("removing finalizer from lease %s/%s: %w", l.Namespace, l.Name, err)
	}
	return ctrl.Result{}, nil
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
