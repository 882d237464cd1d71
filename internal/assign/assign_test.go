package assign

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/lease"
	"github.com/flotilla-dev/flotilla/internal/render"
)

const hubID = "hub"

func testLease(class flotillav1.WorkloadClass) *flotillav1.Lease {
	return &flotillav1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "web-abc12", Namespace: "team-a", UID: "3f1c0a8e-6a55-4e0e-9a0e-0f6c2b8d9e11"},
		Spec: flotillav1.LeaseSpec{
			WorkloadRef: flotillav1.LocalObjectReference{Name: "web"},
			ProviderRef: flotillav1.ProviderReference{Name: "bob-1"},
			OfferRef:    flotillav1.ObjectReference{Namespace: "provider-bob-1", Name: "std"},
			Class:       class, Replicas: 2, Epoch: 3, PricePerReplicaHour: "0.006",
			ResourcesPerReplica: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
		},
	}
}

func testWorkload(class flotillav1.WorkloadClass) *flotillav1.Workload {
	return &flotillav1.Workload{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "team-a"},
		Spec: flotillav1.WorkloadSpec{Class: class, Replicas: 2, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")}}}}}}},
	}
}

// built is the Assignment the hub writes for a Lease of class.
func built(t *testing.T, class flotillav1.WorkloadClass) *flotillav1.Assignment {
	t.Helper()
	l := testLease(class)
	objs, err := render.Lease(render.Input{HubID: hubID, Lease: l, Workload: testWorkload(class)})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := Build(l, hubID, objs)
	if err != nil {
		t.Fatal(err)
	}
	return &flotillav1.Assignment{ObjectMeta: metav1.ObjectMeta{Name: Name(hubID, l.UID)}, Spec: spec}
}

func TestBuildIsCheckedAndStable(t *testing.T) {
	for _, class := range []flotillav1.WorkloadClass{flotillav1.ClassService, flotillav1.ClassBatch} {
		a := built(t, class)
		objs, err := Check(a, hubID)
		if err != nil {
			t.Fatalf("%s: the hub's own Assignment is refused: %v", class, err)
		}
		if len(objs) != len(a.Spec.Objects) || objs[0].GetKind() != "Namespace" {
			t.Errorf("%s: %d objects decoded from %d, first %s", class, len(objs), len(a.Spec.Objects), objs[0].GetKind())
		}
		if b := built(t, class); b.Spec.Hash != a.Spec.Hash {
			t.Errorf("%s: the same Lease hashes differently: %s, %s", class, a.Spec.Hash, b.Spec.Hash)
		}
		if a.Spec.Namespace != render.Namespace(hubID, "3f1c0a8e-6a55-4e0e-9a0e-0f6c2b8d9e11") || a.Spec.Epoch != 3 || a.Spec.Replicas != 2 {
			t.Errorf("%s: spec %+v does not follow the Lease", class, a.Spec)
		}
	}
	svc, batch := built(t, flotillav1.ClassService), built(t, flotillav1.ClassBatch)
	if svc.Spec.Hash == batch.Spec.Hash {
		t.Error("different objects, one hash")
	}
}

// TestCheckRefusesHostileAssignments: an agent reads its hub's Assignments
// as hostile input too.
func TestCheckRefusesHostileAssignments(t *testing.T) {
	edit := func(i int, f func(u map[string]any)) func(a *flotillav1.Assignment) {
		return func(a *flotillav1.Assignment) {
			var u map[string]any
			if err := json.Unmarshal(a.Spec.Objects[i].Raw, &u); err != nil {
				t.Fatal(err)
			}
			f(u)
			raw, _ := json.Marshal(u)
			a.Spec.Objects[i].Raw = raw
		}
	}
	meta := func(u map[string]any) map[string]any { return u["metadata"].(map[string]any) }
	last := func(a *flotillav1.Assignment) int { return len(a.Spec.Objects) - 1 }
	cases := map[string]struct {
		mutate func(a *flotillav1.Assignment)
		want   string
	}{
		"P7.pull-assignment-confined: namespace of another lease": {func(a *flotillav1.Assignment) { a.Spec.Namespace = "flotilla-hub-0000000000000000" }, "is not the one of lease"},
		"P7.pull-assignment-confined: object in kube-system": {func(a *flotillav1.Assignment) {
			edit(last(a), func(u map[string]any) { meta(u)["namespace"] = "kube-system" })(a)
		}, "outside the Assignment's namespace"},
		"P7.pull-assignment-kinds: a ClusterRoleBinding": {func(a *flotillav1.Assignment) {
			edit(1, func(u map[string]any) {
				u["kind"], u["apiVersion"] = "ClusterRoleBinding", "rbac.authorization.k8s.io/v1"
			})(a)
		}, "not a kind the hub renders"},
		"P9.pull-assignment-external-ips": {func(a *flotillav1.Assignment) {
			edit(1, func(u map[string]any) {
				u["kind"], u["spec"] = "Service", map[string]any{"type": "NodePort", "externalIPs": []any{"10.0.0.1"}}
			})(a)
		}, "sets externalIPs or externalName"},
		"P9.pull-assignment-external-name": {func(a *flotillav1.Assignment) {
			edit(1, func(u map[string]any) {
				u["kind"], u["spec"] = "Service", map[string]any{"type": "ExternalName", "externalName": "kubernetes.default"}
			})(a)
		}, "is not of type ClusterIP, NodePort or LoadBalancer"},
		"P7.pull-assignment-kinds: a Deployment of another API group": {func(a *flotillav1.Assignment) {
			edit(last(a), func(u map[string]any) { u["apiVersion"] = "example.com/v1" })(a)
		}, "not a kind the hub renders"},
		"P7.pull-assignment-confined: another namespace object": {func(a *flotillav1.Assignment) {
			edit(0, func(u map[string]any) { meta(u)["name"] = "default" })(a)
		}, "is not the Assignment's"},
		"P7.pull-assignment-labels: labels of another lease": {func(a *flotillav1.Assignment) {
			edit(last(a), func(u map[string]any) { meta(u)["labels"].(map[string]any)[flotillav1.LabelLease] = "other" })(a)
		}, "does not carry the Assignment's lease"},
		"P7.pull-assignment-labels: stale epoch label": {func(a *flotillav1.Assignment) { a.Spec.Epoch = 4 }, "does not carry the Assignment's lease, hub and epoch"},
		"no objects": {func(a *flotillav1.Assignment) { a.Spec.Objects = nil }, "0 objects"},
		"too many objects": {func(a *flotillav1.Assignment) {
			for len(a.Spec.Objects) <= MaxObjects {
				a.Spec.Objects = append(a.Spec.Objects, a.Spec.Objects[1])
			}
		}, "an Assignment carries 1 to 32"},
		"two Deployments": {func(a *flotillav1.Assignment) {
			a.Spec.Objects = append(a.Spec.Objects, a.Spec.Objects[last(a)])
		}, "1 namespaces and 2 Deployments"},
		"a Job for a Service": {func(a *flotillav1.Assignment) { a.Spec.Class = flotillav1.ClassBatch }, "a Deployment for class Batch"},
		"not JSON":            {func(a *flotillav1.Assignment) { a.Spec.Objects[0] = runtime.RawExtension{Raw: []byte("{")} }, "object 0"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			a := built(t, flotillav1.ClassService)
			tc.mutate(a)
			_, err := Check(a, hubID)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func spec(replicas int32, cpu, mem string) *flotillav1.AssignmentSpec {
	return &flotillav1.AssignmentSpec{Replicas: replicas, ResourcesPerReplica: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}
}

func TestAdmit(t *testing.T) {
	free := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi")}
	cases := map[string]struct {
		free     corev1.ResourceList
		accepted []*flotillav1.AssignmentSpec
		cand     *flotillav1.AssignmentSpec
		want     string
	}{
		"fits":                   {free: free, cand: spec(2, "1", "1Gi")},
		"fits exactly":           {free: free, cand: spec(4, "500m", "1Gi")},
		"one replica too many":   {free: free, cand: spec(5, "500m", "512Mi"), want: "not enough cpu free: 5 replicas need 2500m, 2 left after the 0 assignments already accepted"},
		"memory short":           {free: free, cand: spec(1, "100m", "5Gi"), want: "not enough memory free"},
		"accepted ones count":    {free: free, accepted: []*flotillav1.AssignmentSpec{spec(3, "500m", "1Gi")}, cand: spec(2, "500m", "1Gi"), want: "not enough cpu free: 2 replicas need 1, 500m left after the 1 assignments already accepted"},
		"room after accepted":    {free: free, accepted: []*flotillav1.AssignmentSpec{spec(2, "500m", "1Gi")}, cand: spec(2, "500m", "1Gi")},
		"nothing free":           {free: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("0"), corev1.ResourceMemory: resource.MustParse("0")}, cand: spec(1, "1m", "1Mi"), want: "not enough cpu free"},
		"pods bounded":           {free: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("3")}, cand: spec(4, "100m", "1Mi"), want: "not enough pods free"},
		"a GPU nobody has":       {free: free, cand: &flotillav1.AssignmentSpec{Replicas: 1, ResourcesPerReplica: corev1.ResourceList{flotillav1.ResourceGPU: resource.MustParse("1")}}, want: "not enough nvidia.com/gpu free"},
		"overcommitted accepted": {free: free, accepted: []*flotillav1.AssignmentSpec{spec(8, "1", "1Gi")}, cand: spec(1, "1m", "1Mi"), want: "0 left"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Admit(tc.free, tc.accepted, tc.cand)
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("Admit = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestObserveBoundsTheAgentsReport(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	cases := map[string]struct {
		st   flotillav1.AssignmentStatus
		want Report
	}{
		"no answer yet": {st: flotillav1.AssignmentStatus{RunningReplicas: 3}, want: Report{}},
		"accepted, current": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted, AppliedHash: "h", RunningReplicas: 2, ReadyReplicas: 1},
			want: Report{Decided: true, Current: true, Observation: lease.Observation{Running: 2, Ready: 1}}},
		"accepted, older version": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted, AppliedHash: "old", RunningReplicas: 2, ReadyReplicas: 2},
			want: Report{Decided: true, Observation: lease.Observation{Running: 2, Ready: 2}}},
		"P4.pull-report-capped: claims more than leased": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted, AppliedHash: "h", RunningReplicas: 9000, ReadyReplicas: 9000, SucceededReplicas: 50},
			want: Report{Decided: true, Current: true, Observation: lease.Observation{Running: 2, Ready: 2, Succeeded: 2}}},
		"P4.pull-report-capped: ready but not running": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted, AppliedHash: "h", ReadyReplicas: 2},
			want: Report{Decided: true, Current: true}},
		"P4.pull-report-capped: negative counts": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted, AppliedHash: "h", RunningReplicas: -5, FailedReplicas: -1},
			want: Report{Decided: true, Current: true}},
		"complete with nothing succeeded": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted, AppliedHash: "h", Complete: true},
			want: Report{Decided: true, Current: true}},
		"complete with a digest": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted, AppliedHash: "h", Complete: true, JobFailed: true, SucceededReplicas: 1, Digest: digest},
			want: Report{Decided: true, Current: true, Observation: lease.Observation{Succeeded: 1, Complete: true, Digest: digest}}},
		"P4.pull-report-digest: malformed digest": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted, AppliedHash: "h", Digest: "sha256:zz"},
			want: Report{Decided: true, Current: true}},
		"job failed": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted, AppliedHash: "h", JobFailed: true, Message: "BackoffLimitExceeded\nsecond line"},
			want: Report{Decided: true, Current: true, Observation: lease.Observation{JobFailed: true, Message: "the job failed on the provider: BackoffLimitExceeded second line"}}},
		"refused": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentRefused, Reason: "InsufficientCapacity", Message: "not enough cpu free"},
			want: Report{Decided: true, Refused: true, Reason: "InsufficientCapacity", Message: "not enough cpu free"}},
		"P4.pull-report-reason: refused with a reason that is not one": {st: flotillav1.AssignmentStatus{State: flotillav1.AssignmentRefused, Reason: "no way; DROP TABLE"},
			want: Report{Decided: true, Refused: true, Reason: flotillav1.LeaseReasonRefused, Message: "refused without a reason"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Observe(2, "h", &tc.st)); diff != "" {
				t.Errorf("Observe (-want +got):\n%s", diff)
			}
		})
	}
	long := flotillav1.AssignmentStatus{State: flotillav1.AssignmentRefused, Reason: "Full", Message: strings.Repeat("x", 100_000), LastError: strings.Repeat("y", 100_000)}
	if r := Observe(2, "h", &long); len(r.Message) > 1024 || len(r.LastError) > 1024 {
		t.Errorf("P4.pull-report-text: texts not bounded: %d and %d bytes", len(r.Message), len(r.LastError))
	}
}

func TestStale(t *testing.T) {
	wanted := map[string]int64{"u1": 2}
	cases := map[string]struct {
		labels map[string]string
		want   string
	}{
		"wanted":         {map[string]string{flotillav1.LabelLease: "u1", flotillav1.LabelEpoch: "2"}, ""},
		"no assignment":  {map[string]string{flotillav1.LabelLease: "u2", flotillav1.LabelEpoch: "2"}, "no assignment of the hub wants it"},
		"older epoch":    {map[string]string{flotillav1.LabelLease: "u1", flotillav1.LabelEpoch: "1"}, "epoch 1 is not the assignment's 2"},
		"no lease label": {map[string]string{}, "no assignment of the hub wants it"},
	}
	for name, tc := range cases {
		if got := Stale(tc.labels, wanted); got != tc.want {
			t.Errorf("%s: Stale = %q, want %q", name, got, tc.want)
		}
	}
}

func BenchmarkAdmit(b *testing.B) {
	free := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1000"), corev1.ResourceMemory: resource.MustParse("4Ti")}
	accepted := make([]*flotillav1.AssignmentSpec, 1000)
	for i := range accepted {
		accepted[i] = spec(1, "500m", "1Gi")
	}
	cand := spec(2, "500m", "1Gi")
	for b.Loop() {
		_ = Admit(free, accepted, cand)
	}
}
