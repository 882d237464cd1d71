package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/quorum"
)

// WorkloadReconciler keeps a Workload's status true to its Leases and to the
// scheduler's last verdict. It never writes the spec, and it creates no
// Lease itself: placement is the Scheduler's alone.
type WorkloadReconciler struct {
	Client    client.Client
	Scheduler *Scheduler
	Recorder  record.EventRecorder
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
	if err := r.recordVerdicts(ctx, w, &status, leases.Items); err != nil {
		return ctrl.Result{}, err
	}
	if equality.Semantic.DeepEqual(status, w.Status) {
		return ctrl.Result{}, nil
	}
	// The bank writes the BudgetExhausted condition of the same list: a
	// stale copy must not drop it.
	patch := client.MergeFromWithOptions(w.DeepCopy(), client.MergeFromWithOptimisticLock{})
	was := w.Status
	w.Status = status
	if err := r.Client.Status().Patch(ctx, w, patch); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, fmt.Errorf("patching status of workload %s: %w", req, err)
	}
	if status.VerifiedDigest != "" && was.VerifiedDigest == "" {
		metrics.Verification(ReasonQuorumReached)
		r.Recorder.Eventf(w, "Normal", ReasonQuorumReached, "Result verified: %s", apimeta.FindStatusCondition(status.Conditions, flotillav1.WorkloadVerified).Message)
	}
	if c := apimeta.FindStatusCondition(status.Conditions, flotillav1.WorkloadVerified); c != nil && c.Reason == quorum.ReasonNoQuorum &&
		(was.Phase != flotillav1.WorkloadFailed) {
		metrics.Verification(quorum.ReasonNoQuorum)
		r.Recorder.Eventf(w, "Warning", quorum.ReasonNoQuorum, "Verification failed: %s", c.Message)
	}
	return ctrl.Result{}, nil
}

// recordVerdicts writes each copy's verdict on its Lease, once, so that its
// provider's reputation counts it; a dissent is announced as an event.
func (r *WorkloadReconciler) recordVerdicts(ctx context.Context, w *flotillav1.Workload, st *flotillav1.WorkloadStatus, leases []flotillav1.Lease) error {
	if st.Verification == nil {
		return nil
	}
	byName := make(map[string]*flotillav1.Lease, len(leases))
	for i := range leases {
		byName[leases[i].Name] = &leases[i]
	}
	for _, res := range st.Verification.Results {
		l := byName[res.Lease]
		if res.Verdict == "" || l == nil || l.Status.Verdict == res.Verdict {
			continue
		}
		patch := client.MergeFrom(l.DeepCopy())
		l.Status.Verdict = res.Verdict
		if err := r.Client.Status().Patch(ctx, l, patch); err != nil {
			return fmt.Errorf("recording verdict on lease %s: %w", l.Name, err)
		}
		if res.Verdict == flotillav1.VerdictDissented {
			metrics.Dissent()
			r.Recorder.Eventf(w, "Warning", "ResultDissented", "Copy on provider %s (owner %s, lease %s) reported %s, not the verified %s",
				res.Provider, res.Owner, res.Lease, orNone(res.Digest), st.VerifiedDigest)
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "no digest"
	}
	return s
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
