package controllers

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

var env *hubenv.Env

func TestMain(m *testing.M) {
	if os.Getenv("DEBUG_LOG") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	var err error
	env, err = hubenv.Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

// runningManager is a manager started by a test.
type runningManager struct {
	cancel    context.CancelFunc
	done      chan error
	scheduler *Scheduler
}

// stop cancels the manager and waits for it to exit.
func (m *runningManager) stop(t *testing.T) {
	t.Helper()
	m.cancel()
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("manager exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("manager did not stop within 30s")
	}
}

// newTestManager makes a manager on the test API server, without metrics.
func newTestManager(t *testing.T) ctrl.Manager {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Cache: CacheOptions(), Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	return mgr
}

// run starts mgr; the returned function stops it and waits.
func run(t *testing.T, mgr ctrl.Manager, ctx context.Context, cancel context.CancelFunc) (stop func()) {
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager exited with %v", err)
		}
	}
}

// awaitOneLease waits for the Workload's single Lease and returns it.
func awaitOneLease(t *testing.T, ns, workload string) flotillav1.Lease {
	t.Helper()
	var l flotillav1.Lease
	hubenv.Await(t, 20*time.Second, "a lease of "+workload, func() (bool, string) {
		ls := leasesOfWorkload(t, ns, workload)
		if len(ls) == 1 {
			l = ls[0]
		}
		w := &flotillav1.Workload{}
		_ = env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: workload}, w)
		var why string
		if c := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadScheduled); c != nil {
			why = c.Reason + ": " + c.Message
		}
		return len(ls) == 1, fmt.Sprint(len(ls), " leases; scheduled: ", why)
	})
	return l
}

// testHooks bend the scheduler's client to provoke races.
type testHooks struct {
	// createLimit lets this many Lease creations through; the next ones
	// block until the manager stops, which stops it mid-cycle.
	createLimit int
	// leaseCreate, when set, runs before each Lease creation; an error it
	// returns is the creation's.
	leaseCreate func(ctx context.Context, l *flotillav1.Lease) error
	// leaseListLag serves Lease lists up to this old, like a lagging informer.
	leaseListLag time.Duration
	// leaseRate and leaseBurst replace the per-provider lease rate limit.
	leaseRate  float64
	leaseBurst int
	// silent replaces the provider controller's list of silent providers.
	silent func(time.Time) map[string]bool
}

// startManager runs the hub controllers against the envtest API server.
func startManager(t *testing.T, hooks testHooks) *runningManager {
	t.Helper()
	mgr := newTestManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	if err := SetupIndexes(ctx, mgr); err != nil {
		t.Fatal(err)
	}
	c := mgr.GetClient()
	var created atomic.Int32
	if hooks.createLimit > 0 || hooks.leaseListLag > 0 || hooks.leaseCreate != nil {
		direct, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme, Cache: &client.CacheOptions{Reader: mgr.GetCache()}})
		if err != nil {
			t.Fatal(err)
		}
		c = interceptor.NewClient(direct, interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				l, ok := obj.(*flotillav1.Lease)
				if ok && hooks.createLimit > 0 && int(created.Add(1)) > hooks.createLimit {
					<-ctx.Done()
					return ctx.Err()
				}
				if ok && hooks.leaseCreate != nil {
					if err := hooks.leaseCreate(ctx, l); err != nil {
						return err
					}
				}
				return c.Create(ctx, obj, opts...)
			},
			List: staleLeases(hooks.leaseListLag),
		})
	}
	s := NewScheduler(c, mgr.GetAPIReader(), mgr.GetCache(), mgr.GetEventRecorderFor("flotilla-scheduler"))
	s.MinInterval = 50 * time.Millisecond
	s.Silent = hooks.silent
	if hooks.leaseBurst > 0 {
		s.LeaseRate, s.LeaseBurst = rate.Limit(hooks.leaseRate), hooks.leaseBurst
	}
	// As Setup wires it; no Lease controller runs here.
	lr := &LeaseReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), HubID: "hub", assigning: make(chan struct{}, assignSlots)}
	s.Created = lr.AssignNew
	if err := mgr.Add(s); err != nil {
		t.Fatal(err)
	}
	if err := (&WorkloadReconciler{Client: mgr.GetClient(), Scheduler: s, Recorder: mgr.GetEventRecorderFor("flotilla-workload")}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	if err := (&OfferReconciler{Client: mgr.GetClient(), Now: time.Now}).SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	m := &runningManager{cancel: cancel, done: make(chan error, 1), scheduler: s}
	go func() { m.done <- mgr.Start(ctx) }()
	return m
}

var nsOnce sync.Map

func namespace(t *testing.T, name string) {
	t.Helper()
	if _, loaded := nsOnce.LoadOrStore(name, true); loaded {
		return
	}
	err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if name == flotillav1.SystemNamespace || strings.HasPrefix(name, "provider-") {
		return
	}
	// A tenant's Workloads need its namespace's Account.
	a := &flotillav1.Account{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.AccountName, Namespace: name}}
	if err := env.Client.Create(context.Background(), a); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// readyProvider creates a Provider and marks it Ready, as the provider
// controller would after a successful probe.
func readyProvider(t *testing.T, name, owner string) *flotillav1.Provider {
	t.Helper()
	ctx := context.Background()
	p := &flotillav1.Provider{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: flotillav1.ProviderSpec{Owner: owner, Region: "eu-west",
			KubeconfigSecretRef: &flotillav1.SecretKeyReference{Name: name + "-kubeconfig"}},
	}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = flotillav1.ProviderReady
	if err := env.Client.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	namespace(t, flotillav1.ProviderNamespace(name))
	return p
}

func createOffer(t *testing.T, provider, name, suite, cpu, cpuPrice string) *flotillav1.Offer {
	t.Helper()
	o := &flotillav1.Offer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: flotillav1.ProviderNamespace(provider)},
		Spec: flotillav1.OfferSpec{
			ProviderRef: flotillav1.ProviderReference{Name: provider},
			Resources:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse("64Gi")},
			Prices:      flotillav1.PriceList{corev1.ResourceCPU: flotillav1.Amount(cpuPrice)},
			Attributes:  map[string]string{"suite": suite},
		},
	}
	if err := env.Client.Create(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	return o
}

func newWorkload(ns, name, suite string, replicas int32, cpu string) *flotillav1.Workload {
	return fixture.Workload(ns, name, fixture.Replicas(replicas), fixture.Requests(cpu, "1Gi"), fixture.Selecting("suite", suite))
}

func leasesOf(t *testing.T, ns string) []flotillav1.Lease {
	t.Helper()
	var l flotillav1.LeaseList
	if err := env.Client.List(context.Background(), &l, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// staleLeases returns a List hook that refreshes Lease lists at most once per
// lag and serves the old copy in between.
func staleLeases(lag time.Duration) func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
	var mu sync.Mutex
	var last time.Time
	var stale flotillav1.LeaseList
	return func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		ll, ok := list.(*flotillav1.LeaseList)
		if !ok || lag == 0 || len(opts) > 0 {
			return c.List(ctx, list, opts...)
		}
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) > lag {
			var fresh flotillav1.LeaseList
			if err := c.List(ctx, &fresh); err != nil {
				return err
			}
			stale, last = fresh, time.Now()
		}
		stale.DeepCopyInto(ll)
		return nil
	}
}
