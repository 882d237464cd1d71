package market

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func rl(kv ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

func TestPodRequest(t *testing.T) {
	cases := map[string]struct {
		spec corev1.PodSpec
		want Vector
	}{
		"sums containers": {
			spec: corev1.PodSpec{Containers: []corev1.Container{
				{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "250m", "memory", "1Gi")}},
				{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "750m", "memory", "1Gi")}},
			}},
			want: Vector{CPU: 1000, Memory: 2 * gib, Pods: 1},
		},
		"limits stand in for missing requests": {
			spec: corev1.PodSpec{Containers: []corev1.Container{
				{Resources: corev1.ResourceRequirements{Limits: rl("cpu", "2", "nvidia.com/gpu", "1"), Requests: rl("memory", "1Gi")}},
			}},
			want: Vector{CPU: 2000, Memory: gib, GPU: 1, Pods: 1},
		},
		"a big init container dominates": {
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "3")}}},
				Containers:     []corev1.Container{{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "1", "memory", "1Gi")}}},
				Overhead:       rl("cpu", "100m"),
			},
			want: Vector{CPU: 3100, Memory: gib, Pods: 1},
		},
		"no requests at all": {spec: corev1.PodSpec{Containers: []corev1.Container{{}}}, want: Vector{Pods: 1}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := PodRequest(&tc.spec); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestVectorListRoundTrip(t *testing.T) {
	in := rl("cpu", "1500m", "memory", "3Gi", "ephemeral-storage", "10Gi", "nvidia.com/gpu", "2", "pods", "4")
	v := FromList(in)
	out := v.List()
	for k, q := range in {
		if got := out[k]; got.Cmp(q) != 0 {
			t.Errorf("%s: %s -> %s", k, q.String(), got.String())
		}
	}
	if c := OfferCapacity(rl("cpu", "1")); c[Pods] != Unlimited {
		t.Errorf("pods not listed should be unlimited, got %d", c[Pods])
	}
	if _, ok := (Vector{Pods: Unlimited}).List()[corev1.ResourcePods]; ok {
		t.Error("Unlimited leaked into a ResourceList")
	}
}
