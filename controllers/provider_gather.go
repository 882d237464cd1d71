package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/health"
	"github.com/flotilla-dev/flotilla/internal/metrics"
	"github.com/flotilla-dev/flotilla/internal/remote"
)

// heartbeatLeasePrefix names the agent's heartbeat in flotilla-system.
const heartbeatLeasePrefix = "provider-"

// gather is what the hub observes of a provider now: a probe of its API
// server, fencing of its stale namespaces when it answers, and its agent's
// heartbeat.
func (r *ProviderReconciler) gather(ctx context.Context, p *flotillav1.Provider) health.Input {
	in := health.Input{Now: r.Now(), Generation: p.Generation, Unschedulable: p.Spec.Unschedulable, Status: p.Status}
	in.Heartbeat, in.HeartbeatSeen = r.heartbeat(ctx, p.Name, in.Now)
	if p.Spec.Pull() {
		// The hub never connects to it: its agent's heartbeat is the
		// probe, and the agent fences itself.
		in.Pull, in.Since = true, r.Since
		if err := r.sweepAssignments(ctx, p); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Removing stale assignments")
		}
		return in
	}
	cl, reason, err := providerClient(ctx, r.Client, r.Remote, p)
	if err != nil {
		in.Probe = health.Probe{Reason: reason, Message: err.Error()}
		return in
	}
	probeCtx, cancel := context.WithTimeout(ctx, 2*remote.DefaultOptions.RequestTimeout)
	start := time.Now()
	obs, err := cl.Probe(probeCtx)
	metrics.RemoteRequest(p.Name, "probe", time.Since(start))
	cancel()
	if err != nil {
		in.Probe = health.Probe{Reason: remote.Classify(err), Message: err.Error()}
		return in
	}
	in.Probe = health.Probe{OK: true, Reason: flotillav1.ProviderReasonProbeSucceeded,
		Message:           fmt.Sprintf("%s answered; %d schedulable nodes", cl.Host, obs.Nodes),
		KubernetesVersion: obs.KubernetesVersion,
		Capacity: flotillav1.ProviderCapacity{Nodes: obs.Nodes, Allocatable: obs.Allocatable.List(), Allocated: obs.Allocated.List(),
			Free: obs.Free.List(), LargestFreeChunk: obs.LargestChunk.List()},
	}
	if err := r.fence(ctx, p, cl); err != nil {
		in.FenceError = bound.Error(err)
	}
	return in
}

// providerClient returns the provider's API client from its kubeconfig
// Secret, and a Reachable reason when it cannot.
func providerClient(ctx context.Context, c client.Client, cache *remote.Cache, p *flotillav1.Provider) (*remote.Client, string, error) {
	if p.Spec.Pull() {
		return nil, flotillav1.ProviderReasonKubeconfigMissing, errors.New("provider " + p.Name + " is in pull mode: the hub holds no credential for it")
	}
	ref := p.Spec.KubeconfigSecretRef
	if ref == nil {
		return nil, flotillav1.ProviderReasonKubeconfigMissing, errors.New("spec.kubeconfigSecretRef is not set")
	}
	key := ref.Key
	if key == "" {
		key = "kubeconfig"
	}
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: ref.Name}, sec); err != nil {
		return nil, flotillav1.ProviderReasonKubeconfigMissing, fmt.Errorf("reading kubeconfig Secret %s/%s: %w", flotillav1.SystemNamespace, ref.Name, err)
	}
	data, ok := sec.Data[key]
	if !ok {
		return nil, flotillav1.ProviderReasonKubeconfigMissing, fmt.Errorf("kubeconfig Secret %s/%s has no key %q", flotillav1.SystemNamespace, ref.Name, key)
	}
	cl, err := cache.Get(p.Name, sec.ResourceVersion, data, p.Spec.APIServerURL)
	if err != nil {
		return nil, remote.Classify(err), fmt.Errorf("kubeconfig Secret %s/%s: %w", flotillav1.SystemNamespace, ref.Name, err)
	}
	return cl, "", nil
}

// heartbeat returns the renew time of the agent's coordination Lease as
// written, to compare with the last one seen ("" when there is none), and
// when this process first saw it.
func (r *ProviderReconciler) heartbeat(ctx context.Context, provider string, now time.Time) (string, time.Time) {
	l := &coordinationv1.Lease{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: heartbeatLeasePrefix + provider}, l); err != nil {
		return "", time.Time{}
	}
	v := renewValue(l)
	if v == "" {
		return "", time.Time{}
	}
	seen, _ := r.noteBeat(provider, v, now)
	return v, seen
}

// noteBeat returns when this process first saw heartbeat v of provider,
// noting now when v is new (changed is then true).
func (r *ProviderReconciler) noteBeat(provider, v string, now time.Time) (seen time.Time, changed bool) {
	b, ok := r.beats.Load(provider)
	if ok && b.(heartbeat).value == v {
		return b.(heartbeat).seen, false
	}
	since := now
	if ok && now.Sub(b.(heartbeat).seen) <= r.grace() {
		since = b.(heartbeat).since
	}
	r.beats.Store(provider, heartbeat{value: v, seen: now, since: since})
	return now, true
}

// HeardThroughout reports whether this process heard a Pull-mode
// provider's agent all the time from from to to: its heartbeats seen
// renewed since from or earlier, never a grace period apart, the last
// within the grace period of to. Its Leases' usage counts that time as
// watched (lease.Input.Heard).
func (r *ProviderReconciler) HeardThroughout(provider string, from, to time.Time) bool {
	b, ok := r.heardSince(provider, from)
	return ok && to.Sub(b.seen) <= r.grace()
}

// LastHeard is the last beat this process saw of a Pull-mode provider's
// agent, when it heard it throughout since from; from otherwise.
func (r *ProviderReconciler) LastHeard(provider string, from time.Time) time.Time {
	if b, ok := r.heardSince(provider, from); ok && b.seen.After(from) {
		return b.seen
	}
	return from
}

// heardSince is the provider's last beat, when the run of beats it ends
// began at from or earlier.
func (r *ProviderReconciler) heardSince(provider string, from time.Time) (heartbeat, bool) {
	v, ok := r.beats.Load(provider)
	if !ok || from.IsZero() {
		return heartbeat{}, false
	}
	b := v.(heartbeat)
	return b, !b.since.After(from)
}

// Silent lists the Pull-mode providers whose heartbeat this process saw
// but has not seen renewed for more than three quarters of the grace
// period. They stay Ready until it ends, but the scheduler gives them no
// new replicas: when ten percent of providers stopped at once, the first
// found Lost had their replicas placed on others about to be, which then
// moved a second time. Beats are noted as the watch delivers them, so a
// busy queue does not make a provider look silent; Push-mode providers'
// probes wait in that queue, so they are left out.
func (r *ProviderReconciler) Silent(now time.Time) map[string]bool {
	out := map[string]bool{}
	r.beats.Range(func(k, v any) bool {
		if r.silent(v.(heartbeat), now) {
			out[k.(string)] = true
		}
		return true
	})
	return out
}

func (r *ProviderReconciler) silent(b heartbeat, now time.Time) bool {
	return now.Sub(b.seen) > r.grace()*3/4
}

// renewValue is a heartbeat Lease's renew time as heartbeat and markLost
// compare it; "" when it has none.
func renewValue(l *coordinationv1.Lease) string {
	if l.Spec.RenewTime == nil {
		return ""
	}
	return l.Spec.RenewTime.UTC().Format(time.RFC3339Nano)
}

// markLost tells a Pull-mode provider's agent that the hub declared it
// Lost, by annotating its heartbeat Lease, only if the heartbeat is still
// the one judged stale: a Conflict means it beat meanwhile. The agent
// does not beat again until a round of reading its Assignments has fenced
// what the hub may now move elsewhere (see internal/agent).
func (r *ProviderReconciler) markLost(ctx context.Context, provider, judged string) error {
	l := &coordinationv1.Lease{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: heartbeatLeasePrefix + provider}, l); err != nil {
		return client.IgnoreNotFound(err)
	}
	if l.Annotations[flotillav1.AnnotationLost] != "" {
		return nil
	}
	if v := renewValue(l); v == "" || v != judged {
		return apierrors.NewConflict(coordinationv1.Resource("leases"), l.Name, errors.New("the heartbeat moved since it was judged"))
	}
	patch := client.MergeFromWithOptions(l.DeepCopy(), client.MergeFromWithOptimisticLock{})
	metav1.SetMetaDataAnnotation(&l.ObjectMeta, flotillav1.AnnotationLost, r.Now().UTC().Format(time.RFC3339Nano))
	return r.Client.Patch(ctx, l, patch)
}

// fence deletes, on the provider, every namespace of this hub that
// health.Stale says must go.
func (r *ProviderReconciler) fence(ctx context.Context, p *flotillav1.Provider, cl *remote.Client) error {
	var nss corev1.NamespaceList
	sel := labels.SelectorFromSet(labels.Set{flotillav1.LabelManaged: "true", flotillav1.LabelHub: r.HubID})
	if err := cl.List(ctx, &nss, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return fmt.Errorf("listing managed namespaces: %w", err)
	}
	var errs []error
	for i := range nss.Items {
		ns := &nss.Items[i]
		if ns.DeletionTimestamp != nil {
			continue
		}
		var leases flotillav1.LeaseList
		if err := r.Client.List(ctx, &leases, client.MatchingFields{indexLeaseUID: ns.Labels[flotillav1.LabelLease]}); err != nil {
			continue // unknown: keep it, decide next time
		}
		var lease *flotillav1.Lease
		if len(leases.Items) > 0 {
			lease = &leases.Items[0]
		}
		why := health.Stale(p.Name, ns.Labels, lease)
		if why == "" {
			continue
		}
		if err := cl.Delete(ctx, ns); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting namespace %s: %w", ns.Name, err))
			continue
		}
		metrics.FencingDeletion()
		r.Recorder.Eventf(p, "Normal", "Fenced", "Deleted namespace %s on the provider: %s", ns.Name, why)
	}
	return errors.Join(errs...)
}

// sweepAssignments deletes the Assignments in a Pull-mode provider's
// namespace whose Lease is gone, closed or being deleted: the Lease
// controller deletes them as Leases end, and this catches one it missed
// (a manager restart between the two). The agent then removes their
// objects.
func (r *ProviderReconciler) sweepAssignments(ctx context.Context, p *flotillav1.Provider) error {
	var as flotillav1.AssignmentList
	if err := r.Client.List(ctx, &as, client.InNamespace(flotillav1.ProviderNamespace(p.Name))); err != nil {
		return err
	}
	var errs []error
	for i := range as.Items {
		a := &as.Items[i]
		if a.DeletionTimestamp != nil {
			continue
		}
		var leases flotillav1.LeaseList
		if err := r.Client.List(ctx, &leases, client.MatchingFields{indexLeaseUID: a.Spec.LeaseRef.UID}); err != nil {
			continue
		}
		if len(leases.Items) > 0 && leases.Items[0].Live() && leases.Items[0].Spec.ProviderRef.Name == p.Name {
			continue
		}
		if err := r.Client.Delete(ctx, a); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting assignment %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}
