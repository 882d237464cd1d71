package placement

import (
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

func snapshotProvider(name, owner, region string, attrs map[string]string) flotillav1.Provider {
	return flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:   flotillav1.ProviderSpec{Owner: owner, Region: region, Attributes: attrs},
		Status: flotillav1.ProviderStatus{Phase: flotillav1.ProviderReady}}
}

func snapshotOffer(provider string, attrs map[string]string) flotillav1.Offer {
	return flotillav1.Offer{ObjectMeta: metav1.ObjectMeta{Name: "std", Namespace: flotillav1.ProviderNamespace(provider)},
		Spec: flotillav1.OfferSpec{ProviderRef: flotillav1.ProviderReference{Name: provider},
			Resources:  corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("8Gi")},
			Attributes: attrs}}
}

// TestIdentityComesFromTheProvider plays a provider whose Offer and own
// attributes (both its to write) claim another owner, region and zone:
// the market sees the administrator's record.
func TestIdentityComesFromTheProvider(t *testing.T) {
	p := snapshotProvider("mallory-1", "mallory", "ap-south", map[string]string{"region": "eu-west", "gpu": "a100"})
	o := snapshotOffer("mallory-1", map[string]string{"owner": "alice", "zone": "eu-west-1a", "tier": "gold"})
	snap, _, _ := build(&Input{Now: time.Now(), Providers: []flotillav1.Provider{p}, Offers: []flotillav1.Offer{o}})
	got := snap.Offers[0].Attributes
	want := map[string]string{"owner": "mallory", "region": "ap-south", "gpu": "a100", "tier": "gold"}
	if len(got) != len(want) {
		t.Fatalf("P2.snapshot-identity: attributes %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("P2.snapshot-identity: attribute %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}

// TestTemplatesThatCannotRunStopBeingPlaced: a Workload whose Leases keep
// missing their progress deadline at one generation stops being placed
// (it would hop from provider to provider for ever), and one with an
// invalid template is not placed at all; both say why.
func TestTemplatesThatCannotRunStopBeingPlaced(t *testing.T) {
	w := flotillav1.Workload{ObjectMeta: metav1.ObjectMeta{Name: "w", Namespace: "t", Generation: 2, UID: "w-uid"},
		Spec: flotillav1.WorkloadSpec{Replicas: 1, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")}}}}}}}}
	stuck := func(i int, generation int64) *flotillav1.Lease {
		return &flotillav1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: "l" + strconv.Itoa(i), Namespace: "t",
				Annotations: map[string]string{flotillav1.AnnotationWorkloadGeneration: strconv.FormatInt(generation, 10)}},
			Spec:   flotillav1.LeaseSpec{WorkloadRef: flotillav1.LocalObjectReference{Name: "w"}, Replicas: 1, Epoch: int64(i + 1)},
			Status: flotillav1.LeaseStatus{Phase: flotillav1.LeaseClosed, Outcome: flotillav1.OutcomeProgressDeadlineExceeded},
		}
	}
	for name, tc := range map[string]struct {
		leases  []*flotillav1.Lease
		mutate  func(*flotillav1.Workload)
		blocked string
	}{
		"two misses: placed again":                   {leases: []*flotillav1.Lease{stuck(0, 2), stuck(1, 2)}},
		"T4.deadline-stall: three misses":            {leases: []*flotillav1.Lease{stuck(0, 2), stuck(1, 2), stuck(2, 2)}, blocked: flotillav1.WorkloadReasonProgressDeadline},
		"three misses of an older generation: fixed": {leases: []*flotillav1.Lease{stuck(0, 1), stuck(1, 1), stuck(2, 1)}},
		"T4.invalid-template": {mutate: func(w *flotillav1.Workload) {
			w.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("-1")
		}, blocked: flotillav1.WorkloadReasonInvalidTemplate},
	} {
		t.Run(name, func(t *testing.T) {
			w := *w.DeepCopy()
			if tc.mutate != nil {
				tc.mutate(&w)
			}
			snap, states, _ := build(&Input{Now: time.Now(), Workloads: []flotillav1.Workload{w}, Leases: tc.leases})
			st := states["t/w"]
			switch {
			case tc.blocked == "" && (st.blocked != nil || len(snap.Workloads) != 1):
				t.Errorf("kept off the market: %+v", st.blocked)
			case tc.blocked != "" && (st.blocked == nil || st.blocked.Reasons[0].Code != tc.blocked || len(snap.Workloads) != 0):
				t.Errorf("blocked %+v, want reason %s", st.blocked, tc.blocked)
			}
			if tc.blocked == "" && len(tc.leases) > 0 && st.epoch <= int64(len(tc.leases)) {
				t.Errorf("replacements get epoch %d, not above the missed Leases'", st.epoch)
			}
		})
	}
}
