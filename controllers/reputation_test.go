package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// startProviderController runs the provider controller alone, probing every
// 200ms, until the returned function is called.
func startProviderController(t *testing.T, halfLife time.Duration) (stop func()) {
	t.Helper()
	mgr := newTestManager(t)
	if err := SetupIndexes(context.Background(), mgr); err != nil {
		t.Fatal(err)
	}
	r := &ProviderReconciler{Client: mgr.GetClient(), Remote: remote.NewCache(env.Scheme, remote.Options{RequestTimeout: time.Second}),
		Recorder: mgr.GetEventRecorderFor("test"), HubID: "rep", GracePeriod: 5 * time.Second, ProbeInterval: 200 * time.Millisecond,
		ReputationHalfLife: halfLife, ReputationRefresh: 500 * time.Millisecond, Now: time.Now}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return run(t, mgr, ctx, cancel)
}

// reachableProvider registers a provider whose kubeconfig reaches the test
// API server, so that its probes succeed.
func reachableProvider(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	namespace(t, flotillav1.SystemNamespace)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-kubeconfig", Namespace: flotillav1.SystemNamespace},
		Data: map[string][]byte{"kubeconfig": kubeconfigFor(t, env.Config.Host)}}
	if err := env.Client.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	p := &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: flotillav1.ProviderSpec{
		Owner: name, Region: "eu-west", APIServerURL: env.Config.Host, KubeconfigSecretRef: &flotillav1.SecretKeyReference{Name: sec.Name}}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
}

// endedLease creates a Lease on the provider that ended with the reason
// and, if not empty, a verdict on its result.
func endedLease(t *testing.T, ns, name, provider string, outcome flotillav1.LeaseOutcome, verdict flotillav1.Verdict) *flotillav1.Lease {
	t.Helper()
	ctx := context.Background()
	l := &flotillav1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{flotillav1.LabelProvider: provider}},
		Spec: flotillav1.LeaseSpec{
			WorkloadRef: flotillav1.LocalObjectReference{Name: "w"}, ProviderRef: flotillav1.ProviderReference{Name: provider},
			OfferRef: flotillav1.ObjectReference{Namespace: flotillav1.ProviderNamespace(provider), Name: "std"},
			Class:    flotillav1.ClassBatch, Replicas: 1, Epoch: 1,
			ResourcesPerReplica: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
			Prices:              flotillav1.PriceList{corev1.ResourceCPU: "0.01"}, PricePerReplicaHour: "0.01",
		},
	}
	if err := env.Client.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	l.Status.Phase = flotillav1.LeaseClosed
	l.Status.Outcome = outcome
	l.Status.Verdict = verdict
	reason := string(outcome)
	if reason == "" {
		reason = "ScaledDown"
	}
	apimeta.SetStatusCondition(&l.Status.Conditions, metav1.Condition{Type: flotillav1.LeaseConditionClosed, Status: metav1.ConditionTrue, Reason: reason, Message: "ended"})
	if err := env.Client.Status().Update(ctx, l); err != nil {
		t.Fatal(err)
	}
	return l
}

// Lease outcomes and verdicts move a provider's reputation, each exactly
// once: across restarts, and when the mark on a Lease was lost after its
// evidence was written.
func TestReputationCountsEachLeaseEventOnce(t *testing.T) {
	ctx := context.Background()
	const prov, ns = "rep-a", "tenant-rep"
	reachableProvider(t, prov)
	namespace(t, ns)
	stop := startProviderController(t, time.Hour)
	stopped := false
	defer func() {
		if !stopped {
			stop() // a failed wait must not leave it changing later tests' providers
		}
	}()

	get := func() *flotillav1.Provider {
		p := &flotillav1.Provider{}
		_ = env.Client.Get(ctx, client.ObjectKey{Name: prov}, p)
		return p
	}
	hubenv.Await(t, 10*time.Second, "a neutral newcomer", func() (bool, string) {
		p := get()
		return p.Status.Phase == flotillav1.ProviderReady && p.Status.Reputation.Score == "0.500", fmt.Sprintf("%+v", p.Status.Reputation)
	})

	endedLease(t, ns, "done-agreed", prov, flotillav1.OutcomeCompleted, flotillav1.VerdictAgreed)
	endedLease(t, ns, "lost", prov, flotillav1.OutcomeFailedOver, "")
	endedLease(t, ns, "done-dissented", prov, flotillav1.OutcomeCompleted, flotillav1.VerdictDissented)
	endedLease(t, ns, "running", prov, "", "") // no outcome: Closed without one (scaled down)

	counts := func(r flotillav1.Reputation) string {
		return fmt.Sprintf("completed %d failed %d passed %d dissented %d", r.LeasesCompleted, r.LeasesFailed, r.VerificationsPassed, r.VerificationsFailed)
	}
	const want = "completed 2 failed 1 passed 1 dissented 1"
	var rep flotillav1.Reputation
	hubenv.Await(t, 10*time.Second, "the events counted", func() (bool, string) {
		rep = get().Status.Reputation
		return counts(rep) == want, counts(rep)
	})
	// positive 2 + 1, negative 1 + 5, decayed by seconds of a 1h half-life.
	if rep.Positive < "2.990" || rep.Positive > "3.000" || rep.Negative < "5.990" || rep.Negative > "6.000" {
		t.Errorf("evidence positive %s negative %s, want about 3 and 6", rep.Positive, rep.Negative)
	}
	if rep.Score != "0.364" && rep.Score != "0.363" {
		t.Errorf("score %s, want 4/11 = 0.364", rep.Score)
	}
	hubenv.Await(t, 10*time.Second, "uptime observed", func() (bool, string) {
		rep = get().Status.Reputation
		return rep.UpSeconds > 0, fmt.Sprintf("%+v", rep)
	})
	if rep.Uptime != "1.000" || rep.DownSeconds != 0 {
		t.Errorf("uptime %s, down %ds; want 1.000 and 0 for a provider always Ready", rep.Uptime, rep.DownSeconds)
	}
	marks := map[string]string{"done-agreed": "outcome,verdict", "lost": "outcome", "done-dissented": "outcome,verdict", "running": ""}
	hubenv.Await(t, 10*time.Second, "the leases marked", func() (bool, string) {
		for name, m := range marks {
			l := &flotillav1.Lease{}
			_ = env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, l)
			if got := l.Annotations[flotillav1.AnnotationReputationRecorded]; got != m {
				return false, name + ": " + got
			}
		}
		return true, ""
	})

	// A restart, then a lost mark (as if the manager died between the two
	// writes): nothing is counted again, and the mark comes back.
	stop()
	stopped = true
	l := &flotillav1.Lease{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "done-dissented"}, l); err != nil {
		t.Fatal(err)
	}
	delete(l.Annotations, flotillav1.AnnotationReputationRecorded)
	if err := env.Client.Update(ctx, l); err != nil {
		t.Fatal(err)
	}
	stop = startProviderController(t, time.Hour)
	defer stop()
	hubenv.Await(t, 10*time.Second, "the lost mark restored", func() (bool, string) {
		_ = env.Client.Get(ctx, client.ObjectKeyFromObject(l), l)
		got := l.Annotations[flotillav1.AnnotationReputationRecorded]
		return got == "outcome,verdict", got
	})
	hubenv.Holds(t, time.Second, "each event counted once over a few more probes, after a restart and a lost mark", func() (bool, string) {
		got := counts(get().Status.Reputation)
		return got == want, fmt.Sprintf("%s, want %s", got, want)
	})
	if v := metricValueFor(t, "flotilla_provider_reputation", "provider", prov); v <= 0 || v >= 1 {
		t.Errorf("flotilla_provider_reputation = %v, want a score in (0, 1)", v)
	}
}

// Uptime is credited for the time the controller watched, however long
// since the last update, but not for a manager outage before it.
func TestReputationCreditsNoUptimeBeforeTheControllerWatched(t *testing.T) {
	ctx := context.Background()
	const prov = "rep-outage"
	reachableProvider(t, prov)
	get := func() *flotillav1.Provider {
		p := &flotillav1.Provider{}
		_ = env.Client.Get(ctx, client.ObjectKey{Name: prov}, p)
		return p
	}
	stop := startProviderController(t, time.Hour)
	hubenv.Await(t, 10*time.Second, "the provider Ready and some uptime", func() (bool, string) {
		p := get()
		return p.Status.Phase == flotillav1.ProviderReady && p.Status.Reputation.UpSeconds > 0, fmt.Sprintf("%s %+v", p.Status.Phase, p.Status.Reputation)
	})
	stop()
	// The manager was down for an hour after its last update.
	p := get()
	before := p.Status.Reputation.UpSeconds
	p.Status.Reputation.UpdatedTime = &metav1.Time{Time: time.Now().Add(-time.Hour).Truncate(time.Second)}
	if err := env.Client.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	stop = startProviderController(t, time.Hour)
	defer stop()
	hubenv.Await(t, 10*time.Second, "the reputation updated after the restart", func() (bool, string) {
		rep := get().Status.Reputation
		return rep.UpdatedTime != nil && !rep.UpdatedTime.Time.Before(restarted.Truncate(time.Second)), fmt.Sprintf("%+v", rep)
	})
	if up := get().Status.Reputation.UpSeconds; up > before+10 {
		t.Errorf("%d s up after the restart, %d s before it: the outage was credited as uptime", up, before)
	}
}
