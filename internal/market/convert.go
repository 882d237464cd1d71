package market

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/money"
)

var resourceKeys = [NumResources]corev1.ResourceName{
	CPU: corev1.ResourceCPU, Memory: corev1.ResourceMemory, EphemeralStorage: corev1.ResourceEphemeralStorage,
	GPU: flotillav1.ResourceGPU, Pods: corev1.ResourcePods,
}

// quantityOf converts q into the market's unit for r, clamped to
// [0, maxQuantity]: a negative or absurd quantity from another party never
// wraps around.
func quantityOf(r Resource, q resource.Quantity) int64 {
	if q.Sign() <= 0 {
		return 0
	}
	limit := resource.NewQuantity(maxQuantity, resource.DecimalSI)
	if r == CPU {
		limit = resource.NewMilliQuantity(maxQuantity, resource.DecimalSI)
	}
	if q.Cmp(*limit) >= 0 {
		return maxQuantity
	}
	if r == CPU {
		return q.MilliValue()
	}
	return q.Value()
}

// FromList converts a ResourceList; resources the market does not know are
// ignored.
func FromList(l corev1.ResourceList) Vector {
	var v Vector
	for r, name := range resourceKeys {
		if q, ok := l[name]; ok {
			v[r] = quantityOf(Resource(r), q)
		}
	}
	return v
}

// OfferCapacity converts an Offer's resources; pods are Unlimited when the
// offer does not list them.
func OfferCapacity(l corev1.ResourceList) Vector {
	v := FromList(l)
	if _, ok := l[corev1.ResourcePods]; !ok {
		v[Pods] = Unlimited
	}
	return v
}

// List converts back, leaving out zero and Unlimited entries.
func (v Vector) List() corev1.ResourceList {
	l := corev1.ResourceList{}
	for r, name := range resourceKeys {
		switch n := v[r]; {
		case n == 0 || n >= Unlimited:
		case Resource(r) == CPU:
			l[name] = *resource.NewMilliQuantity(n, resource.DecimalSI)
		case Resource(r) == Memory || Resource(r) == EphemeralStorage:
			l[name] = *resource.NewQuantity(n, resource.BinarySI)
		default:
			l[name] = *resource.NewQuantity(n, resource.DecimalSI)
		}
	}
	return l
}

// PodRequest is what one replica of spec reserves, as the Kubernetes
// scheduler counts it: the containers' requests plus those of sidecars
// (init containers that keep running), or more when an init container
// needs more while it runs beside the sidecars started before it; plus pod
// overhead. A container's limits stand in for requests it does not set.
// Pods is 1.
func PodRequest(spec *corev1.PodSpec) Vector {
	containerReq := func(c *corev1.Container) Vector {
		v := FromList(c.Resources.Limits)
		for r, name := range resourceKeys {
			if q, ok := c.Resources.Requests[name]; ok {
				v[r] = quantityOf(Resource(r), q)
			}
		}
		return v
	}
	var sum, sidecars, initPeak Vector
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		req := containerReq(c)
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars.add(&req)
			initPeak.atLeast(&sidecars)
			continue
		}
		req.add(&sidecars)
		initPeak.atLeast(&req)
	}
	for i := range spec.Containers {
		c := containerReq(&spec.Containers[i])
		sum.add(&c)
	}
	sum.add(&sidecars)
	sum.atLeast(&initPeak)
	over := FromList(spec.Overhead)
	sum.add(&over)
	sum[Pods] = 1
	return sum
}

// add adds r to v, saturating at maxQuantity.
func (v *Vector) add(r *Vector) {
	for i := range v {
		v[i] = min(v[i]+r[i], maxQuantity)
	}
}

// atLeast raises each entry of v to r's.
func (v *Vector) atLeast(r *Vector) {
	for i := range v {
		v[i] = max(v[i], r[i])
	}
}

// Prices parses an API price list into micro-credits per unit-hour.
func Prices(l flotillav1.PriceList) ([NumResources]money.Micro, error) {
	var p [NumResources]money.Micro
	for r, name := range resourceKeys {
		s, ok := l[name]
		if !ok {
			continue
		}
		m, err := money.Parse(string(s))
		if err != nil {
			return p, fmt.Errorf("price of %s: %w", name, err)
		}
		p[r] = m
	}
	return p, nil
}
