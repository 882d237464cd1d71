package status

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

func TestRender(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	lease := func(name, provider string, replicas int32, price string, age time.Duration, phase flotillav1.LeasePhase) flotillav1.Lease {
		return flotillav1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", CreationTimestamp: metav1.NewTime(t0.Add(-age))},
			Spec: flotillav1.LeaseSpec{WorkloadRef: flotillav1.LocalObjectReference{Name: "web"},
				ProviderRef: flotillav1.ProviderReference{Name: provider}, Replicas: replicas, PricePerReplicaHour: flotillav1.Amount(price), Epoch: 1},
			Status: flotillav1.LeaseStatus{Phase: phase, ReadyReplicas: replicas},
		}
	}
	closed := lease("old", "bob-1", 2, "0.006", 2*time.Hour, flotillav1.LeaseClosed)
	closed.Status.Usage.Cost = "0.004000" // metered: taken as is
	s := Snapshot{
		Now: t0,
		Providers: []flotillav1.Provider{
			{ObjectMeta: metav1.ObjectMeta{Name: "bob-1"}, Spec: flotillav1.ProviderSpec{Owner: "bob", Region: "us-east", Mode: flotillav1.ModePull},
				Status: flotillav1.ProviderStatus{Phase: flotillav1.ProviderLost}},
			{ObjectMeta: metav1.ObjectMeta{Name: "alice-1"}, Spec: flotillav1.ProviderSpec{Owner: "alice", Region: "eu-west"},
				Status: flotillav1.ProviderStatus{Phase: flotillav1.ProviderReady, Reputation: flotillav1.Reputation{Score: "0.5"},
					Capacity: flotillav1.ProviderCapacity{Free: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("14"), corev1.ResourceMemory: resource.MustParse("28Gi")}}}},
		},
		Workloads: []flotillav1.Workload{{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"},
			Spec:   flotillav1.WorkloadSpec{Class: flotillav1.ClassService, Replicas: 4},
			Status: flotillav1.WorkloadStatus{Phase: "Running", ReadyReplicas: 4}},
			{ObjectMeta: metav1.ObjectMeta{Name: "frames", Namespace: "team-b"},
				Spec: flotillav1.WorkloadSpec{Class: flotillav1.ClassBatch, Replicas: 1,
					Verification: &flotillav1.VerificationSpec{Redundancy: 3, Quorum: 2}},
				Status: flotillav1.WorkloadStatus{Phase: "Succeeded", SucceededReplicas: 3,
					Verification: &flotillav1.VerificationStatus{Copies: 3, Votes: 2}}}},
		Leases: []flotillav1.Lease{
			lease("b", "alice-1", 2, "0.006", 30*time.Minute, flotillav1.LeaseActive),
			lease("a", "alice-1", 2, "0.005", time.Hour, flotillav1.LeaseActive),
			closed,
		},
		Accounts: []flotillav1.Account{
			{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "team-a"},
				Status: flotillav1.AccountStatus{Available: "99.5", Held: "0.4", Spent: "0.1"}},
			{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "provider-alice-1"},
				Status: flotillav1.AccountStatus{Earned: "0.0975"}},
		},
	}
	var out bytes.Buffer
	if err := Render(&out, s); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		// providers sorted, with free capacity and live Lease counts
		"alice-1   alice  eu-west  Push  Ready  14        28.0Gi       -     0.5         2",
		"bob-1     bob    us-east  Pull  Lost   -         -            -     -           0",
		// 2x0.005 + 2x0.006 per hour; cost 0.010 for 1h + 0.006 for 30min + 0.004 metered
		"team-a/web     Service  Running    4/4        alice-1:2,alice-1:2  0.022       0.02",
		// a verified Workload counts agreeing copies against its quorum
		"team-b/frames  Batch    Succeeded  2/2 agree  -",
		// accounts sorted by namespace: a provider's earnings, a tenant's credits
		"provider-alice-1  -          -     -      0.0975",
		"team-a            99.5       0.4   0.1    -",
		// one line per live Lease, closed ones left out
		"team-a/web   alice-1   alice  2         2      1      0.005               1h0m0s       0.01",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if strings.Count(got, "team-a/web   alice-1") != 2 {
		t.Errorf("want 2 live lease lines (the closed one left out):\n%s", got)
	}
}

func TestRenderEmpty(t *testing.T) {
	var out bytes.Buffer
	if err := Render(&out, Snapshot{Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "(none)") != 2 || !strings.Contains(out.String(), "(no live leases)") {
		t.Errorf("empty federation:\n%s", out.String())
	}
}

func TestRenderEndpoints(t *testing.T) {
	w := flotillav1.Workload{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"}}
	w.Status.Address = "http://hub.example:8090/team-a/web/"
	w.Status.Endpoints = []flotillav1.WorkloadEndpoint{
		{Provider: "bob-1", Lease: "web-1", Port: "http", Address: "203.0.113.7:30080", Reachable: true},
		{Provider: "carol-1", Lease: "web-2", Port: "http", Address: "198.51.100.4:31000"},
	}
	var out bytes.Buffer
	if err := Render(&out, Snapshot{Now: time.Now(), Workloads: []flotillav1.Workload{w, {ObjectMeta: metav1.ObjectMeta{Name: "batch", Namespace: "team-a"}}}}); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out.String(), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	for _, want := range []string{"ENDPOINTS OF PORT PROVIDER ADDRESS REACHABLE", "team-a/web - (stable address) http://hub.example:8090/team-a/web/ -",
		"team-a/web http bob-1 203.0.113.7:30080 yes", "team-a/web http carol-1 198.51.100.4:31000 no"} {
		if !slices.Contains(lines, want) {
			t.Errorf("no line %q in\n%s", want, out.String())
		}
	}
	var none bytes.Buffer
	_ = Render(&none, Snapshot{Now: time.Now()})
	if strings.Contains(none.String(), "ENDPOINTS") {
		t.Error("an endpoints section with nothing exposed")
	}
}
