// Package lease decides how a Lease goes on its provider, from what the hub
// observed of it: its phase, conditions and outcome, when its replicas are
// charged, when it fails over, when it misses its progress deadline, and
// how long to wait after a failed sync. Pure: the Lease controller applies
// and reads the Lease on its provider and writes what this decides; the
// clock is the Input's.
package lease

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/bound"
	"github.com/flotilla-dev/flotilla/internal/conditions"
	"github.com/flotilla-dev/flotilla/internal/metering"
	"github.com/flotilla-dev/flotilla/internal/money"
)

// Timing of a Lease's syncs.
const (
	// SyncInterval between two syncs once every replica is ready.
	SyncInterval = 3 * time.Second
	// ConvergeInterval between two syncs while replicas are not all ready.
	ConvergeInterval = time.Second
	// PullSyncInterval between two looks at a Pull-mode Lease once every
	// replica is ready. Its agent's reports and its provider's loss wake
	// it as they come, and its agent's heartbeats keep metering's clock
	// between looks (Input.Heard), so the look only moves that clock
	// along. At SyncInterval the looks of 2,000 Leases took all the Lease
	// workers, and a failover's Leases waited 12 s behind them; at 8 s,
	// 3,000 Leases' looks kept 28 of 32 workers busy and a failover's
	// Leases waited 20 s for their first status.
	PullSyncInterval = 15 * time.Second
	// MaxBackoff caps the wait after syncs that keep failing.
	MaxBackoff = 5 * time.Minute
	// SyncRefresh is how stale status.lastSyncTime may get while nothing
	// else changes.
	SyncRefresh = 30 * time.Second
	// MeterFlush is how often usage is written while nothing changes.
	MeterFlush = 30 * time.Second
	// MaxFlushDelay is how long a flush may be put off while the hub is
	// busy writing other Leases: how late a Lease's usage may show. The
	// put-off flushes are saved together (MeterCheckpoint), so a manager
	// restart forgoes no more than with flushes on time; the bank projects
	// a live Lease's spend from its price, so budgets do not wait for it.
	// At two minutes, 3,000 Leases flushed 25 times a second past the
	// flush slots, and a failover's Leases waited 16 s for workers behind
	// them.
	MaxFlushDelay = 20 * MeterFlush
	// MaxObservationGap is the longest time between two looks at a Lease
	// that still counts as watched (unless Input.Heard); syncs come every
	// 1-3 s, so a longer gap means the hub (or the provider) was away, and
	// that time is not charged.
	MaxObservationGap = 15 * time.Second
	// DefaultProgressDeadline when a Workload leaves it unset.
	DefaultProgressDeadline = 10 * time.Minute
	// DefaultFailoverGrace when a Workload leaves it unset.
	DefaultFailoverGrace = 5 * time.Second
	// AnswerWait is how long a new Lease on a Pull-mode provider may go
	// without a status while its agent has not answered.
	AnswerWait = 5 * time.Second
)

// Input is a Lease as the hub knows it, and the Workload's timing.
type Input struct {
	Lease *flotillav1.Lease
	Now   time.Time
	// LastSeen is the hub's last look at the Lease on its provider before
	// this one; zero when there was none since the hub started.
	LastSeen time.Time
	// Pull: the provider's agent reports to the hub, which wakes the Lease.
	Pull bool
	// Heard: the provider's agent was heard throughout from LastSeen to
	// Now (its heartbeats, never silent for the provider's grace period),
	// so that time counts as watched however far apart the hub's looks
	// were. A busy hub whose looks came late charged nothing for the
	// gaps: the owner was paid less because the hub was slow.
	Heard bool
	// ProgressDeadline and FailoverGrace are the Workload's.
	ProgressDeadline, FailoverGrace time.Duration
}

// Workload's timing, with the defaults.
func Timing(w *flotillav1.Workload) (progressDeadline, failoverGrace time.Duration) {
	progressDeadline, failoverGrace = DefaultProgressDeadline, DefaultFailoverGrace
	if w == nil {
		return
	}
	if d := w.Spec.ProgressDeadlineSeconds; d != nil {
		progressDeadline = time.Duration(*d) * time.Second
	}
	if g := w.Spec.Failover.GracePeriodSeconds; g != nil {
		failoverGrace = time.Duration(*g) * time.Second
	}
	return
}

// Observation is one look at a Lease on its provider. Counts are the
// provider's word, capped at what was leased.
type Observation struct {
	// Running pods are bound to a node and not finished: what is charged.
	Running, Ready, Succeeded, Failed int32
	// Complete or JobFailed: the Job ended (Batch); Message says why.
	Complete, JobFailed bool
	Message             string
	Digest              string
	// Endpoints of the exposed ports as the provider's cluster allocated
	// them.
	Endpoints []flotillav1.ReportedEndpoint
	// Unreachable, set by the hub for an exposed Lease, says which
	// endpoint does not answer its checks: the replicas then count as
	// neither ready nor running (charged), whatever the provider says.
	Unreachable string
}

// Event is what to record, on the Lease or on its Workload.
type Event struct {
	OnWorkload      bool
	Warning         bool
	Reason, Message string
}

// Result is what a decision asks of the controller besides the status.
type Result struct {
	RequeueAfter time.Duration
	Events       []Event
	// FailedOver and DeadlineExceeded: the Lease closed for that reason.
	FailedOver, DeadlineExceeded bool
	// SyncFailed: the Lease could not be applied or read, so its
	// provider does not run this generation yet and observedGeneration
	// must not say it does.
	SyncFailed bool
	// Unwritten: the status need not be written yet; RequeueAfter says
	// when it must be, unless something happens first.
	Unwritten bool
}

// Wait keeps a Lease on a provider not Ready yet waiting.
func Wait(st *flotillav1.LeaseStatus, in Input, provider string) Result {
	if st.Phase == "" {
		st.Phase = flotillav1.LeasePending
	}
	ready(st, in, false, flotillav1.LeaseReasonWaitingForProvider, "waiting for provider "+provider+" to become Ready")
	return Result{RequeueAfter: SyncInterval}
}

// SyncFailed records a sync that could not apply or read the Lease and
// waits longer before each next try: a provider that refuses an object is
// not sent it again every few seconds forever (the progress deadline ends
// the Lease if it never runs).
func SyncFailed(st *flotillav1.LeaseStatus, in Input, reason string, err error) Result {
	st.FailedSyncs = min(st.FailedSyncs+1, 1<<20)
	st.LastError = bound.Error(err)
	if st.Phase == "" {
		st.Phase = flotillav1.LeasePending
	}
	ready(st, in, false, reason, err.Error())
	return Result{RequeueAfter: Backoff(st.FailedSyncs), SyncFailed: true}
}

// Backoff is the wait after n failed syncs in a row: 3s, doubling, up to
// MaxBackoff.
func Backoff(n int32) time.Duration {
	d := SyncInterval
	for i := int32(1); i < n && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// Observed takes one look into status: counts, metering, the end of a
// Batch Lease, and the Ready condition. old is the status before this
// reconcile.
func Observed(st, old *flotillav1.LeaseStatus, in Input, obs Observation, provider string) Result {
	l := in.Lease
	reported := obs.Ready
	if obs.Unreachable != "" {
		obs.Running, obs.Ready = 0, 0
	}
	st.RunningReplicas, st.ReadyReplicas = obs.Running, obs.Ready
	st.SucceededReplicas, st.FailedReplicas = obs.Succeeded, obs.Failed
	st.FailedSyncs, st.LastError = 0, ""
	switch {
	case obs.Complete:
		st.Digest = obs.Digest
		st.Phase, st.Outcome = flotillav1.LeaseClosed, flotillav1.OutcomeCompleted
		ready(st, in, true, flotillav1.LeaseReasonCompleted, fmt.Sprintf("%d replicas succeeded", obs.Succeeded))
	case obs.JobFailed:
		st.Phase, st.Outcome = flotillav1.LeaseClosed, flotillav1.OutcomeFailed
		ready(st, in, false, flotillav1.LeaseReasonJobFailed, obs.Message)
	}
	Meter(st, old, in)
	// Refreshing the time on every sync would write status (and wake every
	// watcher) each second for nothing; it moves when something else does,
	// or once per SyncRefresh.
	if st.LastSyncTime == nil || in.Now.Sub(st.LastSyncTime.Time) >= SyncRefresh || !equalButSyncTime(st, old) {
		st.LastSyncTime = &metav1.Time{Time: in.Now}
	}
	if st.Phase == flotillav1.LeaseClosed {
		return Result{}
	}
	st.Phase = flotillav1.LeaseActive
	if obs.Unreachable != "" {
		ready(st, in, false, flotillav1.LeaseReasonUnreachable, fmt.Sprintf("%d of %d replicas reported ready on %s, but %s; neither counted nor charged",
			reported, l.Spec.Replicas, provider, obs.Unreachable))
		return Result{RequeueAfter: ConvergeInterval}
	}
	steady := Result{RequeueAfter: SyncInterval}
	if in.Pull {
		steady.RequeueAfter = PullSyncInterval
	}
	if l.Spec.Class != flotillav1.ClassBatch && st.ReadyReplicas >= l.Spec.Replicas {
		ready(st, in, true, flotillav1.LeaseReasonApplied, fmt.Sprintf("%d replicas ready on %s", st.ReadyReplicas, provider))
		return steady
	}
	ready(st, in, false, flotillav1.LeaseReasonApplied, fmt.Sprintf("%d of %d replicas ready on %s", st.ReadyReplicas, l.Spec.Replicas, provider))
	if st.ReadyReplicas < l.Spec.Replicas {
		return converging(in)
	}
	return steady
}

// converging is when a Lease whose replicas are not all ready is looked at
// again: soon, so that its Workload turns Ready promptly. In Pull mode a
// look learns only what the agent reported, and each report wakes the
// Lease as it comes, so the look waits like a settled one: the 1 s looks
// of a failover's replacements kept the Lease workers from those reports.
func converging(in Input) Result {
	if in.Pull {
		return Result{RequeueAfter: PullSyncInterval}
	}
	return Result{RequeueAfter: ConvergeInterval}
}

// Lost marks the Lease Lost and, once its Workload's failover grace period
// has passed, closes it so that its replicas are placed again under a
// higher epoch. The grace period counts from the provider's last contact,
// not from the Lost verdict: the provider's own grace period has already
// been waited out, and adding the two would double the outage.
func Lost(st *flotillav1.LeaseStatus, in Input, why string, lastContact *time.Time) Result {
	var res Result
	if st.LostTime == nil {
		st.LostTime = &metav1.Time{Time: in.Now}
		res.Events = append(res.Events, Event{Warning: true, Reason: flotillav1.LeaseReasonProviderLost, Message: "Lease lost: " + why})
		// Charge what the hub saw of this Lease; nothing after.
		MeterUntilLastSeen(st, in)
	}
	st.Phase = flotillav1.LeaseLost
	st.ReadyReplicas, st.RunningReplicas = 0, 0
	from := st.LostTime.Time
	if lastContact != nil && lastContact.Before(from) {
		from = *lastContact
	}
	if deadline := from.Add(in.FailoverGrace); deadline.After(in.Now) {
		// The time, not a countdown: a message that changed each look was
		// a status write each look, while every Workload and Provider
		// change of a failover wakes the lost Lease again.
		ready(st, in, false, flotillav1.LeaseReasonProviderLost,
			fmt.Sprintf("%s; failing over at %s", why, deadline.UTC().Format(time.RFC3339)))
		wait := deadline.Sub(in.Now)
		res.RequeueAfter = wait
		return res
	}
	st.Phase, st.Outcome = flotillav1.LeaseClosed, flotillav1.OutcomeFailedOver
	ready(st, in, false, flotillav1.LeaseReasonFailedOver, why+"; replicas replaced elsewhere under a new epoch")
	res.FailedOver = true
	res.Events = append(res.Events, Event{OnWorkload: true, Warning: true, Reason: flotillav1.LeaseReasonFailedOver,
		Message: fmt.Sprintf("Replacing %d replicas of lease %s: %s", in.Lease.Spec.Replicas, in.Lease.Name, why)})
	return res
}

// Awaiting keeps a Lease whose Pull-mode agent has not answered its
// Assignment (written at assigned) yet waiting, with the last error the
// agent reported. A new Lease's status stays unwritten until AnswerWait
// after its Assignment: its agent answers within a round or two, and
// saying "waiting for the agent" first was one of the three status writes
// of every Lease. The wait counts from the Assignment, not the Lease: on a
// busy hub the Assignment itself came more than AnswerWait after the Lease.
func Awaiting(st *flotillav1.LeaseStatus, in Input, assigned time.Time, message, lastError string) Result {
	if st.Phase == "" {
		st.Phase = flotillav1.LeasePending
	}
	st.LastError = lastError
	ready(st, in, false, flotillav1.LeaseReasonAwaitingAgent, message)
	// The agent's answer wakes the Lease; the look is for the deadline.
	res := Result{RequeueAfter: PullSyncInterval}
	if in.Lease.Status.Phase == "" && lastError == "" {
		if left := assigned.Add(AnswerWait).Sub(in.Now); left > 0 {
			// The agent's answer wakes the Lease before then.
			res.Unwritten, res.RequeueAfter = true, left
		}
	}
	return res
}

// Starting leaves the first status of a new Pull-mode Lease unwritten
// while its agent has accepted the Assignment (written at assigned) but
// runs none of its replicas yet, until AnswerWait after the Assignment:
// the agent's next report, replicas running or ready, comes within a round
// or two and is written instead. "Active, none ready" was a status write
// of every new Lease, and in a failover each write is a turn of a Lease
// worker on a busy API server. Nothing runs, so nothing goes unmetered.
func Starting(st *flotillav1.LeaseStatus, in Input, assigned time.Time, res Result) Result {
	if in.Lease.Status.Phase != "" || st.Phase != flotillav1.LeaseActive || st.RunningReplicas > 0 || st.LastError != "" ||
		len(res.Events) > 0 {
		return res
	}
	left := assigned.Add(AnswerWait).Sub(in.Now)
	if left <= 0 {
		return res
	}
	res.Unwritten = true
	if res.RequeueAfter <= 0 || left < res.RequeueAfter {
		res.RequeueAfter = left
	}
	return res
}

// Refused closes a Lease whose Pull-mode provider's agent refused its
// Assignment: the provider is the authority over its own capacity, so
// the replicas are placed elsewhere under a new epoch, with the agent's
// reason on the Workload. What ran before a refusal (an agent may change
// its mind) is charged up to the hub's last look; a refusal costs the
// provider no reputation.
func Refused(st *flotillav1.LeaseStatus, in Input, provider, reason, message string) Result {
	MeterUntilLastSeen(st, in)
	msg := fmt.Sprintf("provider %s refused it: %s (%s); replicas placed elsewhere", provider, message, reason)
	st.Phase, st.Outcome = flotillav1.LeaseClosed, flotillav1.OutcomeRefused
	st.ReadyReplicas, st.RunningReplicas = 0, 0
	st.NotReadySince = nil
	ready(st, in, false, flotillav1.LeaseReasonRefused, msg)
	return Result{Events: []Event{{OnWorkload: true, Warning: true, Reason: flotillav1.LeaseReasonRefused,
		Message: fmt.Sprintf("Lease %s: %s", in.Lease.Name, msg)}}}
}

// Progress closes the Lease when its replicas have not been ready for the
// Workload's progress deadline: a provider that never runs what it took,
// or runs it without it ever turning ready, neither holds the capacity nor
// is paid past it. Otherwise it returns res, sooner when the deadline
// comes first.
func Progress(st *flotillav1.LeaseStatus, in Input, res Result) Result {
	l := in.Lease
	if st.Phase == flotillav1.LeaseClosed {
		return res
	}
	done := st.ReadyReplicas
	if l.Spec.Class == flotillav1.ClassBatch {
		done += st.SucceededReplicas
	}
	if done >= l.Spec.Replicas {
		st.NotReadySince = nil
		return res
	}
	if st.NotReadySince == nil {
		since := in.Now
		if st.Phase == "" || st.Phase == flotillav1.LeasePending {
			since = l.CreationTimestamp.Time // never ran yet: the deadline counts from placement
		}
		st.NotReadySince = &metav1.Time{Time: since}
	}
	left := st.NotReadySince.Add(in.ProgressDeadline).Sub(in.Now)
	if left > 0 {
		if res.RequeueAfter == 0 || res.RequeueAfter > left {
			res.RequeueAfter = left + 10*time.Millisecond
		}
		return res
	}
	MeterUntilLastSeen(st, in)
	msg := fmt.Sprintf("%d of %d replicas ready on %s after %s (progress deadline %s); replicas placed elsewhere",
		done, l.Spec.Replicas, l.Spec.ProviderRef.Name, in.Now.Sub(st.NotReadySince.Time).Round(time.Second), in.ProgressDeadline)
	st.Phase, st.Outcome = flotillav1.LeaseClosed, flotillav1.OutcomeProgressDeadlineExceeded
	st.ReadyReplicas, st.RunningReplicas = 0, 0
	ready(st, in, false, flotillav1.LeaseReasonProgressDeadline, msg)
	res.Events = append(res.Events, Event{OnWorkload: true, Warning: true, Reason: flotillav1.LeaseReasonProgressDeadline,
		Message: fmt.Sprintf("Closed lease %s: %s", l.Name, msg)})
	res.DeadlineExceeded, res.RequeueAfter, res.Unwritten = true, time.Millisecond, false
	return res
}

// Meter charges the replicas that ran since the last metering, at the count
// observed at the start of the interval (old), and prices them. It writes
// only every MeterFlush, when the count changed, after a gap, or when the
// Lease closes, so that a quiet Lease stays quiet; whole seconds not yet
// written are charged with the next write.
func Meter(st, old *flotillav1.LeaseStatus, in Input) {
	now, prev := in.Now.Truncate(time.Second), in.LastSeen.Truncate(time.Second)
	switch {
	case in.LastSeen.IsZero():
		prev = time.Time{}
	case in.Heard:
		prev = now // watched throughout, through the agent's heartbeats
	}
	watched := !prev.IsZero() && now.Sub(prev) <= MaxObservationGap
	if m := st.Usage.MeteredUntil; m != nil && watched && now.Sub(m.Time) < MeterFlush &&
		st.RunningReplicas == old.RunningReplicas && st.Phase != flotillav1.LeaseClosed {
		return
	}
	charge(st, in.Lease, func(u metering.Usage) (metering.Usage, bool) {
		return metering.Observe(u, old.RunningReplicas, prev, now, MaxObservationGap)
	})
}

// MeterUntilLastSeen charges what ran up to the hub's last look at the
// Lease, and nothing after: the Lease is ending or its provider is gone.
func MeterUntilLastSeen(st *flotillav1.LeaseStatus, in Input) {
	seen := in.LastSeen.Truncate(time.Second)
	if in.LastSeen.IsZero() || st.Usage.MeteredUntil == nil || !seen.After(st.Usage.MeteredUntil.Time) {
		return
	}
	charge(st, in.Lease, func(u metering.Usage) (metering.Usage, bool) {
		return metering.Advance(u, st.RunningReplicas, seen)
	})
}

// charge advances the Lease's usage with step and prices it at the locked
// price.
func charge(st *flotillav1.LeaseStatus, l *flotillav1.Lease, step func(metering.Usage) (metering.Usage, bool)) {
	u := metering.Usage{ReplicaSeconds: st.Usage.ReplicaSeconds}
	if st.Usage.MeteredUntil != nil {
		u.Until = st.Usage.MeteredUntil.Time
	}
	u, changed := step(u)
	if !changed {
		return
	}
	price, err := money.Parse(string(l.Spec.PricePerReplicaHour))
	if err != nil {
		price = 0 // validated at admission; never charge on a parse error
	}
	st.Usage.ReplicaSeconds = u.ReplicaSeconds
	st.Usage.MeteredUntil = &metav1.Time{Time: u.Until}
	st.Usage.Cost = flotillav1.Amount(metering.Cost(u.ReplicaSeconds, price).String())
}

// ready sets the Lease's conditions: Ready, and Reconciling while it is
// not yet where its spec asks (Pending, Lost, converging or retrying is
// InProgress for kstatus; Active with every replica ready is Current). A
// Closed Lease is over, and Current however it ended: it carries Closed,
// whose reason says how, in place of the other three.
func ready(st *flotillav1.LeaseStatus, in Input, isReady bool, reason, message string) {
	gen := in.Lease.Generation
	if st.Phase == flotillav1.LeaseClosed {
		for _, t := range []string{flotillav1.ConditionReady, flotillav1.ConditionReconciling, flotillav1.ConditionStalled} {
			apimeta.RemoveStatusCondition(&st.Conditions, t)
		}
		conditions.Set(&st.Conditions, gen, flotillav1.LeaseConditionClosed, true, reason, message)
		return
	}
	apimeta.RemoveStatusCondition(&st.Conditions, flotillav1.LeaseConditionClosed)
	state := conditions.InProgress
	if isReady {
		state = conditions.Current
	}
	conditions.Apply(&st.Conditions, gen, conditions.Summary{State: state, Reason: reason, Message: message})
}

// FlushOnly reports a status that differs from old only in usage and the
// sync time: a periodic flush, which can wait while the hub is busy
// (metering charges the whole interval at the next write).
func FlushOnly(st, old *flotillav1.LeaseStatus) bool {
	x, y := *st, *old
	x.Usage, y.Usage = flotillav1.LeaseUsage{}, flotillav1.LeaseUsage{}
	x.LastSyncTime, y.LastSyncTime = nil, nil
	return equality.Semantic.DeepEqual(x, y)
}

// FlushOverdue reports a status (as written) whose usage or sync time is
// older than MaxFlushDelay: its flush waits no longer. A manager restart
// forgoes what was not flushed, so this bounds the loss.
func FlushOverdue(old *flotillav1.LeaseStatus, now time.Time) bool {
	for _, t := range []*metav1.Time{old.Usage.MeteredUntil, old.LastSyncTime} {
		if t == nil || now.Sub(t.Time) >= MaxFlushDelay {
			return true
		}
	}
	return false
}

// equalButSyncTime compares two statuses but for lastSyncTime.
func equalButSyncTime(a, b *flotillav1.LeaseStatus) bool {
	x, y := *a, *b
	x.LastSyncTime, y.LastSyncTime = nil, nil
	return equality.Semantic.DeepEqual(x, y)
}
