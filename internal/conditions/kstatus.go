package conditions

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// KStatus is what kstatus, and so Flux, Argo CD and `kubectl wait`-style
// tooling built on cli-utils, computes for obj: Current, InProgress,
// Failed or Terminating. flotillactl shows it; tests assert it.
func KStatus(obj runtime.Object) (string, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return "", err
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: u})
	if err != nil {
		return "", err
	}
	return res.Status.String(), nil
}
