package market

import (
	"math/big"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
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
		"T4.sidecars": {
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{
					{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "500m", "memory", "1Gi")}, RestartPolicy: &always},
					{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "1", "memory", "1Gi")}},
				},
				Containers: []corev1.Container{{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "1", "memory", "1Gi")}}},
			},
			want: Vector{CPU: 1500, Memory: 2 * gib, Pods: 1},
		},
		"an init container after a sidecar needs both": {
			spec: corev1.PodSpec{
				InitContainers: []corev1.Container{
					{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "1", "memory", "1Gi")}, RestartPolicy: &always},
					{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "3", "memory", "1Gi")}},
				},
				Containers: []corev1.Container{{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "1", "memory", "1Gi")}}},
			},
			want: Vector{CPU: 4000, Memory: 2 * gib, Pods: 1},
		},
		"negative and absurd quantities neither wrap nor subtract": {
			spec: corev1.PodSpec{Containers: []corev1.Container{
				{Resources: corev1.ResourceRequirements{Requests: rl("cpu", "1e18", "memory", "-1Gi")}},
			}},
			want: Vector{CPU: maxQuantity, Pods: 1},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := PodRequest(&tc.spec); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

var always = corev1.ContainerRestartPolicyAlways

// TestCheckRequest plays a tenant sending requests that would be priced at
// nothing, wrap around, or escape the provider's limits: each is refused
// naming the field.
func TestCheckRequest(t *testing.T) {
	ok := corev1.ResourceRequirements{Requests: rl("cpu", "100m", "memory", "64Mi")}
	pod := func(mutate func(*corev1.PodSpec)) corev1.PodSpec {
		s := corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Resources: *ok.DeepCopy()}}}
		mutate(&s)
		return s
	}
	for id, tc := range map[string]struct {
		spec  corev1.PodSpec
		field string
	}{
		"T4.no-requests": {pod(func(s *corev1.PodSpec) { s.Containers[0].Resources = corev1.ResourceRequirements{} }),
			"spec.containers[app].resources.requests.cpu"},
		"T4.no-memory": {pod(func(s *corev1.PodSpec) { delete(s.Containers[0].Resources.Requests, "memory") }),
			"spec.containers[app].resources.requests.memory"},
		"T4.init-without-requests": {pod(func(s *corev1.PodSpec) { s.InitContainers = []corev1.Container{{Name: "side", RestartPolicy: &always}} }),
			"spec.initContainers[side].resources.requests.cpu"},
		"T4.pod-level-resources": {pod(func(s *corev1.PodSpec) { s.Resources = &corev1.ResourceRequirements{Limits: rl("cpu", "64")} }),
			"spec.resources"},
		"T4.overhead":     {pod(func(s *corev1.PodSpec) { s.Overhead = rl("cpu", "1") }), "spec.overhead"},
		"T4.negative-cpu": {pod(func(s *corev1.PodSpec) { s.Containers[0].Resources.Requests["cpu"] = resource.MustParse("-1") }), "spec.containers[app].resources.requests.cpu"},
		"T4.zero-memory":  {pod(func(s *corev1.PodSpec) { s.Containers[0].Resources.Requests["memory"] = resource.MustParse("0") }), "spec.containers[app].resources.requests.memory"},
		"T4.huge-cpu":     {pod(func(s *corev1.PodSpec) { s.Containers[0].Resources.Requests["cpu"] = resource.MustParse("1e18") }), "spec.containers[app].resources.requests.cpu"},
		"T4.huge-limit":   {pod(func(s *corev1.PodSpec) { s.Containers[0].Resources.Limits = rl("memory", "1Ei") }), "spec.containers[app].resources.limits.memory"},
		"T4.unsold-resource": {pod(func(s *corev1.PodSpec) {
			s.Containers[0].Resources.Requests["hugepages-2Mi"] = resource.MustParse("1Gi")
		}),
			"spec.containers[app].resources.requests.hugepages-2Mi"},
		"T4.fractional-gpu": {pod(func(s *corev1.PodSpec) {
			s.Containers[0].Resources.Requests["nvidia.com/gpu"] = resource.MustParse("500m")
		}),
			"spec.containers[app].resources.requests.nvidia.com/gpu"},
		"T4.resource-claims": {pod(func(s *corev1.PodSpec) { s.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: "gpu"}} }),
			"spec.containers[app].resources.claims"},
	} {
		t.Run(id, func(t *testing.T) {
			err := CheckRequest(&tc.spec)
			fe, isField := err.(*FieldError)
			if !isField || fe.Field != tc.field {
				t.Fatalf("got %v, want a refusal of %s", err, tc.field)
			}
		})
	}
	good := pod(func(s *corev1.PodSpec) {
		s.InitContainers = []corev1.Container{{Name: "side", RestartPolicy: &always, Resources: *ok.DeepCopy()}}
		s.Containers[0].Resources.Limits = rl("cpu", "1", "nvidia.com/gpu", "2")
	})
	if err := CheckRequest(&good); err != nil {
		t.Errorf("a valid template: %v", err)
	}
}

func TestCheckOffer(t *testing.T) {
	if err := CheckOffer(rl("cpu", "64", "memory", "256Gi", "pods", "110")); err != nil {
		t.Errorf("a valid offer: %v", err)
	}
	for field, l := range map[string]corev1.ResourceList{
		"spec.resources.cpu":           rl("cpu", "-4"),
		"spec.resources.memory":        rl("memory", "2Ei"),
		"spec.resources.hugepages-1Gi": rl("hugepages-1Gi", "1"),
	} {
		if err := CheckOffer(l); err == nil || err.(*FieldError).Field != field {
			t.Errorf("%v: got %v, want a refusal of %s", l, err, field)
		}
	}
}

// FuzzPodRequest converts and prices any quantities a tenant can write:
// nothing panics, nothing is negative, and a template CheckRequest accepts
// is priced without overflow at the highest price an Offer can set.
func FuzzPodRequest(f *testing.F) {
	f.Add("100m", "64Mi", "1", "1Gi", "0", true)
	f.Add("1e18", "-1", "1e-3", "9223372036854775807", "1", false)
	f.Add("0.0001", "1Ei", "1024", "16Ti", "64", true)
	// Each resource within its bounds, the sum at the top price past int64.
	f.Add("1001m", "1002M", "1m", "1Mi", "8", false)
	f.Fuzz(func(t *testing.T, cpu, mem, initCPU, initMem, gpu string, sidecar bool) {
		parse := func(s string) (resource.Quantity, bool) {
			// The CRDs admit only what bound.Quantity does.
			if bound.Quantity(s) != nil {
				return resource.Quantity{}, false
			}
			q, err := resource.ParseQuantity(s)
			return q, err == nil
		}
		c, ok1 := parse(cpu)
		m, ok2 := parse(mem)
		ic, ok3 := parse(initCPU)
		im, ok4 := parse(initMem)
		g, ok5 := parse(gpu)
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
			return
		}
		spec := corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{"cpu": c, "memory": m, "nvidia.com/gpu": g}}}},
			InitContainers: []corev1.Container{{Name: "init", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{"cpu": ic, "memory": im}}}},
		}
		if sidecar {
			spec.InitContainers[0].RestartPolicy = &always
		}
		err := CheckRequest(&spec)
		v := PodRequest(&spec)
		for r, n := range v {
			if n < 0 || n > maxQuantity {
				t.Fatalf("%s converted to %d", Resource(r), n)
			}
		}
		if err != nil {
			if fe, ok := err.(*FieldError); !ok || fe.Field == "" {
				t.Fatalf("refusal without a field: %v", err)
			}
			return
		}
		top, _ := Prices(map[corev1.ResourceName]flotillav1.Amount{"cpu": "999999999999.999999", "memory": "999999999999.999999", "nvidia.com/gpu": "999999999999.999999"})
		got, ok := PricePerReplicaHour(&v, &top)
		want := exactPrice(&v, &top)
		switch fits := want.IsInt64(); {
		case ok != fits:
			t.Fatalf("%v: ok=%v but the exact price %s fits int64: %v", v, ok, want, fits)
		case ok && want.Int64() != int64(got):
			t.Fatalf("%v: priced %d, exactly %s", v, got, want)
		}
	})
}

// exactPrice is PricePerReplicaHour in arbitrary precision.
func exactPrice(v *Vector, p *[NumResources]moneyMicro) *big.Int {
	total := new(big.Int)
	for i := range v {
		if v[i] <= 0 || p[i] <= 0 {
			continue
		}
		d := new(big.Int).SetUint64(unitSize[i])
		term := new(big.Int).Mul(big.NewInt(v[i]), big.NewInt(int64(p[i])))
		term.Add(term, new(big.Int).Sub(d, big.NewInt(1)))
		total.Add(total, term.Quo(term, d))
	}
	return total
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
