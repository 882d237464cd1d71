package controllers

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/assign"
	"github.com/flotilla-dev/flotilla/internal/lease"
	"github.com/flotilla-dev/flotilla/internal/render"
)

// ManagerAssignment is the field manager of the Assignments' specs.
const ManagerAssignment = "flotilla-assignment"

// syncPull is sync for a Pull-mode provider: the hub never connects to
// it. It writes the Lease's Assignment in the provider's namespace on the
// hub when what it is rendered from changed (and every
// leaseReapplyInterval, so that changed ConfigMaps and Secrets of the
// tenant reach it), and reads the agent's report on it as the Lease's
// observation, bounded like any provider's answer.
func (r *LeaseReconciler) syncPull(ctx context.Context, l *flotillav1.Lease, w *flotillav1.Workload, p *flotillav1.Provider,
	st, old *flotillav1.LeaseStatus, in *lease.Input) lease.Result {
	key := r.assignmentKey(l)
	a := &flotillav1.Assignment{}
	if err := r.Client.Get(ctx, key, a); client.IgnoreNotFound(err) != nil {
		return lease.SyncFailed(st, *in, flotillav1.LeaseReasonReadFailed, err)
	} else if err != nil {
		a = nil
	}
	rin := r.renderInput(l, w, r.offerOf(ctx, l))
	hash := render.InputHash(rin)
	assigned := in.Now // when the agent could first see it
	if a != nil {
		assigned = a.CreationTimestamp.Time
	}
	if a == nil || st.AppliedHash != hash || st.LastApplyTime == nil || in.Now.Sub(r.lastRendered(l.UID, st.LastApplyTime.Time)) >= leaseReapplyInterval {
		written, reason, err := r.writeAssignment(ctx, l, key, a, rin)
		if err != nil {
			return lease.SyncFailed(st, *in, reason, err)
		}
		r.rendered.Store(l.UID, in.Now)
		// lastApplyTime says when the Assignment last changed.
		if written != nil || st.AppliedHash != hash || st.LastApplyTime == nil {
			st.AppliedHash, st.LastApplyTime = hash, timePtr(in.Now)
		}
		if written != nil {
			a = written
		}
	}
	rep := assign.Observe(l.Spec.Replicas, a.Spec.Hash, &a.Status)
	switch {
	case rep.Refused:
		res := lease.Refused(st, *in, p.Name, rep.Reason, rep.Message)
		_ = r.deleteAssignment(ctx, l)
		return res
	case !rep.Decided:
		// Not answered yet (or not this version): the progress deadline
		// ends a Lease whose agent never answers.
		return lease.Awaiting(st, *in, assigned, "waiting for the agent of provider "+p.Name+" to accept the assignment", rep.LastError)
	}
	events := r.checkEndpoints(l, w, p, rin.Offer, &rep.Observation, st, old)
	in.Pull = true
	in.Heard = r.Agents != nil && r.Agents.HeardThroughout(p.Name, in.LastSeen, in.Now)
	res := lease.Observed(st, old, *in, rep.Observation, p.Name)
	res.Events = append(res.Events, events...)
	st.LastError = rep.LastError
	res = lease.Starting(st, *in, assigned, res)
	r.seen.Store(l.UID, in.Now.Truncate(time.Second))
	in.LastSeen = in.Now
	if st.Phase == flotillav1.LeaseClosed {
		_ = r.deleteAssignment(ctx, l)
	}
	return res
}

// AssignNew writes a new Pull-mode Lease's Assignment as soon as the
// scheduler created the Lease, beside this controller's first turn rather
// than after it: in a failover on a loaded hub the wait for that turn was
// 2 s at p50 from a replacement Lease to its Assignment. The Lease's
// reconcile then finds the Assignment written and records it in status;
// anything that fails here is left to it. At most assignSlots run at
// once; a Lease that finds none waits for its reconcile, as before.
func (r *LeaseReconciler) AssignNew(ctx context.Context, l *flotillav1.Lease) {
	select {
	case r.assigning <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-r.assigning }()
		if err := r.assignNew(ctx, l); err != nil {
			ctrl.LoggerFrom(ctx).V(1).Info("Assignment left to the Lease's reconcile", "lease", l.Name, "error", err.Error())
		}
	}()
}

// assignSlots bounds the Assignments AssignNew writes at once.
const assignSlots = leaseWorkers / 2

func (r *LeaseReconciler) assignNew(ctx context.Context, l *flotillav1.Lease) error {
	p := &flotillav1.Provider{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: l.Spec.ProviderRef.Name}, p); err != nil {
		return err
	}
	// What reconcile would do now: a provider that is not Ready gets its
	// Assignments once it is.
	if !p.Spec.Pull() || p.Status.Phase != flotillav1.ProviderReady || p.DeletionTimestamp != nil {
		return nil
	}
	w := &flotillav1.Workload{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: l.Spec.WorkloadRef.Name}, w); err != nil {
		return err
	}
	_, _, err := r.writeAssignment(ctx, l, r.assignmentKey(l), nil, r.renderInput(l, w, r.offerOf(ctx, l)))
	return err
}

// assignmentKey names a Lease's Assignment: in its provider's namespace on
// the hub, named for this hub and the Lease.
func (r *LeaseReconciler) assignmentKey(l *flotillav1.Lease) client.ObjectKey {
	return client.ObjectKey{Namespace: flotillav1.ProviderNamespace(l.Spec.ProviderRef.Name), Name: assign.Name(r.HubID, l.UID)}
}

// lastRendered is when the Lease's Assignment was last rendered: applied
// at, or found unchanged since.
func (r *LeaseReconciler) lastRendered(uid types.UID, applied time.Time) time.Time {
	if v, ok := r.rendered.Load(uid); ok && v.(time.Time).After(applied) {
		return v.(time.Time)
	}
	return applied
}

// writeAssignment renders the Lease and writes its Assignment with
// server-side apply when the objects differ from what it holds. It
// returns the Assignment as written, or nil when nothing changed.
func (r *LeaseReconciler) writeAssignment(ctx context.Context, l *flotillav1.Lease, key client.ObjectKey,
	cur *flotillav1.Assignment, rin render.Input) (*flotillav1.Assignment, string, error) {
	if err := r.readReferences(ctx, l.Namespace, &rin); err != nil {
		return nil, flotillav1.LeaseReasonRenderFailed, err
	}
	objs, err := render.Lease(rin)
	if err != nil {
		return nil, flotillav1.LeaseReasonRenderFailed, err
	}
	spec, err := assign.Build(l, r.HubID, objs)
	if err != nil {
		return nil, flotillav1.LeaseReasonRenderFailed, err
	}
	if cur != nil && cur.Spec.Hash == spec.Hash {
		return nil, "", nil
	}
	a := &flotillav1.Assignment{
		TypeMeta:   metav1.TypeMeta{APIVersion: flotillav1.GroupVersion.String(), Kind: "Assignment"},
		ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace, Labels: map[string]string{flotillav1.LabelProvider: l.Spec.ProviderRef.Name}},
		Spec:       spec,
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(a)
	if err != nil {
		return nil, flotillav1.LeaseReasonApplyFailed, err
	}
	delete(u, "status")
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u}),
		client.FieldOwner(ManagerAssignment), client.ForceOwnership); err != nil {
		return nil, flotillav1.LeaseReasonApplyFailed, fmt.Errorf("writing assignment %s: %w", key, err)
	}
	if cur != nil {
		a.Status = cur.Status
	}
	return a, "", nil
}

// deleteAssignment withdraws a Lease's Assignment; its agent then removes
// the Lease's objects on its cluster.
func (r *LeaseReconciler) deleteAssignment(ctx context.Context, l *flotillav1.Lease) error {
	a := &flotillav1.Assignment{}
	key := r.assignmentKey(l)
	// A closed Lease is looked at again at every change until it goes, and
	// each look deleted its long gone Assignment once more (the most
	// frequent write in make bench-scale). One the cache has not seen yet
	// is caught by the Provider controller's sweep.
	if err := r.Client.Get(ctx, key, a); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading assignment %s: %w", key.Name, err)
	}
	if a.DeletionTimestamp != nil {
		return nil
	}
	if err := r.Client.Delete(ctx, a); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("withdrawing assignment %s: %w", a.Name, err)
	}
	return nil
}

// leaseOfAssignment wakes the Lease an Assignment carries out when its
// agent reports.
func leaseOfAssignment(_ context.Context, o client.Object) []reconcile.Request {
	a, ok := o.(*flotillav1.Assignment)
	if !ok || a.Spec.LeaseRef.Name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: a.Spec.LeaseRef.Namespace, Name: a.Spec.LeaseRef.Name}}}
}
