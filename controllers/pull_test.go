package controllers

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/internal/assign"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/join"
	"github.com/flotilla-dev/flotilla/internal/lease"
	"github.com/flotilla-dev/flotilla/internal/render"
	"github.com/flotilla-dev/flotilla/internal/usage"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

const pullHub = "pl"

// joinIdentity registers a provider with the objects issue-join makes and
// returns a client acting as its join identity (the API server's RBAC and
// admission policies apply to it as to the real token).
func joinIdentity(t *testing.T, name string, mode flotillav1.ProviderMode) client.WithWatch {
	t.Helper()
	c, err := client.NewWithWatch(joinConfig(t, name, "eu-west", mode), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// joinConfig registers a provider as joinIdentity does and returns the
// client config of its join identity.
func joinConfig(t *testing.T, name, region string, mode flotillav1.ProviderMode) *rest.Config {
	t.Helper()
	namespace(t, flotillav1.SystemNamespace)
	o := join.Options{Name: name, Owner: name, Region: region, Mode: mode}
	if mode != flotillav1.ModePull {
		o.APIServerURL = "https://" + name + ".example:6443"
	}
	objs, err := join.Objects(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range objs {
		if err := env.Client.Create(context.Background(), obj); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: join.Username(name), Groups: join.Groups()}
	return cfg
}

// pullAgent runs the real agent's pull-mode rounds (SyncAssignments, then
// Heartbeat) every 200 ms against hub, with the test API server as its
// own cluster. partitioned cuts it off the hub.
type pullAgent struct {
	a           *agent.Agent
	partitioned atomic.Bool
	// listsFail fails only the rounds' lists of Assignments, as a hub too
	// busy to answer them in time does.
	listsFail atomic.Bool
	// lists counts the rounds' lists of Assignments.
	lists  atomic.Int32
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs the rounds and the heartbeat every 200 ms, and the watch of
// Assignments that wakes the rounds and feeds them between lists.
func (pa *pullAgent) start() {
	ctx, cancel := context.WithCancel(context.Background())
	pa.cancel, pa.done = cancel, make(chan struct{})
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() { pa.a.WatchAssignments(ctx, wake) })
	go func() {
		defer close(pa.done)
		defer wg.Wait()
		for ctx.Err() == nil {
			_ = pa.a.SyncAssignments(ctx)
			_ = pa.a.Heartbeat(ctx)
			select {
			case <-ctx.Done():
			case <-wake:
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
}

func (pa *pullAgent) stop() {
	if pa.cancel != nil {
		pa.cancel()
		<-pa.done
		pa.cancel = nil
	}
}

// silentWhile passes a watch's events on except while cut, when it drops
// them and stays open: a partition the stream does not notice, the worst
// case for an agent that rests on its watch.
func silentWhile(w watch.Interface, cut *atomic.Bool) watch.Interface {
	out := make(chan watch.Event)
	stop := make(chan struct{})
	var once sync.Once
	go func() {
		defer close(out)
		for ev := range w.ResultChan() {
			if cut.Load() {
				continue
			}
			select {
			case out <- ev:
			case <-stop:
				return
			}
		}
	}()
	return &silentWatch{stop: func() { once.Do(func() { close(stop); w.Stop() }) }, out: out}
}

type silentWatch struct {
	stop func()
	out  chan watch.Event
}

func (s *silentWatch) Stop()                          { s.stop() }
func (s *silentWatch) ResultChan() <-chan watch.Event { return s.out }

// realPullAgent is the real agent of Pull-mode provider name, with hub as
// its hub client and this API server as its cluster.
func realPullAgent(t *testing.T, name string, hub client.WithWatch) *agent.Agent {
	t.Helper()
	cfg, err := agent.ParseConfig([]byte(fmt.Sprintf(`{"hubID": %q, "provider": {"name": %q, "owner": %q, "mode": "Pull"},
		"offer": {"reserve": {"cpu": "0", "memory": "0"}}}`, pullHub, name, name)))
	if err != nil {
		t.Fatal(err)
	}
	return &agent.Agent{Log: logr.Discard(), Namespace: flotillav1.SystemNamespace, Local: kubernetes.NewForConfigOrDie(env.Config),
		Hub: hub, HubWatch: hub, Federation: env.Client, Config: cfg, Identity: name + "/test"}
}

func startPullAgent(t *testing.T, name string, hub client.WithWatch) *pullAgent {
	t.Helper()
	pa := &pullAgent{}
	cut := errors.New("partitioned from the hub")
	hubc := interceptor.NewClient(hub, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, o ...client.ListOption) error {
			if pa.partitioned.Load() {
				return cut
			}
			if _, meta := l.(*metav1.PartialObjectMetadataList); meta {
				pa.lists.Add(1)
				if pa.listsFail.Load() {
					return context.DeadlineExceeded
				}
			}
			return c.List(ctx, l, o...)
		},
		Watch: func(ctx context.Context, c client.WithWatch, l client.ObjectList, o ...client.ListOption) (watch.Interface, error) {
			if pa.partitioned.Load() {
				return nil, cut
			}
			w, err := c.Watch(ctx, l, o...)
			if err != nil {
				return nil, err
			}
			return silentWhile(w, &pa.partitioned), nil
		},
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, obj client.Object, o ...client.GetOption) error {
			if pa.partitioned.Load() {
				return cut
			}
			return c.Get(ctx, k, obj, o...)
		},
		// The heartbeat renews without reading first.
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, o ...client.UpdateOption) error {
			if pa.partitioned.Load() {
				return cut
			}
			return c.Update(ctx, obj, o...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, o ...client.SubResourceUpdateOption) error {
			if pa.partitioned.Load() {
				return cut
			}
			return c.SubResource(sub).Update(ctx, obj, o...)
		},
	})
	pa.a = realPullAgent(t, name, hubc)
	pa.a.Resync = 2 * time.Second
	pa.start()
	t.Cleanup(pa.stop)
	return pa
}

// startFakeAgent plays a Pull-mode provider's agent without a cluster: it
// heartbeats and accepts every Assignment as running and ready, claiming
// far more replicas than it was assigned. While mute is set it heartbeats
// and answers nothing.
func startFakeAgent(t *testing.T, name string, hub client.Client, mute *atomic.Bool) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var as flotillav1.AssignmentList
			if err := hub.List(ctx, &as, client.InNamespace(flotillav1.ProviderNamespace(name))); err == nil && !mute.Load() {
				for i := range as.Items {
					a := &as.Items[i]
					if a.Status.AppliedHash == a.Spec.Hash {
						continue
					}
					// It claims more than it was given: the hub counts no more
					// than was leased.
					a.Status = flotillav1.AssignmentStatus{State: flotillav1.AssignmentAccepted, AppliedHash: a.Spec.Hash,
						RunningReplicas: 10000, ReadyReplicas: 10000, Digest: "sha256:not-a-digest"}
					_ = hub.Status().Update(ctx, a)
				}
			}
			l := &coordinationv1.Lease{}
			if err := hub.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: "provider-" + name}, l); err == nil {
				l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
				_ = hub.Update(ctx, l)
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// A new Pull-mode Lease's Assignment is written as soon as the scheduler
// created the Lease, before any turn of the Lease controller (none runs
// here); a Push-mode provider's Lease gets none.
func TestANewPullLeaseIsAssignedAtOnce(t *testing.T) {
	ctx := context.Background()
	const suite, ns = "assign-now", "tenant-assign-now"
	p := &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: "assign-now"},
		Spec: flotillav1.ProviderSpec{Owner: "an", Region: "eu-west", Mode: flotillav1.ModePull}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = flotillav1.ProviderReady
	if err := env.Client.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	namespace(t, flotillav1.ProviderNamespace(p.Name))
	readyProvider(t, "assign-push", "ap")
	createOffer(t, p.Name, "std", suite, "8", "0.01")
	createOffer(t, "assign-push", "std", suite, "8", "0.01")
	namespace(t, ns)
	w := newWorkload(ns, "web", suite, 2, "1")
	w.Spec.Placement.MaxReplicasPerProvider = ptr.To[int32](1)
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, testHooks{})
	defer m.stop(t)
	var pulled *flotillav1.Lease
	hubenv.Await(t, 20*time.Second, "a Lease on each provider", func() (bool, string) {
		ls := leasesOf(t, ns)
		for i := range ls {
			if ls[i].Spec.ProviderRef.Name == p.Name {
				pulled = &ls[i]
			}
		}
		return len(ls) == 2 && pulled != nil, fmt.Sprint(len(ls), " leases")
	})
	hubenv.Await(t, 20*time.Second, "the pull-mode Lease's Assignment", func() (bool, string) {
		a := &flotillav1.Assignment{}
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace(p.Name), Name: assign.Name("hub", pulled.UID)}, a)
		return err == nil && a.Spec.LeaseRef.Name == pulled.Name && a.Spec.Hash != "", fmt.Sprint(err)
	})
	var as flotillav1.AssignmentList
	if err := env.Client.List(ctx, &as, client.InNamespace(flotillav1.ProviderNamespace("assign-push"))); err != nil {
		t.Fatal(err)
	}
	if len(as.Items) != 0 {
		t.Errorf("the Push-mode provider got %d Assignments", len(as.Items))
	}
}

// TestPullMode runs the hub with two Pull-mode providers: one with the
// real agent (this API server is its cluster), one played by the test.
// The hub holds no credential for either and never connects to them;
// work lands through Assignments, a refusal is placed elsewhere with the
// agent's reason, and a provider back from a partition fences its stale
// work before the hub sees it Ready.
func TestPullMode(t *testing.T) {
	ctx := context.Background()
	const ns = "tenant-pull"
	node(t, "pl-node")
	// No node lifecycle controller runs here to lift the not-ready taint
	// the API server puts on new nodes.
	n := get(t, &corev1.Node{}, "", "pl-node")
	n.Spec.Taints = nil
	if err := env.Client.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	joinA := joinIdentity(t, "pull-a", flotillav1.ModePull)
	joinB := joinIdentity(t, "pull-b", flotillav1.ModePull)
	account(t, ns, "1000")
	for _, p := range []struct{ name, price string }{{"pull-a", "0.01"}, {"pull-b", "0.02"}} {
		o := fixture.Offer(p.name, "std", fixture.Selling("1000", "4Ti"), fixture.Priced(flotillav1.Amount(p.price), "0.001"), fixture.Attribute("suite", "pull"),
			fixture.Attribute("provider", p.name))
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	mgr := newTestManager(t)
	mctx, cancel := context.WithCancel(ctx)
	if _, err := Setup(mctx, mgr, Options{HubID: pullHub, ProviderGracePeriod: 2 * time.Second, ProbeInterval: 300 * time.Millisecond,
		SchedulerInterval: 50 * time.Millisecond, SettlementInterval: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	defer run(t, mgr, mctx, cancel)()
	a := startPullAgent(t, "pull-a", joinA)
	var muteB atomic.Bool
	startFakeAgent(t, "pull-b", joinB, &muteB)

	phase := func(name string) *flotillav1.Provider { return get(t, &flotillav1.Provider{}, "", name) }
	awaitPhase := func(name string, want flotillav1.ProviderPhase) {
		t.Helper()
		hubenv.Await(t, 30*time.Second, name+" "+string(want), func() (bool, string) {
			p := phase(name)
			return p.Status.Phase == want, string(p.Status.Phase)
		})
	}
	hubenv.Stage(t, "both providers Ready from their heartbeats alone; the hub holds no credential for them", func(t *testing.T) {
		awaitPhase("pull-a", flotillav1.ProviderReady)
		awaitPhase("pull-b", flotillav1.ProviderReady)
		for _, name := range []string{"pull-a", "pull-b"} {
			p := phase(name)
			c := apimeta.FindStatusCondition(p.Status.Conditions, flotillav1.ProviderReachable)
			if p.Status.Mode != flotillav1.ModePull || p.Status.LastProbeTime != nil || c == nil || c.Reason != flotillav1.ProviderReasonHeartbeatFresh {
				t.Errorf("%s: mode %q, lastProbeTime %v, Reachable %+v", name, p.Status.Mode, p.Status.LastProbeTime, c)
			}
			if p.Spec.KubeconfigSecretRef != nil {
				t.Errorf("%s: a Pull-mode provider names a kubeconfig Secret", name)
			}
			err := env.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: name + "-kubeconfig"}, &corev1.Secret{})
			if !apierrors.IsNotFound(err) {
				t.Errorf("%s: the hub has a kubeconfig Secret for it: %v", name, err)
			}
		}
	})

	hubenv.Stage(t, "a Lease's status is not written before its agent answers, unless the agent stays silent", func(t *testing.T) {
		hubLeases, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		wctx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		watcher, err := hubLeases.Watch(wctx, &flotillav1.LeaseList{}, client.InNamespace(ns))
		if err != nil {
			t.Fatal(err)
		}
		defer watcher.Stop()
		var mu sync.Mutex
		phases := map[string][]flotillav1.LeasePhase{} // every status a Lease was written with, by Workload
		go func() {
			for ev := range watcher.ResultChan() {
				if l, ok := ev.Object.(*flotillav1.Lease); ok && l.Status.Phase != "" {
					mu.Lock()
					if p := phases[l.Spec.WorkloadRef.Name]; len(p) == 0 || p[len(p)-1] != l.Status.Phase {
						phases[l.Spec.WorkloadRef.Name] = append(p, l.Status.Phase)
					}
					mu.Unlock()
				}
			}
		}()
		onB := func(name string) *flotillav1.Workload {
			return fixture.Workload(ns, name, fixture.Replicas(1), fixture.Requests("1", "1Gi"), fixture.Selecting("suite", "pull"),
				fixture.Selecting("provider", "pull-b"))
		}
		prompt := onB("prompt")
		if err := env.Client.Create(ctx, prompt); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 20*time.Second, "prompt Ready on pull-b", func() (bool, string) {
			w := get(t, &flotillav1.Workload{}, ns, "prompt")
			return w.Status.ReadyReplicas == 1, fmt.Sprint(w.Status.ReadyReplicas)
		})
		hubenv.Await(t, 5*time.Second, "the watch saw the Lease Active", func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return slices.Contains(phases["prompt"], flotillav1.LeaseActive), fmt.Sprint(phases["prompt"])
		})
		mu.Lock()
		if got := phases["prompt"]; got[0] != flotillav1.LeaseActive {
			t.Errorf("prompt's Lease was written %v: a Lease whose agent answers at once needs no Pending status first", got)
		}
		mu.Unlock()

		muteB.Store(true)
		silent := onB("silent")
		if err := env.Client.Create(ctx, silent); err != nil {
			t.Fatal(err)
		}
		l := awaitOneLease(t, ns, "silent")
		var c *metav1.Condition
		hubenv.Await(t, 20*time.Second, "silent's Lease Pending, saying it waits for the agent", func() (bool, string) {
			got := get(t, &flotillav1.Lease{}, ns, l.Name)
			c = apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.ConditionReady)
			return got.Status.Phase == flotillav1.LeasePending && c != nil && c.Reason == flotillav1.LeaseReasonAwaitingAgent &&
				strings.Contains(c.Message, "agent of provider pull-b"), fmt.Sprintf("%s %+v", got.Status.Phase, c)
		})
		// Timestamps are whole seconds.
		if held := c.LastTransitionTime.Sub(l.CreationTimestamp.Time); held < lease.AnswerWait-time.Second {
			t.Errorf("silent's Lease said it waits for the agent %s after placement; a new Lease is given %s to be answered", held, lease.AnswerWait)
		}
		muteB.Store(false)
		hubenv.Await(t, 20*time.Second, "silent Ready once its agent answers", func() (bool, string) {
			w := get(t, &flotillav1.Workload{}, ns, "silent")
			return w.Status.ReadyReplicas == 1, fmt.Sprint(w.Status.ReadyReplicas)
		})
		for _, w := range []*flotillav1.Workload{prompt, silent} {
			if err := env.Client.Delete(ctx, w); err != nil {
				t.Fatal(err)
			}
		}
	})

	small := fixture.Workload(ns, "small", fixture.Replicas(1), fixture.Requests("1", "1Gi"), fixture.Selecting("suite", "pull"))
	var smallLease flotillav1.Lease
	hubenv.Stage(t, "a workload lands through the Assignment: the agent accepts, applies and reports it ready", func(t *testing.T) {
		if err := env.Client.Create(ctx, small); err != nil {
			t.Fatal(err)
		}
		smallLease = awaitOneLease(t, ns, "small")
		if smallLease.Spec.ProviderRef.Name != "pull-a" {
			t.Fatalf("placed on %s, want the cheaper pull-a", smallLease.Spec.ProviderRef.Name)
		}
		as := &flotillav1.Assignment{}
		hubenv.Await(t, 20*time.Second, "the assignment accepted and applied", func() (bool, string) {
			err := env.Client.Get(ctx, client.ObjectKey{Namespace: "provider-pull-a", Name: assign.Name(pullHub, smallLease.UID)}, as)
			l := get(t, &flotillav1.Lease{}, ns, smallLease.Name)
			return err == nil && as.Status.State == flotillav1.AssignmentAccepted && as.Status.AppliedHash == as.Spec.Hash,
				fmt.Sprintf("%v %+v; lease %s %q %+v", err, as.Status, l.Status.Phase, l.Status.LastError, l.Status.Conditions)
		})
		if err := env.Client.Get(ctx, client.ObjectKey{Name: render.Namespace(pullHub, smallLease.UID)}, &corev1.Namespace{}); err != nil {
			t.Fatalf("the agent did not apply the lease's namespace: %v", err)
		}
		runReadyPods(t, pullHub, &smallLease, "pl-node")
		hubenv.Await(t, 20*time.Second, "small Ready", func() (bool, string) {
			w := get(t, &flotillav1.Workload{}, ns, "small")
			return w.Status.ReadyReplicas == 1, fmt.Sprint(w.Status.ReadyReplicas)
		})
		awaitKStatus(t, small, "Current")
	})

	hubenv.Stage(t, "an assignment that does not fit is refused by the agent and placed elsewhere, with its reason", func(t *testing.T) {
		huge := fixture.Workload(ns, "huge", fixture.Replicas(1), fixture.Requests("100", "1Gi"), fixture.Selecting("suite", "pull"))
		if err := env.Client.Create(ctx, huge); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 30*time.Second, "huge Ready on pull-b after pull-a refused it", func() (bool, string) {
			w := get(t, &flotillav1.Workload{}, ns, "huge")
			c := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadScheduled)
			msg := ""
			if c != nil {
				msg = c.Message
			}
			onB := len(w.Status.Placements) == 1 && w.Status.Placements[0].Provider == "pull-b"
			return w.Status.ReadyReplicas == 1 && onB && strings.Contains(msg, "refused") && strings.Contains(msg, "not enough cpu free"),
				fmt.Sprintf("ready %d placements %+v Scheduled %q", w.Status.ReadyReplicas, w.Status.Placements, msg)
		})
		var refused int
		for _, l := range leasesOfWorkload(t, ns, "huge") {
			if l.Status.Outcome == flotillav1.OutcomeRefused {
				refused++
				if l.Spec.ProviderRef.Name != "pull-a" || l.Status.Usage.ReplicaSeconds != 0 {
					t.Errorf("refused lease %s on %s charged %d replica-seconds", l.Name, l.Spec.ProviderRef.Name, l.Status.Usage.ReplicaSeconds)
				}
				// Deleted by the sync that closes the Lease, which may end
				// just after the Workload turns Ready elsewhere.
				hubenv.Await(t, 10*time.Second, "the refused assignment gone from the hub", func() (bool, string) {
					err := env.Client.Get(ctx, client.ObjectKey{Namespace: "provider-pull-a", Name: assign.Name(pullHub, l.UID)}, &flotillav1.Assignment{})
					return apierrors.IsNotFound(err), fmt.Sprint(err)
				})
			}
		}
		for _, l := range leasesOfWorkload(t, ns, "huge") {
			if l.Spec.ProviderRef.Name == "pull-b" && (l.Status.RunningReplicas != 1 || l.Status.ReadyReplicas != 1 || l.Status.Digest != "") {
				t.Errorf("lease on pull-b: %d running, %d ready, digest %q from a report of 10000 and a malformed digest",
					l.Status.RunningReplicas, l.Status.ReadyReplicas, l.Status.Digest)
			}
		}
		if refused != 1 {
			t.Errorf("%d refused leases, want 1: the refusing provider must not be offered the same replicas again at once", refused)
		}
		if p := phase("pull-a"); p.Status.Reputation.LeasesFailed != 0 {
			t.Errorf("a refusal cost pull-a reputation: %+v", p.Status.Reputation)
		}
	})

	hubenv.Stage(t, "idle rounds rest on the watch: they do not list the Assignments again", func(t *testing.T) {
		before := a.lists.Load()
		// Fifteen rounds, and a list every resync (2 s here).
		time.Sleep(3 * time.Second)
		if n := a.lists.Load() - before; n > 2 {
			t.Errorf("%d lists of Assignments in 3 s of rounds every 200 ms while the watch was open, want at most 2", n)
		}
	})

	hubenv.Stage(t, "rounds that time out on a busy hub do not stop the heartbeat, and pull-a stays Ready", func(t *testing.T) {
		a.listsFail.Store(true)
		defer a.listsFail.Store(false)
		// Three grace periods of failed rounds.
		hubenv.Holds(t, 6*time.Second, "pull-a Ready while its rounds fail", func() (bool, string) {
			p := phase("pull-a")
			return p.Status.Phase == flotillav1.ProviderReady, string(p.Status.Phase)
		})
	})

	old := render.Namespace(pullHub, smallLease.UID)
	hubenv.Stage(t, "partitioned: pull-a is Lost and its work moves; back, it fences stale work before it is Ready", func(t *testing.T) {
		a.partitioned.Store(true)
		awaitPhase("pull-a", flotillav1.ProviderLost)
		beat := &coordinationv1.Lease{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: "provider-pull-a"}, beat); err != nil {
			t.Fatal(err)
		}
		if beat.Annotations[flotillav1.AnnotationLost] == "" {
			t.Errorf("pull-a is Lost but its heartbeat Lease carries no %s mark: %v", flotillav1.AnnotationLost, beat.Annotations)
		}
		hubenv.Await(t, 30*time.Second, "small failed over to pull-b", func() (bool, string) {
			w := get(t, &flotillav1.Workload{}, ns, "small")
			return w.Status.ReadyReplicas == 1 && len(w.Status.Placements) == 1 && w.Status.Placements[0].Provider == "pull-b",
				fmt.Sprintf("%d ready, %+v", w.Status.ReadyReplicas, w.Status.Placements)
		})
		// The agent kept running what it had while it could not see the hub.
		n := &corev1.Namespace{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: old}, n); err != nil || n.DeletionTimestamp != nil {
			t.Fatalf("the partitioned agent removed its work (%v, deleting %v); it must keep running it", err, n.DeletionTimestamp)
		}
		stale := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-pl-leftover", Labels: map[string]string{
			flotillav1.LabelManaged: "true", flotillav1.LabelHub: pullHub, flotillav1.LabelLease: "gone", flotillav1.LabelEpoch: "1"}}}
		if err := env.Client.Create(ctx, stale); err != nil {
			t.Fatal(err)
		}
		// Back: not one heartbeat before a round that fenced.
		a.stop()
		a.partitioned.Store(false)
		if err := a.a.Heartbeat(ctx); err == nil || !strings.Contains(err.Error(), "declared this provider Lost") {
			t.Errorf("heartbeat before fencing: %v, want it withheld", err)
		}
		if err := a.a.SyncAssignments(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.a.Heartbeat(ctx); err != nil {
			t.Fatalf("heartbeat after fencing: %v", err)
		}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: "provider-pull-a"}, beat); err != nil {
			t.Fatal(err)
		}
		if m := beat.Annotations[flotillav1.AnnotationLost]; m != "" {
			t.Errorf("the renewed heartbeat still carries the Lost mark %q", m)
		}
		a.start()
		awaitPhase("pull-a", flotillav1.ProviderReady)
		for _, name := range []string{old, stale.Name} {
			n := &corev1.Namespace{}
			if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, n); err == nil && n.DeletionTimestamp == nil {
				t.Errorf("pull-a is Ready again with stale namespace %s still there", name)
			}
		}
		hubenv.Holds(t, 2*time.Second, "small runs exactly its one replica", func() (bool, string) {
			w := get(t, &flotillav1.Workload{}, ns, "small")
			return w.Status.ScheduledReplicas == 1, fmt.Sprint(w.Status.ScheduledReplicas)
		})
	})

	hubenv.Stage(t, "back from a partition its watch did not notice, pull-a reads the hub before it beats, and fences what moved", func(t *testing.T) {
		// Rounds rest on the watch for as long as the test lasts: only the
		// hub's Lost mark makes them list.
		a.stop()
		a.a.Resync = time.Hour
		a.start()
		med := fixture.Workload(ns, "med", fixture.Replicas(1), fixture.Requests("1", "1Gi"), fixture.Selecting("suite", "pull"))
		if err := env.Client.Create(ctx, med); err != nil {
			t.Fatal(err)
		}
		l := awaitOneLease(t, ns, "med")
		if l.Spec.ProviderRef.Name != "pull-a" {
			t.Fatalf("med placed on %s, want pull-a", l.Spec.ProviderRef.Name)
		}
		work := render.Namespace(pullHub, l.UID)
		hubenv.Await(t, 20*time.Second, "med applied on pull-a", func() (bool, string) {
			err := env.Client.Get(ctx, client.ObjectKey{Name: work}, &corev1.Namespace{})
			return err == nil, fmt.Sprint(err)
		})
		hubenv.Await(t, 10*time.Second, "rounds resting on the watch", func() (bool, string) {
			before := a.lists.Load()
			time.Sleep(time.Second)
			return a.lists.Load() == before, "still listing"
		})
		a.partitioned.Store(true)
		awaitPhase("pull-a", flotillav1.ProviderLost)
		hubenv.Await(t, 30*time.Second, "med's assignment on pull-a withdrawn", func() (bool, string) {
			err := env.Client.Get(ctx, client.ObjectKey{Namespace: "provider-pull-a", Name: assign.Name(pullHub, l.UID)}, &flotillav1.Assignment{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		before := a.lists.Load()
		// The watch stays open and passes events on again, but the
		// withdrawal went by while it was silent.
		a.partitioned.Store(false)
		// Reachable, not Ready: a second loss in a row backs it off.
		hubenv.Await(t, 30*time.Second, "pull-a's heartbeat back", func() (bool, string) {
			c := apimeta.FindStatusCondition(phase("pull-a").Status.Conditions, flotillav1.ProviderReachable)
			return c != nil && c.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", c)
		})
		if a.lists.Load() == before {
			t.Error("pull-a beat again without listing its Assignments after it was declared Lost")
		}
		n := &corev1.Namespace{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: work}, n); err == nil && n.DeletionTimestamp == nil {
			t.Errorf("pull-a beats again with med's withdrawn namespace %s still there", work)
		}
	})
}

// TestPullJoinCredentials: a Pull-mode provider's join credential reads
// its own Assignments and writes their status, and nothing of another
// provider's; it cannot rewrite what the hub assigned.
func TestPullJoinCredentials(t *testing.T) {
	ctx := context.Background()
	c1 := joinIdentity(t, "pjc-1", flotillav1.ModePull)
	c2 := joinIdentity(t, "pjc-2", flotillav1.ModePull)
	mk := func(provider string) *flotillav1.Assignment {
		a := &flotillav1.Assignment{ObjectMeta: metav1.ObjectMeta{Name: "a-" + provider, Namespace: flotillav1.ProviderNamespace(provider)},
			Spec: flotillav1.AssignmentSpec{LeaseRef: flotillav1.AssignmentLeaseReference{Namespace: "t", Name: "l", UID: "u"},
				Class: flotillav1.ClassService, Replicas: 1, PricePerReplicaHour: "0.01", Epoch: 1, Namespace: "flotilla-x", Hash: "h",
				ResourcesPerReplica: corev1.ResourceList{}, Objects: []runtime.RawExtension{{Raw: []byte(`{}`)}}}}
		if err := env.Client.Create(ctx, a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	mine, theirs := mk("pjc-1"), mk("pjc-2")

	var list flotillav1.AssignmentList
	if err := c1.List(ctx, &list, client.InNamespace("provider-pjc-1")); err != nil || len(list.Items) != 1 {
		t.Errorf("listing its own assignments: %v, %d items", err, len(list.Items))
	}
	own := get(t, &flotillav1.Assignment{}, mine.Namespace, mine.Name)
	own.Status.State = flotillav1.AssignmentAccepted
	if err := c1.Status().Update(ctx, own); err != nil {
		t.Errorf("reporting on its own assignment: %v", err)
	}

	for what, err := range map[string]error{
		"P2.pull-join-own-assignments-only: list another provider's assignments": c1.List(ctx, &flotillav1.AssignmentList{}, client.InNamespace("provider-pjc-2")),
		"P2.pull-join-own-assignments-only: get another provider's assignment":   c1.Get(ctx, client.ObjectKeyFromObject(theirs), &flotillav1.Assignment{}),
		"P2.pull-join-own-assignments-only: list assignments everywhere":         c1.List(ctx, &flotillav1.AssignmentList{}),
		"P2.pull-join-own-reports-only: report on another provider's assignment": func() error {
			o := get(t, &flotillav1.Assignment{}, theirs.Namespace, theirs.Name)
			o.Status.State = flotillav1.AssignmentRefused
			return c1.Status().Update(ctx, o)
		}(),
		"P2.pull-join-cannot-assign: rewrite its own assignment's spec": func() error {
			o := get(t, &flotillav1.Assignment{}, mine.Namespace, mine.Name)
			o.Spec.Replicas = 100
			return c1.Update(ctx, o)
		}(),
		"P2.pull-join-cannot-assign: create an assignment for itself": c1.Create(ctx, &flotillav1.Assignment{ObjectMeta: metav1.ObjectMeta{Name: "forged", Namespace: "provider-pjc-1"},
			Spec: mine.Spec}),
		"P2.pull-join-cannot-assign: delete its own assignment": c1.Delete(ctx, mine.DeepCopy()),
		"P2.pull-mode-immutable: turn itself into a Push-mode provider": func() error {
			p := get(t, &flotillav1.Provider{}, "", "pjc-1")
			p.Spec.Mode = flotillav1.ModePush
			p.Spec.KubeconfigSecretRef = &flotillav1.SecretKeyReference{Name: "pjc-1-kubeconfig"}
			return c1.Update(ctx, p)
		}(),
		"P9.join-changes-endpoint-ranges: widen where the hub will check and forward to": func() error {
			p := get(t, &flotillav1.Provider{}, "", "pjc-1")
			p.Spec.EndpointRanges = []string{"0.0.0.0/0"}
			err := c1.Update(ctx, p)
			if err != nil && !strings.Contains(err.Error(), "cannot change spec.endpointRanges") {
				return nil // refused, but not for saying why: reported as allowed
			}
			return err
		}(),
		"P2.pull-join-own-reports-only: the other credential reports on the first's": func() error {
			o := get(t, &flotillav1.Assignment{}, mine.Namespace, mine.Name)
			o.Status.State = flotillav1.AssignmentRefused
			return c2.Status().Update(ctx, o)
		}(),
	} {
		if err == nil {
			t.Errorf("%s: allowed", what)
		} else if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("%s: %v, want Forbidden or Invalid", what, err)
		}
	}
	if got := get(t, &flotillav1.Assignment{}, mine.Namespace, mine.Name); got.Status.State != flotillav1.AssignmentAccepted || got.Spec.Replicas != 1 {
		t.Errorf("assignment changed by a refused request: %+v", got)
	}
}

// TestJoinScope: join identities get their rules on Providers and on
// Leases in flotilla-system through one shared binding to their group, so
// what keeps each to its own Provider and heartbeat is the admission
// policy flotilla-join-scope; a Push-mode kubeconfig Secret stays readable
// only by its own provider.
func TestJoinScope(t *testing.T) {
	ctx := context.Background()
	c1 := joinIdentity(t, "js-1", flotillav1.ModePush)
	_ = joinIdentity(t, "js-2", flotillav1.ModePull)
	_ = joinIdentity(t, "js-3", flotillav1.ModePush)
	sys := flotillav1.SystemNamespace
	hubLease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "flotilla-manager.flotilla.dev", Namespace: sys}}
	if err := env.Client.Create(ctx, hubLease); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	renew := func(name string) error {
		l := get(t, &coordinationv1.Lease{}, sys, name)
		l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		return c1.Update(ctx, l)
	}
	for what, c := range map[string]struct {
		err  error
		want string
	}{
		"P2.join-other-provider: cordon another provider": {func() error {
			p := get(t, &flotillav1.Provider{}, "", "js-2")
			p.Spec.Unschedulable = true
			return c1.Update(ctx, p)
		}(), "may change only its own Provider"},
		"P2.join-other-provider: delete another provider": {c1.Delete(ctx, &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: "js-2"}}),
			"may change only its own Provider"},
		"P2.join-other-provider: create a Provider": {c1.Create(ctx, &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: "js-4"},
			Spec: flotillav1.ProviderSpec{Owner: "js-1", Mode: flotillav1.ModePull}}), "forbidden"},
		"P2.join-other-heartbeat: renew another provider's heartbeat": {renew("provider-js-2"), "may renew only its heartbeat Lease"},
		"P2.join-other-heartbeat: take the hub's leader election":     {renew(hubLease.Name), "may renew only its heartbeat Lease"},
		"P2.join-other-heartbeat: delete another provider's heartbeat": {c1.Delete(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "provider-js-2", Namespace: sys}}),
			"may renew only its heartbeat Lease"},
		"P2.join-other-heartbeat: create a Lease":                             {c1.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "provider-js-1-b", Namespace: sys}}), "forbidden"},
		"P2.join-other-kubeconfig: read another provider's kubeconfig Secret": {c1.Get(ctx, client.ObjectKey{Namespace: sys, Name: "js-3-kubeconfig"}, &corev1.Secret{}), "forbidden"},
		"P2.join-other-kubeconfig: list Secrets in flotilla-system":           {c1.List(ctx, &corev1.SecretList{}, client.InNamespace(sys)), "forbidden"},
		"P2.join-other-kubeconfig: read join tokens":                          {c1.List(ctx, &corev1.SecretList{}, client.InNamespace(flotillav1.JoinNamespace)), "forbidden"},
	} {
		if c.err == nil {
			t.Errorf("%s: allowed", what)
		} else if !apierrors.IsForbidden(c.err) || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: %v, want Forbidden saying %q", what, c.err, c.want)
		}
	}
	// Its own: the heartbeat renewed, the Provider updated and its Secret
	// read.
	if err := renew("provider-js-1"); err != nil {
		t.Errorf("renewing its own heartbeat: %v", err)
	}
	p := get(t, &flotillav1.Provider{}, "", "js-1")
	p.Spec.Attributes = map[string]string{"gpu": "none"}
	if err := c1.Update(ctx, p); err != nil {
		t.Errorf("updating its own Provider: %v", err)
	}
	if err := c1.Get(ctx, client.ObjectKey{Namespace: sys, Name: "js-1-kubeconfig"}, &corev1.Secret{}); err != nil {
		t.Errorf("reading its own kubeconfig Secret: %v", err)
	}
	if got := get(t, &flotillav1.Provider{}, "", "js-2"); got.Spec.Unschedulable {
		t.Error("another provider's Provider changed by a refused request")
	}
}

// TestJoinHeartbeatsHaveTheirOwnPriority: the API server puts a join
// identity's heartbeat in the flotilla-heartbeats priority level, and its
// other requests where every service account's go, so a hub busy with
// agents' reads still takes heartbeats in time.
func TestJoinHeartbeatsHaveTheirOwnPriority(t *testing.T) {
	cfg := joinConfig(t, "prio-1", "eu-west", flotillav1.ModePull)
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	schema := get(t, &flowcontrolv1.FlowSchema{}, "", join.Heartbeats)
	// The schema a request was classified in, which the API server names
	// whatever it answers (a cache still filling answers 429).
	flow := func(path string) string {
		t.Helper()
		resp, err := hc.Get(strings.TrimSuffix(cfg.Host, "/") + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.Header.Get(flowcontrolv1.ResponseHeaderMatchedFlowSchemaUID)
	}
	if got := flow("/apis/coordination.k8s.io/v1/namespaces/flotilla-system/leases/provider-prio-1"); got != string(schema.UID) {
		t.Errorf("the heartbeat went to flow schema %q, want %s (%s)", got, join.Heartbeats, schema.UID)
	}
	if got := flow("/apis/flotilla.dev/v1alpha1/namespaces/provider-prio-1/offers"); got == "" || got == string(schema.UID) {
		t.Errorf("listing its Offers went to flow schema %q, want another than the heartbeats'", got)
	}
}

// TestMarkLostOnlyTheJudgedHeartbeat: the hub marks a Pull-mode agent's
// heartbeat Lost only if it is still the heartbeat it judged stale; one
// that moved meanwhile is a Conflict and stays unmarked, so the provider
// is not recorded Lost on a stale judgement.
func TestMarkLostOnlyTheJudgedHeartbeat(t *testing.T) {
	ctx := context.Background()
	namespace(t, flotillav1.SystemNamespace)
	renew := metav1.NewMicroTime(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	beat := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "provider-mark-a", Namespace: flotillav1.SystemNamespace},
		Spec: coordinationv1.LeaseSpec{RenewTime: &renew}}
	if err := env.Client.Create(ctx, beat); err != nil {
		t.Fatal(err)
	}
	r := &ProviderReconciler{Client: env.Client, Now: time.Now}
	mark := func() string {
		t.Helper()
		l := &coordinationv1.Lease{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(beat), l); err != nil {
			t.Fatal(err)
		}
		return l.Annotations[flotillav1.AnnotationLost]
	}
	if err := r.markLost(ctx, "mark-a", "2026-12-01T11:59:50Z"); !apierrors.IsConflict(err) {
		t.Errorf("marking after the heartbeat moved: %v, want a Conflict", err)
	}
	if m := mark(); m != "" {
		t.Errorf("a heartbeat that moved since it was judged was marked Lost (%s)", m)
	}
	judged := renew.UTC().Format(time.RFC3339Nano)
	if err := r.markLost(ctx, "mark-a", judged); err != nil {
		t.Fatalf("marking the judged heartbeat: %v", err)
	}
	first := mark()
	if first == "" {
		t.Fatal("the judged heartbeat was not marked Lost")
	}
	if err := r.markLost(ctx, "mark-a", judged); err != nil || mark() != first {
		t.Errorf("marking again: %v, mark %q, want the first mark %q kept", err, mark(), first)
	}
	if err := r.markLost(ctx, "mark-none", judged); err != nil {
		t.Errorf("a provider that never beat: %v, want nothing to mark", err)
	}
}

// TestAgentWritesOnlyWhatChanged: an idle agent asks the hub nothing for
// its Offer, usage report and Provider while none changed (a thousand idle
// agents' reads and rewrites of both loaded a hub), and an Offer deleted
// by someone else is back within a resync.
func TestAgentWritesOnlyWhatChanged(t *testing.T) {
	ctx := context.Background()
	hub := joinIdentity(t, "quiet-1", flotillav1.ModePull)
	var requests atomic.Int32
	count := interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			requests.Add(1)
			return c.Get(ctx, k, o, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			requests.Add(1)
			return c.Create(ctx, o, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			requests.Add(1)
			return c.Update(ctx, o, opts...)
		},
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := realPullAgent(t, "quiet-1", interceptor.NewClient(hub, count))
	a.Key, a.Resync = key, time.Second
	publish := func() int32 {
		t.Helper()
		before := requests.Load()
		if err := a.ObserveUsage(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.PublishUsage(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.PublishOffer(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.SyncProvider(ctx); err != nil {
			t.Fatal(err)
		}
		return requests.Load() - before
	}
	if n := publish(); n == 0 {
		t.Fatal("the first publication asked the hub nothing")
	}
	offer := get(t, &flotillav1.Offer{}, flotillav1.ProviderNamespace("quiet-1"), a.Config.Offer.Name)
	report := get(t, &corev1.ConfigMap{}, flotillav1.ProviderNamespace("quiet-1"), usage.ConfigMapName)
	if _, err := usage.Parse([]byte(report.Data[usage.DataKey])); err != nil {
		t.Fatalf("the published report: %v", err)
	}
	if n := publish(); n != 0 {
		t.Errorf("publishing an unchanged Offer, report and Provider took %d requests, want 0", n)
	}
	if err := env.Client.Delete(ctx, offer); err != nil {
		t.Fatal(err)
	}
	time.Sleep(a.Resync)
	publish()
	if got := get(t, &flotillav1.Offer{}, offer.Namespace, offer.Name); got.UID == offer.UID {
		t.Errorf("the Offer deleted by someone else was not published again after a resync")
	}
}

// TestAgentKeepsWhatItsWatchSentDuringAList: an Assignment created after
// a list was taken, whose creation the watch delivered before the list
// returned, is not dropped as gone by that list: rounds that rest on the
// watch afterwards take it.
func TestAgentKeepsWhatItsWatchSentDuringAList(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hub := joinIdentity(t, "wl-1", flotillav1.ModePull)
	ns := flotillav1.ProviderNamespace("wl-1")
	late := &flotillav1.Assignment{ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: ns},
		Spec: flotillav1.AssignmentSpec{LeaseRef: flotillav1.AssignmentLeaseReference{Namespace: "t", Name: "l", UID: "u"},
			Class: flotillav1.ClassService, Replicas: 1, PricePerReplicaHour: "0.01", Epoch: 1, Namespace: "flotilla-x", Hash: "h",
			ResourcesPerReplica: corev1.ResourceList{}, Objects: []runtime.RawExtension{{Raw: []byte(`{}`)}}}}
	var opened, sent atomic.Bool
	var trapped atomic.Bool
	hubc := interceptor.NewClient(hub, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, o ...client.ListOption) error {
			if err := c.List(ctx, l, o...); err != nil {
				return err
			}
			if _, meta := l.(*metav1.PartialObjectMetadataList); !meta || trapped.Swap(true) {
				return nil
			}
			// The list is taken; the Assignment comes after it, and the
			// watch sends it before the list returns.
			if err := env.Client.Create(ctx, late.DeepCopy()); err != nil {
				return err
			}
			for !sent.Load() && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			return nil
		},
		Watch: func(ctx context.Context, c client.WithWatch, l client.ObjectList, o ...client.ListOption) (watch.Interface, error) {
			w, err := c.Watch(ctx, l, o...)
			if err != nil {
				return nil, err
			}
			return &noticingWatch{Interface: w, opened: &opened, sent: &sent, name: late.Name}, nil
		},
	})
	a := realPullAgent(t, "wl-1", hubc)
	a.Resync = time.Hour
	wake := make(chan struct{}, 1)
	go a.WatchAssignments(ctx, wake)
	hubenv.Await(t, 10*time.Second, "the watch open", func() (bool, string) { return opened.Load(), "" })
	go func() {
		for ctx.Err() == nil {
			_ = a.SyncAssignments(ctx)
			select {
			case <-ctx.Done():
			case <-wake:
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	hubenv.Await(t, 15*time.Second, "the late Assignment answered", func() (bool, string) {
		got := &flotillav1.Assignment{}
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(late), got)
		return err == nil && got.Status.State != "", fmt.Sprintf("trapped %v, sent %v, %v, state %q", trapped.Load(), sent.Load(), err, got.Status.State)
	})
}

// noticingWatch says when the agent starts reading it, and when it passed
// on an event of the named object.
type noticingWatch struct {
	watch.Interface
	opened, sent *atomic.Bool
	name         string
	out          chan watch.Event
	once         sync.Once
}

func (w *noticingWatch) ResultChan() <-chan watch.Event {
	w.once.Do(func() {
		w.out = make(chan watch.Event)
		go func() {
			defer close(w.out)
			for ev := range w.Interface.ResultChan() {
				w.out <- ev
				if as, ok := ev.Object.(*flotillav1.Assignment); ok && as.Name == w.name {
					// Received; the agent keeps it right after.
					time.AfterFunc(100*time.Millisecond, func() { w.sent.Store(true) })
				}
			}
		}()
		w.opened.Store(true)
	})
	return w.out
}

// A Pull-mode provider's heartbeat is watched: a Lost provider whose agent
// beats again is Ready at once, not at its next routine look (an hour
// here), and the look at the end of its grace period, which finds it
// Lost, comes however far off the routine one is.
func TestAHeartbeatWakesItsProvider(t *testing.T) {
	ctx := context.Background()
	const name = "wake-a"
	namespace(t, flotillav1.SystemNamespace)
	p := &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: flotillav1.ProviderSpec{Owner: name, Region: "eu-west", Mode: flotillav1.ModePull}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	var beating atomic.Bool
	beating.Store(true)
	bctx, stopBeats := context.WithCancel(ctx)
	defer stopBeats()
	go func() {
		key := client.ObjectKey{Namespace: flotillav1.SystemNamespace, Name: "provider-" + name}
		for bctx.Err() == nil {
			if beating.Load() {
				now := metav1.NewMicroTime(time.Now())
				l := &coordinationv1.Lease{}
				if err := env.Client.Get(bctx, key, l); apierrors.IsNotFound(err) {
					l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace},
						Spec: coordinationv1.LeaseSpec{RenewTime: &now}}
					_ = env.Client.Create(bctx, l)
				} else if err == nil {
					l.Spec.RenewTime = &now
					_ = env.Client.Update(bctx, l)
				}
			}
			select {
			case <-bctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	mgr := newTestManager(t)
	mctx, cancel := context.WithCancel(ctx)
	if _, err := Setup(mctx, mgr, Options{HubID: "wake", ProviderGracePeriod: time.Second, ProbeInterval: time.Hour,
		SchedulerInterval: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	defer run(t, mgr, mctx, cancel)()
	awaitPhase := func(want flotillav1.ProviderPhase) {
		t.Helper()
		hubenv.Await(t, 10*time.Second, name+" "+string(want), func() (bool, string) {
			ph := get(t, &flotillav1.Provider{}, "", name).Status.Phase
			return ph == want, string(ph)
		})
	}
	awaitPhase(flotillav1.ProviderReady)
	beating.Store(false)
	awaitPhase(flotillav1.ProviderLost)
	beating.Store(true)
	awaitPhase(flotillav1.ProviderReady)
}

// A provider whose heartbeat has not been renewed for three quarters of
// its grace period is silent, one that just beat or was never seen is not,
// and one that beats again after a silence is announced.
func TestSilentProvidersAreThoseNotHeardFromLately(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	now := t0
	heard := 0
	r := &ProviderReconciler{Client: env.Client, GracePeriod: 4 * time.Second, Now: func() time.Time { return now },
		Heard: func() { heard++ }}
	beat := func(name string) {
		renew := metav1.NewMicroTime(now)
		r.heartbeatSeen(context.Background(), &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: heartbeatLeasePrefix + name, Namespace: flotillav1.SystemNamespace},
			Spec:       coordinationv1.LeaseSpec{RenewTime: &renew}})
	}
	beat("steady")
	beat("quiet")
	for _, step := range []struct {
		after time.Duration
		beats []string
		want  string
		heard int
	}{
		{time.Second, []string{"steady"}, "[]", 0},
		{2 * time.Second, []string{"steady"}, "[]", 0},                  // quiet for 3 s: not yet
		{1100 * time.Millisecond, []string{"steady"}, "[quiet]", 0},     // quiet for 4.1 s
		{0, []string{"quiet"}, "[]", 1},                                 // heard again
		{time.Second, []string{"steady", "quiet", "newcomer"}, "[]", 1}, // a first beat is no return
	} {
		now = now.Add(step.after)
		for _, name := range step.beats {
			beat(name)
		}
		got := slices.Sorted(maps.Keys(r.Silent(now)))
		if fmt.Sprint(got) != step.want || heard != step.heard {
			t.Errorf("at %v: silent %v, heard %d times; want %s and %d", now.Sub(t0), got, heard, step.want, step.heard)
		}
	}
}

// TestHeartbeatKeepsItsCopyAfterATimeout: a renewal that timed out is
// followed by one from the copy the agent holds, without reading the
// heartbeat first (the read doubled the requests of beats already late on
// a busy hub); one that timed out after it landed makes the next a
// Conflict, which reads it and renews.
func TestHeartbeatKeepsItsCopyAfterATimeout(t *testing.T) {
	ctx := context.Background()
	hub := joinIdentity(t, "beat-1", flotillav1.ModePull)
	var gets, updates atomic.Int32
	var fail, land atomic.Bool
	isBeat := func(o client.Object) bool { _, ok := o.(*coordinationv1.Lease); return ok }
	hubc := interceptor.NewClient(hub, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, k client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			if isBeat(o) {
				gets.Add(1)
			}
			return c.Get(ctx, k, o, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			if !isBeat(o) {
				return c.Update(ctx, o, opts...)
			}
			updates.Add(1)
			if fail.Swap(false) {
				if land.Load() {
					if err := c.Update(ctx, o.DeepCopyObject().(client.Object), opts...); err != nil {
						return err
					}
				}
				return context.DeadlineExceeded
			}
			return c.Update(ctx, o, opts...)
		},
	})
	a := realPullAgent(t, "beat-1", hubc)
	if err := a.SyncAssignments(ctx); err != nil {
		t.Fatal(err)
	}
	beat := func() (int32, int32, error) {
		g, u := gets.Load(), updates.Load()
		err := a.Heartbeat(ctx)
		return gets.Load() - g, updates.Load() - u, err
	}
	if _, _, err := beat(); err != nil {
		t.Fatalf("first beat: %v", err)
	}
	if g, u, err := beat(); err != nil || g != 0 || u != 1 {
		t.Fatalf("a renewal: %v, %d reads and %d writes, want one write", err, g, u)
	}
	for _, landed := range []bool{false, true} {
		fail.Store(true)
		land.Store(landed)
		if _, _, err := beat(); err == nil {
			t.Fatalf("landed %v: the renewal that timed out reported no error", landed)
		}
		g, u, err := beat()
		if err != nil {
			t.Fatalf("landed %v: the renewal after a timeout: %v", landed, err)
		}
		want := [2]int32{0, 1}
		if landed {
			want = [2]int32{1, 2} // a Conflict, a read and a renewal
		}
		if [2]int32{g, u} != want {
			t.Errorf("landed %v: the renewal after a timeout took %d reads and %d writes, want %v", landed, g, u, want)
		}
	}
	l := get(t, &coordinationv1.Lease{}, flotillav1.SystemNamespace, "provider-beat-1")
	if l.Spec.RenewTime == nil || time.Since(l.Spec.RenewTime.Time) > time.Minute {
		t.Errorf("the heartbeat was not renewed: %v", l.Spec.RenewTime)
	}
}
