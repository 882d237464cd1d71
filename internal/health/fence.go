package health

import (
	"fmt"
	"strconv"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
)

// Stale says why a namespace of this hub on provider must go, or "" when
// its Lease still runs there: its Lease is gone, closed, being deleted, or
// of a newer epoch than the namespace. lease is the Lease whose UID the
// namespace carries, nil when there is none.
//
// A namespace of a Lease bound to another provider is that provider's to
// fence, whatever the Lease's state: Leases never move, so it can only be
// there because both Providers name one cluster (an owner who registered
// it twice), and this one cannot tell whether the other is partitioned
// and still meant to run it.
func Stale(provider string, namespaceLabels map[string]string, lease *flotillav1.Lease) string {
	if lease == nil {
		return "its lease no longer exists"
	}
	epoch, _ := strconv.ParseInt(namespaceLabels[flotillav1.LabelEpoch], 10, 64)
	switch {
	case lease.Spec.ProviderRef.Name != provider:
		return ""
	case lease.Status.Phase == flotillav1.LeaseClosed:
		return "lease " + lease.Name + " is closed"
	case lease.DeletionTimestamp != nil:
		return "lease " + lease.Name + " is being deleted"
	case epoch < lease.Spec.Epoch:
		return fmt.Sprintf("epoch %d is older than lease epoch %d", epoch, lease.Spec.Epoch)
	}
	return ""
}
