package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/lease"
	"github.com/flotilla-dev/flotilla/internal/render"
)

// ApplyLease server-side applies a Lease's objects on a provider: the
// namespace first, then what constrains and configures pods (quota,
// limits, network policy, config) in parallel, and the Deployment or Job
// last, so that no pod starts before its quota and limits exist. The hub
// applies this way in Push mode and the agent in Pull mode.
func ApplyLease(ctx context.Context, c client.Client, objs []*unstructured.Unstructured, fieldOwner string) error {
	one := func(obj *unstructured.Unstructured) error {
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		return nil
	}
	var first, middle, last []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace":
			first = append(first, o)
		case "Deployment", "Job":
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

// PruneLease deletes, in a Lease's namespace ns, the optional objects
// (render.Optional) that objs, what the Lease renders now, no longer
// holds. One that is not there, or that this identity may not touch (a
// provider that never allowed it), is left alone.
func PruneLease(ctx context.Context, c client.Client, ns string, objs []*unstructured.Unstructured) error {
	var errs []error
	for _, o := range render.Optional {
		if slices.ContainsFunc(objs, func(u *unstructured.Unstructured) bool { return u.GetKind() == o[0] && u.GetName() == o[1] }) {
			continue
		}
		var obj client.Object
		switch o[0] {
		case "NetworkPolicy":
			obj = &networkingv1.NetworkPolicy{}
		case "Service":
			obj = &corev1.Service{}
		case "Ingress":
			obj = &networkingv1.Ingress{}
		default:
			continue
		}
		obj.SetNamespace(ns)
		obj.SetName(o[1])
		if err := c.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) {
			errs = append(errs, fmt.Errorf("deleting %s %s: %w", o[0], o[1], err))
		}
	}
	return errors.Join(errs...)
}

// ReadLease reads a Lease's Deployment or Job and one page of its pods on
// a provider: running (bound to a node, not finished), ready, succeeded
// and failed replicas, each at most the leased count, and the result
// digest of a succeeded pod; and, when it exposes ports, the node ports
// and load-balancer address of its Service.
func ReadLease(ctx context.Context, c client.Reader, hubID, leaseUID string, batch, exposed bool, replicas int32) (lease.Observation, error) {
	var obs lease.Observation
	ns := render.Namespace(hubID, types.UID(leaseUID))
	if exposed {
		svc := &corev1.Service{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: render.ServiceName}, svc); err != nil {
			return obs, fmt.Errorf("reading service: %w", err)
		}
		obs.Endpoints = ServiceEndpoints(svc)
	}
	key := client.ObjectKey{Namespace: ns, Name: render.WorkloadName}
	var job *batchv1.Job
	if batch {
		job = &batchv1.Job{}
		if err := c.Get(ctx, key, job); err != nil {
			return obs, fmt.Errorf("reading job: %w", err)
		}
	} else if err := c.Get(ctx, key, &appsv1.Deployment{}); err != nil {
		return obs, fmt.Errorf("reading deployment: %w", err)
	}
	// A provider may hold any number of pods there; read a page and count
	// at most what was leased.
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{flotillav1.LabelLease: leaseUID},
		client.Limit(int64(replicas)*4+16)); err != nil {
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
	obs.Running, obs.Ready = min(obs.Running, replicas), min(obs.Ready, replicas)
	if job != nil {
		obs.Succeeded, obs.Failed = min(max(job.Status.Succeeded, 0), replicas), max(job.Status.Failed, 0)
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

// ServiceEndpoints are a Service's ports as its cluster allocated them:
// node ports, and the first load-balancer IP; at most eight.
func ServiceEndpoints(svc *corev1.Service) []flotillav1.ReportedEndpoint {
	ip := ""
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			ip = in.IP
			break
		}
	}
	var out []flotillav1.ReportedEndpoint
	for _, p := range svc.Spec.Ports {
		if len(out) == 8 {
			break
		}
		out = append(out, flotillav1.ReportedEndpoint{Port: p.Name, NodePort: p.NodePort, IP: ip})
	}
	return out
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
