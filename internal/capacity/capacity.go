// Package capacity measures a cluster's capacity from its nodes and pods,
// and derives what its owner offers. Pure: the callers list the objects.
package capacity

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
)

// Observation is what one look at a cluster saw.
type Observation struct {
	KubernetesVersion string
	Nodes             int32
	Allocatable       market.Vector
	Allocated         market.Vector
	Free              market.Vector
	// LargestChunk is, per resource, the most free on any one node.
	LargestChunk market.Vector
}

// Measure computes an Observation from nodes and pods.
func Measure(version string, nodes []corev1.Node, pods []corev1.Pod) Observation {
	obs := Observation{KubernetesVersion: version}
	used := map[string]market.Vector{}
	for i := range pods {
		p := &pods[i]
		if p.Spec.NodeName == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		u := used[p.Spec.NodeName]
		r := market.PodRequest(&p.Spec)
		for k := range u {
			u[k] += r[k]
		}
		used[p.Spec.NodeName] = u
	}
	for i := range nodes {
		n := &nodes[i]
		if !schedulable(n) {
			continue
		}
		obs.Nodes++
		alloc := market.FromList(n.Status.Allocatable)
		u := used[n.Name]
		for k := range alloc {
			free := max(alloc[k]-u[k], 0)
			obs.Allocatable[k] += alloc[k]
			obs.Allocated[k] += u[k]
			obs.Free[k] += free
			obs.LargestChunk[k] = max(obs.LargestChunk[k], free)
		}
	}
	return obs
}

func schedulable(n *corev1.Node) bool {
	if n.Spec.Unschedulable {
		return false
	}
	if slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
	}) {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Offer is what a provider puts on the market: the free capacity of its
// schedulable nodes, minus the owner's reserve, never below zero. Pods of
// Flotilla Leases do not count as used: the market already charges them to
// their Leases, and counting them here too would shrink the Offer twice.
func Offer(nodes []corev1.Node, pods []corev1.Pod, reserve corev1.ResourceList) corev1.ResourceList {
	own := make([]corev1.Pod, 0, len(pods))
	for _, p := range pods {
		if p.Labels[flotillav1.LabelManaged] != "true" {
			own = append(own, p)
		}
	}
	free := Measure("", nodes, own).Free
	r := market.FromList(reserve)
	for k := range free {
		free[k] = max(free[k]-r[k], 0)
	}
	out := free.List()
	// cpu and memory always appear, at zero when all is reserved, so that
	// the Offer says "nothing" rather than "unbounded".
	for _, k := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := out[k]; !ok {
			out[k] = resource.MustParse("0")
		}
	}
	return out
}
