package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

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
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/placement"
)

// WorkloadReconciler keeps a Workload's status true to its Leases and to the
// scheduler's last verdict (internal/placement derives it), and writes each
// verified copy's verdict on its Lease. It never writes the spec, and it
// creates no Lease itself: placement is the Scheduler's alone.
type WorkloadReconciler struct {
	Client    client.Client
	Scheduler *Scheduler
	Recorder  record.EventRecorder
	// EntryURL is the hub's entry point for stable addresses; "" when it
	// serves none.
	EntryURL string

	// written is a digest of the status last written, by Workload: the
	// cache may not show that write yet, and a status equal to the cached
	// one is then still worth writing (see Reconcile).
	written sync.Map
}

// Reconcile computes the status and writes it once, only when it changed.
func (r *WorkloadReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	w := &flotillav1.Workload{}
	if err := r.Client.Get(ctx, req.NamespacedName, w); err != nil {
		if apierrors.IsNotFound(err) {
			r.written.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var list flotillav1.LeaseList
	if err := r.Client.List(ctx, &list, client.InNamespace(w.Namespace), client.MatchingFields{indexLeaseWorkload: w.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing leases of workload %s: %w", req, err)
	}
	leases := make([]*flotillav1.Lease, len(list.Items))
	for i := range list.Items {
		leases[i] = &list.Items[i]
	}
	status := placement.WorkloadStatus(w, leases, r.Scheduler.Verdict(w.Namespace, w.Name))
	if e := w.Spec.Expose; e != nil && e.StableAddress && r.EntryURL != "" {
		status.Address = strings.TrimSuffix(r.EntryURL, "/") + "/" + w.Namespace + "/" + w.Name + "/"
	}
	if err := r.recordVerdicts(ctx, w, &status, leases); err != nil {
		return ctrl.Result{}, err
	}
	// The bank owns the BudgetExhausted condition: compare without it.
	mine := w.Status.DeepCopy()
	apimeta.RemoveStatusCondition(&mine.Conditions, flotillav1.WorkloadBudgetExhausted)
	if len(mine.Conditions) == 0 {
		mine.Conditions = nil
	}
	// Equal to the cached status is not enough when this controller last
	// wrote another one: the cache may not show that write yet, and its
	// own status writes wake no reconcile. (A restarted manager wrote
	// WaitingForScheduler before its first cycle, the next reconcile found
	// InsufficientCapacity in the stale cache, and the Workload kept
	// saying WaitingForScheduler.)
	digest := statusDigest(&status)
	last, wrote := r.written.Load(req.NamespacedName)
	if equality.Semantic.DeepEqual(&status, mine) && (!wrote || last == digest) {
		return ctrl.Result{}, nil
	}
	if err := applyStatus(ctx, r.Client, w, &status, ManagerWorkload, ""); err != nil {
		r.written.Delete(req.NamespacedName) // not known what the server has now
		return ctrl.Result{}, fmt.Errorf("writing the status of workload %s: %w", req, err)
	}
	r.written.Store(req.NamespacedName, digest)
	r.announce(w, mine, &status)
	return ctrl.Result{}, nil
}

// statusDigest identifies a status as written.
func statusDigest(st *flotillav1.WorkloadStatus) [sha256.Size]byte {
	b, _ := json.Marshal(st) // plain data: cannot fail
	return sha256.Sum256(b)
}

// announce records the verification's outcome once, when it changes.
func (r *WorkloadReconciler) announce(w *flotillav1.Workload, was, now *flotillav1.WorkloadStatus) {
	c := apimeta.FindStatusCondition(now.Conditions, flotillav1.WorkloadVerified)
	switch {
	case c == nil:
	case now.VerifiedDigest != "" && was.VerifiedDigest == "":
		metrics.Verification(flotillav1.WorkloadReasonQuorumReached)
		r.Recorder.Eventf(w, "Normal", flotillav1.WorkloadReasonQuorumReached, "Result verified: %s", c.Message)
	case c.Reason == flotillav1.WorkloadReasonQuorumNotReached && was.Phase != flotillav1.WorkloadFailed:
		metrics.Verification(flotillav1.WorkloadReasonQuorumNotReached)
		r.Recorder.Eventf(w, "Warning", flotillav1.WorkloadReasonQuorumNotReached, "Verification failed: %s", c.Message)
	}
}

// recordVerdicts writes each copy's verdict on its Lease (its one field the
// verification owns), once, so that its provider's reputation counts it; a
// dissent is announced as an event.
func (r *WorkloadReconciler) recordVerdicts(ctx context.Context, w *flotillav1.Workload, st *flotillav1.WorkloadStatus, leases []*flotillav1.Lease) error {
	if st.Verification == nil {
		return nil
	}
	byName := make(map[string]*flotillav1.Lease, len(leases))
	for _, l := range leases {
		byName[l.Name] = l
	}
	for _, res := range st.Verification.Results {
		l := byName[res.Lease]
		if res.Verdict == "" || l == nil || l.Status.Verdict == res.Verdict {
			continue
		}
		if err := applyStatus(ctx, r.Client, l, map[string]any{"verdict": string(res.Verdict)}, ManagerVerification, l.ResourceVersion); client.IgnoreNotFound(err) != nil {
			if apierrors.IsConflict(err) {
				continue // the Lease changed; its verdict is written at the next reconcile
			}
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

// workloadWorkers reconcile Workloads side by side. A reconcile mostly
// waits for its status write; when five of fifty providers failed at once,
// four workers were busy the whole failover and a Workload waited 8 s in
// the queue to say it was whole again.
const workloadWorkers = 16

// SetupWithManager watches Workloads, their Leases and the scheduler's
// notifications.
func (r *WorkloadReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&flotillav1.Workload{}, builder.WithPredicates(specOrMetaChanged)).
		Owns(&flotillav1.Lease{}).
		WatchesRawSource(source.Channel(r.Scheduler.Events, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: workloadWorkers}).
		Named("workload").
		Complete(r)
}
