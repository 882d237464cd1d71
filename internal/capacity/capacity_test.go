package capacity

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
)

func node(name, cpu, mem string, ready bool, mutate func(*corev1.Node)) corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	n := corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem), corev1.ResourcePods: resource.MustParse("110")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}},
		},
	}
	if mutate != nil {
		mutate(&n)
	}
	return n
}

func pod(nodeName, cpu string, phase corev1.PodPhase) corev1.Pod {
	return corev1.Pod{
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

func TestMeasure(t *testing.T) {
	nodes := []corev1.Node{
		node("a", "8", "32Gi", true, nil),
		node("b", "4", "16Gi", true, nil),
		node("not-ready", "64", "256Gi", false, nil),
		node("cordoned", "64", "256Gi", true, func(n *corev1.Node) { n.Spec.Unschedulable = true }),
		node("tainted", "64", "256Gi", true, func(n *corev1.Node) {
			n.Spec.Taints = []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}
		}),
	}
	pods := []corev1.Pod{
		pod("a", "7", corev1.PodRunning),
		pod("b", "1", corev1.PodPending),
		pod("b", "3", corev1.PodSucceeded), // finished pods hold nothing
		pod("", "5", corev1.PodPending),    // not bound yet
	}
	obs := Measure("v1.37.2", nodes, pods)
	if obs.Nodes != 2 {
		t.Fatalf("nodes %d, want 2", obs.Nodes)
	}
	if obs.Allocatable[market.CPU] != 12000 || obs.Allocated[market.CPU] != 8000 || obs.Free[market.CPU] != 4000 {
		t.Fatalf("cpu allocatable %d allocated %d free %d", obs.Allocatable[market.CPU], obs.Allocated[market.CPU], obs.Free[market.CPU])
	}
	// Node a has 1 core free, node b 3: one replica can use at most 3.
	if obs.LargestChunk[market.CPU] != 3000 || obs.LargestChunk[market.Memory] != 32<<30 {
		t.Fatalf("largest chunk cpu %d memory %d", obs.LargestChunk[market.CPU], obs.LargestChunk[market.Memory])
	}
}

func TestOffer(t *testing.T) {
	nodes := []corev1.Node{node("a", "8", "32Gi", true, nil), node("b", "8", "32Gi", true, nil)}
	managed := pod("a", "4", corev1.PodRunning)
	managed.Labels = map[string]string{flotillav1.LabelManaged: "true"}
	cases := map[string]struct {
		pods    []corev1.Pod
		reserve corev1.ResourceList
		cpu     string
		memory  string
	}{
		"idle, no reserve":            {cpu: "16", memory: "64Gi"},
		"reserve held back":           {reserve: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("2Gi")}, cpu: "14500m", memory: "62Gi"},
		"owner's pods use capacity":   {pods: []corev1.Pod{pod("a", "3", corev1.PodRunning)}, cpu: "13", memory: "64Gi"},
		"lease pods are not counted":  {pods: []corev1.Pod{managed}, cpu: "16", memory: "64Gi"},
		"reserve beyond free is zero": {reserve: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100"), corev1.ResourceMemory: resource.MustParse("1Ti")}, cpu: "0", memory: "0"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got := Offer(nodes, c.pods, c.reserve)
			if q := got[corev1.ResourceCPU]; q.Cmp(resource.MustParse(c.cpu)) != 0 {
				t.Errorf("cpu %s, want %s", q.String(), c.cpu)
			}
			if q := got[corev1.ResourceMemory]; q.Cmp(resource.MustParse(c.memory)) != 0 {
				t.Errorf("memory %s, want %s", q.String(), c.memory)
			}
			// Every pod but a Lease's takes one of the 220 pod slots.
			want := int64(220)
			for _, p := range c.pods {
				if p.Labels[flotillav1.LabelManaged] != "true" {
					want--
				}
			}
			if q := got[corev1.ResourcePods]; q.Value() != want {
				t.Errorf("pods %s, want %d", q.String(), want)
			}
		})
	}
}
