package controllers

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/flap"
	"github.com/flotilla-dev/flotilla/internal/health"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/remote"
)

// conflictRetry is how soon a status write that lost to a newer one is
// tried again.
const conflictRetry = 100 * time.Millisecond

// ProviderReconciler watches providers: it gathers what the hub observes of
// one (a probe of its API server, fencing of its stale namespaces, its
// agent's heartbeat), lets internal/health decide its phase and
// internal/trust its reputation, and writes its status once.
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
	// ReputationRefresh is how often uptime alone is written into the
	// reputation; 0 means DefaultReputationRefresh.
	ReputationRefresh time.Duration
	Now               func() time.Time
	// Since is when this manager started: a Pull-mode provider's last
	// heartbeat counts from no earlier (see health.Input.Since).
	Since time.Time

	// beats is, by provider, the last heartbeat value seen and when (a
	// heartbeat): status records it only every health.Policy's
	// ContactRecord. Losing it (a restart) is covered by Since.
	beats sync.Map
	// probed is, by Push-mode provider, when it last answered a probe:
	// status records that only every ContactRecord too.
	probed sync.Map
	// Heard, when set, is called when a provider that was Silent beats
	// again: it may take new replicas, and nothing else would say so.
	Heard func()

	// expiries carries the providers watchExpiry wakes; woken is, by
	// provider, the heartbeat value it was last woken for.
	expiries chan event.GenericEvent
	woken    sync.Map

	// watching is when the first look as leader was (watchedSince).
	watching  time.Time
	watchOnce sync.Once
}

// DefaultPullLook bounds the time between two looks at a Pull-mode
// provider with a fresh heartbeat (health.Policy.PullLook).
const DefaultPullLook = 30 * time.Second

// heartbeat is a renew time seen on an agent's coordination Lease.
type heartbeat struct {
	value string
	seen  time.Time
	// since is when the run of beats this one ends began: none of them
	// came more than a grace period after the one before.
	since time.Time
}

func (r *ProviderReconciler) interval() time.Duration {
	if r.ProbeInterval > 0 {
		return r.ProbeInterval
	}
	return health.DefaultProbeInterval
}

func (r *ProviderReconciler) policy() health.Policy {
	// A live Pull-mode provider is looked at every DefaultPullLook, or as
	// often as its reputation's uptime is brought up to date if that is
	// sooner; the end of its grace period wakes it too (graceWatched).
	return health.Policy{Grace: r.GracePeriod, ProbeInterval: r.ProbeInterval, Flap: r.Flap,
		PullLook: min(cmp.Or(r.ReputationRefresh, DefaultReputationRefresh), DefaultPullLook)}
}

// Reconcile watches one provider and writes its status once.
func (r *ProviderReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	r.watchedSince()
	p := &flotillav1.Provider{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			r.Remote.Forget(req.Name)
			r.beats.Delete(req.Name)
			r.woken.Delete(req.Name)
			r.probed.Delete(req.Name)
			metrics.ForgetProvider(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if p.DeletionTimestamp != nil {
		return r.reconcileDelete(ctx, p)
	}
	if controllerutil.AddFinalizer(p, flotillav1.FinalizerDrain) {
		if err := r.Client.Update(ctx, p); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer to provider %s: %w", p.Name, err)
		}
	}
	in := r.gather(ctx, p)
	if t, ok := r.probed.Load(p.Name); ok {
		in.ProbedAt = t.(time.Time)
	}
	in.GraceWatched = r.graceWatched(p.Name, in.Now)
	d := health.Decide(in, r.policy())
	if in.Pull && d.Status.Phase == flotillav1.ProviderLost && p.Status.Phase != flotillav1.ProviderLost {
		// Lost only once the agent is told so, in the same write that
		// checks its heartbeat is still the one judged stale.
		if err := r.markLost(ctx, p.Name, in.Heartbeat); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: conflictRetry}, nil
			}
			return ctrl.Result{}, fmt.Errorf("marking the heartbeat of provider %s lost: %w", p.Name, err)
		}
	}
	if d.HeldDown {
		metrics.ProviderHeldDown()
	}
	if e := d.Event; e != nil {
		typ := "Normal"
		if e.Warning {
			typ = "Warning"
		}
		r.Recorder.Event(p, typ, e.Reason, e.Message)
		ctrl.LoggerFrom(ctx).Info("Provider phase changed", "from", p.Status.Phase, "to", d.Status.Phase)
	}
	st := d.Status
	marks, err := r.updateReputation(ctx, p, &st)
	if err != nil {
		// The rest of the status is still worth writing; the evidence
		// waits for the next probe.
		ctrl.LoggerFrom(ctx).Error(err, "Updating reputation")
		st.Reputation, marks = p.Status.Reputation, nil
	}
	if !equality.Semantic.DeepEqual(st, p.Status) {
		// Reputation adds to what status holds: writing over a newer
		// status than the cache showed would count time and events twice.
		if err := applyStatus(ctx, r.Client, p, &st, ManagerProvider, p.ResourceVersion); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: conflictRetry}, nil
			}
			return ctrl.Result{}, fmt.Errorf("writing the status of provider %s: %w", p.Name, err)
		}
	}
	if in.Probe.OK && !in.Pull {
		// Remembered once status holds what was decided on it: a first
		// probe whose write conflicted is written at the next one.
		r.probed.Store(p.Name, in.Now)
	}
	if err := r.markRecorded(ctx, marks); err != nil {
		return ctrl.Result{}, err
	}
	return r.next(in.Pull, d), nil
}

// next is when to look at a provider again. A Pull-mode provider that is
// not Ready or Cordoned is woken by its heartbeat (watched, below), and a
// live one at the end of its grace period by the expiry scan
// (watchExpiry), where it can be found Lost: their routine looks go
// behind every other item in the queue.
func (r *ProviderReconciler) next(pull bool, d health.Decision) ctrl.Result {
	res := ctrl.Result{RequeueAfter: d.RequeueAfter}
	switch phase := d.Status.Phase; {
	case !pull:
	case phase != flotillav1.ProviderReady && phase != flotillav1.ProviderCordoned:
		if d.RequeueAfter >= r.interval() {
			res.Priority = new(handler.LowPriority)
		}
	case d.Routine:
		res.Priority = new(handler.LowPriority)
	}
	return res
}

// heartbeatSeen notes when this process saw an agent's heartbeat renewed,
// as it comes rather than at the provider's next look, which on a busy hub
// can be a grace period late, and wakes the provider only when that could
// change its phase: one that is not Ready.
func (r *ProviderReconciler) heartbeatSeen(ctx context.Context, o client.Object) []reconcile.Request {
	l, ok := o.(*coordinationv1.Lease)
	name, isBeat := strings.CutPrefix(o.GetName(), heartbeatLeasePrefix)
	if !ok || !isBeat || o.GetNamespace() != flotillav1.SystemNamespace {
		return nil
	}
	v := renewValue(l)
	if v == "" {
		return nil
	}
	now := r.Now()
	wasSilent := false
	if b, ok := r.beats.Load(name); ok {
		wasSilent = r.silent(b.(heartbeat), now)
	}
	if _, changed := r.noteBeat(name, v, now); !changed {
		return nil
	}
	if wasSilent && r.Heard != nil {
		r.Heard()
	}
	p := &flotillav1.Provider{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, p); err != nil || p.Status.Phase == flotillav1.ProviderReady {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: name}}}
}

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
		if leases.Items[i].HoldsCapacity() {
			live++
		}
	}
	if live > 0 {
		ctrl.LoggerFrom(ctx).Info("Draining deregistered provider", "liveLeases", live)
		return ctrl.Result{RequeueAfter: r.interval()}, nil
	}
	if controllerutil.RemoveFinalizer(p, flotillav1.FinalizerDrain) {
		if err := r.Client.Update(ctx, p); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
	}
	r.Remote.Forget(p.Name)
	metrics.ForgetProvider(p.Name)
	return ctrl.Result{}, nil
}

// SetupWithManager probes providers with several workers, so a provider
// that hangs until the timeout holds up only its own probe.
func (r *ProviderReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.expiries = make(chan event.GenericEvent, 1024)
	if err := mgr.Add(manager.RunnableFunc(r.watchExpiry)); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Its own status writes would wake it again for a second probe.
		For(&flotillav1.Provider{}, builder.WithPredicates(specOrMetaChanged)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.providersOfSecret)).
		Watches(&flotillav1.Lease{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: o.(*flotillav1.Lease).Spec.ProviderRef.Name}}}
		}), builder.WithPredicates(leaseEvidenceChanged)).
		Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(r.heartbeatSeen)).
		WatchesRawSource(source.Channel(r.expiries, &handler.EnqueueRequestForObject{})).
		// A look mostly waits on its writes (status, and the Leases'
		// reputation marks): eight workers took a thousand providers'
		// failover minutes to get through.
		WithOptions(controller.Options{MaxConcurrentReconciles: 32}).
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
		if ref := p.Spec.KubeconfigSecretRef; ref != nil && ref.Name == o.GetName() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Name}})
		}
	}
	return slices.Clip(out)
}
