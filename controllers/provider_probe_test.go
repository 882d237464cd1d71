package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
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
// queue for its routine look (its heartbeat wakes it); a live one's look
// at the end of its grace period, and every Push-mode probe, do not.
func TestRoutineLooksAtPullProvidersWait(t *testing.T) {
	r := &ProviderReconciler{ProbeInterval: 3 * time.Second}
	for _, tc := range []struct {
		pull  bool
		phase flotillav1.ProviderPhase
		after time.Duration
		low   bool
	}{
		{pull: true, phase: flotillav1.ProviderLost, after: 3 * time.Second, low: true},
		{pull: true, phase: flotillav1.ProviderPending, after: 3 * time.Second, low: true},
		{pull: true, phase: flotillav1.ProviderPending, after: 1200 * time.Millisecond},
		{pull: true, phase: flotillav1.ProviderReady, after: 20 * time.Second},
		{pull: true, phase: flotillav1.ProviderCordoned, after: 20 * time.Second},
		{pull: false, phase: flotillav1.ProviderLost, after: 3 * time.Second},
	} {
		res := r.next(tc.pull, tc.phase, tc.after)
		if low := res.Priority != nil && *res.Priority == handler.LowPriority; low != tc.low || res.RequeueAfter != tc.after {
			t.Errorf("pull %v, %s, next look in %v: %+v, want low priority %v", tc.pull, tc.phase, tc.after, res, tc.low)
		}
	}
}
