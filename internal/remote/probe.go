package remote

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flotilla-dev/flotilla/internal/capacity"
)

// Probe checks the provider's API server (readyz) and measures its capacity:
// for each Ready, schedulable node, allocatable minus the requests of the
// pods bound to it that have not finished.
func (c *Client) Probe(ctx context.Context) (capacity.Observation, error) {
	var obs capacity.Observation
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
	return capacity.Measure(v.GitVersion, nodes.Items, pods.Items), nil
}
