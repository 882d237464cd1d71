package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/capacity"
	"github.com/flotilla-dev/flotilla/internal/flap"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/remote"
)

// Provider condition reasons.
const (
	ReasonProbeSucceeded     = "ProbeSucceeded"
	ReasonKubeconfigMissing  = "KubeconfigMissing"
	ReasonLost               = "Lost"
	ReasonProviderCordoned   = "Cordoned"
	ReasonProviderPending    = "NeverReached"
	ReasonFencing            = "FencingIncomplete"
	ReasonProviderReady      = "Ready"
	ReasonWithinGracePeriod  = "WithinGracePeriod"
	ReasonBackingOff         = "BackingOff"
	heartbeatLeasePrefix     = "provider-"
	defaultProbeInterval     = 3 * time.Second
	defaultProviderGraceTime = 20 * time.Second
	conflictRetry            = 100 * time.Millisecond
)

// ProviderReconciler probes each provider's API server, measures its
// capacity, follows its agent's heartbeat, and decides its phase. A provider
// that has not answered for the grace period is Lost; when it answers again,
// everything of a closed or failed-over Lease is deleted there (fencing)
// before it is Ready again.
type ProviderReconciler struct {
	Client   client.Client
	Remote   *remote.Cache
	Recorder record.EventRecorder
	HubID    string
	// GracePeriod without a successful probe before Lost.
	GracePeriod time.Duration
	// ProbeInterval between two probes of one provider.
	ProbeInterval time.Duration
	// Flap sets the hold-down of providers that keep getting Lost.
	Flap flap.Policy
	// ReputationHalfLife is how long reputation evidence keeps half its
	// weight; 0 means reputation.DefaultHalfLife.
	ReputationHalfLife time.Duration
	Now                func() time.Time
}

// Reconcile probes one provider and writes its status once.
func (r *ProviderReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	p := &flotillav1.Provider{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		if client.IgnoreNotFound(err) == nil {
			r.Remote.Forget(req.Name)
			metrics.ForgetProvider(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if p.DeletionTimestamp != nil {
		return r.reconcileDelete(ctx, p)
	}
	if controllerutil.AddFinalizer(p, ProviderFinalizer) {
		if err := r.Client.Update(ctx, p); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer to provider %s: %w", p.Name, err)
		}
	}
	now := r.Now()
	old := p.Status.DeepCopy()
	st := p.Status.DeepCopy()
	st.ObservedGeneration = p.Generation

	reach := metav1.Condition{Type: flotillav1.ProviderReachable, ObservedGeneration: p.Generation}
	cl, reason, err := providerClient(ctx, r.Client, r.Remote, p)
	if err == nil {
		probeCtx, cancel := context.WithTimeout(ctx, 2*r.timeout())
		var obs capacity.Observation
		start := time.Now()
		obs, err = cl.Probe(probeCtx)
		metrics.RemoteRequest(p.Name, "probe", time.Since(start))
		cancel()
		if err == nil {
			reach.Status, reach.Reason = metav1.ConditionTrue, ReasonProbeSucceeded
			reach.Message = fmt.Sprintf("%s answered; %d schedulable nodes", cl.Host, obs.Nodes)
			st.LastProbeTime = &metav1.Time{Time: now}
			st.KubernetesVersion = obs.KubernetesVersion
			st.Capacity = flotillav1.ProviderCapacity{
				Nodes: obs.Nodes, Allocatable: obs.Allocatable.List(), Allocated: obs.Allocated.List(),
				Free: obs.Free.List(), LargestFreeChunk: obs.LargestChunk.List(),
			}
		} else {
			reason = remote.Classify(err)
		}
	}
	if err != nil {
		reach.Status, reach.Reason, reach.Message = metav1.ConditionFalse, reason, err.Error()
	}
	setCondition(&st.Conditions, reach)

	// The agent writes its heartbeat's time itself; the hub only notes, by
	// its own clock, that it changed.
	if hb := r.heartbeat(ctx, p.Name); hb != "" && hb != st.ObservedHeartbeat {
		st.ObservedHeartbeat = hb
		st.LastHeartbeatTime = &metav1.Time{Time: now}
	}
	// A push-mode provider is alive when the hub reaches it: an agent that
	// heartbeats while the hub cannot reach its cluster (a one-way
	// partition, a revoked federation token) keeps nothing running for the
	// hub.
	lastContact := latest(st.LastProbeTime)

	ready := metav1.Condition{Type: flotillav1.ConditionReady, ObservedGeneration: p.Generation}
	next := r.interval()
	switch {
	case reach.Status == metav1.ConditionTrue:
		// Reachable: fence before taking work again.
		if ferr := r.fence(ctx, p, cl); ferr != nil {
			log.Error(ferr, "Fencing provider")
			st.Phase = phaseWhileUnready(old.Phase)
			ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonFencing, "deleting stale lease namespaces: "+ferr.Error()
			break
		}
		if hold := r.holdDown(st, old.Phase, now); hold > 0 {
			st.Phase = flotillav1.ProviderPending
			ready.Status, ready.Reason = metav1.ConditionFalse, ReasonBackingOff
			ready.Message = fmt.Sprintf("reachable again after %d losses in a row; takes work again in %s (at %s)",
				st.RecentLosses, hold.Round(time.Second), st.ReadmitTime.UTC().Format(time.RFC3339))
			next = min(next, hold+10*time.Millisecond)
			break
		}
		if p.Spec.Unschedulable {
			st.Phase = flotillav1.ProviderCordoned
			ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonProviderCordoned, "spec.unschedulable is set: no new leases, replicas drain elsewhere"
		} else {
			st.Phase = flotillav1.ProviderReady
			ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, ReasonProviderReady, reach.Message
		}
	case lastContact != nil && now.Sub(*lastContact) < r.grace():
		// Not reachable, but within the grace period: keep the phase.
		st.Phase = old.Phase
		if st.Phase == "" || st.Phase == flotillav1.ProviderLost {
			st.Phase = flotillav1.ProviderPending
		}
		if p.Spec.Unschedulable && st.Phase == flotillav1.ProviderReady {
			st.Phase = flotillav1.ProviderCordoned
		}
		ready.Status = metav1.ConditionFalse
		if st.Phase == flotillav1.ProviderReady {
			ready.Status = metav1.ConditionTrue
		}
		ready.Reason = ReasonWithinGracePeriod
		// Decide at the end of the grace period, not up to a probe later.
		next = min(next, lastContact.Add(r.grace()).Sub(now)+10*time.Millisecond)
		ready.Message = fmt.Sprintf("last contact %s ago (grace period %s): %s", now.Sub(*lastContact).Round(time.Second), r.grace(), reach.Message)
	case lastContact != nil:
		if old.Phase != flotillav1.ProviderLost {
			var prev *time.Time
			if st.LastLostTime != nil {
				prev = &st.LastLostTime.Time
			}
			st.RecentLosses = r.Flap.Lost(st.RecentLosses, prev, now)
			st.LastLostTime = &metav1.Time{Time: now}
			st.ReadmitTime = nil
		}
		st.Phase = flotillav1.ProviderLost
		ready.Status, ready.Reason = metav1.ConditionFalse, ReasonLost
		ready.Message = fmt.Sprintf("no successful probe for %s: %s", now.Sub(*lastContact).Round(time.Second), reach.Message)
	default:
		st.Phase = flotillav1.ProviderPending
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, ReasonProviderPending, reach.Message
	}
	setCondition(&st.Conditions, ready)

	if st.Phase != old.Phase {
		typ := "Normal"
		if st.Phase == flotillav1.ProviderLost {
			typ = "Warning"
		}
		r.Recorder.Eventf(p, typ, "Phase"+string(st.Phase), "Provider is %s: %s", st.Phase, ready.Message)
		log.Info("Provider phase changed", "from", old.Phase, "to", st.Phase, "reason", ready.Reason)
	}
	marks, rerr := r.updateReputation(ctx, p, st, old.Phase, now)
	if rerr != nil {
		log.Error(rerr, "Updating reputation")
	}
	if !equality.Semantic.DeepEqual(st, old) {
		// Reputation adds to what status holds: writing over a newer status
		// than the cache showed would count time and events twice.
		patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
		p.Status = *st
		if err := r.Client.Status().Patch(ctx, p, patch); err != nil {
			if apierrors.IsConflict(err) {
				// The cache lags behind our last write: probe again shortly.
				return ctrl.Result{RequeueAfter: conflictRetry}, nil
			}
			return ctrl.Result{}, fmt.Errorf("patching status of provider %s: %w", p.Name, err)
		}
	}
	if err := r.markRecorded(ctx, marks); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// holdDown returns how long a reachable, fenced provider must still wait
// before it takes work, recording the readmission time when it has just
// come back from being Lost.
func (r *ProviderReconciler) holdDown(st *flotillav1.ProviderStatus, was flotillav1.ProviderPhase, now time.Time) time.Duration {
	if was == flotillav1.ProviderLost && st.ReadmitTime == nil {
		if d := r.Flap.HoldDown(st.RecentLosses); d > 0 {
			st.ReadmitTime = &metav1.Time{Time: now.Add(d)}
			metrics.ProviderHeldDown()
		}
	}
	if st.ReadmitTime == nil {
		return 0
	}
	if d := st.ReadmitTime.Sub(now); d > 0 {
		return d
	}
	st.ReadmitTime = nil
	return 0
}

// ProviderFinalizer keeps a deregistered Provider until its Leases are gone.
const ProviderFinalizer = "flotilla.dev/drain"

// reconcileDelete drains a deregistered provider: the scheduler moves its
// replicas elsewhere and closes its Leases; the finalizer goes when none is
// left.
func (r *ProviderReconciler) reconcileDelete(ctx context.Context, p *flotillav1.Provider) (ctrl.Result, error) {
	var leases flotillav1.LeaseList
	if err := r.Client.List(ctx, &leases, client.MatchingLabels{flotillav1.LabelProvider: p.Name}); err != nil {
		return ctrl.Result{}, err
	}
	live := 0
	for i := range leases.Items {
		if leaseLive(&leases.Items[i]) {
			live++
		}
	}
	if live > 0 {
		ctrl.LoggerFrom(ctx).Info("Draining deregistered provider", "liveLeases", live)
		return ctrl.Result{RequeueAfter: r.interval()}, nil
	}
	if controllerutil.RemoveFinalizer(p, ProviderFinalizer) {
		if err := r.Client.Update(ctx, p); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	r.Remote.Forget(p.Name)
	metrics.ForgetProvider(p.Name)
	return ctrl.Result{}, nil
}

func phaseWhileUnready(old flotillav1.ProviderPhase) flotillav1.ProviderPhase {
	if old == "" || old == flotillav1.ProviderReady || old == flotillav1.ProviderCordoned {
		return flotillav1.ProviderPending
	}
	return old
}

func (r *ProviderReconciler) timeout() time.Duration { return remote.DefaultOptions.RequestTimeout }

func (r *ProviderReconciler) grace() time.Duration {
	if r.GracePeriod > 0 {
		return r.GracePeriod
	}
	return defaultProviderGraceTime
}

func (r *ProviderReconciler) interval() time.Duration {
	if r.ProbeInterval > 0 {
		return r.ProbeInterval
	}
	return defaultProbeInterval
}

// providerClient returns the provider's API client from its kubeconfig
// Secret, and a condition reason when it cannot.
func providerClient(ctx context.Context, c client.Client, cache *remote.Cache, p *flotillav1.Provider) (*remote.Client, string, error) {
	ref := p.Spec.KubeconfigSecretRef
	key := ref.Key
	if key == "" {
		key = "kubeconfig"
	}
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: ref.Name}, sec); err != nil {
		return nil, ReasonKubeconfigMissing, fmt.Errorf("reading kubeconfig Secret %s/%s: %w", flotillav1.SystemNamespace, ref.Name, err)
	}
	data, ok := sec.Data[key]
	if !ok {
		return nil, ReasonKubeconfigMissing, fmt.Errorf("kubeconfig Secret %s/%s has no key %q", flotillav1.SystemNamespace, ref.Name, key)
	}
	cl, err := cache.Get(p.Name, sec.ResourceVersion, data, p.Spec.APIServerURL)
	if err != nil {
		return nil, remote.Classify(err), fmt.Errorf("kubeconfig Secret %s/%s: %w", flotillav1.SystemNamespace, ref.Name, err)
	}
	return cl, "", nil
}

// heartbeat returns the renew time of the agent's coordination Lease as
// written, to compare with the last one seen; "" when there is none.
func (r *ProviderReconciler) heartbeat(ctx context.Context, provider string) string {
	l := &coordinationv1.Lease{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: heartbeatLeasePrefix + provider}, l); err != nil {
		return ""
	}
	if l.Spec.RenewTime == nil {
		return ""
	}
	return l.Spec.RenewTime.UTC().Format(time.RFC3339Nano)
}

func latest(ts ...*metav1.Time) *time.Time {
	var out *time.Time
	for _, t := range ts {
		if t != nil && (out == nil || t.After(*out)) {
			v := t.Time
			out = &v
		}
	}
	return out
}

// fence deletes, on the provider, every namespace of this hub whose Lease is
// gone, closed, being deleted, of an older epoch, or bound elsewhere.
func (r *ProviderReconciler) fence(ctx context.Context, p *flotillav1.Provider, cl *remote.Client) error {
	var nss corev1.NamespaceList
	sel := labels.SelectorFromSet(labels.Set{flotillav1.LabelManaged: "true", flotillav1.LabelHub: r.HubID})
	if err := cl.List(ctx, &nss, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return fmt.Errorf("listing managed namespaces: %w", err)
	}
	var errs []error
	for i := range nss.Items {
		ns := &nss.Items[i]
		if ns.DeletionTimestamp != nil {
			continue
		}
		why := r.stale(ctx, p, ns)
		if why == "" {
			continue
		}
		if err := cl.Delete(ctx, ns); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting namespace %s: %w", ns.Name, err))
			continue
		}
		metrics.FencingDeletion()
		r.Recorder.Eventf(p, "Normal", "Fenced", "Deleted namespace %s on the provider: %s", ns.Name, why)
	}
	return errors.Join(errs...)
}

// stale says why a provider namespace must go, or "" when its Lease is live.
func (r *ProviderReconciler) stale(ctx context.Context, p *flotillav1.Provider, ns *corev1.Namespace) string {
	uid := ns.Labels[flotillav1.LabelLease]
	var leases flotillav1.LeaseList
	if err := r.Client.List(ctx, &leases, client.MatchingFields{indexLeaseUID: uid}); err != nil {
		return "" // unknown: keep it, decide next time
	}
	if len(leases.Items) == 0 {
		return "its lease no longer exists"
	}
	l := &leases.Items[0]
	epoch, _ := strconv.ParseInt(ns.Labels[flotillav1.LabelEpoch], 10, 64)
	switch {
	case l.Status.Phase == flotillav1.LeaseClosed:
		return "lease " + l.Name + " is closed"
	case l.DeletionTimestamp != nil:
		return "lease " + l.Name + " is being deleted"
	case l.Spec.ProviderRef.Name != p.Name:
		return "lease " + l.Name + " is bound to provider " + l.Spec.ProviderRef.Name
	case epoch < l.Spec.Epoch:
		return fmt.Sprintf("epoch %d is older than lease epoch %d", epoch, l.Spec.Epoch)
	}
	return ""
}

// SetupWithManager probes providers with several workers, so a provider
// that hangs until the timeout holds up only its own probe.
func (r *ProviderReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&flotillav1.Provider{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.providersOfSecret)).
		Watches(&flotillav1.Lease{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.(*flotillav1.Lease).Spec.ProviderRef.Name}}}
		}), builder.WithPredicates(leaseEvidenceChanged)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 8}).
		Named("provider").
		Complete(r)
}

func (r *ProviderReconciler) providersOfSecret(ctx context.Context, o client.Object) []reconcile.Request {
	if o.GetNamespace() != flotillav1.SystemNamespace {
		return nil
	}
	var ps flotillav1.ProviderList
	if err := r.Client.List(ctx, &ps); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, p := range ps.Items {
		if p.Spec.KubeconfigSecretRef.Name == o.GetName() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Name}})
		}
	}
	return slices.Clip(out)
}
