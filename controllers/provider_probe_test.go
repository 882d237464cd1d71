package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/health"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// A Push-mode provider is probed once per probe interval, and a probe that
// finds nothing new writes nothing: the status write of one probe must not
// wake a second probe at once (it did: each write of the probe's time woke
// the controller, which probed again and sent the status again), and the
// probe's time alone is recorded once a minute.
func TestAProviderIsProbedOncePerInterval(t *testing.T) {
	const interval = time.Second
	_, get := pushProvider(t, "steady", kubeconfigFor(t, env.Config.Host), &ProviderReconciler{GracePeriod: 10 * time.Second, ProbeInterval: interval}, pushOptions{})
	hubenv.Await(t, 10*time.Second, "provider Ready", func() (bool, string) {
		p := get()
		return p.Status.Phase == flotillav1.ProviderReady, string(p.Status.Phase)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, &flotillav1.ProviderList{}, client.MatchingFields{"metadata.name": "steady"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	const window = 5 * time.Second
	// The provider runs no Lease: every request to it is a probe.
	probes := func() float64 {
		return metricValueFor(t, "flotilla_remote_request_duration_seconds", "provider", "steady")
	}
	before := probes()
	writes, end := 0, time.After(window)
	for done := false; !done; {
		select {
		case <-w.ResultChan():
			writes++
		case <-end:
			done = true
		}
	}
	probed := probes() - before
	// One probe per interval, and no write: nothing changed, and the
	// probe's time is recorded once a minute (the watch's first event is
	// the provider as it was).
	if writes > 1 {
		t.Errorf("the provider's status was written %d times in %s while nothing changed, want none", writes-1, window)
	}
	if limit := float64(window/interval) + 1; probed > limit {
		t.Errorf("the provider was probed %v times in %s with a probe interval of %s, want at most %v", probed, window, interval, limit)
	}
}

// A restarted hub writes its first probe of a Ready provider, even when
// that write fails the first time: the probe is remembered (and then
// written only every health.DefaultContactRecord) once status holds it.
// (A first write that conflicted left the previous manager's probe time
// in status until the next record.)
func TestTheFirstProbeAfterARestartIsWritten(t *testing.T) {
	old := metav1.NewTime(time.Now().Add(-30 * time.Second).Truncate(time.Second))
	var failed atomic.Bool
	conflictOnce := func(c client.Client) client.Client { return conflictingStatus{c, &failed} }
	_, get := pushProvider(t, "restarted", kubeconfigFor(t, env.Config.Host), &ProviderReconciler{GracePeriod: 10 * time.Second, ProbeInterval: 200 * time.Millisecond},
		pushOptions{status: &flotillav1.ProviderStatus{Phase: flotillav1.ProviderReady, Mode: flotillav1.ModePush, LastProbeTime: &old}, wrap: conflictOnce})
	hubenv.Await(t, 10*time.Second, "the restarted controller's probe written", func() (bool, string) {
		p := get()
		return failed.Load() && p.Status.LastProbeTime != nil && p.Status.LastProbeTime.After(old.Time), fmt.Sprintf("write failed once: %v; lastProbeTime %v", failed.Load(), p.Status.LastProbeTime)
	})
}

// conflictingStatus fails its first status write with a Conflict.
type conflictingStatus struct {
	client.Client
	failed *atomic.Bool
}

func (c conflictingStatus) Status() client.SubResourceWriter {
	return conflictingWriter{c.Client.Status(), c.failed}
}

type conflictingWriter struct {
	client.SubResourceWriter
	failed *atomic.Bool
}

func (w conflictingWriter) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
	if w.failed.CompareAndSwap(false, true) {
		return apierrors.NewConflict(flotillav1.GroupVersion.WithResource("providers").GroupResource(), "restarted", errors.New("the object has been modified"))
	}
	return w.SubResourceWriter.Apply(ctx, obj, opts...)
}

// A Pull-mode provider that is not Ready waits behind the rest of the
// queue for its routine look (its heartbeat wakes it); so does a live one
// whose grace period the expiry scan watches. A live one the scan cannot
// see, or past its grace period, is not watched: health.Decide keeps the
// look at its end, and that look, like every Push-mode probe, does not
// wait.
func TestRoutineLooksAtPullProvidersWait(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	r := &ProviderReconciler{ProbeInterval: 3 * time.Second, GracePeriod: 20 * time.Second, Now: func() time.Time { return now },
		expiries: make(chan event.GenericEvent, 1)}
	r.beats.Store("fresh", heartbeat{value: "b1", seen: now.Add(-5 * time.Second)})
	r.beats.Store("silent", heartbeat{value: "b1", seen: now.Add(-20 * time.Second)})
	for provider, want := range map[string]bool{"fresh": true, "silent": false, "unheard": false} {
		if got := r.graceWatched(provider, now); got != want {
			t.Errorf("%s: grace watched %v, want %v", provider, got, want)
		}
	}
	for _, tc := range []struct {
		pull    bool
		phase   flotillav1.ProviderPhase
		after   time.Duration
		routine bool
		low     bool
	}{
		{pull: true, phase: flotillav1.ProviderLost, after: 3 * time.Second, low: true},
		{pull: true, phase: flotillav1.ProviderPending, after: 3 * time.Second, low: true},
		{pull: true, phase: flotillav1.ProviderPending, after: 1200 * time.Millisecond},
		{pull: true, phase: flotillav1.ProviderReady, after: 30 * time.Second, routine: true, low: true},
		{pull: true, phase: flotillav1.ProviderCordoned, after: 30 * time.Second, routine: true, low: true},
		{pull: true, phase: flotillav1.ProviderReady, after: 300 * time.Millisecond},
		{pull: false, phase: flotillav1.ProviderLost, after: 3 * time.Second},
		{pull: false, phase: flotillav1.ProviderReady, after: 3 * time.Second, routine: true},
	} {
		d := health.Decision{Status: flotillav1.ProviderStatus{Phase: tc.phase}, RequeueAfter: tc.after, Routine: tc.routine}
		res := r.next(tc.pull, d)
		if low := res.Priority != nil && *res.Priority == handler.LowPriority; low != tc.low || res.RequeueAfter != tc.after {
			t.Errorf("pull %v, %s, next look in %v, routine %v: %+v, want low priority %v", tc.pull, tc.phase, tc.after, tc.routine, res, tc.low)
		}
	}
	r.expiries = nil
	if r.graceWatched("fresh", now) {
		t.Errorf("without the expiry scan a live provider's grace period counts as watched")
	}
}

// The expiry scan wakes a provider once its heartbeat has not been seen
// renewed for the grace period, once per heartbeat, and again when a
// later heartbeat goes stale; a full queue only delays it to the next scan.
func TestExpiryScanWakesEachStaleBeatOnce(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	clock := now
	r := &ProviderReconciler{GracePeriod: 20 * time.Second, Now: func() time.Time { return clock },
		expiries: make(chan event.GenericEvent, 1)}
	r.beats.Store("stopped", heartbeat{value: "b1", seen: now.Add(-21 * time.Second)})
	r.beats.Store("alive", heartbeat{value: "b9", seen: now.Add(-19 * time.Second)})
	r.beats.Store("also-stopped", heartbeat{value: "b1", seen: now.Add(-25 * time.Second)})
	names := func() []string {
		var out []string
		for _, e := range r.expired(clock) {
			out = append(out, e.provider)
		}
		slices.Sort(out)
		return out
	}
	if got := names(); !slices.Equal(got, []string{"also-stopped", "stopped"}) {
		t.Fatalf("expired %v, want the two silent for 20 s", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.watchExpiry(ctx) }()
	woke := map[string]bool{}
	for len(woke) < 2 {
		select {
		case e := <-r.expiries:
			woke[e.Object.GetName()] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("woken: %v, want both stopped providers (one queue slot: the second waits a scan)", woke)
		}
	}
	cancel()
	<-done
	if got := names(); len(got) != 0 {
		t.Errorf("woken again for the same heartbeat: %v", got)
	}
	r.beats.Store("stopped", heartbeat{value: "b2", seen: now})
	clock = now.Add(20 * time.Second)
	if got := names(); !slices.Equal(got, []string{"alive", "stopped"}) {
		t.Errorf("20 s later, expired %v, want the one that beat again and went silent, and the one silent since", got)
	}
}

// A provider's agent counts as heard throughout a time only when its
// heartbeats were seen renewed from before it began, never a grace period
// apart, the last within the grace period of its end: its Leases are then
// charged for it however far apart the hub's looks at them were.
func TestHeardThroughoutNeedsUnbrokenBeats(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	r := &ProviderReconciler{GracePeriod: 20 * time.Second}
	for i, s := range []int{0, 10, 20} {
		r.noteBeat("p", fmt.Sprintf("b%d", i), at(s))
	}
	r.noteBeat("p", "b2", at(35)) // the same value again is no beat
	for _, tc := range []struct {
		what     string
		provider string
		from, to time.Time
		want     bool
	}{
		{"beats all along", "p", at(5), at(25), true},
		{"from the first beat", "p", at(0), at(40), true},
		{"before the first beat", "p", at(-1), at(25), false},
		{"P3.pull-heard-gap: the last beat more than a grace period before the end", "p", at(5), at(41), false},
		{"no look before", "p", time.Time{}, at(25), false},
		{"never heard", "q", at(5), at(25), false},
	} {
		if got := r.HeardThroughout(tc.provider, tc.from, tc.to); got != tc.want {
			t.Errorf("%s: heard %v, want %v", tc.what, got, tc.want)
		}
	}
	// A Lost provider's Leases are charged up to its last beat heard.
	for from, want := range map[time.Time]time.Time{at(5): at(20), at(20): at(20), at(25): at(25), at(-1): at(-1), {}: {}} {
		if got := r.LastHeard("p", from); !got.Equal(want) {
			t.Errorf("last heard since %v: %v, want %v", from, got, want)
		}
	}
	// Silent for more than the grace period: heard again only from the
	// beat that ended the silence.
	r.noteBeat("p", "b3", at(45))
	if r.HeardThroughout("p", at(30), at(50)) {
		t.Errorf("heard across a silence of 25 s")
	}
	if got := r.LastHeard("p", at(30)); !got.Equal(at(30)) {
		t.Errorf("last heard across a silence: %v", got)
	}
	if !r.HeardThroughout("p", at(45), at(50)) {
		t.Errorf("not heard after the silence ended")
	}
}
