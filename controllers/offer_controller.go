package controllers

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/placement"
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
	status, requeue := placement.OfferStatus(o, leases.Items, r.Now())
	if !equality.Semantic.DeepEqual(status, o.Status) {
		if err := applyStatus(ctx, r.Client, o, &status, ManagerOffer, ""); err != nil {
			return ctrl.Result{}, fmt.Errorf("writing the status of offer %s: %w", req, err)
		}
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
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
		// A reconcile mostly waits on its status write: with one worker, a
		// thousand providers' Offers lagged their Leases by six minutes.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Named("offer").
		Complete(r)
}
