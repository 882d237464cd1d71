package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

// podObserver watches every provider's managed Deployments and pods and
// the hub's Leases, and remembers per app label when each stage was first
// seen, so the bench can say where create-to-Running time goes. Watches,
// not polling, so that observing adds no load to the control planes.
type podObserver struct {
	mu     sync.Mutex
	seen   map[string]time.Time            // app -> Workload first seen in a watch of the hub
	lease  map[string]map[string]time.Time // app -> Lease -> first seen on the hub
	deploy map[string]map[string]time.Time // app -> provider/namespace -> Deployment first seen
	// nss and sa: an app's namespaces on providers, and when each had its
	// default ServiceAccount (pods wait for it at admission).
	nss     map[string][]string
	sa      map[string]time.Time
	bound   map[string]map[string]time.Time // app -> pod -> first seen bound to a node
	first   map[string]map[string]time.Time // app -> pod -> first seen Running
	skip    map[string]bool
	stores  map[string]cache.Store
	created map[string]map[string]time.Time // app -> pod -> first seen
}

func newPodObserver() *podObserver {
	return &podObserver{seen: map[string]time.Time{}, lease: map[string]map[string]time.Time{}, deploy: map[string]map[string]time.Time{}, nss: map[string][]string{}, sa: map[string]time.Time{},
		bound: map[string]map[string]time.Time{}, first: map[string]map[string]time.Time{}, created: map[string]map[string]time.Time{},
		skip: map[string]bool{}, stores: map[string]cache.Store{}}
}

func firstSeen(m map[string]map[string]time.Time, app, key string, now time.Time) {
	if m[app] == nil {
		m[app] = map[string]time.Time{}
	}
	if _, ok := m[app][key]; !ok {
		m[app][key] = now
	}
}

// run watches every provider of h but those in later, and the hub.
func (o *podObserver) run(ctx context.Context, h *hub, later ...string) error {
	for name, cs := range h.providers {
		if !slices.Contains(later, name) {
			o.watch(ctx, name, cs)
		}
	}
	return o.watchHub(ctx, h)
}

// watch watches one provider's managed Deployments and pods, and its
// namespaces' default ServiceAccounts.
func (o *podObserver) watch(ctx context.Context, name string, cs kubernetes.Interface) {
	managed := informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = flotillav1.LabelManaged + "=true" })
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, managed)
	pods := f.Core().V1().Pods().Informer()
	onPod := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		app, key, now := p.Labels["app"], name+"/"+p.Namespace+"/"+p.Name, time.Now()
		o.mu.Lock()
		defer o.mu.Unlock()
		firstSeen(o.created, app, key, now)
		if p.Spec.NodeName != "" {
			firstSeen(o.bound, app, key, now)
		}
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			firstSeen(o.first, app, key, now)
		}
	}
	_, _ = pods.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onPod, UpdateFunc: func(_, n any) { onPod(n) }})
	deps := f.Apps().V1().Deployments().Informer()
	_, _ = deps.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		d, ok := obj.(*appsv1.Deployment)
		if !ok {
			return
		}
		o.mu.Lock()
		app := d.Spec.Template.Labels["app"]
		firstSeen(o.deploy, app, name+"/"+d.Namespace, time.Now())
		o.nss[app] = append(o.nss[app], name+"/"+d.Namespace)
		o.mu.Unlock()
	}})
	sas := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.FieldSelector = "metadata.name=default"
	}))
	_, _ = sas.Core().V1().ServiceAccounts().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		if sa, ok := obj.(*corev1.ServiceAccount); ok {
			o.mu.Lock()
			o.sa[name+"/"+sa.Namespace] = time.Now()
			o.mu.Unlock()
		}
	}})
	sas.Start(ctx.Done())
	o.mu.Lock()
	o.stores[name] = pods.GetStore()
	o.mu.Unlock()
	f.Start(ctx.Done())
}

// watchHub watches the hub's Workloads and Leases.
func (o *podObserver) watchHub(ctx context.Context, h *hub) error {
	// Leases by watch: polling a list this often would load the hub.
	cfg, err := h.fed.Hub.RESTConfig(30 * time.Second)
	if err != nil {
		return err
	}
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: hubenv.Scheme()})
	if err != nil {
		return err
	}
	// The config's request timeout ends each watch after 30 s: watch again.
	watch := func(list client.ObjectList, saw func(runtime.Object, time.Time)) {
		for ctx.Err() == nil {
			w, err := wc.Watch(ctx, list)
			if err != nil {
				time.Sleep(time.Second)
				continue
			}
			for ev := range w.ResultChan() {
				now := time.Now()
				o.mu.Lock()
				saw(ev.Object, now)
				o.mu.Unlock()
			}
			w.Stop()
		}
	}
	go watch(&flotillav1.LeaseList{}, func(obj runtime.Object, now time.Time) {
		if l, ok := obj.(*flotillav1.Lease); ok {
			firstSeen(o.lease, l.Spec.WorkloadRef.Name, l.Name, now)
		}
	})
	go watch(&flotillav1.WorkloadList{}, func(obj runtime.Object, now time.Time) {
		if w, ok := obj.(*flotillav1.Workload); ok {
			if _, seen := o.seen[w.Name]; !seen {
				o.seen[w.Name] = now
			}
		}
	})
	return nil
}

// awaitRunning waits until every app in created has replicas pods Running
// and returns each one's create-to-all-Running.
func (o *podObserver) awaitRunning(t *testing.T, created map[string]time.Time, replicas int) []time.Duration {
	t.Helper()
	return awaitAllRunning(t, "every workload's pods Running", &o.mu, o.first, created, replicas)
}

// awaitAllRunning waits until each name in created has replicas pods in
// running (first-Running times by pod, guarded by mu) and returns, for each,
// the time from its creation to its last pod Running.
func awaitAllRunning(t *testing.T, what string, mu *sync.Mutex, running map[string]map[string]time.Time,
	created map[string]time.Time, replicas int) []time.Duration {
	t.Helper()
	var out []time.Duration
	hubenv.Await(t, 180*time.Second, what, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		out = out[:0]
		for name, at := range created {
			if len(running[name]) < replicas {
				return false, fmt.Sprintf("%s: %d running", name, len(running[name]))
			}
			out = append(out, latest(running[name]).Sub(at))
		}
		return true, ""
	})
	return out
}

// runningElsewhere counts an app's running pods on providers other than except.
func (o *podObserver) runningElsewhere(app, except string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for prov, store := range o.stores {
		if prov == except || o.skip[prov] {
			continue
		}
		for _, obj := range store.List() {
			p := obj.(*corev1.Pod)
			if p.Labels["app"] == app && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				n++
			}
		}
	}
	return n
}

// appsOn lists the apps with running pods on provider.
func (o *podObserver) appsOn(provider string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[string]bool{}
	for _, obj := range o.stores[provider].List() {
		p := obj.(*corev1.Pod)
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			seen[p.Labels["app"]] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

func earliest(m map[string]time.Time) time.Time {
	var first time.Time
	for _, ts := range m {
		if first.IsZero() || ts.Before(first) {
			first = ts
		}
	}
	return first
}

func latest(m map[string]time.Time) time.Time {
	var last time.Time
	for _, ts := range m {
		if ts.After(last) {
			last = ts
		}
	}
	return last
}

type e2eResult struct {
	Date                  string  `json:"date"`
	Providers             int     `json:"providers"`
	Workloads             int     `json:"workloads"`
	ReplicasEach          int     `json:"replicasPerWorkload"`
	CreateToRunningP50Sec float64 `json:"createToAllRunningP50Seconds"`
	CreateToRunningP99Sec float64 `json:"createToAllRunningP99Seconds"`
	CreateToRunningMaxSec float64 `json:"createToAllRunningMaxSeconds"`
	// Stages gives p50 and p99, from the Workload's creation, of each step
	// on the way to Running.
	Stages             map[string][2]float64 `json:"stagesFromCreateP50P99Seconds"`
	FailoverDefaultSec float64               `json:"failoverDefaultSeconds"`
	FailoverGrace5Sec  float64               `json:"failoverProviderGrace5sWorkloadGrace5sSeconds"`
	// RestartToPlacingSec: from the manager's restart until it placed a
	// new Workload (the bank reloads and verifies the ledger first).
	RestartToPlacingSec float64 `json:"restartToPlacingSeconds"`
	// Kwok and Real compare Workloads with their floor, per node kind.
	Kwok *vsFloor `json:"kwokNodes"`
	Real *vsFloor `json:"realNodes,omitempty"`
	// Pull sets pull-mode providers beside push-mode ones of the same
	// shape, in the same run.
	Pull *pullVsPush `json:"pullMode"`
}

// pullVsPush compares Workloads on three pull-mode providers (real agents
// as processes, kwok nodes) with the same Workloads on three push-mode
// providers, and the failover of each.
type pullVsPush struct {
	Workloads int     `json:"workloads"`
	PullP50   float64 `json:"pullCreateToAllRunningP50Seconds"`
	PullP99   float64 `json:"pullCreateToAllRunningP99Seconds"`
	PushP50   float64 `json:"pushCreateToAllRunningP50Seconds"`
	PushP99   float64 `json:"pushCreateToAllRunningP99Seconds"`
	RatioP50  float64 `json:"ratioP50"`
	RatioP99  float64 `json:"ratioP99"`
	// Stages from creation, p50 and p99, as stagesFromCreateP50P99Seconds.
	PullStages map[string][2]float64 `json:"pullStagesFromCreateP50P99Seconds"`
	PushStages map[string][2]float64 `json:"pushStagesFromCreateP50P99Seconds"`
	// Failovers with the default grace periods: a pull-mode provider's
	// agent stopped, its whole cluster stopped, and a push-mode
	// provider's cluster stopped (failoverDefaultSeconds).
	FailoverAgentStopSec   float64 `json:"pullFailoverAgentStoppedSeconds"`
	FailoverClusterStopSec float64 `json:"pullFailoverClusterStoppedSeconds"`
	PushFailoverSec        float64 `json:"pushFailoverClusterStoppedSeconds"`
	FailoverRatio          float64 `json:"failoverRatio"`
}

// vsFloor sets create-to-all-Running of Workloads beside the same for
// Deployments of the same shape created directly on providers, on nodes
// of the same kind: what Flotilla adds is the ratio.
type vsFloor struct {
	Workloads      int     `json:"workloads"`
	P50Sec         float64 `json:"createToAllRunningP50Seconds"`
	P99Sec         float64 `json:"createToAllRunningP99Seconds"`
	FloorP50Sec    float64 `json:"floorP50Seconds"`
	FloorP99Sec    float64 `json:"floorP99Seconds"`
	RatioP50       float64 `json:"ratioP50"`
	RatioP99       float64 `json:"ratioP99"`
	FloorProviders string  `json:"floorProviders"`
}

func compare(workloads, floor []time.Duration, providers string) *vsFloor {
	v := &vsFloor{Workloads: len(workloads), P50Sec: percentile(workloads, 0.5), P99Sec: percentile(workloads, 0.99),
		FloorP50Sec: percentile(floor, 0.5), FloorP99Sec: percentile(floor, 0.99), FloorProviders: providers}
	v.RatioP50, v.RatioP99 = v.P50Sec/v.FloorP50Sec, v.P99Sec/v.FloorP99Sec
	return v
}

// floorRun creates Deployments directly on providers, round robin, and
// watches their pods: the floor a Workload's latency is set against.
type floorRun struct {
	providers []kubernetes.Interface
	replicas  int
	template  corev1.PodTemplateSpec
	stop      chan struct{}
	mu        sync.Mutex
	running   map[string]map[string]time.Time
	created   map[string]time.Time
}

// newFloor starts watching the floor's namespace on each provider.
func newFloor(ctx context.Context, t *testing.T, providers []kubernetes.Interface, replicas int, template corev1.PodTemplateSpec) *floorRun {
	t.Helper()
	const ns = "floor"
	f := &floorRun{providers: providers, replicas: replicas, template: template, stop: make(chan struct{}),
		running: map[string]map[string]time.Time{}, created: map[string]time.Time{}}
	t.Cleanup(func() { close(f.stop) })
	onPod := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			f.mu.Lock()
			firstSeen(f.running, p.Labels["floor"], p.Name, time.Now())
			f.mu.Unlock()
		}
	}
	for _, cs := range providers {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		inf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
		_, _ = inf.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onPod, UpdateFunc: func(_, n any) { onPod(n) }})
		inf.Start(f.stop)
		inf.WaitForCacheSync(f.stop)
	}
	return f
}

// create creates the floor's Deployment named name, on the next provider.
func (f *floorRun) create(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	tpl := *f.template.DeepCopy()
	tpl.Labels = map[string]string{"floor": name}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To(int32(f.replicas)), Selector: &metav1.LabelSelector{MatchLabels: tpl.Labels}, Template: tpl}}
	f.mu.Lock()
	i := len(f.created)
	f.created[name] = time.Now()
	f.mu.Unlock()
	if _, err := f.providers[i%len(f.providers)].AppsV1().Deployments("floor").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// await returns each floor Deployment's create-to-all-Running.
func (f *floorRun) await(t *testing.T) []time.Duration {
	t.Helper()
	f.mu.Lock()
	created := maps.Clone(f.created)
	f.mu.Unlock()
	return awaitAllRunning(t, "every floor Deployment's pods Running", &f.mu, f.running, created, f.replicas)
}

// createBeside creates n Workloads made by mk and n floor Deployments in
// turn, benchSpacing apart, so that each Workload and its floor meet the
// same load (a floor measured after the Workloads met another machine:
// its p99 moved between 0.6 s and 2.0 s from run to run); it returns when
// each Workload was created, by name.
func createBeside(ctx context.Context, t *testing.T, h *hub, f *floorRun, n int, mk func(i int) *flotillav1.Workload) map[string]time.Time {
	t.Helper()
	return createSpaced(t, h, n, mk, func(i int) {
		f.create(ctx, t, fmt.Sprintf("f%02d", i))
		time.Sleep(benchSpacing)
	})
}

// benchSpacing is the time between two Workloads (and two floor
// Deployments): tenants arriving one after another, not all at once.
const benchSpacing = 200 * time.Millisecond

// createSpaced creates n Workloads made by mk, benchSpacing apart, calling
// after (when not nil) with each one's index once it is created and
// spaced; it returns when each was created, by name.
func createSpaced(t *testing.T, h *hub, n int, mk func(i int) *flotillav1.Workload, after func(i int)) map[string]time.Time {
	t.Helper()
	created := map[string]time.Time{}
	for i := range n {
		w := mk(i)
		created[w.Name] = time.Now()
		mustCreate(t, h.client, w)
		time.Sleep(benchSpacing)
		if after != nil {
			after(i)
		}
	}
	return created
}

func percentile(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i].Seconds()
}

// TestBenchE2E measures, on a local federation of 10 providers with kwok
// nodes, create-to-all-Running latency over 50 workloads and failover time
// with the default and with 5s grace periods; the same for 20 workloads
// on three pull-mode providers beside three push-mode ones, and the
// failover of a pull-mode provider's agent and cluster; where this machine can run
// real nodes, two more providers with one real node each run 10 workloads
// of the web image. Each latency comes with its floor, Deployments of the
// same shape created directly on providers, on nodes of the same kind.
// It runs only from `make bench-e2e` and writes bench/results/e2e.json.
func TestBenchE2E(t *testing.T) {
	if os.Getenv("FLOTILLA_BENCH_E2E") == "" {
		t.Skip("measurement, not a test: run make bench-e2e")
	}
	const nProviders, nWorkloads, replicas = 10, 50, 2
	var specs []localfed.ProviderSpec
	prices := map[string]string{}
	for i := range nProviders {
		name := fmt.Sprintf("p%02d", i)
		specs = append(specs, localfed.ProviderSpec{Name: name, Owner: fmt.Sprintf("o%02d", i), Region: "eu-west",
			Nodes: []localfed.NodeSet{{Count: 2, CPU: "16", Memory: "64Gi"}}})
		prices[name] = "0.010"
	}
	// A real node has the machine's cores: nReal workloads of 50m
	// replicas fit on one.
	const nReal = 10
	realErr := localfed.RealNodePrereqs(filepath.Join(hubenv.RepoRoot(), "bin"))
	if realErr == nil {
		for i := range 2 {
			name := fmt.Sprintf("r%02d", i)
			specs = append(specs, localfed.ProviderSpec{Name: name, Owner: fmt.Sprintf("r%02d", i), Region: fmt.Sprintf("real-%d", i), RealNodes: 1})
			prices[name] = "0.010"
		}
	} else {
		t.Logf("no real nodes measured: %v", realErr)
	}
	if os.Getenv("FLOTILLA_BENCH_REAL") == "0" {
		realErr = fmt.Errorf("FLOTILLA_BENCH_REAL=0")
		specs = specs[:nProviders]
	}
	// Three pull-mode providers, joined with their agents below.
	const nPullProviders = 3
	for i := range nPullProviders {
		specs = append(specs, localfed.ProviderSpec{Name: fmt.Sprintf("q%02d", i), Owner: fmt.Sprintf("q%02d", i),
			Nodes: []localfed.NodeSet{{Count: 2, CPU: "16", Memory: "64Gi"}}})
	}
	fed := testbed.NewForTest(t, localfed.Options{Providers: specs})
	h := setupHub(t, fed, prices, controllers.Options{HubID: joinHubID})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The pull-mode providers' clusters and agents (which beat, refresh
	// and pull every 1 to 2 s here) have no part in the phases before
	// theirs: stopped until then, they take none of the machine those
	// phases measure (their agents made a quarter of the hub API server's
	// requests during the kwok placement).
	var pullNames []string
	for i := range nPullProviders {
		name := fmt.Sprintf("q%02d", i)
		pullNames = append(pullNames, name)
		if err := fed.Provider(name).Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	h.awaitProvidersReady(t, len(specs)-nPullProviders, 120*time.Second)
	obs := newPodObserver()
	if err := obs.run(ctx, h, pullNames...); err != nil {
		t.Fatal(err)
	}

	h.tenant(t, "bench", "100000")
	// The floor: as many Deployments, spread the same way over the same
	// providers, each created directly on its provider, in turn with the
	// Workloads.
	var kwokProviders []kubernetes.Interface
	for i := range nProviders {
		kwokProviders = append(kwokProviders, h.providers[fmt.Sprintf("p%02d", i)])
	}
	kwokFloor := newFloor(ctx, t, kwokProviders, replicas, newWorkload("bench", "t", flotillav1.ClassService, replicas).Spec.Template)
	// What the federation costs with nothing to place, for scale.
	idle := startPhase(ctx, h)
	time.Sleep(10 * time.Second)
	idle.log(ctx, t, h, "idle")
	kwokPhase := startPhase(ctx, h)
	created := createBeside(ctx, t, h, kwokFloor, nWorkloads, func(i int) *flotillav1.Workload {
		w := newWorkload("bench", fmt.Sprintf("w%02d", i), flotillav1.ClassService, replicas)
		fixture.Selecting("region", "eu-west")(w)
		return w
	})
	latencies := obs.awaitRunning(t, created, replicas)
	kwokPhase.log(ctx, t, h, "kwok placement")
	res := e2eResult{Date: time.Now().UTC().Format(time.RFC3339), Providers: nProviders, Workloads: nWorkloads, ReplicasEach: replicas,
		CreateToRunningP50Sec: percentile(latencies, 0.50), CreateToRunningP99Sec: percentile(latencies, 0.99),
		CreateToRunningMaxSec: percentile(latencies, 1)}
	res.Stages = obs.stages(created)
	t.Logf("create to all Running: p50 %.2fs p99 %.2fs max %.2fs; stages %v", res.CreateToRunningP50Sec, res.CreateToRunningP99Sec, res.CreateToRunningMaxSec, res.Stages)
	res.Kwok = compare(latencies, kwokFloor.await(t), "p00-p09")
	t.Logf("kwok nodes: %+v", *res.Kwok)

	if realErr == nil {
		webOf := func(name string) *flotillav1.Workload {
			return fixture.Workload("bench", name, fixture.Class(flotillav1.ClassService), fixture.Replicas(replicas),
				fixture.Requests("50m", "32Mi"), fixture.RunAsUser(65532), fixture.Runs("docker.io/flotilla/web:dev"),
				fixture.PodLabel("app", name), fixture.Selecting("region", "real-0"))
		}
		// Flotilla's replicas all go to r00's node; the floor puts as
		// many on r01's, the same kind of node, at the same time.
		realFloor := newFloor(ctx, t, []kubernetes.Interface{h.providers["r01"]}, replicas, webOf("t").Spec.Template)
		realCreated := createBeside(ctx, t, h, realFloor, nReal, func(i int) *flotillav1.Workload { return webOf(fmt.Sprintf("real%02d", i)) })
		res.Real = compare(obs.awaitRunning(t, realCreated, replicas), realFloor.await(t), "r01")
		t.Logf("real nodes: %+v", *res.Real)
	}
	for k, v := range histogramMeans(benchHistograms...) {
		t.Logf("  %s: %s", k, v)
	}

	// Pull mode beside push mode: the same Workloads on three pull-mode
	// providers and on three push-mode ones (owners o07-o09).
	pulled := map[string]*joinedProvider{}
	for _, name := range pullNames {
		if err := fed.Provider(name).Start(ctx); err != nil {
			t.Fatal(err)
		}
		obs.watch(ctx, name, h.providers[name])
		pulled[name] = joinPullProvider(t, h, fed.Provider(name), "eu-pull")
	}
	h.awaitProvidersReady(t, len(specs), 120*time.Second)
	const nPull = 20
	// The push set needs 20 cores on o07-o09 beside the kwok Workloads,
	// which may take most of those providers' 8-core offers (with the
	// floor landing beside them, they are spread over all ten): offer 16
	// of their nodes' 32.
	for i := 7; i <= 9; i++ {
		o := &flotillav1.Offer{}
		key := client.ObjectKey{Namespace: flotillav1.ProviderNamespace(fmt.Sprintf("p%02d", i)), Name: "standard"}
		if err := h.client.Get(ctx, key, o); err != nil {
			t.Fatal(err)
		}
		o.Spec.Resources[corev1.ResourceCPU] = resource.MustParse("16")
		if err := h.client.Update(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// One of each in turn, so that both sets meet the same load.
	both := createSpaced(t, h, 2*nPull, func(i int) *flotillav1.Workload {
		if i%2 == 0 {
			w := newWorkload("bench", fmt.Sprintf("q%02d", i/2), flotillav1.ClassService, replicas)
			fixture.Selecting("region", "eu-pull")(w)
			return w
		}
		w := newWorkload("bench", fmt.Sprintf("s%02d", i/2), flotillav1.ClassService, replicas)
		w.Spec.Placement.AttributeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "owner", Operator: metav1.LabelSelectorOpIn, Values: []string{"o07", "o08", "o09"}}}}
		return w
	}, nil)
	pullCreated, pushCreated := map[string]time.Time{}, map[string]time.Time{}
	for name, at := range both {
		if strings.HasPrefix(name, "q") {
			pullCreated[name] = at
		} else {
			pushCreated[name] = at
		}
	}
	pullLat := obs.awaitRunning(t, pullCreated, replicas)
	pushLat := obs.awaitRunning(t, pushCreated, replicas)
	res.Pull = &pullVsPush{Workloads: nPull, PullP50: percentile(pullLat, 0.5), PullP99: percentile(pullLat, 0.99),
		PushP50: percentile(pushLat, 0.5), PushP99: percentile(pushLat, 0.99),
		PullStages: obs.stages(pullCreated), PushStages: obs.stages(pushCreated)}
	// The push-mode ones are done with: the failovers below need the room
	// they take on the eu-west providers.
	deleteWorkloads(t, h, func(i int) string { return fmt.Sprintf("s%02d", i) }, nPull)
	res.Pull.RatioP50, res.Pull.RatioP99 = res.Pull.PullP50/res.Pull.PushP50, res.Pull.PullP99/res.Pull.PushP99
	for name := range pulled {
		p := &flotillav1.Provider{}
		if err := h.client.Get(ctx, client.ObjectKey{Name: name}, p); err == nil {
			t.Logf("%s: %s, %d losses, reputation %s, runs replicas of %d workloads", name, p.Status.Phase,
				p.Status.RecentLosses, p.Status.Reputation.Score, len(obs.appsOn(name)))
		}
	}

	failover := func(victim string, stop func() error) float64 {
		apps := obs.appsOn(victim)
		if len(apps) == 0 {
			t.Fatalf("failover of %s measured nothing: it runs no replicas", victim)
		}
		t.Logf("stopping %s, which runs replicas of %d workloads", victim, len(apps))
		obs.mu.Lock()
		obs.skip[victim] = true
		obs.mu.Unlock()
		start := time.Now()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 120*time.Second, "the stopped provider's replicas Running elsewhere", func() (bool, string) {
			for _, app := range apps {
				if obs.runningElsewhere(app, victim) < replicas {
					var ls flotillav1.LeaseList
					_ = h.client.List(ctx, &ls, client.InNamespace("bench"))
					var notes []string
					for _, l := range ls.Items {
						if l.Spec.WorkloadRef.Name != app {
							continue
						}
						notes = append(notes, fmt.Sprintf("%s on %s %s %s", l.Name, l.Spec.ProviderRef.Name, l.Status.Phase, l.Status.Outcome))
					}
					p := &flotillav1.Provider{}
					_ = h.client.Get(ctx, client.ObjectKey{Name: victim}, p)
					return false, fmt.Sprintf("%s: %d running elsewhere; leases %v; %s %s; %v", app, obs.runningElsewhere(app, victim), notes,
						victim, p.Status.Phase, h.workload(t, "bench", app).Status.Conditions)
				}
			}
			return true, ""
		})
		return time.Since(start).Seconds()
	}
	stopCluster := func(name string) func() error { return func() error { return fed.Provider(name).Stop(ctx) } }
	res.FailoverDefaultSec = failover("p00", stopCluster("p00"))
	res.Pull.PushFailoverSec = res.FailoverDefaultSec
	// Equal prices and reputation a hair apart can put every replica on
	// one provider: stop the busiest each time, so that each failover
	// moves work.
	busiest := func() string {
		best, most := "", -1
		for name := range pulled {
			obs.mu.Lock()
			skipped := obs.skip[name]
			obs.mu.Unlock()
			if n := len(obs.appsOn(name)); !skipped && n > most {
				best, most = name, n
			}
		}
		return best
	}
	agentVictim := busiest()
	res.Pull.FailoverAgentStopSec = failover(agentVictim, func() error { pulled[agentVictim].stopAgent(); return nil })
	clusterVictim := busiest()
	res.Pull.FailoverClusterStopSec = failover(clusterVictim, stopCluster(clusterVictim))
	res.Pull.FailoverRatio = max(res.Pull.FailoverAgentStopSec, res.Pull.FailoverClusterStopSec) / res.Pull.PushFailoverSec
	t.Logf("pull mode: %+v", *res.Pull)

	// Faster failover: 5s provider grace, 5s workload grace.
	h.stop()
	h.opts.ProviderGracePeriod = 5 * time.Second
	h.start(t)
	// The restarted hub places nothing until its bank has reloaded the
	// ledger: measure that apart, with a Workload it must place, so the
	// failover below starts from a hub that works.
	restarted := time.Now()
	warm := newWorkload("bench", "warm", flotillav1.ClassService, 1)
	fixture.Selecting("region", "eu-west")(warm)
	mustCreate(t, h.client, warm)
	hubenv.Await(t, 5*time.Minute, "the restarted hub placing a Workload", func() (bool, string) {
		w := h.workload(t, "bench", "warm")
		return w.Status.ScheduledReplicas == 1, fmt.Sprint(w.Status.Conditions)
	})
	res.RestartToPlacingSec = time.Since(restarted).Seconds()
	deleteWorkloads(t, h, func(int) string { return "warm" }, 1)
	t.Logf("the restarted hub placed again after %.1fs", res.RestartToPlacingSec)
	res.FailoverGrace5Sec = failover("p01", stopCluster("p01"))
	t.Logf("failover: %.1fs with defaults, %.1fs with 5s grace periods", res.FailoverDefaultSec, res.FailoverGrace5Sec)

	out := filepath.Join(hubenv.RepoRoot(), "bench", "results", "e2e.json")
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", out)
}

// histogramMeans gives, for each histogram in the manager's registry whose
// name is in names, the mean and count per label set, so a bench run shows
// where the hub spends its time (queueing, reconciling, calling providers).
func histogramMeans(names ...string) map[string]string {
	return meansSince(nil, histogramSums(names...))
}

// benchHistograms are the manager's histograms a bench run logs.
var benchHistograms = []string{"workqueue_queue_duration_seconds", "workqueue_work_duration_seconds",
	"flotilla_scheduler_cycle_duration_seconds", "flotilla_scheduler_lease_create_duration_seconds",
	"flotilla_scheduler_first_lease_duration_seconds", "flotilla_bank_settlement_duration_seconds", "flotilla_remote_request_duration_seconds"}

// tailHistograms are the manager's histograms whose p99 a phase logs: a
// Workload's tail, not its mean, decides the bench's ratio.
var tailHistograms = []string{"flotilla_scheduler_first_lease_duration_seconds", "flotilla_scheduler_lease_create_duration_seconds"}

// buckets gives the cumulative bucket counts of an unlabelled histogram,
// by upper bound.
func buckets(name string) map[float64]uint64 {
	out := map[float64]uint64{}
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, b := range m.GetHistogram().GetBucket() {
				out[b.GetUpperBound()] += b.GetCumulativeCount()
			}
		}
	}
	return out
}

// quantileSince is the upper bound of the bucket that holds the q-th
// quantile of what a histogram observed between before and after.
func quantileSince(before, after map[float64]uint64, q float64) (bound float64, n uint64) {
	bounds := slices.Sorted(maps.Keys(after))
	if len(bounds) == 0 {
		return 0, 0
	}
	total := after[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	for _, b := range bounds {
		if float64(after[b]-before[b]) >= q*float64(total) {
			return b, total
		}
	}
	return math.Inf(1), total
}

// histogramSums gives the sum and count of each histogram named, per
// label set (the controller, name or operation).
func histogramSums(names ...string) map[string][2]float64 {
	sums := map[string][2]float64{}
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		return sums
	}
	for _, mf := range mfs {
		if !slices.Contains(names, mf.GetName()) {
			continue
		}
		for _, m := range mf.GetMetric() {
			var key []string
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "controller" || lp.GetName() == "name" || lp.GetName() == "operation" {
					key = append(key, lp.GetValue())
				}
			}
			k := mf.GetName() + "{" + strings.Join(key, ",") + "}"
			h := m.GetHistogram()
			v := sums[k]
			sums[k] = [2]float64{v[0] + h.GetSampleSum(), v[1] + float64(h.GetSampleCount())}
		}
	}
	return sums
}

// meansSince gives the mean and count of what each histogram observed
// between the sums before and after.
func meansSince(before, after map[string][2]float64) map[string]string {
	out := map[string]string{}
	for k, v := range after {
		sum, n := v[0]-before[k][0], v[1]-before[k][1]
		if n > 0 {
			out[k] = fmt.Sprintf("mean %.3fs n=%d", sum/n, int(n))
		}
	}
	return out
}

// phase marks the start of a part of a bench run, to log what the hub did
// during it: its API server's requests and the manager's histograms.
type phase struct {
	hist map[string][2]float64
	tail map[string]map[float64]uint64
	req  map[string]float64
	secs map[string]float64
	// prov sums the requests of the kwok providers' API servers.
	prov map[string]float64
	cpu  map[string]float64
	at   time.Time
}

func startPhase(ctx context.Context, h *hub) phase {
	p := phase{hist: histogramSums(benchHistograms...), tail: map[string]map[float64]uint64{}, cpu: cpuByRole(h), at: time.Now()}
	for _, name := range tailHistograms {
		p.tail[name] = buckets(name)
	}
	if cfg, err := h.cluster.RESTConfig(10 * time.Second); err == nil {
		p.req, p.secs, _ = apiMetrics(ctx, cfg)
	}
	p.prov = providerRequests(ctx, h)
	return p
}

// providerRequests sums the request counts of the providers' API servers
// whose names start with "p" (the kwok providers the placements use).
func providerRequests(ctx context.Context, h *hub) map[string]float64 {
	out := map[string]float64{}
	for _, c := range h.fed.Providers {
		if !strings.HasPrefix(c.Name, "p") {
			continue
		}
		cfg, err := c.RESTConfig(10 * time.Second)
		if err != nil {
			continue
		}
		if counts, err := apiRequests(ctx, cfg); err == nil {
			for k, v := range counts {
				out[k] += v
			}
		}
	}
	return out
}

// log writes what the hub did since p started, largest request counts first.
func (p phase) log(ctx context.Context, t *testing.T, h *hub, what string) {
	t.Helper()
	means := meansSince(p.hist, histogramSums(benchHistograms...))
	for _, k := range slices.Sorted(maps.Keys(means)) {
		t.Logf("%s: %s: %s", what, k, means[k])
	}
	for _, name := range tailHistograms {
		now := buckets(name)
		p50, n := quantileSince(p.tail[name], now, 0.5)
		p99, _ := quantileSince(p.tail[name], now, 0.99)
		if n == 0 {
			continue
		}
		t.Logf("%s: %s: p50 <= %gs, p99 <= %gs, n=%d", what, name, p50, p99, n)
	}
	took := time.Since(p.at).Seconds()
	var cpu []string
	for _, kv := range topDelta(p.cpu, cpuByRole(h), 8) {
		n, role, _ := strings.Cut(kv, " ")
		s, _ := strconv.ParseFloat(n, 64)
		cpu = append(cpu, fmt.Sprintf("%s %.2f", role, s/100/took))
	}
	t.Logf("%s: %.1fs; CPU cores by process: %s", what, took, strings.Join(cpu, ", "))
	cfg, err := h.cluster.RESTConfig(10 * time.Second)
	if err != nil || p.req == nil {
		return
	}
	after, secs, err := apiMetrics(ctx, cfg)
	if err != nil {
		return
	}
	t.Logf("%s: the hub API server's requests: %s", what, strings.Join(topDelta(p.req, after, 15), ", "))
	// What the server itself took per request: against the latency the
	// stages show, the rest is waiting for a CPU on either side.
	var served []string
	for _, k := range []string{"POST workloads", "POST leases", "APPLY leases/status", "APPLY workloads/status"} {
		if n := after[k] - p.req[k]; n > 0 {
			served = append(served, fmt.Sprintf("%s %.0f ms", k, 1000*(secs[k]-p.secs[k])/n))
		}
	}
	t.Logf("%s: the hub API server's mean time per request: %s", what, strings.Join(served, ", "))
	t.Logf("%s: the kwok providers' API servers' requests: %s", what, strings.Join(topDelta(p.prov, providerRequests(ctx, h), 20), ", "))
}

// cpuByRole sums the CPU time of this machine's processes, in hundredths
// of a second, by role: the hub's control plane processes, the providers'
// (all of them), this process (the manager and the bench), and the rest by
// name.
func cpuByRole(h *hub) map[string]float64 {
	out := map[string]float64{}
	hubDir := filepath.Dir(h.cluster.Kubeconfig)
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(cmd) == 0 {
			continue
		}
		s, err := cpuSeconds(pid)
		if err != nil {
			continue
		}
		role := filepath.Base(strings.SplitN(string(cmd), "\x00", 2)[0])
		switch {
		case pid == os.Getpid():
			role = "manager+bench"
		case strings.Contains(string(cmd), hubDir):
			role = "hub-" + role
		case slices.Contains([]string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok"}, role):
			role = "providers-" + role
		}
		out[role] += s * 100
	}
	return out
}

// deleteWorkloads deletes n Workloads of the bench namespace and waits
// until their Leases are gone, so that their capacity is free again.
func deleteWorkloads(t *testing.T, h *hub, name func(int) string, n int) {
	t.Helper()
	ctx := context.Background()
	names := map[string]bool{}
	for i := range n {
		names[name(i)] = true
		w := &flotillav1.Workload{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name(i)}}
		if err := h.client.Delete(ctx, w); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	hubenv.Await(t, 2*time.Minute, "the deleted Workloads' Leases gone", func() (bool, string) {
		var ls flotillav1.LeaseList
		if err := h.client.List(ctx, &ls, client.InNamespace("bench")); err != nil {
			return false, err.Error()
		}
		left := 0
		for _, l := range ls.Items {
			if names[l.Spec.WorkloadRef.Name] {
				left++
			}
		}
		return left == 0, fmt.Sprint(left, " left")
	})
}

// stages returns, per stage, p50 and p99 of the time from each Workload's
// creation until the stage was first seen.
func (o *podObserver) stages(created map[string]time.Time) map[string][2]float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string][2]float64{}
	for stage, at := range map[string]func(string) time.Time{
		"0-workload":        func(app string) time.Time { return o.seen[app] },
		"1-lease":           func(app string) time.Time { return earliest(o.lease[app]) },
		"1b-lastlease":      func(app string) time.Time { return latest(o.lease[app]) },
		"2-deployment":      func(app string) time.Time { return earliest(o.deploy[app]) },
		"2c-lastdeployment": func(app string) time.Time { return latest(o.deploy[app]) },
		"2b-serviceaccount": func(app string) time.Time {
			var last time.Time
			for _, ns := range o.nss[app] {
				if t := o.sa[ns]; t.IsZero() {
					return time.Time{}
				} else if t.After(last) {
					last = t
				}
			}
			return last
		},
		"3-pods":    func(app string) time.Time { return latest(o.created[app]) },
		"4-bound":   func(app string) time.Time { return latest(o.bound[app]) },
		"5-running": func(app string) time.Time { return latest(o.first[app]) },
	} {
		var d []time.Duration
		for name, c := range created {
			// A stage the watches missed (a Lease created and replaced
			// between two events) is left out, not counted as year 1.
			if seen := at(name); !seen.IsZero() {
				d = append(d, seen.Sub(c))
			}
		}
		if len(d) > 0 {
			out[stage] = [2]float64{percentile(d, 0.5), percentile(d, 0.99)}
		}
	}
	return out
}
