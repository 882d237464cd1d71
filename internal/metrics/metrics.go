// Package metrics holds Flotilla's Prometheus metrics, registered in
// controller-runtime's registry and so served on the manager's metrics
// endpoint. Callers use the typed helpers, never the vectors.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

const namespace = "flotilla"

var (
	schedulingCycleDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "scheduler", Name: "cycle_duration_seconds",
		Help:    "Duration of one scheduling cycle: snapshot and match; its Lease creations go on after it.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	pendingReplicas = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "scheduler", Name: "pending_replicas",
		Help: "Replicas without a Lease after the last scheduling cycle.",
	})
	leasesCreated = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "scheduler", Name: "leases_created_total",
		Help: "Leases created by the scheduler.",
	})
	leaseCreationsQueued = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "scheduler", Name: "lease_creations_queued",
		Help: "Planned Leases waiting for a creator.",
	})
	leaseCreateLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "scheduler", Name: "lease_create_duration_seconds",
		Help:    "Time from the start of the cycle that planned a Lease to its creation.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
	})
	firstLeaseLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "scheduler", Name: "first_lease_duration_seconds",
		Help: "Time from the scheduler seeing a new Workload to the creation of its first Lease: the hub's share " +
			"of a Workload's start, waits for capacity, budget and back-off included.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
	leaseCreateErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "scheduler", Name: "lease_create_errors_total",
		Help: "Lease creations that failed and will be retried.",
	})
	unschedulableWorkloads = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "scheduler", Name: "unschedulable_workloads",
		Help: "Workloads with pending replicas after the last cycle, by the reason that ruled out most offers " +
			"(a market reason code such as PriceAboveCeiling, InsufficientCapacity, ProviderNotReady).",
	}, []string{"reason"})
)

var (
	providers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "providers",
		Help: "Providers by phase (Pending, Ready, Lost, Cordoned).",
	}, []string{"phase"})
	leases = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "leases",
		Help: "Leases by phase (Pending, Active, Lost, Closing, Closed).",
	}, []string{"phase"})
	failovers = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "failovers_total",
		Help: "Leases closed because their provider stayed Lost past the workload's failover grace period.",
	})
	leaseStatusWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "lease_status_writes_total",
		Help: "Lease status writes by kind: progress (phase, counts or conditions changed), flush (only usage and the sync time), postponed (a flush put off while others were being written).",
	}, []string{"kind"})
	progressDeadlines = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "progress_deadlines_exceeded_total",
		Help: "Leases closed because their replicas were not ready within the workload's progress deadline.",
	})
	settlementFailing = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "bank", Name: "settlement_failing",
		Help: "1 while the bank cannot settle (the scheduler then places nothing in accounted namespaces), else 0.",
	})
	settlementFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "bank", Name: "settlement_failures_total",
		Help: "Settlement cycles that failed.",
	})
	fencingDeletions = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "fencing_deletions_total",
		Help: "Stale lease namespaces deleted on providers that came back.",
	})
	holdDowns = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "provider_hold_downs_total",
		Help: "Times a provider back from being Lost was held down before taking work again (it keeps getting Lost).",
	})
	leasesThrottled = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "scheduler", Name: "rate_limited_providers_total",
		Help: "Scheduling cycles in which a provider had used up its rate of new Leases, summed over providers.",
	})
	verifications = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "verifications_total",
		Help: "Verified Batch Workloads decided, by result (QuorumReached, QuorumNotReached).",
	}, []string{"result"})
	dissents = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Name: "verification_dissents_total",
		Help: "Copies whose result disagreed with the verified digest, or that reported none.",
	})
	reputationScore = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: "provider", Name: "reputation",
		Help: "Each provider's reputation score in [0, 1].",
	}, []string{"provider"})
	ledgerEntries = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "ledger", Name: "entries_appended_total",
		Help: "Ledger entries signed and stored by the hub.",
	})
	usageDisputes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "ledger", Name: "disputed_payments_total",
		Help: "Payments whose provider's signed usage report differed from the hub's count beyond the tolerance.",
	})
	settlementDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "bank", Name: "settlement_duration_seconds",
		Help:    "Duration of one settlement: reading accounts, Leases and Workloads, appending and storing entries.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	endpointChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "endpoint", Name: "checks_total",
		Help: "Checks of exposed Leases' endpoints from the hub, by result (answered, failed, refused: outside the provider's endpoint ranges or out of bounds).",
	}, []string{"result"})
	endpointsUnreachable = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: "endpoint", Name: "unreachable_total",
		Help: "Times an exposed Lease's endpoint stopped answering the hub while its provider reported replicas ready.",
	})
	remoteLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: "remote", Name: "request_duration_seconds",
		Help:    "Duration of work against a provider's API server, by provider and operation (probe, apply, cleanup).",
		Buckets: prometheus.ExponentialBuckets(0.002, 2, 13),
	}, []string{"provider", "operation"})
)

func init() {
	crmetrics.Registry.MustRegister(schedulingCycleDuration, pendingReplicas, leasesCreated, leaseCreationsQueued, leaseCreateLatency, firstLeaseLatency, leaseCreateErrors, unschedulableWorkloads,
		providers, leases, leaseStatusWrites, failovers, progressDeadlines, settlementFailing, settlementFailures, fencingDeletions, holdDowns, leasesThrottled, verifications, dissents, reputationScore, ledgerEntries, usageDisputes, settlementDuration, remoteLatency,
		endpointChecks, endpointsUnreachable)
}

// Phases sets the providers and leases gauges from counts by phase; every
// phase in the lists is reset first.
func Phases(providerPhases, leasePhases []string, providerCounts, leaseCounts map[string]int) {
	for _, p := range providerPhases {
		providers.WithLabelValues(p).Set(float64(providerCounts[p]))
	}
	for _, p := range leasePhases {
		leases.WithLabelValues(p).Set(float64(leaseCounts[p]))
	}
}

// LeaseStatusWrite counts a Lease status write of kind progress or flush,
// or a flush postponed.
func LeaseStatusWrite(kind string) { leaseStatusWrites.WithLabelValues(kind).Inc() }

// Failover counts a Lease closed for failover.
func Failover() { failovers.Inc() }

// SettlementFailed records whether the last settlement cycle failed.
func SettlementFailed(failed bool) {
	if failed {
		settlementFailures.Inc()
		settlementFailing.Set(1)
		return
	}
	settlementFailing.Set(0)
}

// ProgressDeadlineExceeded counts a Lease closed because its replicas did
// not get ready in time.
func ProgressDeadlineExceeded() { progressDeadlines.Inc() }

// ProviderHeldDown counts a hold-down of a flapping provider.
func ProviderHeldDown() { holdDowns.Inc() }

// ProviderRateLimited counts a provider left out of a cycle by its rate of
// new Leases.
func ProviderRateLimited() { leasesThrottled.Inc() }

// FencingDeletion counts a stale namespace deleted on a provider.
func FencingDeletion() { fencingDeletions.Inc() }

// RemoteRequest records how long an operation against a provider took.
func RemoteRequest(provider, operation string, d time.Duration) {
	remoteLatency.WithLabelValues(provider, operation).Observe(d.Seconds())
}

// ForgetProvider drops a deregistered provider's latency series.
func ForgetProvider(provider string) {
	remoteLatency.DeletePartialMatch(prometheus.Labels{"provider": provider})
	reputationScore.DeleteLabelValues(provider)
}

// Verification counts a verified Workload decided with the result.
func Verification(result string) { verifications.WithLabelValues(result).Inc() }

// Dissent counts a copy that disagreed with the verified digest.
func Dissent() { dissents.Inc() }

// Reputation sets a provider's score.
func Reputation(provider string, score float64) { reputationScore.WithLabelValues(provider).Set(score) }

// SchedulingCycle records one cycle: its duration, the replicas left
// pending and the unschedulable workloads by reason. Every reason in codes is
// reset first so that a reason that disappeared reads 0.
func SchedulingCycle(d time.Duration, pending int64, unschedulable map[string]int, codes []string) {
	schedulingCycleDuration.Observe(d.Seconds())
	pendingReplicas.Set(float64(pending))
	for _, c := range codes {
		unschedulableWorkloads.WithLabelValues(c).Set(float64(unschedulable[c]))
	}
}

// LeaseCreated counts a Lease the scheduler created, d after the start of
// the cycle that planned it.
func LeaseCreated(d time.Duration) {
	leasesCreated.Inc()
	leaseCreateLatency.Observe(d.Seconds())
}

// FirstLeaseCreated records how long after the scheduler saw a new
// Workload its first Lease was created.
func FirstLeaseCreated(d time.Duration) { firstLeaseLatency.Observe(d.Seconds()) }

// LeaseCreationsQueued sets how many planned Leases wait for a creator.
func LeaseCreationsQueued(n int) { leaseCreationsQueued.Set(float64(n)) }

// LeaseCreateFailed counts a Lease creation that failed.
func LeaseCreateFailed() { leaseCreateErrors.Inc() }

// LedgerAppended counts entries stored in the ledger.
func LedgerAppended(n int) { ledgerEntries.Add(float64(n)) }

// SettlementCycle records how long one settlement took.
func SettlementCycle(d time.Duration) { settlementDuration.Observe(d.Seconds()) }

// UsageDisputed counts a disputed payment.
func UsageDisputed() { usageDisputes.Inc() }

// EndpointCheck counts one check of an endpoint from the hub.
func EndpointCheck(result string) { endpointChecks.WithLabelValues(result).Inc() }

// EndpointUnreachable counts an endpoint that stopped answering while its
// provider reported replicas ready.
func EndpointUnreachable() { endpointsUnreachable.Inc() }
