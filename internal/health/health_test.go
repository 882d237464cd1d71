package health

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/conditions"
	"github.com/flotilla-dev/flotilla/internal/flap"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

var policy = Policy{Grace: 20 * time.Second, ProbeInterval: 3 * time.Second, Flap: flap.Policy{Window: 10 * time.Minute, Base: 30 * time.Second, Max: 10 * time.Minute}}

func at(d time.Duration) *metav1.Time { return &metav1.Time{Time: t0.Add(d)} }

var (
	up   = Probe{OK: true, Reason: flotillav1.ProviderReasonProbeSucceeded, Message: "https://p answered; 2 schedulable nodes"}
	down = Probe{Reason: flotillav1.ProviderReasonUnreachable, Message: "dial tcp: connection refused"}
)

// outcome is what a test compares: the phase, Ready, the kstatus
// conditions and the requeue.
type outcome struct {
	Phase                flotillav1.ProviderPhase
	Ready                string
	Reconciling, Stalled string
	// KStatus is what cli-utils computes from the status.
	KStatus           string
	RecentLosses      int32
	Readmit, LastLost *metav1.Time
	LastHeartbeat     *metav1.Time
	RequeueAfter      time.Duration
	Event             string
}

func summarize(t *testing.T, in Input, d Decision) outcome {
	reason := func(typ string) string {
		c := apimeta.FindStatusCondition(d.Status.Conditions, typ)
		if c == nil {
			return ""
		}
		return string(c.Status) + "/" + c.Reason
	}
	o := outcome{Phase: d.Status.Phase, Ready: reason(flotillav1.ConditionReady), Reconciling: reason(flotillav1.ConditionReconciling),
		Stalled: reason(flotillav1.ConditionStalled), RecentLosses: d.Status.RecentLosses, Readmit: d.Status.ReadmitTime,
		LastLost: d.Status.LastLostTime, LastHeartbeat: d.Status.LastHeartbeatTime, RequeueAfter: d.RequeueAfter, KStatus: "Current"}
	if d.Event != nil {
		o.Event = d.Event.Reason
	}
	p := &flotillav1.Provider{Status: d.Status}
	p.Generation = in.Generation
	ks, err := conditions.KStatus(p)
	if err != nil {
		t.Fatal(err)
	}
	o.KStatus = ks
	return o
}

func TestDecide(t *testing.T) {
	ready := flotillav1.ProviderStatus{Phase: flotillav1.ProviderReady, LastProbeTime: at(0)}
	lostOnce := flotillav1.ProviderStatus{Phase: flotillav1.ProviderLost, LastProbeTime: at(0), RecentLosses: 1, LastLostTime: at(20 * time.Second)}
	lostTwice := flotillav1.ProviderStatus{Phase: flotillav1.ProviderLost, LastProbeTime: at(0), RecentLosses: 2, LastLostTime: at(20 * time.Second)}
	for name, tc := range map[string]struct {
		in   Input
		want outcome
	}{
		"first probe succeeds": {
			in:   Input{Now: t0, Probe: up},
			want: outcome{Phase: "Ready", Ready: "True/Ready", RequeueAfter: 3 * time.Second, Event: "PhaseReady", KStatus: "Current"},
		},
		"never reached": {
			in:   Input{Now: t0, Probe: down},
			want: outcome{Phase: "Pending", Ready: "False/NeverReached", Reconciling: "True/NeverReached", RequeueAfter: 3 * time.Second, Event: "PhasePending", KStatus: "InProgress"},
		},
		"unreachable within the grace period keeps Ready, decided at its end": {
			in:   Input{Now: t0.Add(15 * time.Second), Status: ready, Probe: down},
			want: outcome{Phase: "Ready", Ready: "True/WithinGracePeriod", RequeueAfter: 3 * time.Second, KStatus: "Current"},
		},
		"decided at the end of the grace period, not a probe later": {
			in:   Input{Now: t0.Add(19 * time.Second), Status: ready, Probe: down},
			want: outcome{Phase: "Ready", Ready: "True/WithinGracePeriod", RequeueAfter: time.Second + 10*time.Millisecond, KStatus: "Current"},
		},
		"lost after the grace period": {
			in: Input{Now: t0.Add(20 * time.Second), Status: ready, Probe: down},
			want: outcome{Phase: "Lost", Ready: "False/Lost", Stalled: "True/Lost", RecentLosses: 1, LastLost: at(20 * time.Second),
				RequeueAfter: 3 * time.Second, Event: "PhaseLost", KStatus: "Failed"},
		},
		"P3.heartbeat-is-not-contact: an agent heartbeating a year ahead keeps nothing alive": {
			in: Input{Now: t0.Add(30 * time.Second), Status: ready, Probe: down, Heartbeat: "2027-12-01T12:00:00Z"},
			want: outcome{Phase: "Lost", Ready: "False/Lost", Stalled: "True/Lost", RecentLosses: 1, LastLost: at(30 * time.Second),
				LastHeartbeat: at(30 * time.Second), RequeueAfter: 3 * time.Second, Event: "PhaseLost", KStatus: "Failed"},
		},
		"back after one loss: at once": {
			in:   Input{Now: t0.Add(time.Minute), Status: lostOnce, Probe: up},
			want: outcome{Phase: "Ready", Ready: "True/Ready", RecentLosses: 1, LastLost: at(20 * time.Second), RequeueAfter: 3 * time.Second, Event: "PhaseReady", KStatus: "Current"},
		},
		"back after a second loss: held down": {
			in: Input{Now: t0.Add(time.Minute), Status: lostTwice, Probe: up},
			want: outcome{Phase: "Pending", Ready: "False/BackingOff", Stalled: "True/BackingOff", RecentLosses: 2, LastLost: at(20 * time.Second),
				Readmit: at(90 * time.Second), RequeueAfter: 3 * time.Second, Event: "PhasePending", KStatus: "Failed"},
		},
		"cordoned": {
			in:   Input{Now: t0, Status: ready, Probe: up, Unschedulable: true},
			want: outcome{Phase: "Cordoned", Ready: "True/Cordoned", RequeueAfter: 3 * time.Second, Event: "PhaseCordoned", KStatus: "Current"},
		},
		"stale namespaces left: not Ready until fenced": {
			in:   Input{Now: t0, Status: ready, Probe: up, FenceError: "deleting namespace x: forbidden"},
			want: outcome{Phase: "Pending", Ready: "False/FencingIncomplete", Reconciling: "True/FencingIncomplete", RequeueAfter: 3 * time.Second, Event: "PhasePending", KStatus: "InProgress"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got := summarize(t, tc.in, Decide(tc.in, policy))
			if tc.in.Probe.OK && got.Phase == "Ready" {
				tc.want.LastHeartbeat = got.LastHeartbeat
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

// TestHeartbeatTimeIsTheHubs: the time shown is when the hub saw the
// heartbeat change, never what the agent wrote; the same value again is no
// new heartbeat.
func TestHeartbeatTimeIsTheHubs(t *testing.T) {
	d := Decide(Input{Now: t0, Probe: up, Heartbeat: "2099-01-01T00:00:00Z"}, policy)
	if !d.Status.LastHeartbeatTime.Time.Equal(t0) {
		t.Fatalf("lastHeartbeatTime %v, want the hub's %v", d.Status.LastHeartbeatTime, t0)
	}
	again := Decide(Input{Now: t0.Add(time.Minute), Probe: up, Status: d.Status, Heartbeat: "2099-01-01T00:00:00Z"}, policy)
	if !again.Status.LastHeartbeatTime.Time.Equal(t0) {
		t.Errorf("an unchanged heartbeat moved lastHeartbeatTime to %v", again.Status.LastHeartbeatTime)
	}
	// A Ready Push-mode provider's agent beats every few seconds: shown
	// every DefaultContactRecord, like the probe.
	d.Status.Phase = flotillav1.ProviderReady
	early := DefaultContactRecord - time.Second
	soon := Decide(Input{Now: t0.Add(early), Probe: up, ProbedAt: t0.Add(early - 2*time.Second), Status: d.Status,
		Heartbeat: "b", HeartbeatSeen: t0.Add(early - time.Second)}, policy)
	if soon.Status.ObservedHeartbeat != d.Status.ObservedHeartbeat || !soon.Status.LastHeartbeatTime.Time.Equal(t0) {
		t.Errorf("a new heartbeat %s after the recorded one was written: %q at %v", early-time.Second, soon.Status.ObservedHeartbeat, soon.Status.LastHeartbeatTime)
	}
	later := Decide(Input{Now: t0.Add(DefaultContactRecord + time.Second), Probe: up, ProbedAt: t0.Add(DefaultContactRecord - 3*time.Second), Status: d.Status,
		Heartbeat: "c", HeartbeatSeen: t0.Add(DefaultContactRecord)}, policy)
	if later.Status.ObservedHeartbeat != "c" || !later.Status.LastHeartbeatTime.Time.Equal(t0.Add(DefaultContactRecord)) {
		t.Errorf("a new heartbeat %s after the recorded one: %q at %v, want c at the time it was seen", DefaultContactRecord, later.Status.ObservedHeartbeat, later.Status.LastHeartbeatTime)
	}
}

// TestDecidePull: a Pull-mode provider is alive while the hub sees its
// agent's heartbeat change, by the hub's clock; nothing else (no probe)
// counts, and the time the agent writes is never read.
func TestDecidePull(t *testing.T) {
	pull := func(phase flotillav1.ProviderPhase, seen time.Duration, observed string) flotillav1.ProviderStatus {
		return flotillav1.ProviderStatus{Mode: flotillav1.ModePull, Phase: phase, LastHeartbeatTime: at(seen), ObservedHeartbeat: observed}
	}
	for name, tc := range map[string]struct {
		in   Input
		want outcome
	}{
		"no heartbeat yet": {
			in:   Input{Now: t0, Pull: true, Probe: up},
			want: outcome{Phase: "Pending", Ready: "False/NeverReached", Reconciling: "True/NeverReached", RequeueAfter: 3 * time.Second, Event: "PhasePending", KStatus: "InProgress"},
		},
		"first heartbeat: Ready": {
			in:   Input{Now: t0, Pull: true, Heartbeat: "a"},
			want: outcome{Phase: "Ready", Ready: "True/Ready", LastHeartbeat: at(0), RequeueAfter: 3 * time.Second, Event: "PhaseReady", KStatus: "Current"},
		},
		"heartbeat seen 18s ago: still Ready, Lost decided at the end of the grace period": {
			in:   Input{Now: t0.Add(18 * time.Second), Pull: true, Status: pull("Ready", 0, "a"), Heartbeat: "a"},
			want: outcome{Phase: "Ready", Ready: "True/Ready", LastHeartbeat: at(0), RequeueAfter: 2*time.Second + 10*time.Millisecond, KStatus: "Current"},
		},
		"no new heartbeat for the grace period: Lost": {
			in: Input{Now: t0.Add(20 * time.Second), Pull: true, Status: pull("Ready", 0, "a"), Heartbeat: "a", Probe: up},
			want: outcome{Phase: "Lost", Ready: "False/Lost", Stalled: "True/Lost", RecentLosses: 1, LastLost: at(20 * time.Second),
				LastHeartbeat: at(0), RequeueAfter: 3 * time.Second, Event: "PhaseLost", KStatus: "Failed"},
		},
		"P3.pull-heartbeat-hub-clock: heartbeat written with a time far ahead, unchanged: Lost all the same": {
			in: Input{Now: t0.Add(time.Minute), Pull: true, Status: pull("Ready", 0, "2099-01-01T00:00:00Z"), Heartbeat: "2099-01-01T00:00:00Z"},
			want: outcome{Phase: "Lost", Ready: "False/Lost", Stalled: "True/Lost", RecentLosses: 1, LastLost: at(time.Minute),
				LastHeartbeat: at(0), RequeueAfter: 3 * time.Second, Event: "PhaseLost", KStatus: "Failed"},
		},
		"back with a new heartbeat after one loss": {
			in: Input{Now: t0.Add(time.Minute), Pull: true, Status: flotillav1.ProviderStatus{Mode: flotillav1.ModePull, Phase: "Lost",
				LastHeartbeatTime: at(0), ObservedHeartbeat: "a", RecentLosses: 1, LastLostTime: at(20 * time.Second)}, Heartbeat: "b"},
			want: outcome{Phase: "Ready", Ready: "True/Ready", RecentLosses: 1, LastLost: at(20 * time.Second), LastHeartbeat: at(time.Minute),
				RequeueAfter: 3 * time.Second, Event: "PhaseReady", KStatus: "Current"},
		},
		"P3.pull-hub-restart: hub restarted after an outage: the grace period counts from its start": {
			in:   Input{Now: t0.Add(time.Hour + 5*time.Second), Since: t0.Add(time.Hour), Pull: true, Status: pull("Ready", 0, "a"), Heartbeat: "a"},
			want: outcome{Phase: "Ready", Ready: "True/Ready", LastHeartbeat: at(0), RequeueAfter: 3 * time.Second, KStatus: "Current"},
		},
		"P3.pull-hub-restart: a provider Lost before the hub restarted stays Lost until it beats again": {
			in: Input{Now: t0.Add(time.Hour + 5*time.Second), Since: t0.Add(time.Hour), Pull: true, Heartbeat: "a",
				Status: flotillav1.ProviderStatus{Mode: flotillav1.ModePull, Phase: "Lost", LastHeartbeatTime: at(0), ObservedHeartbeat: "a",
					RecentLosses: 1, LastLostTime: at(20 * time.Second)}},
			want: outcome{Phase: "Lost", Ready: "False/Lost", Stalled: "True/Lost", RecentLosses: 1, LastLost: at(20 * time.Second),
				LastHeartbeat: at(0), RequeueAfter: 3 * time.Second, KStatus: "Failed"},
		},
		"a Ready provider's new heartbeat within DefaultContactRecord of the recorded one: kept in memory, not written, and it counts": {
			in:   Input{Now: t0.Add(25 * time.Second), Pull: true, Status: pull("Ready", 0, "a"), Heartbeat: "b", HeartbeatSeen: t0.Add(15 * time.Second)},
			want: outcome{Phase: "Ready", Ready: "True/Ready", LastHeartbeat: at(0), RequeueAfter: 3 * time.Second, KStatus: "Current"},
		},
		"the heartbeat in memory goes stale like a recorded one: Lost a grace period after it was seen": {
			in: Input{Now: t0.Add(35 * time.Second), Pull: true, Status: pull("Ready", 0, "a"), Heartbeat: "b", HeartbeatSeen: t0.Add(15 * time.Second)},
			want: outcome{Phase: "Lost", Ready: "False/Lost", Stalled: "True/Lost", RecentLosses: 1, LastLost: at(35 * time.Second),
				LastHeartbeat: at(15 * time.Second), RequeueAfter: 3 * time.Second, Event: "PhaseLost", KStatus: "Failed"},
		},
		"a new heartbeat DefaultContactRecord after the recorded one: written, at the time it was seen": {
			in:   Input{Now: t0.Add(DefaultContactRecord + time.Second), Pull: true, Status: pull("Ready", 0, "a"), Heartbeat: "c", HeartbeatSeen: t0.Add(DefaultContactRecord)},
			want: outcome{Phase: "Ready", Ready: "True/Ready", LastHeartbeat: at(DefaultContactRecord), RequeueAfter: 3 * time.Second, KStatus: "Current"},
		},
		"a seen time ahead of the hub's clock counts as now": {
			in:   Input{Now: t0.Add(time.Minute), Pull: true, Status: pull("Pending", 0, "a"), Heartbeat: "b", HeartbeatSeen: t0.Add(time.Hour)},
			want: outcome{Phase: "Ready", Ready: "True/Ready", LastHeartbeat: at(time.Minute), RequeueAfter: 3 * time.Second, Event: "PhaseReady", KStatus: "Current"},
		},
		"hub restarted, no heartbeat for a grace period since": {
			in: Input{Now: t0.Add(time.Hour + 20*time.Second), Since: t0.Add(time.Hour), Pull: true, Status: pull("Ready", 0, "a"), Heartbeat: "a"},
			want: outcome{Phase: "Lost", Ready: "False/Lost", Stalled: "True/Lost", RecentLosses: 1, LastLost: at(time.Hour + 20*time.Second),
				LastHeartbeat: at(0), RequeueAfter: 3 * time.Second, Event: "PhaseLost", KStatus: "Failed"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			d := Decide(tc.in, policy)
			if d.Status.LastProbeTime != nil || d.Status.Mode != flotillav1.ModePull {
				t.Errorf("pull mode: lastProbeTime %v, mode %q", d.Status.LastProbeTime, d.Status.Mode)
			}
			if diff := cmp.Diff(tc.want, summarize(t, tc.in, d)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// TestSteadyPullProviderIsNotRewritten: while a Pull-mode provider beats
// as it should, looks at it within a minute decide the same status, so the
// hub writes nothing (every probe used to move a message's age).
func TestSteadyPullProviderIsNotRewritten(t *testing.T) {
	first := Decide(Input{Now: t0, Pull: true, Heartbeat: "a"}, policy)
	for i := 1; i <= 19; i++ {
		now := t0.Add(time.Duration(i) * 3 * time.Second)
		beat := fmt.Sprint("b", i/3)
		d := Decide(Input{Now: now, Pull: true, Status: first.Status, Heartbeat: beat, HeartbeatSeen: now.Add(-time.Second)}, policy)
		if diff := cmp.Diff(first.Status, d.Status); diff != "" {
			t.Fatalf("look %d at %s changed the status (-first +now):\n%s", i, now.Sub(t0), diff)
		}
	}
	// Lost is steady too: its message names a time, not an age.
	lost := Decide(Input{Now: t0.Add(2 * time.Minute), Pull: true, Status: first.Status, Heartbeat: "a"}, policy)
	again := Decide(Input{Now: t0.Add(3 * time.Minute), Pull: true, Status: lost.Status, Heartbeat: "a"}, policy)
	if diff := cmp.Diff(lost.Status, again.Status); diff != "" {
		t.Errorf("a Lost provider's status changed between two looks (-first +second):\n%s", diff)
	}
}

// TestSteadyPushProviderIsNotRewritten: a Push-mode provider that answers
// every probe has its probe time written every DefaultContactRecord, not
// at every probe; in between the hub counts from the probe it remembers.
func TestSteadyPushProviderIsNotRewritten(t *testing.T) {
	first := Decide(Input{Now: t0, Probe: up}, policy)
	if got := first.Status.LastProbeTime; got == nil || !got.Time.Equal(t0) {
		t.Fatalf("first probe: lastProbeTime %v, want %s", got, t0)
	}
	probed := t0
	for i := 1; time.Duration(i)*3*time.Second < DefaultContactRecord; i++ {
		now := t0.Add(time.Duration(i) * 3 * time.Second)
		d := Decide(Input{Now: now, Status: first.Status, Probe: up, ProbedAt: probed}, policy)
		if diff := cmp.Diff(first.Status, d.Status); diff != "" {
			t.Fatalf("probe %d at %s changed the status (-first +now):\n%s", i, now.Sub(t0), diff)
		}
		probed = now
	}
	d := Decide(Input{Now: t0.Add(DefaultContactRecord), Status: first.Status, Probe: up, ProbedAt: probed}, policy)
	if got := d.Status.LastProbeTime; got == nil || !got.Time.Equal(t0.Add(DefaultContactRecord)) {
		t.Errorf("%s after the recorded probe: lastProbeTime %v, want it written", DefaultContactRecord, got)
	}
}

// TestDecidePushContact: the last contact of a Push-mode provider is the
// later of its recorded probe and the one the hub remembers; a change of
// phase is written with it, and after a restart it counts from no earlier
// than the restart.
func TestDecidePushContact(t *testing.T) {
	ready := flotillav1.ProviderStatus{Phase: flotillav1.ProviderReady, LastProbeTime: at(0)}
	for name, tc := range map[string]struct {
		in        Input
		want      outcome
		lastProbe *metav1.Time
	}{
		"unreachable 15s after the last probe remembered: within the grace period": {
			in:        Input{Now: t0.Add(55 * time.Second), Status: ready, Probe: down, ProbedAt: t0.Add(40 * time.Second)},
			want:      outcome{Phase: "Ready", Ready: "True/WithinGracePeriod", RequeueAfter: 3 * time.Second, KStatus: "Current"},
			lastProbe: at(0),
		},
		"unreachable a grace period after the last probe remembered: Lost, written with that probe": {
			in: Input{Now: t0.Add(60 * time.Second), Status: ready, Probe: down, ProbedAt: t0.Add(40 * time.Second)},
			want: outcome{Phase: "Lost", Ready: "False/Lost", Stalled: "True/Lost", RecentLosses: 1, LastLost: at(60 * time.Second),
				RequeueAfter: 3 * time.Second, Event: "PhaseLost", KStatus: "Failed"},
			lastProbe: at(40 * time.Second),
		},
		"hub restarted 5s ago, provider unreachable: the grace period counts from the restart": {
			in:        Input{Now: t0.Add(35 * time.Second), Since: t0.Add(30 * time.Second), Status: ready, Probe: down},
			want:      outcome{Phase: "Ready", Ready: "True/WithinGracePeriod", RequeueAfter: 3 * time.Second, KStatus: "Current"},
			lastProbe: at(0),
		},
		"hub restarted a grace period ago, provider unreachable since: Lost": {
			in: Input{Now: t0.Add(50 * time.Second), Since: t0.Add(30 * time.Second), Status: ready, Probe: down},
			want: outcome{Phase: "Lost", Ready: "False/Lost", Stalled: "True/Lost", RecentLosses: 1, LastLost: at(50 * time.Second),
				RequeueAfter: 3 * time.Second, Event: "PhaseLost", KStatus: "Failed"},
			// The restart is no probe: status keeps the last one.
			lastProbe: at(0),
		},
		"the restarted hub's first probe is written": {
			in:        Input{Now: t0.Add(35 * time.Second), Since: t0.Add(30 * time.Second), Status: ready, Probe: up},
			want:      outcome{Phase: "Ready", Ready: "True/Ready", RequeueAfter: 3 * time.Second, KStatus: "Current"},
			lastProbe: at(35 * time.Second),
		},
		"a remembered probe ahead of the hub's clock is not contact": {
			in: Input{Now: t0.Add(30 * time.Second), Status: ready, Probe: down, ProbedAt: t0.Add(time.Hour)},
			want: outcome{Phase: "Lost", Ready: "False/Lost", Stalled: "True/Lost", RecentLosses: 1, LastLost: at(30 * time.Second),
				RequeueAfter: 3 * time.Second, Event: "PhaseLost", KStatus: "Failed"},
			lastProbe: at(0),
		},
	} {
		t.Run(name, func(t *testing.T) {
			d := Decide(tc.in, policy)
			if diff := cmp.Diff(tc.want, summarize(t, tc.in, d)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
			if diff := cmp.Diff(tc.lastProbe, d.Status.LastProbeTime); diff != "" {
				t.Errorf("lastProbeTime (-want +got)\n%s", diff)
			}
		})
	}
}

// A provider held down after repeated losses is probed every few seconds
// until it is readmitted; each probe must leave its status as it was.
func TestBackingOffIsSteady(t *testing.T) {
	lostTwice := flotillav1.ProviderStatus{Phase: flotillav1.ProviderLost, LastProbeTime: at(0), RecentLosses: 2, LastLostTime: at(20 * time.Second)}
	held := Decide(Input{Now: t0.Add(time.Minute), Status: lostTwice, Probe: up}, policy)
	if held.Status.Phase != flotillav1.ProviderPending {
		t.Fatalf("not held down: %s", held.Status.Phase)
	}
	for _, later := range []time.Duration{3 * time.Second, 17 * time.Second} {
		again := Decide(Input{Now: t0.Add(time.Minute + later), Status: held.Status, Probe: up}, policy)
		if again.Status.LastProbeTime != nil {
			again.Status.LastProbeTime = held.Status.LastProbeTime
		}
		if diff := cmp.Diff(held.Status, again.Status); diff != "" {
			t.Errorf("a probe %s later changed the held-down status (-first +again):\n%s", later, diff)
		}
	}
}

func TestStale(t *testing.T) {
	lease := func(mutate func(*flotillav1.Lease)) *flotillav1.Lease {
		l := &flotillav1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "web-1"},
			Spec: flotillav1.LeaseSpec{ProviderRef: flotillav1.ProviderReference{Name: "bob-1"}, Epoch: 2}}
		if mutate != nil {
			mutate(l)
		}
		return l
	}
	epoch2 := map[string]string{flotillav1.LabelEpoch: "2"}
	for name, tc := range map[string]struct {
		labels map[string]string
		lease  *flotillav1.Lease
		want   string
	}{
		"live":     {epoch2, lease(nil), ""},
		"gone":     {epoch2, nil, "its lease no longer exists"},
		"closed":   {epoch2, lease(func(l *flotillav1.Lease) { l.Status.Phase = flotillav1.LeaseClosed }), "lease web-1 is closed"},
		"deleting": {epoch2, lease(func(l *flotillav1.Lease) { l.DeletionTimestamp = at(0) }), "lease web-1 is being deleted"},
		"bound elsewhere, one cluster registered twice": {epoch2, lease(func(l *flotillav1.Lease) { l.Spec.ProviderRef.Name = "carol-1" }), ""},
		"bound elsewhere and closed: the other provider's to fence": {epoch2, lease(func(l *flotillav1.Lease) {
			l.Spec.ProviderRef.Name, l.Status.Phase = "carol-1", flotillav1.LeaseClosed
		}), ""},
		"older epoch":    {map[string]string{flotillav1.LabelEpoch: "1"}, lease(nil), "epoch 1 is older than lease epoch 2"},
		"no epoch label": {nil, lease(nil), "epoch 0 is older than lease epoch 2"},
	} {
		if got := Stale("bob-1", tc.labels, tc.lease); got != tc.want {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}
}

// With PullLook set, a live Pull-mode provider is next looked at when its
// grace period ends (at most PullLook away), not every probe interval: its
// heartbeat is watched, so nothing in between can change its phase.
func TestPullLookAtTheEndOfTheGracePeriod(t *testing.T) {
	ready := flotillav1.ProviderStatus{Mode: flotillav1.ModePull, Phase: "Ready", LastHeartbeatTime: at(0), ObservedHeartbeat: "a"}
	for name, tc := range map[string]struct {
		grace   time.Duration
		now     time.Duration
		watched bool
		phase   flotillav1.ProviderPhase
		want    time.Duration
		routine bool
	}{
		"heartbeat 5s old":                            {grace: 20 * time.Second, now: 5 * time.Second, phase: "Ready", want: 15*time.Second + 10*time.Millisecond},
		"a grace period longer than PullLook":         {grace: time.Hour, now: 5 * time.Second, phase: "Ready", want: 30 * time.Second},
		"stale: Lost, looked at every probe interval": {grace: 20 * time.Second, now: 25 * time.Second, phase: "Lost", want: 3 * time.Second},
		// The caller wakes it at the grace period's end: only the routine
		// look is scheduled.
		"grace watched, heartbeat 5s old": {grace: 20 * time.Second, now: 5 * time.Second, watched: true, phase: "Ready", want: 30 * time.Second, routine: true},
		"grace watched, stale: Lost":      {grace: 20 * time.Second, now: 25 * time.Second, watched: true, phase: "Lost", want: 3 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			p := Policy{Grace: tc.grace, ProbeInterval: 3 * time.Second, PullLook: 30 * time.Second}
			d := Decide(Input{Now: t0.Add(tc.now), Pull: true, Status: ready, Heartbeat: "a", GraceWatched: tc.watched}, p)
			if d.Status.Phase != tc.phase || d.RequeueAfter != tc.want || d.Routine != tc.routine {
				t.Errorf("%s, next look in %v, routine %v; want %s, in %v, routine %v", d.Status.Phase, d.RequeueAfter, d.Routine, tc.phase, tc.want, tc.routine)
			}
		})
	}
}
