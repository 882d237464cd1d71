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
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/lease"
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
// objects and applies them; a failure comes with the Ready reason it
// gives the Lease.
func (r *LeaseReconciler) applyObjects(ctx context.Context, cl *remote.Client, l *flotillav1.Lease, p *flotillav1.Provider,
	in render.Input) (string, error) {
	if err := r.readReferences(ctx, l.Namespace, &in); err != nil {
		return flotillav1.LeaseReasonRenderFailed, err
	}
	objs, err := render.Lease(in)
	if err != nil {
		return flotillav1.LeaseReasonRenderFailed, err
	}
	start := time.Now()
	err = r.apply(ctx, cl, objs)
	metrics.RemoteRequest(p.Name, "apply", time.Since(start))
	if err != nil {
		return flotillav1.LeaseReasonApplyFailed, err
	}
	return "", nil
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

// readBack reads the Lease's workload object and its pods on the provider.
func (r *LeaseReconciler) readBack(ctx context.Context, cl *remote.Client, l *flotillav1.Lease) (lease.Observation, error) {
	var obs lease.Observation
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
			obs.Running++
			if podReady(p) {
				obs.Ready++
			}
		}
		if obs.Digest == "" && p.Status.Phase == corev1.PodSucceeded {
			obs.Digest = resultDigest(p)
		}
	}
	obs.Running, obs.Ready = min(obs.Running, l.Spec.Replicas), min(obs.Ready, l.Spec.Replicas)
	if job != nil {
		obs.Succeeded, obs.Failed = min(max(job.Status.Succeeded, 0), l.Spec.Replicas), max(job.Status.Failed, 0)
		for _, c := range job.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case batchv1.JobComplete:
				obs.Complete = true
			case batchv1.JobFailed:
				obs.JobFailed, obs.Message = true, c.Message
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

func timePtr(t time.Time) *metav1.Time { return &metav1.Time{Time: t} }
