package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Field managers of the hub's status writers. Each status field has one
// writer (docs/architecture.md lists them); writing with server-side apply
// under its own manager keeps writers of one object, such as the Workload
// controller and the bank, from overwriting each other's fields.
const (
	ManagerProvider     = "flotilla-provider"
	ManagerLease        = "flotilla-lease"
	ManagerWorkload     = "flotilla-workload"
	ManagerOffer        = "flotilla-offer"
	ManagerBank         = "flotilla-bank"
	ManagerVerification = "flotilla-verification"
	ManagerReputation   = "flotilla-reputation"
)

// applyStatus writes status, the fields of obj's status one controller
// owns (a typed status, or a map of just the fields a writer of a few
// owns), with server-side apply under manager. With resourceVersion set the
// write is conditional: it fails with a conflict when obj changed since it
// was read (for status that adds to what was there, like reputation).
func applyStatus(ctx context.Context, c client.Client, obj client.Object, status any, manager, resourceVersion string) error {
	u, err := applyObject(c, obj, resourceVersion)
	if err != nil {
		return err
	}
	st, ok := status.(map[string]any)
	if !ok {
		if st, err = runtime.DefaultUnstructuredConverter.ToUnstructured(status); err != nil {
			return fmt.Errorf("converting the status of %s: %w", obj.GetName(), err)
		}
	}
	u.Object["status"] = st
	return c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(manager), client.ForceOwnership)
}

// applyMetadata writes the labels and annotations one controller owns on
// obj with server-side apply under manager, if obj is still at
// resourceVersion (so that a deleted object is never made again).
func applyMetadata(ctx context.Context, c client.Client, obj client.Object, labels, annotations map[string]string, manager, resourceVersion string) error {
	u, err := applyObject(c, obj, resourceVersion)
	if err != nil {
		return err
	}
	u.SetLabels(labels)
	u.SetAnnotations(annotations)
	return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(manager), client.ForceOwnership)
}

func applyObject(c client.Client, obj client.Object, resourceVersion string) (*unstructured.Unstructured, error) {
	gvk, err := apiutil.GVKForObject(obj, c.Scheme())
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetGroupVersionKind(gvk)
	u.SetName(obj.GetName())
	u.SetNamespace(obj.GetNamespace())
	if resourceVersion != "" {
		u.SetResourceVersion(resourceVersion)
	}
	return u, nil
}
