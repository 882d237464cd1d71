package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
)

// WorkloadReconciler keeps a Workload's status true to its Leases and to the
// scheduler's last verdict. It never writes the spec, and it creates no
// Lease itself: placement is the Scheduler's alone.
type WorkloadReconciler struct {
	Client    client.Client
	Scheduler *Scheduler
}

// Reconcile computes the status and patches it once, only when it changed.
func (r *WorkloadReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	w := &flotillav1.Workload{}
	if err := r.Client.Get(ctx, req.NamespacedName, w); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var leases flotillav1.LeaseList
	if err := r.Client.List(ctx, &leases, client.InNamespace(w.Namespace), client.MatchingFields{indexLeaseWorkload: w.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing leases of workload %s: %w", req, err)
	}
	verdict, hasVerdict := r.Scheduler.Verdict(w.Namespace, w.Name)
	status := computeWorkloadStatus(w, leases.Items, verdict.Summary(), firstCode(verdict.Reasons), hasVerdict)
	if equality.Semantic.DeepEqual(status, w.Status) {
		return ctrl.Result{}, nil
	}
	patch := client.MergeFrom(w.DeepCopy())
	w.Status = status
	if err := r.Client.Status().Patch(ctx, w, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("patching status of workload %s: %w", req, err)
	}
	return ctrl.Result{}, nil
}

func firstCode(reasons []market.Reason) string {
	if len(reasons) == 0 {
		return ""
	}
	return reasons[0].Code
}

// SetupWithManager watches Workloads, their Leases and the scheduler's
// notifications.
func (r *WorkloadReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&flotillav1.Workload{}, builder.WithPredicates(specOrMetaChanged)).
		Owns(&flotillav1.Lease{}).
		WatchesRawSource(source.Channel(r.Scheduler.Events, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Named("workload").
		Complete(r)
}
