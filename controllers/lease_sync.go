package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/internal/render"
)

// renderInput is what the Lease's objects are rendered from, but for the
// tenant's ConfigMaps and Secrets, which are read only when they are
// applied.
func (r *LeaseReconciler) renderInput(l *flotillav1.Lease, w *flotillav1.Workload, offer *flotillav1.Offer) render.Input {
	in := render.Input{HubID: r.HubID, Lease: l, Workload: w}
	if offer != nil {
		in.Offer = &offer.Spec
	}
	return in
}

// applyObjects reads what the template references, renders the Lease's
// objects and applies them; failed reports a sync that went wrong, with
// the result to return.
func (r *LeaseReconciler) applyObjects(ctx context.Context, cl *remote.Client, l *flotillav1.Lease, p *flotillav1.Provider,
	in render.Input, st *flotillav1.LeaseStatus) (ctrl.Result, bool) {
	if err := r.readReferences(ctx, l.Namespace, &in); err != nil {
		return r.failSync(l, st, ReasonRenderFailed, err), true
	}
	objs, err := render.Lease(in)
	if err != nil {
		return r.failSync(l, st, ReasonRenderFailed, err), true
	}
	start := time.Now()
	err = r.apply(ctx, cl, objs)
	metrics.RemoteRequest(p.Name, "apply", time.Since(start))
	if err != nil {
		r.Recorder.Eventf(l, "Warning", ReasonApplyFailed, "Applying on provider %s: %s", p.Name, bound.Error(err))
		return r.failSync(l, st, ReasonApplyFailed, err), true
	}
	return ctrl.Result{}, false
}

// readReferences reads, straight from the API server, the ConfigMaps and
// Secrets the template refers to: the manager caches no tenant's.
func (r *LeaseReconciler) readReferences(ctx context.Context, ns string, in *render.Input) error {
	cms, secs := render.References(&in.Workload.Spec.Template.Spec)
	if n := len(cms) + len(secs); n > render.MaxReferences {
		return fmt.Errorf("the template refers to %d ConfigMaps and Secrets, more than the %d a Lease may copy", n, render.MaxReferences)
	}
	for _, name := range cms {
		cm := corev1.ConfigMap{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cm); err != nil {
			return fmt.Errorf("reading ConfigMap %s referenced by the template: %w", name, err)
		}
		in.ConfigMaps = append(in.ConfigMaps, cm)
	}
	for _, name := range secs {
		s := corev1.Secret{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
			return fmt.Errorf("reading Secret %s referenced by the template: %w", name, err)
		}
		in.Secrets = append(in.Secrets, s)
	}
	return nil
}

// apply server-side applies the objects: the namespace first, then what
// constrains and configures pods (quota, limits, network policy, config) in
// parallel, and the Deployment or Job last, so that no pod starts before its
// quota and limits exist.
func (r *LeaseReconciler) apply(ctx context.Context, cl *remote.Client, objs []client.Object) error {
	one := func(o client.Object) error {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return err
		}
		delete(u, "status")
		unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
		obj := &unstructured.Unstructured{Object: u}
		if err := cl.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		return nil
	}
	var first, middle, last []client.Object
	for _, o := range objs {
		switch o.(type) {
		case *corev1.Namespace:
			first = append(first, o)
		case *appsv1.Deployment, *batchv1.Job:
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

// leaseObservation is one look at a Lease on its provider. Counts are the
// provider's word, capped at what was leased.
type leaseObservation struct {
	// running pods are bound to a node and not finished: what is charged.
	running, ready, succeeded, failed int32
	// complete and failedJob: the Job ended (Batch); message says why.
	complete, failedJob bool
	message             string
	digest              string
}

// readBack reads the Lease's workload object and its pods on the provider.
func (r *LeaseReconciler) readBack(ctx context.Context, cl *remote.Client, l *flotillav1.Lease) (leaseObservation, error) {
	var obs leaseObservation
	ns := render.Namespace(r.HubID, l.UID)
	key := client.ObjectKey{Namespace: ns, Name: render.WorkloadName}
	var job *batchv1.Job
	if l.Spec.Class == flotillav1.ClassBatch {
		job = &batchv1.Job{}
		if err := cl.Get(ctx, key, job); err != nil {
			return obs, fmt.Errorf("reading job: %w", err)
		}
	} else if err := cl.Get(ctx, key, &appsv1.Deployment{}); err != nil {
		return obs, fmt.Errorf("reading deployment: %w", err)
	}
	// A provider may hold any number of pods there; the hub reads a page
	// and counts at most what was leased.
	var pods corev1.PodList
	if err := cl.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{flotillav1.LabelLease: string(l.UID)},
		client.Limit(int64(l.Spec.Replicas)*4+16)); err != nil {
		return obs, fmt.Errorf("listing pods: %w", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		finished := p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		if p.Spec.NodeName != "" && !finished {
			obs.running++
			if podReady(p) {
				obs.ready++
			}
		}
		if obs.digest == "" && p.Status.Phase == corev1.PodSucceeded {
			obs.digest = resultDigest(p)
		}
	}
	obs.running, obs.ready = min(obs.running, l.Spec.Replicas), min(obs.ready, l.Spec.Replicas)
	if job != nil {
		obs.succeeded, obs.failed = min(max(job.Status.Succeeded, 0), l.Spec.Replicas), max(job.Status.Failed, 0)
		for _, c := range job.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case batchv1.JobComplete:
				obs.complete = true
			case batchv1.JobFailed:
				obs.failedJob, obs.message = true, c.Message
			}
		}
	}
	return obs, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// resultDigest is the termination message of the first container of a
// succeeded pod, when it looks like "sha256:<hex>".
func resultDigest(p *corev1.Pod) string {
	if len(p.Status.ContainerStatuses) == 0 {
		return ""
	}
	t := p.Status.ContainerStatuses[0].State.Terminated
	if t == nil {
		return ""
	}
	if d := strings.TrimSpace(t.Message); strings.HasPrefix(d, "sha256:") && len(d) <= 128 {
		return d
	}
	return ""
}

// observe takes one look into status: counts, metering, and the end of a
// Batch Lease.
func (r *LeaseReconciler) observe(l *flotillav1.Lease, st, old *flotillav1.LeaseStatus, obs leaseObservation, now time.Time) {
	st.RunningReplicas, st.ReadyReplicas = obs.running, obs.ready
	st.SucceededReplicas, st.FailedReplicas = obs.succeeded, obs.failed
	switch {
	case obs.complete:
		st.Digest = obs.digest
		st.Phase, st.Outcome = flotillav1.LeaseClosed, flotillav1.OutcomeCompleted
		setLeaseReady(st, l, metav1.ConditionTrue, ReasonJobCompleted, fmt.Sprintf("%d replicas succeeded", obs.succeeded))
	case obs.failedJob:
		st.Phase, st.Outcome = flotillav1.LeaseClosed, flotillav1.OutcomeFailed
		setLeaseReady(st, l, metav1.ConditionFalse, ReasonJobFailed, obs.message)
	}
	r.meter(l, st, old, now)
}

// progress closes the Lease when its replicas have not been ready for the
// Workload's progress deadline: a provider that never runs what it took,
// or runs it without it ever turning ready, neither holds the capacity nor
// is paid past it. Otherwise it returns res, sooner when the deadline
// comes first.
func (r *LeaseReconciler) progress(l *flotillav1.Lease, w *flotillav1.Workload, st *flotillav1.LeaseStatus, now time.Time, res ctrl.Result) ctrl.Result {
	if st.Phase == flotillav1.LeaseClosed {
		return res
	}
	done := st.ReadyReplicas
	if l.Spec.Class == flotillav1.ClassBatch {
		done += st.SucceededReplicas
	}
	if done >= l.Spec.Replicas {
		st.NotReadySince = nil
		return res
	}
	if st.NotReadySince == nil {
		since := now
		if st.Phase == "" || st.Phase == flotillav1.LeasePending {
			since = l.CreationTimestamp.Time // never ran yet: the deadline counts from placement
		}
		st.NotReadySince = &metav1.Time{Time: since}
	}
	deadline := defaultProgressDeadline
	if d := w.Spec.ProgressDeadlineSeconds; d != nil {
		deadline = time.Duration(*d) * time.Second
	}
	left := st.NotReadySince.Add(deadline).Sub(now)
	if left > 0 {
		if res.RequeueAfter == 0 || res.RequeueAfter > left {
			res.RequeueAfter = left + 10*time.Millisecond
		}
		return res
	}
	r.meterUntilLastSeen(l, st)
	msg := fmt.Sprintf("%d of %d replicas ready on %s after %s (progress deadline %s); replicas placed elsewhere",
		done, l.Spec.Replicas, l.Spec.ProviderRef.Name, now.Sub(st.NotReadySince.Time).Round(time.Second), deadline)
	st.Phase, st.Outcome = flotillav1.LeaseClosed, flotillav1.OutcomeProgressDeadlineExceeded
	st.ReadyReplicas, st.RunningReplicas = 0, 0
	setLeaseReady(st, l, metav1.ConditionFalse, ReasonNoProgress, msg)
	metrics.ProgressDeadlineExceeded()
	r.Recorder.Eventf(w, "Warning", ReasonNoProgress, "Closed lease %s: %s", l.Name, msg)
	return ctrl.Result{RequeueAfter: time.Millisecond}
}

func setLastError(st *flotillav1.LeaseStatus, err error) { st.LastError = bound.Error(err) }
