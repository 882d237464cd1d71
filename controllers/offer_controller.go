package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
)

// Offer condition reasons.
const (
	ReasonOfferOpen        = "Open"
	ReasonOfferExhausted   = "Exhausted"
	ReasonOfferExpired     = "Expired"
	ReasonOfferNotYetValid = "NotYetValid"
	ReasonOfferMisplaced   = "WrongNamespace"
	ReasonOfferOvercommit  = "Overcommitted"
)

// OfferReconciler keeps an Offer's allocated and available resources equal to
// the sum of its live Leases, and says whether it is open for new ones. The
// scheduler does not read this status (it sums the Leases itself); it is for
// people and the provider's agent.
type OfferReconciler struct {
	Client client.Client
	Now    func() time.Time
}

// Reconcile recomputes the Offer's status from its Leases.
func (r *OfferReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	o := &flotillav1.Offer{}
	if err := r.Client.Get(ctx, req.NamespacedName, o); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var leases flotillav1.LeaseList
	if err := r.Client.List(ctx, &leases, client.MatchingFields{indexLeaseOffer: offerKey(o.Namespace, o.Name)}); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing leases of offer %s: %w", req, err)
	}
	status, requeue := computeOfferStatus(o, leases.Items, r.Now())
	if !equality.Semantic.DeepEqual(status, o.Status) {
		patch := client.MergeFrom(o.DeepCopy())
		o.Status = status
		if err := r.Client.Status().Patch(ctx, o, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("patching status of offer %s: %w", req, err)
		}
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// computeOfferStatus returns the status and, when the offer opens or closes
// later, how long until then.
func computeOfferStatus(o *flotillav1.Offer, leases []flotillav1.Lease, now time.Time) (flotillav1.OfferStatus, time.Duration) {
	st := flotillav1.OfferStatus{ObservedGeneration: o.Generation, Conditions: slices.Clone(o.Status.Conditions)}
	var used market.Vector
	for i := range leases {
		l := &leases[i]
		if !leaseLive(l) {
			continue
		}
		per := market.FromList(l.Spec.ResourcesPerReplica)
		for r := range used {
			used[r] += per[r] * int64(l.Spec.Replicas)
		}
		st.Leases++
	}
	capacity := market.FromList(o.Spec.Resources)
	avail := capacity
	over := false
	for r := range avail {
		avail[r] -= used[r]
		if avail[r] < 0 {
			over, avail[r] = true, 0
		}
	}
	// Only the resources the offer sells are reported.
	st.Allocated, st.Available = corev1.ResourceList{}, corev1.ResourceList{}
	allocList, availList := used.List(), avail.List()
	for name := range o.Spec.Resources {
		st.Allocated[name] = quantityOr0(allocList, name)
		st.Available[name] = quantityOr0(availList, name)
	}

	c := metav1.Condition{Type: flotillav1.OfferAvailable, ObservedGeneration: o.Generation}
	var requeue time.Duration
	switch {
	case o.Namespace != flotillav1.ProviderNamespace(o.Spec.ProviderRef.Name):
		c.Status, c.Reason = metav1.ConditionFalse, ReasonOfferMisplaced
		c.Message = fmt.Sprintf("an offer of provider %s must live in namespace %s; the market ignores it",
			o.Spec.ProviderRef.Name, flotillav1.ProviderNamespace(o.Spec.ProviderRef.Name))
	case o.Spec.ValidFrom != nil && now.Before(o.Spec.ValidFrom.Time):
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonOfferNotYetValid, "opens at "+o.Spec.ValidFrom.UTC().Format(time.RFC3339)
		requeue = o.Spec.ValidFrom.Sub(now)
	case o.Spec.ValidUntil != nil && !now.Before(o.Spec.ValidUntil.Time):
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonOfferExpired, "closed to new leases at "+o.Spec.ValidUntil.UTC().Format(time.RFC3339)
	case over:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonOfferOvercommit, "live leases hold more than the offer now sells"
	case exhausted(capacity, avail):
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonOfferExhausted, "all capacity is leased"
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, ReasonOfferOpen, fmt.Sprintf("%d live leases", st.Leases)
	}
	if requeue == 0 && o.Spec.ValidUntil != nil && now.Before(o.Spec.ValidUntil.Time) {
		requeue = o.Spec.ValidUntil.Sub(now)
	}
	setCondition(&st.Conditions, c)
	ready := c
	ready.Type = flotillav1.ConditionReady
	setCondition(&st.Conditions, ready)
	return st, requeue
}

// exhausted reports an offer with no cpu or no memory left, when it sells them.
func exhausted(capacity, avail market.Vector) bool {
	for _, r := range []market.Resource{market.CPU, market.Memory} {
		if capacity[r] > 0 && avail[r] == 0 {
			return true
		}
	}
	return false
}

func quantityOr0(l corev1.ResourceList, name corev1.ResourceName) resource.Quantity {
	if q, ok := l[name]; ok {
		return q
	}
	if name == corev1.ResourceMemory || name == corev1.ResourceEphemeralStorage {
		return *resource.NewQuantity(0, resource.BinarySI)
	}
	return *resource.NewQuantity(0, resource.DecimalSI)
}

// leaseHoldChanged passes the Lease updates that can change what an Offer
// has allocated: whether the Lease is live, nothing else.
var leaseHoldChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	o, ok1 := e.ObjectOld.(*flotillav1.Lease)
	n, ok2 := e.ObjectNew.(*flotillav1.Lease)
	return !ok1 || !ok2 || o.Status.Phase != n.Status.Phase || !o.DeletionTimestamp.Equal(n.DeletionTimestamp)
}}

// SetupWithManager watches Offers and the Leases that name them.
func (r *OfferReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&flotillav1.Offer{}).
		Watches(&flotillav1.Lease{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			l := o.(*flotillav1.Lease)
			return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: l.Spec.OfferRef.Namespace, Name: l.Spec.OfferRef.Name}}}
		}), builder.WithPredicates(leaseHoldChanged)).
		Named("offer").
		Complete(r)
}
