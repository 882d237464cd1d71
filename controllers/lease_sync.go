package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/endpoint"
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

// offerOf is the Offer a Lease was sold from, or nil once it is
// withdrawn: the Lease keeps what it has, and nothing the Offer opted
// into.
func (r *LeaseReconciler) offerOf(ctx context.Context, l *flotillav1.Lease) *flotillav1.Offer {
	offer := &flotillav1.Offer{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: l.Spec.OfferRef.Namespace, Name: l.Spec.OfferRef.Name}, offer); err != nil {
		return nil
	}
	return offer
}

// applyObjects reads what the template references, renders the Lease's
// objects and applies them, and when what they are rendered from changed
// (prune) deletes the optional ones no longer rendered; a failure comes
// with the Ready reason it gives the Lease.
func (r *LeaseReconciler) applyObjects(ctx context.Context, cl *remote.Client, l *flotillav1.Lease, p *flotillav1.Provider,
	in render.Input, prune bool) (string, error) {
	if err := r.readReferences(ctx, l.Namespace, &in); err != nil {
		return flotillav1.LeaseReasonRenderFailed, err
	}
	objs, err := render.Lease(in)
	if err != nil {
		return flotillav1.LeaseReasonRenderFailed, err
	}
	start := time.Now()
	err = r.apply(ctx, cl, objs, prune)
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

// apply server-side applies the objects in order (remote.ApplyLease),
// then prunes (remote.PruneLease) when asked.
func (r *LeaseReconciler) apply(ctx context.Context, cl *remote.Client, objs []client.Object, prune bool) error {
	us := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return err
		}
		delete(u, "status")
		unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
		us = append(us, &unstructured.Unstructured{Object: u})
	}
	if err := remote.ApplyLease(ctx, cl, us, FieldManager); err != nil {
		return err
	}
	if !prune || len(us) == 0 {
		return nil
	}
	return remote.PruneLease(ctx, cl, us[0].GetName(), us)
}

// readBack reads the Lease's workload object and its pods on the
// provider, and its Service when it exposes ports.
func (r *LeaseReconciler) readBack(ctx context.Context, cl *remote.Client, l *flotillav1.Lease, exposed bool) (lease.Observation, error) {
	return remote.ReadLease(ctx, cl, r.HubID, string(l.UID), l.Spec.Class == flotillav1.ClassBatch, exposed, l.Spec.Replicas)
}

// refreshEndpoints writes the prober's verdicts on the endpoints st
// already lists, when the provider cannot be read: the hub's own checks do
// not need the provider's API server, and a provider that vanished must
// not keep its endpoints listed as reachable until it is declared Lost.
func (r *LeaseReconciler) refreshEndpoints(l *flotillav1.Lease, st *flotillav1.LeaseStatus) {
	if r.Prober == nil {
		return
	}
	for i := range st.Endpoints {
		e := &st.Endpoints[i]
		if v, ok := r.Prober.Known(l.Namespace+"/"+l.Name, e.Port, e.Address); ok {
			e.Reachable, e.Message = v.Reachable, bound.Text(v.Message, 256)
		}
		if e.Reachable {
			e.Message = ""
		}
	}
}

// checkEndpoints composes the Lease's endpoints from what its provider
// reported, hands them to the prober, and writes the prober's verdicts
// (the last written ones while it has none, as after a restart) into st.
// An exposed Lease whose endpoints do not all answer is marked in obs as
// unreachable: its replicas are then neither counted nor charged. Each
// time a serving Lease stops answering while its provider reports
// replicas ready, it counts against the provider's reputation, and the
// events returned say so on the Lease and its Workload.
func (r *LeaseReconciler) checkEndpoints(l *flotillav1.Lease, w *flotillav1.Workload, p *flotillav1.Provider, o *flotillav1.OfferSpec,
	obs *lease.Observation, st, old *flotillav1.LeaseStatus) []lease.Event {
	key := l.Namespace + "/" + l.Name
	want := endpoint.Wanted(w, o)
	if want == 0 || r.Prober == nil {
		st.Endpoints = nil
		if r.Prober != nil {
			r.Prober.Forget(key)
		}
		return nil
	}
	targets := endpoint.Compose(w, o, render.Namespace(r.HubID, l.UID), obs.Endpoints, endpoint.Ranges(p.Spec.EndpointRanges))
	r.Prober.Set(key, p.Name, targets)
	eps := make([]flotillav1.LeaseEndpoint, len(targets))
	why := ""
	if len(targets) < want {
		why = fmt.Sprintf("%d of %d exposed ports are reported by the provider", len(targets), want)
	}
	for i, t := range targets {
		e := flotillav1.LeaseEndpoint{Port: t.Port, Address: bound.Text(t.Address, 300), Message: "not checked yet"}
		if v, ok := r.Prober.Known(key, e.Port, e.Address); ok {
			e.Reachable, e.Message = v.Reachable, v.Message
		} else if j := slices.IndexFunc(old.Endpoints, func(x flotillav1.LeaseEndpoint) bool { return x.Port == e.Port && x.Address == e.Address }); j >= 0 {
			e.Reachable, e.Message = old.Endpoints[j].Reachable, old.Endpoints[j].Message
		}
		if e.Reachable {
			e.Message = ""
		} else if why == "" {
			why = fmt.Sprintf("endpoint %s at %s does not answer the hub (%s)", e.Port, e.Address, e.Message)
		}
		e.Message = bound.Text(e.Message, 256)
		eps[i] = e
	}
	st.Endpoints = eps
	if why == "" {
		return nil
	}
	serving := len(old.Endpoints) == want && !slices.ContainsFunc(old.Endpoints, func(x flotillav1.LeaseEndpoint) bool { return !x.Reachable })
	obs.Unreachable = why
	if !serving || obs.Ready == 0 {
		return nil
	}
	st.UnreachableCount = min(st.UnreachableCount+1, 1<<20)
	metrics.EndpointUnreachable()
	msg := fmt.Sprintf("Lease %s on provider %s: %s while it reports %d replicas ready; they are neither counted nor charged", l.Name, p.Name, why, obs.Ready)
	return []lease.Event{{Warning: true, Reason: flotillav1.LeaseReasonUnreachable, Message: msg},
		{OnWorkload: true, Warning: true, Reason: flotillav1.LeaseReasonUnreachable, Message: msg}}
}

func timePtr(t time.Time) *metav1.Time { return &metav1.Time{Time: t} }
