package remote

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/internal/market"
)

// Observation is what one probe saw on a provider.
type Observation struct {
	KubernetesVersion string
	Nodes             int32
	Allocatable       market.Vector
	Allocated         market.Vector
	Free              market.Vector
	// LargestChunk is, per resource, the most free on any one node.
	LargestChunk market.Vector
}

// Probe checks the provider's API server (readyz) and measures its capacity:
// for each Ready, schedulable node, allocatable minus the requests of the
// pods bound to it that have not finished.
func (c *Client) Probe(ctx context.Context) (Observation, error) {
	var obs Observation
	if err := c.Clientset.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
		return obs, fmt.Errorf("readyz: %w", err)
	}
	v, err := c.Clientset.Discovery().ServerVersion()
	if err != nil {
		return obs, fmt.Errorf("server version: %w", err)
	}
	obs.KubernetesVersion = v.GitVersion
	nodes, err := c.Clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return obs, fmt.Errorf("listing nodes: %w", err)
	}
	pods, err := c.Clientset.CoreV1().Pods("").List(ctx, metav1.ListOptions{
		FieldSelector: "status.phase!=Succeeded,status.phase!=Failed",
	})
	if err != nil {
		return obs, fmt.Errorf("listing pods: %w", err)
	}
	return Measure(v.GitVersion, nodes.Items, pods.Items), nil
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
