// Package controllers holds Flotilla's hub reconcilers, one per kind.
package controllers

// The manager's permissions, generated into config/rbac by `make manifests`.
// It reads the Flotilla kinds everywhere and writes only their status (and
// Leases and Pull-mode providers' Assignments, which it owns, and
// providers' Accounts, which it makes). In
// flotilla-system it writes the ledger's ConfigMaps and its key's Secret,
// and lists and watches Secrets and ConfigMaps (providers' kubeconfigs).
// Elsewhere it may only get a Secret or ConfigMap by name: the ones a
// Lease's template refers to, copied into the lease's namespace on the
// provider, and providers' usage reports. It never caches a tenant's, and
// lists ConfigMaps outside flotilla-system only as metadata, by the label
// of the ledger entries it copies to each tenant and provider.

// +kubebuilder:rbac:groups=flotilla.dev,resources=offers;workloads,verbs=get;list;watch
// +kubebuilder:rbac:groups=flotilla.dev,resources=accounts,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=flotilla.dev,resources=accounts/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=flotilla.dev,resources=providers,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=flotilla.dev,resources=providers/status;offers/status;workloads/status;leases/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=flotilla.dev,resources=workloads/finalizers;leases/finalizers;providers/finalizers,verbs=update
// +kubebuilder:rbac:groups=flotilla.dev,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=flotilla.dev,resources=assignments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// The ledger's index and head in flotilla-ledger, and each party's copy of
// its entries in its own namespace.
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;create;update
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=create
// +kubebuilder:rbac:groups="",namespace=flotilla-system,resources=secrets;configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=flotilla-system,resources=leases,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",namespace=flotilla-system,resources=configmaps,verbs=create;update
// +kubebuilder:rbac:groups="",namespace=flotilla-system,resources=secrets,verbs=create
