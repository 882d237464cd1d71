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

func quantityOf(r Resource, q resource.Quantity) int64 {
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
// scheduler counts it: the larger of the containers' summed requests and
// any single init container's, plus pod overhead, with a container's limits
// standing in for requests it does not set. Pods is 1.
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
	var sum Vector
	for i := range spec.Containers {
		c := containerReq(&spec.Containers[i])
		for r := range sum {
			sum[r] += c[r]
		}
	}
	for i := range spec.InitContainers {
		c := containerReq(&spec.InitContainers[i])
		for r := range sum {
			sum[r] = max(sum[r], c[r])
		}
	}
	over := FromList(spec.Overhead)
	for r := range sum {
		sum[r] += over[r]
	}
	sum[Pods] = 1
	return sum
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
