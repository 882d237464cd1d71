package settle

import (
	"strings"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/internal/usage"
)

// Observed is one settlement's Input, gathered from the hub's objects, and
// what the bank acts on afterwards.
type Observed struct {
	Input Input
	// Tenants are the tenant Accounts settled, by namespace.
	Tenants map[string]*flotillav1.Account
	// Ending are deleted Leases whose settlement finalizer goes once the
	// book has closed them (Releasable).
	Ending []*flotillav1.Lease
}

// Gather reads what a settlement needs from the hub's objects: the Account
// named default of each tenant namespace, the Workloads of those
// namespaces, and every Lease with its metered usage and, from reports
// (by provider, then Lease UID), the provider's signed word on it.
func Gather(now time.Time, accounts []flotillav1.Account, workloads []flotillav1.Workload, leases []flotillav1.Lease,
	reports map[string]map[string]*usage.Line) Observed {
	o := Observed{Input: Input{Now: now, Credited: map[string]money.Micro{}, Workloads: map[string]Workload{}},
		Tenants: map[string]*flotillav1.Account{}}
	for i := range accounts {
		a := &accounts[i]
		if a.Name != flotillav1.AccountName || strings.HasPrefix(a.Namespace, "provider-") {
			continue
		}
		c, err := money.Parse(string(a.Spec.Credited))
		if a.Spec.Credited == "" {
			c, err = 0, nil
		}
		if err != nil {
			continue // refused at admission
		}
		o.Input.Credited[a.Namespace] = c
		o.Tenants[a.Namespace] = a
	}
	for i := range workloads {
		w := &workloads[i]
		if _, ok := o.Input.Credited[w.Namespace]; ok && w.DeletionTimestamp == nil {
			o.Input.Workloads[w.Namespace+"/"+w.Name] = settleWorkload(w)
		}
	}
	for i := range leases {
		l := &leases[i]
		deleting := l.DeletionTimestamp != nil
		if deleting && hasFinalizer(l, flotillav1.FinalizerProviderCleanup) {
			continue // its last usage is metered when the provider side is gone
		}
		if deleting && hasFinalizer(l, flotillav1.FinalizerSettlement) {
			o.Ending = append(o.Ending, l)
		}
		o.Input.Leases = append(o.Input.Leases, settleLease(l, reports))
	}
	return o
}

// Releasable reports whether an ending Lease's settlement finalizer may
// go: the book closed it (its last usage paid, its escrow refunded), or
// its namespace is not settled at all.
func (o *Observed) Releasable(b *Book, l *flotillav1.Lease) bool {
	if _, accounted := o.Input.Credited[l.Namespace]; !accounted {
		return true
	}
	lb := b.Leases[LeaseRef(l.Namespace, l.Spec.WorkloadRef.Name, l.Name)]
	return lb != nil && lb.Closed
}

func settleWorkload(w *flotillav1.Workload) Workload {
	sw := Workload{Wants: wantsToRun(w), Generation: w.Generation}
	if w.Spec.Budget != nil {
		if bud, err := money.Parse(string(*w.Spec.Budget)); err == nil {
			sw.Budget, sw.Capped = bud, true
		}
	}
	if c := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadBudgetExhausted); c != nil && c.Status == metav1.ConditionTrue {
		sw.Stopped, sw.StoppedSince, sw.StoppedGeneration = c.Reason, c.LastTransitionTime.Time, c.ObservedGeneration
	}
	return sw
}

// wantsToRun reports a Workload that would have replicas running.
func wantsToRun(w *flotillav1.Workload) bool {
	if w.Spec.Replicas == 0 {
		return false
	}
	return w.Status.Phase != flotillav1.WorkloadSucceeded && w.Status.Phase != flotillav1.WorkloadFailed
}

func settleLease(l *flotillav1.Lease, reports map[string]map[string]*usage.Line) Lease {
	sl := Lease{Namespace: l.Namespace, Workload: l.Spec.WorkloadRef.Name, Name: l.Name, Provider: l.Spec.ProviderRef.Name,
		Live: l.Live(), ReplicaSeconds: l.Status.Usage.ReplicaSeconds, Replicas: l.Spec.Replicas, Running: l.Status.RunningReplicas}
	sl.Metered, _ = money.Parse(string(l.Status.Usage.Cost))
	if p, err := money.Parse(string(l.Spec.PricePerReplicaHour)); err == nil {
		sl.PerHour = p * money.Micro(l.Spec.Replicas)
	}
	if l.Status.Verdict == flotillav1.VerdictDissented {
		sl.Dissent = l.Status.Digest
		if sl.Dissent == "" {
			sl.Dissent = "no digest"
		}
	}
	if u := l.Status.Usage.MeteredUntil; u != nil {
		sl.MeteredUntil = u.Time
		sl.Report = reports[l.Spec.ProviderRef.Name][string(l.UID)]
	}
	return sl
}

func hasFinalizer(l *flotillav1.Lease, f string) bool {
	for _, x := range l.Finalizers {
		if x == f {
			return true
		}
	}
	return false
}

// Enforcement is what the bank does about one settled Workload.
type Enforcement struct {
	// Stop, when Stopping, is why and from when it must stop; otherwise
	// its BudgetExhausted condition goes back to False.
	Stop     Stop
	Stopping bool
	// CloseLeases: the stop is due and the Workload's condition already
	// says so in the cache the scheduler reads (closing its Leases before
	// would have the scheduler replace them).
	CloseLeases bool
	// Wait is how long until the stop is due.
	Wait time.Duration
	// Retry soon: the stop is due but not yet visible.
	Retry bool
}

// Enforce decides what to do about Workload w after a settlement that
// decided out.
func Enforce(now time.Time, w *flotillav1.Workload, out *Output) Enforcement {
	st, stopping := out.Stops[w.Namespace+"/"+w.Name]
	e := Enforcement{Stop: st, Stopping: stopping}
	if !stopping {
		return e
	}
	if wait := st.At.Sub(now); wait > 0 {
		e.Wait = wait
		return e
	}
	told := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadBudgetExhausted)
	if told != nil && told.Status == metav1.ConditionTrue && told.Reason == st.Reason {
		e.CloseLeases = true
	} else {
		e.Retry = true
	}
	return e
}
