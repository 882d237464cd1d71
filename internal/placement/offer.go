package placement

import (
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/conditions"
	"github.com/flotilla-dev/flotilla/internal/market"
)

// OfferStatus is an Offer's accounting: resources allocated to the Leases
// holding it and what is left, whether it is open for new Leases, and, when
// it opens or closes later, how long until then. The scheduler does not
// read it (it sums the Leases itself); it is for people and the provider's
// agent. An Offer the market refuses (in another provider's namespace,
// selling what it cannot) is Stalled for kstatus; one closed or sold out is
// Ready and Current (its owner's choice), and not Available.
func OfferStatus(o *flotillav1.Offer, leases []flotillav1.Lease, now time.Time) (flotillav1.OfferStatus, time.Duration) {
	st := flotillav1.OfferStatus{ObservedGeneration: o.Generation, Conditions: slices.Clone(o.Status.Conditions)}
	var used market.Vector
	for i := range leases {
		l := &leases[i]
		if !l.HoldsCapacity() {
			continue
		}
		per := market.FromList(l.Spec.ResourcesPerReplica)
		for r := range used {
			used[r] += per[r] * int64(l.Spec.Replicas)
		}
		st.Leases++
	}
	capacity := market.FromList(o.Spec.Resources)
	avail := capacity
	over := false
	for r := range avail {
		avail[r] -= used[r]
		if avail[r] < 0 {
			over, avail[r] = true, 0
		}
	}
	// Only the resources the offer sells are reported.
	st.Allocated, st.Available = corev1.ResourceList{}, corev1.ResourceList{}
	allocList, availList := used.List(), avail.List()
	for name := range o.Spec.Resources {
		st.Allocated[name] = quantityOr0(allocList, name)
		st.Available[name] = quantityOr0(availList, name)
	}
	s, requeue := offerState(o, capacity, avail, over, st.Leases, now)
	conditions.Set(&st.Conditions, o.Generation, flotillav1.OfferAvailable, s.Reason == flotillav1.OfferReasonOpen, s.Reason, s.Message)
	conditions.Apply(&st.Conditions, o.Generation, s)
	return st, requeue
}

func offerState(o *flotillav1.Offer, capacity, avail market.Vector, over bool, leases int32, now time.Time) (conditions.Summary, time.Duration) {
	var requeue time.Duration
	if o.Spec.ValidUntil != nil && now.Before(o.Spec.ValidUntil.Time) {
		requeue = o.Spec.ValidUntil.Sub(now)
	}
	_, perr := market.Prices(o.Spec.Prices)
	rerr := market.CheckOffer(o.Spec.Resources)
	switch {
	case o.Namespace != flotillav1.ProviderNamespace(o.Spec.ProviderRef.Name):
		return conditions.Summary{State: conditions.Stalled, Reason: flotillav1.OfferReasonMisplaced,
			Message: fmt.Sprintf("an offer of provider %s must live in namespace %s; the market ignores it",
				o.Spec.ProviderRef.Name, flotillav1.ProviderNamespace(o.Spec.ProviderRef.Name))}, 0
	case perr != nil || rerr != nil:
		return conditions.Summary{State: conditions.Stalled, Reason: flotillav1.OfferReasonInvalid,
			Message: "the market ignores it: " + fmt.Sprint(firstErr(perr, rerr))}, 0
	case o.Spec.ValidFrom != nil && now.Before(o.Spec.ValidFrom.Time):
		return conditions.Summary{Reason: flotillav1.OfferReasonNotYetValid,
			Message: "opens at " + o.Spec.ValidFrom.UTC().Format(time.RFC3339)}, o.Spec.ValidFrom.Sub(now)
	case o.Spec.ValidUntil != nil && !now.Before(o.Spec.ValidUntil.Time):
		return conditions.Summary{Reason: flotillav1.OfferReasonExpired,
			Message: "closed to new leases at " + o.Spec.ValidUntil.UTC().Format(time.RFC3339)}, 0
	case over:
		return conditions.Summary{Reason: flotillav1.OfferReasonOvercommitted, Message: "live leases hold more than the offer now sells"}, requeue
	case exhausted(capacity, avail):
		return conditions.Summary{Reason: flotillav1.OfferReasonExhausted, Message: "all capacity is leased"}, requeue
	}
	return conditions.Summary{Reason: flotillav1.OfferReasonOpen, Message: fmt.Sprintf("%d live leases", leases)}, requeue
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// exhausted reports an offer with no cpu or no memory left, when it sells them.
func exhausted(capacity, avail market.Vector) bool {
	for _, r := range []market.Resource{market.CPU, market.Memory} {
		if capacity[r] > 0 && avail[r] == 0 {
			return true
		}
	}
	return false
}

func quantityOr0(l corev1.ResourceList, name corev1.ResourceName) resource.Quantity {
	if q, ok := l[name]; ok {
		return q
	}
	if name == corev1.ResourceMemory || name == corev1.ResourceEphemeralStorage {
		return *resource.NewQuantity(0, resource.BinarySI)
	}
	return *resource.NewQuantity(0, resource.DecimalSI)
}
