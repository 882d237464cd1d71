package controllers

import (
	"context"
	"crypto/ed25519"
	"time"

	"golang.org/x/time/rate"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/endpoint"
	"github.com/flotilla-dev/flotilla/internal/keys"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/metrics"

	"github.com/flotilla-dev/flotilla/internal/flap"
	"github.com/flotilla-dev/flotilla/internal/remote"
)

// Options tune the hub controllers.
type Options struct {
	// SchedulerInterval is the least time between two scheduling cycles.
	SchedulerInterval time.Duration
	// SchedulerResync runs a cycle at least this often.
	SchedulerResync time.Duration
	// HubID names this hub on providers (namespace names, labels).
	HubID string
	// ProviderGracePeriod without a successful probe before a
	// provider is Lost.
	ProviderGracePeriod time.Duration
	// ProbeInterval between two probes of a provider.
	ProbeInterval time.Duration
	// EndpointInterval between two checks of an exposed Lease's
	// endpoints from the hub; EndpointTimeout bounds one check.
	EndpointInterval, EndpointTimeout time.Duration
	// EntryBindAddress serves Workloads' stable addresses ("" or "0":
	// not served); EntryURL is how tenants reach it, written into the
	// status of the Workloads that ask for one.
	EntryBindAddress, EntryURL string
	// Remote tunes the clients of provider clusters.
	Remote remote.Options
	// LeaseRate (per second) and LeaseBurst rate-limit new Leases per
	// provider; zero values take the defaults, a negative burst turns the
	// limit off.
	LeaseRate  float64
	LeaseBurst int
	// Flap is the hold-down policy for providers that keep getting Lost.
	Flap flap.Policy
	// ReputationHalfLife is how long reputation evidence keeps half its weight.
	ReputationHalfLife time.Duration
	// SettlementInterval, EscrowPeriod, FundsGrace and FeeBPS set the
	// economics (see internal/settle); zero values take the defaults.
	SettlementInterval time.Duration
	EscrowPeriod       time.Duration
	FundsGrace         time.Duration
	FeeBPS             int64
	// LedgerChunkEntries is how many ledger entries one stored chunk holds.
	LedgerChunkEntries int
	// AllowUnaccounted runs Workloads of namespaces without an Account,
	// free: for a private federation.
	AllowUnaccounted bool
	// Clock is the time every decision is made at; time.Now when nil.
	// Rate limits, back-offs and latency metrics keep the wall clock.
	Clock func() time.Time
}

// CacheOptions keep the manager's cache to what it must watch. Secrets and
// ConfigMaps are cached only in flotilla-system (provider kubeconfigs), and
// not the ledger's chunks there: a tenant filling its namespace with large
// Secrets must not fill the hub's memory. Tenants' ConfigMaps and Secrets
// are read straight from the API server, only when a Lease refers to them.
func CacheOptions() cache.Options {
	notLedger, _ := labels.NewRequirement(ledgerstore.ChunkLabel, selection.DoesNotExist, nil)
	notMeter, _ := labels.NewRequirement(LabelMeterCheckpoint, selection.DoesNotExist, nil)
	system := map[string]cache.Config{flotillav1.SystemNamespace: {}}
	return cache.Options{
		// Nothing reads managedFields, and they were a third of each
		// Workload the scheduler copies every cycle (a heap profile at
		// 1,000 providers).
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {Label: labels.NewSelector().Add(*notLedger, *notMeter), Namespaces: system},
			&corev1.Secret{}:    {Namespaces: system},
			// Heartbeats live in the system namespace, the only one the
			// manager's role may read them in (found running the chart).
			&coordinationv1.Lease{}: {Namespaces: system},
			// An Assignment carries copies of the tenant's ConfigMaps and
			// Secrets; the cache keeps everything but them.
			&flotillav1.Assignment{}: {Transform: dropAssignmentObjects},
		}}
}

func dropAssignmentObjects(o any) (any, error) {
	if a, ok := o.(*flotillav1.Assignment); ok {
		a.Spec.Objects = nil
		a.ManagedFields = nil // this transform replaces the default one
	}
	return o, nil
}

// Setup registers the indexes, the scheduling loop and the reconcilers.
func Setup(ctx context.Context, mgr ctrl.Manager, opts Options) (*Scheduler, error) {
	if err := SetupIndexes(ctx, mgr); err != nil {
		return nil, err
	}
	now := opts.Clock
	if now == nil {
		now = time.Now
	}
	s := NewScheduler(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetCache(), mgr.GetEventRecorderFor("flotilla-scheduler"))
	if opts.SchedulerInterval > 0 {
		s.MinInterval = opts.SchedulerInterval
	}
	if opts.SchedulerResync > 0 {
		s.Resync = opts.SchedulerResync
	}
	if opts.LeaseRate > 0 {
		s.LeaseRate = rate.Limit(opts.LeaseRate)
	}
	if opts.LeaseBurst != 0 {
		s.LeaseBurst = max(0, opts.LeaseBurst)
	}
	s.AllowUnaccounted, s.Now = opts.AllowUnaccounted, now
	if err := mgr.Add(s); err != nil {
		return nil, err
	}
	prober := endpoint.NewProber()
	prober.Counted = metrics.EndpointCheck
	if opts.EndpointInterval > 0 {
		prober.Interval = opts.EndpointInterval
	}
	if opts.EndpointTimeout > 0 {
		prober.Timeout = opts.EndpointTimeout
	}
	if err := mgr.Add(prober); err != nil {
		return nil, err
	}
	entryURL := ""
	if opts.EntryBindAddress != "" && opts.EntryBindAddress != "0" {
		if err := mgr.Add(&EntryServer{Client: mgr.GetClient(), Prober: prober, Addr: opts.EntryBindAddress}); err != nil {
			return nil, err
		}
		entryURL = opts.EntryURL
	}
	if err := (&WorkloadReconciler{Client: mgr.GetClient(), Scheduler: s, Recorder: mgr.GetEventRecorderFor("flotilla-workload"),
		EntryURL: entryURL}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&OfferReconciler{Client: mgr.GetClient(), Now: now}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	hubID := opts.HubID
	if hubID == "" {
		hubID = "hub"
	}
	rc := remote.NewCache(mgr.GetScheme(), opts.Remote)
	pr := &ProviderReconciler{
		Client: mgr.GetClient(), Remote: rc, Recorder: mgr.GetEventRecorderFor("flotilla-provider"), HubID: hubID,
		GracePeriod: opts.ProviderGracePeriod, ProbeInterval: opts.ProbeInterval, Flap: opts.Flap,
		ReputationHalfLife: opts.ReputationHalfLife, Now: now, Since: now(),
	}
	if err := pr.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	s.Silent, pr.Heard = pr.Silent, s.Trigger
	meter := &MeterCheckpoint{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Namespace: flotillav1.SystemNamespace,
		Log: ctrl.Log.WithName("meter-checkpoint")}
	if err := mgr.Add(meter); err != nil {
		return nil, err
	}
	lr := &LeaseReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Remote: rc, Recorder: mgr.GetEventRecorderFor("flotilla-lease"), HubID: hubID, Now: now,
		Prober: prober, Meter: meter, Agents: pr,
	}
	if err := lr.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	s.Created = lr.AssignNew
	store := &ledgerstore.Store{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(),
		Namespace: flotillav1.SystemNamespace, ChunkEntries: opts.LedgerChunkEntries}
	key := func(ctx context.Context) (ed25519.PrivateKey, error) {
		cs, err := kubernetes.NewForConfig(mgr.GetConfig())
		if err != nil {
			return nil, err
		}
		return keys.Ensure(ctx, cs, flotillav1.SystemNamespace, ledgerstore.KeySecret)
	}
	bank := NewBank(mgr.GetClient(), mgr.GetCache(), store, mgr.GetEventRecorderFor("flotilla-bank"), key)
	bank.APIReader, bank.Now = mgr.GetAPIReader(), now
	bank.Publisher.Hub = hubID
	s.Settlement, bank.Available = bank.Unavailable, s.Trigger
	if opts.SettlementInterval > 0 {
		bank.Policy.Interval = opts.SettlementInterval
	}
	if opts.EscrowPeriod > 0 {
		bank.Policy.EscrowPeriod = opts.EscrowPeriod
	}
	if opts.FundsGrace > 0 {
		bank.Policy.Grace = opts.FundsGrace
	}
	bank.Policy.FeeBPS = opts.FeeBPS
	if err := mgr.Add(bank); err != nil {
		return nil, err
	}
	return s, nil
}
