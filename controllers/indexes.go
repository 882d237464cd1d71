package controllers

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/trust"
)

// Field indexes on Leases, so controllers find a Workload's or an Offer's
// Leases without scanning them all.
const (
	indexLeaseWorkload = "spec.workloadRef.name"
	indexLeaseOffer    = "spec.offerRef"
	indexLeaseUID      = "metadata.uid"
	// indexLeaseReputationPending holds the provider of a Lease with an
	// outcome or verdict its reputation has not counted yet.
	indexLeaseReputationPending = "reputation.pending"
)

func offerKey(namespace, name string) string { return namespace + "/" + name }

// SetupIndexes registers the field indexes the controllers use.
func SetupIndexes(ctx context.Context, mgr manager.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &flotillav1.Lease{}, indexLeaseWorkload, func(o client.Object) []string {
		return []string{o.(*flotillav1.Lease).Spec.WorkloadRef.Name}
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &flotillav1.Lease{}, indexLeaseReputationPending, func(o client.Object) []string {
		l := o.(*flotillav1.Lease)
		if len(trust.Unrecorded(l)) == 0 {
			return nil
		}
		return []string{l.Spec.ProviderRef.Name}
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &flotillav1.Lease{}, indexLeaseUID, func(o client.Object) []string {
		return []string{string(o.GetUID())}
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &flotillav1.Lease{}, indexLeaseOffer, func(o client.Object) []string {
		l := o.(*flotillav1.Lease)
		return []string{offerKey(l.Spec.OfferRef.Namespace, l.Spec.OfferRef.Name)}
	})
}
