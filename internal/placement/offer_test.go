package placement

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

func TestOfferStatus(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	offer := func(mutate func(o *flotillav1.Offer)) *flotillav1.Offer {
		o := &flotillav1.Offer{
			ObjectMeta: metav1.ObjectMeta{Name: "o", Namespace: "provider-p"},
			Spec: flotillav1.OfferSpec{ProviderRef: flotillav1.ProviderReference{Name: "p"},
				Resources: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")}},
		}
		if mutate != nil {
			mutate(o)
		}
		return o
	}
	lease := func(replicas int32, phase flotillav1.LeasePhase) flotillav1.Lease {
		return flotillav1.Lease{
			Spec: flotillav1.LeaseSpec{Replicas: replicas, ResourcesPerReplica: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")}},
			Status: flotillav1.LeaseStatus{Phase: phase},
		}
	}
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	cases := map[string]struct {
		offer       *flotillav1.Offer
		leases      []flotillav1.Lease
		wantReason  string
		wantAlloc   string
		wantAvail   string
		wantRequeue time.Duration
	}{
		"open, closed leases do not count": {offer(nil), []flotillav1.Lease{lease(1, flotillav1.LeaseActive), lease(2, flotillav1.LeaseClosed)},
			flotillav1.OfferReasonOpen, "1", "3", 0},
		"exhausted":                            {offer(nil), []flotillav1.Lease{lease(4, flotillav1.LeasePending)}, flotillav1.OfferReasonExhausted, "4", "0", 0},
		"overcommitted after the offer shrank": {offer(nil), []flotillav1.Lease{lease(5, flotillav1.LeaseActive)}, flotillav1.OfferReasonOvercommitted, "5", "0", 0},
		"expired":                              {offer(func(o *flotillav1.Offer) { o.Spec.ValidUntil = at(-time.Second) }), nil, flotillav1.OfferReasonExpired, "0", "4", 0},
		"closes later":                         {offer(func(o *flotillav1.Offer) { o.Spec.ValidUntil = at(time.Hour) }), nil, flotillav1.OfferReasonOpen, "0", "4", time.Hour},
		"not yet valid":                        {offer(func(o *flotillav1.Offer) { o.Spec.ValidFrom = at(time.Minute) }), nil, flotillav1.OfferReasonNotYetValid, "0", "4", time.Minute},
		"in another provider's namespace":      {offer(func(o *flotillav1.Offer) { o.Namespace = "provider-q" }), nil, flotillav1.OfferReasonMisplaced, "0", "4", 0},
		"selling more than an offer may": {offer(func(o *flotillav1.Offer) { o.Spec.Resources[corev1.ResourceCPU] = resource.MustParse("2Mi") }), nil,
			flotillav1.OfferReasonInvalid, "0", "2097152", 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			st, requeue := OfferStatus(tc.offer, tc.leases, now)
			c := apimeta.FindStatusCondition(st.Conditions, flotillav1.OfferAvailable)
			if c == nil || c.Reason != tc.wantReason {
				t.Fatalf("condition %+v, want reason %s", c, tc.wantReason)
			}
			if (c.Status == metav1.ConditionTrue) != (tc.wantReason == flotillav1.OfferReasonOpen) {
				t.Fatalf("status %s with reason %s", c.Status, c.Reason)
			}
			alloc, avail := st.Allocated[corev1.ResourceCPU], st.Available[corev1.ResourceCPU]
			if alloc.String() != tc.wantAlloc || avail.String() != tc.wantAvail {
				t.Fatalf("cpu allocated %s available %s, want %s and %s", alloc.String(), avail.String(), tc.wantAlloc, tc.wantAvail)
			}
			if requeue != tc.wantRequeue {
				t.Fatalf("requeue %s, want %s", requeue, tc.wantRequeue)
			}
		})
	}
}
