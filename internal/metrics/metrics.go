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
		Help:    "Duration of one scheduling cycle: snapshot, match and Lease creation.",
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

func init() {
	crmetrics.Registry.MustRegister(schedulingCycleDuration, pendingReplicas, leasesCreated, leaseCreateErrors, unschedulableWorkloads)
}

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

// LeaseCreated counts a Lease the scheduler created.
func LeaseCreated() { leasesCreated.Inc() }

// LeaseCreateFailed counts a Lease creation that failed.
func LeaseCreateFailed() { leaseCreateErrors.Inc() }
