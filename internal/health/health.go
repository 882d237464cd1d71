// Package health decides a provider's phase and conditions from what the
// hub observed of it: the watch flow. Decide runs a chain of checks over
// one Input, first match wins, with the clock injected; the Provider
// controller gathers the Input (a probe of the API server, fencing, the
// agent's heartbeat) and writes the Decision. Pure: no client.
//
// Freshness is the hub's own observation: a push-mode provider is alive
// while the hub's probes succeed, whatever its agent's heartbeat says; the
// heartbeat is shown by the time the hub saw it change.
package health

import (
	"cmp"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/conditions"
	"github.com/flotilla-dev/flotilla/internal/flap"
)

// Policy is how the hub watches providers; zero fields take the defaults.
type Policy struct {
	// Grace without a successful probe before a provider is Lost.
	Grace time.Duration
	// ProbeInterval between two probes.
	ProbeInterval time.Duration
	// Flap holds down providers that keep getting Lost.
	Flap flap.Policy
	// ContactRecord is how often a Ready provider's last contact (its
	// agent's heartbeat in Pull mode, its last successful probe in Push
	// mode) is written into its status while nothing else changes;
	// between writes the hub keeps it in memory (Input.HeartbeatSeen,
	// Input.ProbedAt). Writing every beat or probe cost one status write
	// per provider every few seconds, most of a large hub's writes.
	ContactRecord time.Duration
	// PullLook bounds the time between two looks at a Pull-mode provider
	// whose heartbeat is fresh; otherwise it is looked at when its grace
	// period ends (unless Input.GraceWatched), not every ProbeInterval:
	// the hub watches heartbeats,
	// so nothing in between can change its phase. A thousand providers
	// looked at every 3 s made the look that finds one Lost wait minutes
	// in the queue. 0 means ProbeInterval, as in Push mode.
	PullLook time.Duration
}

// Defaults of Policy.
const (
	DefaultGrace         = 20 * time.Second
	DefaultProbeInterval = 3 * time.Second
	// DefaultContactRecord: a Ready provider's status is written about
	// every five minutes while nothing else changes, as a kubelet reports
	// an unchanged node's status. Only the record waits: liveness is
	// decided from the beats kept in memory, and a change of phase is
	// written with the beat it was decided on. Once a minute was 16
	// writes a second at 1,000 providers.
	DefaultContactRecord = 5 * time.Minute
)

func (p Policy) contactRecord() time.Duration {
	if p.ContactRecord > 0 {
		return p.ContactRecord
	}
	return DefaultContactRecord
}

func (p Policy) grace() time.Duration {
	if p.Grace > 0 {
		return p.Grace
	}
	return DefaultGrace
}

func (p Policy) interval() time.Duration {
	if p.ProbeInterval > 0 {
		return p.ProbeInterval
	}
	return DefaultProbeInterval
}

// Probe is one look at a provider's API server.
type Probe struct {
	// OK when the API server answered and its capacity was measured.
	OK bool
	// Reason and Message of Reachable: why not, or what answered.
	Reason, Message string
	// KubernetesVersion and Capacity measured, when OK.
	KubernetesVersion string
	Capacity          flotillav1.ProviderCapacity
}

// Input is everything Decide looks at.
type Input struct {
	Now           time.Time
	Generation    int64
	Unschedulable bool
	// Status as last written.
	Status flotillav1.ProviderStatus
	Probe  Probe
	// FenceError says why deleting the provider's stale namespaces failed;
	// "" when they are gone (fencing runs only when the probe succeeded).
	FenceError string
	// Heartbeat is the agent's renew time as it wrote it, "" when none.
	Heartbeat string
	// HeartbeatSeen is when this hub process first saw Heartbeat's value,
	// by its clock; zero when it does not know (the value counts as seen
	// now if it differs from status).
	HeartbeatSeen time.Time
	// ProbedAt is when this hub process last probed the provider
	// successfully, by its clock; zero when it has not since it started.
	// Push mode only: status records it every Policy.ContactRecord.
	ProbedAt time.Time
	// Pull: the hub never connects to this provider; it is alive while
	// the hub sees its agent's heartbeat change, by the hub's clock, and
	// Probe is ignored.
	Pull bool
	// Since is when this hub process started watching. A provider's last
	// contact counts from no earlier (status records it only every
	// Policy.ContactRecord), so that a hub back from an outage does not
	// declare every one of them Lost before it has had a chance to see
	// them beat or to probe them.
	Since time.Time
	// GraceWatched: the caller wakes a Pull-mode provider itself when its
	// heartbeat has gone a grace period without renewal (the Provider
	// controller's expiry scan), so a live one's next look is only
	// routine, PullLook away.
	GraceWatched bool
}

// Event is what to record when the phase changes.
type Event struct {
	Warning         bool
	Reason, Message string
}

// Decision is the provider's new status (its reputation untouched) and
// when to look again.
type Decision struct {
	Status       flotillav1.ProviderStatus
	RequeueAfter time.Duration
	// HeldDown is set when a hold-down started with this decision.
	HeldDown bool
	// Event, when the phase changed.
	Event *Event
	// Routine: nothing the next look finds can change the phase sooner
	// than the caller is woken for it; the look can wait behind other work.
	Routine bool
}

// verdict is what one check decides.
type verdict struct {
	phase   flotillav1.ProviderPhase
	reason  string
	message string
	state   conditions.State
	// requeue, when sooner than the next probe.
	requeue time.Duration
}

// eval carries a Decide call through the checks.
type eval struct {
	Input
	p           Policy
	st          *flotillav1.ProviderStatus
	lastContact *time.Time
	// beat is the last contact status may not show: when a heartbeat was
	// seen (Pull mode), or the last successful probe (Push mode).
	beat     *time.Time
	heldDown bool
}

// check decides, or passes to the next one.
type check func(*eval) (verdict, bool)

// chain is the order of the checks: the first that decides wins.
var chain = []struct {
	name string
	check
}{
	{"not fenced", notFenced},
	{"held down", heldDown},
	{"cordoned", cordoned},
	{"reachable", reachable},
	{"within grace", withinGrace},
	{"lost", lost},
	{"never reached", neverReached},
}

// Decide runs the chain over in.
func Decide(in Input, p Policy) Decision {
	st := in.Status.DeepCopy()
	st.ObservedGeneration = in.Generation
	e := &eval{Input: in, p: p, st: st}
	// The agent writes its heartbeat's time itself; only that it changed
	// is noted, by the hub's clock. A Ready provider's is written at most
	// every ContactRecord; in Pull mode it counts from memory in between.
	if in.Heartbeat != "" && in.Heartbeat != st.ObservedHeartbeat {
		seen := in.HeartbeatSeen
		if seen.IsZero() || seen.After(in.Now) {
			seen = in.Now
		}
		if st.LastHeartbeatTime == nil || in.Status.Phase != flotillav1.ProviderReady ||
			seen.Sub(st.LastHeartbeatTime.Time) >= p.contactRecord() {
			st.ObservedHeartbeat = in.Heartbeat
			st.LastHeartbeatTime = &metav1.Time{Time: seen}
		} else if in.Pull {
			e.beat = &seen
		} // In Push mode the heartbeat is only shown: never contact.
	}
	if in.Pull {
		st.Mode = flotillav1.ModePull
		in.Probe = pullProbe(st, e.beat, in, p)
		e.Input = in
	} else {
		st.Mode = flotillav1.ModePush
	}
	if !in.Pull {
		if in.Probe.OK {
			st.KubernetesVersion = in.Probe.KubernetesVersion
			st.Capacity = in.Probe.Capacity
			e.beat = &in.Now
		} else if !in.ProbedAt.IsZero() && !in.ProbedAt.After(in.Now) {
			e.beat = &in.ProbedAt
		}
	}
	conditions.Set(&st.Conditions, in.Generation, flotillav1.ProviderReachable, in.Probe.OK, in.Probe.Reason, in.Probe.Message)
	if t := LastContact(st); t != nil {
		e.lastContact = t
	}
	if e.beat != nil && (e.lastContact == nil || e.beat.After(*e.lastContact)) {
		e.lastContact = e.beat
	}
	if e.lastContact != nil && e.lastContact.Before(in.Since) && in.Status.Phase != flotillav1.ProviderLost {
		t := in.Since
		e.lastContact = &t
	}
	var v verdict
	for _, c := range chain {
		var ok bool
		if v, ok = c.check(e); ok {
			break
		}
	}
	st.Phase = v.phase
	switch {
	case e.beat == nil:
	case in.Pull && v.phase != in.Status.Phase:
		// A change of phase is written with the heartbeat it was decided on.
		st.ObservedHeartbeat, st.LastHeartbeatTime = in.Heartbeat, &metav1.Time{Time: *e.beat}
	case !in.Pull && (st.LastProbeTime == nil || in.ProbedAt.IsZero() || v.phase != in.Status.Phase ||
		e.beat.Sub(st.LastProbeTime.Time) >= p.contactRecord()):
		// And with the probe: the Lease controller counts a workload's
		// failover grace from it. This process's first probe is written
		// too, so that status shows it is watched.
		st.LastProbeTime = &metav1.Time{Time: *e.beat}
	}
	conditions.Apply(&st.Conditions, in.Generation, conditions.Summary{State: v.state, Reason: v.reason, Message: v.message})
	d := Decision{Status: *st, RequeueAfter: p.interval(), HeldDown: e.heldDown}
	switch {
	case !in.Pull || !in.Probe.OK || e.lastContact == nil:
	case in.GraceWatched:
		d.RequeueAfter, d.Routine = cmp.Or(p.PullLook, d.RequeueAfter), true
	default:
		// Lost is decided at the end of the grace period, not a look later.
		d.RequeueAfter = min(cmp.Or(p.PullLook, d.RequeueAfter), e.lastContact.Add(p.grace()).Sub(in.Now)+10*time.Millisecond)
	}
	if v.requeue > 0 && v.requeue < d.RequeueAfter {
		d.RequeueAfter, d.Routine = v.requeue, false
	}
	if v.phase != in.Status.Phase {
		d.Event = &Event{Warning: v.phase == flotillav1.ProviderLost, Reason: "Phase" + string(v.phase),
			Message: fmt.Sprintf("Provider is %s: %s", v.phase, v.message)}
	}
	return d
}

// LastContact is when the hub last heard from a provider by its own clock:
// its last successful probe in Push mode, the last heartbeat it saw change
// in Pull mode.
func LastContact(st *flotillav1.ProviderStatus) *time.Time {
	t := st.LastProbeTime
	if st.Mode == flotillav1.ModePull {
		t = st.LastHeartbeatTime
	}
	if t == nil {
		return nil
	}
	c := t.Time
	return &c
}

// pullProbe stands for a probe of a Pull-mode provider: its agent's
// heartbeat, seen changing within the grace period.
func pullProbe(st *flotillav1.ProviderStatus, beat *time.Time, in Input, p Policy) Probe {
	if st.LastHeartbeatTime == nil {
		return Probe{Reason: flotillav1.ProviderReasonNoHeartbeat, Message: "pull mode: no heartbeat from the provider's agent yet"}
	}
	seen := st.LastHeartbeatTime.Time
	if beat != nil && beat.After(seen) {
		seen = *beat
	}
	if seen.Before(in.Since) && in.Status.Phase != flotillav1.ProviderLost {
		// The benefit of the doubt is for one that was alive when the hub
		// stopped; one already Lost stays Lost until it beats again.
		seen = in.Since
	}
	// The messages name times, not ages: an age changes at every look and
	// would cost a status write each time.
	if in.Now.Sub(seen) >= p.grace() {
		return Probe{Reason: flotillav1.ProviderReasonHeartbeatStale,
			Message: fmt.Sprintf("pull mode: no heartbeat from the provider's agent since %s", seen.UTC().Format(time.RFC3339))}
	}
	return Probe{OK: true, Reason: flotillav1.ProviderReasonHeartbeatFresh,
		Message: fmt.Sprintf("pull mode: the agent's heartbeat is fresh (grace period %s)", p.grace())}
}

func notFenced(e *eval) (verdict, bool) {
	if !e.Probe.OK || e.FenceError == "" {
		return verdict{}, false
	}
	phase := e.Status.Phase
	if phase == "" || phase == flotillav1.ProviderReady || phase == flotillav1.ProviderCordoned {
		phase = flotillav1.ProviderPending
	}
	return verdict{phase: phase, reason: flotillav1.ProviderReasonFencingIncomplete, state: conditions.InProgress,
		message: "deleting stale lease namespaces: " + e.FenceError}, true
}

// heldDown keeps a provider back from being Lost waiting, after its second
// loss in a row, for a hold-down that doubles with each further loss.
func heldDown(e *eval) (verdict, bool) {
	if !e.Probe.OK {
		return verdict{}, false
	}
	st := e.st
	if e.Status.Phase == flotillav1.ProviderLost && st.ReadmitTime == nil {
		if d := e.p.Flap.HoldDown(st.RecentLosses); d > 0 {
			st.ReadmitTime = &metav1.Time{Time: e.Now.Add(d)}
			e.heldDown = true
		}
	}
	if st.ReadmitTime == nil {
		return verdict{}, false
	}
	hold := st.ReadmitTime.Sub(e.Now)
	if hold <= 0 {
		st.ReadmitTime = nil
		return verdict{}, false
	}
	return verdict{phase: flotillav1.ProviderPending, reason: flotillav1.ProviderReasonBackingOff, state: conditions.Stalled,
		requeue: hold + 10*time.Millisecond,
		message: fmt.Sprintf("reachable again after %d losses in a row; takes work again at %s",
			st.RecentLosses, st.ReadmitTime.UTC().Format(time.RFC3339))}, true
}

func cordoned(e *eval) (verdict, bool) {
	if !e.Probe.OK || !e.Unschedulable {
		return verdict{}, false
	}
	return verdict{phase: flotillav1.ProviderCordoned, reason: flotillav1.ProviderReasonCordoned, state: conditions.Current,
		message: "spec.unschedulable is set: no new leases, replicas drain elsewhere"}, true
}

func reachable(e *eval) (verdict, bool) {
	if !e.Probe.OK {
		return verdict{}, false
	}
	return verdict{phase: flotillav1.ProviderReady, reason: flotillav1.ProviderReasonReady, state: conditions.Current,
		message: e.Probe.Message}, true
}

// withinGrace keeps the phase of a provider the hub has not reached for
// less than the grace period, and decides at its end, not a probe later.
func withinGrace(e *eval) (verdict, bool) {
	if e.lastContact == nil {
		return verdict{}, false
	}
	since := e.Now.Sub(*e.lastContact)
	if since >= e.p.grace() {
		return verdict{}, false
	}
	phase := e.Status.Phase
	switch {
	case phase == "" || phase == flotillav1.ProviderLost:
		phase = flotillav1.ProviderPending
	case e.Unschedulable && phase == flotillav1.ProviderReady:
		phase = flotillav1.ProviderCordoned
	}
	state := conditions.Current
	if phase == flotillav1.ProviderPending {
		state = conditions.InProgress
	}
	return verdict{phase: phase, reason: flotillav1.ProviderReasonWithinGracePeriod, state: state,
		requeue: e.p.grace() - since + 10*time.Millisecond,
		message: fmt.Sprintf("last contact at %s (grace period %s): %s", e.lastContact.UTC().Format(time.RFC3339), e.p.grace(), e.Probe.Message)}, true
}

func lost(e *eval) (verdict, bool) {
	if e.lastContact == nil {
		return verdict{}, false
	}
	st := e.st
	if e.Status.Phase != flotillav1.ProviderLost {
		var prev *time.Time
		if st.LastLostTime != nil {
			prev = &st.LastLostTime.Time
		}
		st.RecentLosses = e.p.Flap.Lost(st.RecentLosses, prev, e.Now)
		st.LastLostTime = &metav1.Time{Time: e.Now}
		st.ReadmitTime = nil
	}
	return verdict{phase: flotillav1.ProviderLost, reason: flotillav1.ProviderReasonLost, state: conditions.Stalled,
		message: fmt.Sprintf("no contact since %s: %s", e.lastContact.UTC().Format(time.RFC3339), e.Probe.Message)}, true
}

func neverReached(e *eval) (verdict, bool) {
	return verdict{phase: flotillav1.ProviderPending, reason: flotillav1.ProviderReasonNeverReached, state: conditions.InProgress,
		message: e.Probe.Message}, true
}
