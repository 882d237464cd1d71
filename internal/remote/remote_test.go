package remote

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

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

func TestInvalidKubeconfig(t *testing.T) {
	c := NewCache(runtime.NewScheme(), Options{})
	for name, kc := range map[string]string{
		"empty":    "",
		"garbage":  "{{{ not yaml",
		"no hosts": "apiVersion: v1\nkind: Config\n",
	} {
		if _, err := c.Get("p", "1", []byte(kc)); !errors.Is(err, ErrInvalidKubeconfig) {
			t.Errorf("%s: got %v, want ErrInvalidKubeconfig", name, err)
		}
	}
}

func TestClientRebuiltWhenKubeconfigChanges(t *testing.T) {
	kc := func(host string) []byte {
		return []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: " + host +
			"\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n")
	}
	c := NewCache(runtime.NewScheme(), Options{})
	a, err := c.Get("p", "1", kc("https://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Get("p", "1", kc("https://ignored:2")); again != a {
		t.Fatal("same version must reuse the client")
	}
	b, err := c.Get("p", "2", kc("https://127.0.0.1:2"))
	if err != nil || b == a || b.Host != "https://127.0.0.1:2" {
		t.Fatalf("new version must rebuild the client: %v, host %s", err, b.Host)
	}
}
