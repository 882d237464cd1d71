package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

// podObserver watches every provider's managed Deployments and pods and
// the hub's Leases, and remembers per app label when each stage was first
// seen, so the bench can say where create-to-Running time goes. Watches,
// not polling, so that observing adds no load to the control planes.
type podObserver struct {
	mu      sync.Mutex
	lease   map[string]time.Time            // app -> first Lease seen on the hub
	deploy  map[string]time.Time            // app -> first Deployment seen on a provider
	bound   map[string]map[string]time.Time // app -> pod -> first seen bound to a node
	first   map[string]map[string]time.Time // app -> pod -> first seen Running
	skip    map[string]bool
	stores  map[string]cache.Store
	created map[string]map[string]time.Time // app -> pod -> first seen
}

func newPodObserver() *podObserver {
	return &podObserver{lease: map[string]time.Time{}, deploy: map[string]time.Time{},
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

func (o *podObserver) run(ctx context.Context, h *hub) error {
	managed := informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = flotillav1.LabelManaged + "=true" })
	for name, cs := range h.providers {
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
			if _, seen := o.deploy[d.Spec.Template.Labels["app"]]; !seen {
				o.deploy[d.Spec.Template.Labels["app"]] = time.Now()
			}
			o.mu.Unlock()
		}})
		o.mu.Lock()
		o.stores[name] = pods.GetStore()
		o.mu.Unlock()
		f.Start(ctx.Done())
	}
	// Leases by watch: polling a list this often would load the hub.
	cfg, err := h.fed.Hub.RESTConfig(30 * time.Second)
	if err != nil {
		return err
	}
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: hubenv.Scheme()})
	if err != nil {
		return err
	}
	w, err := wc.Watch(ctx, &flotillav1.LeaseList{})
	if err != nil {
		return err
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			l, ok := ev.Object.(*flotillav1.Lease)
			if !ok {
				continue
			}
			o.mu.Lock()
			if _, seen := o.lease[l.Spec.WorkloadRef.Name]; !seen {
				o.lease[l.Spec.WorkloadRef.Name] = time.Now()
			}
			o.mu.Unlock()
		}
	}()
	return nil
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
}

func percentile(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i].Seconds()
}

// TestBenchE2E measures, on a local federation of 10 providers,
// create-to-all-Running latency over 50 workloads and failover time with the
// default and with 5s grace periods. It runs only from `make bench-e2e`
// and writes bench/results/e2e.json.
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
	fed := testbed.NewForTest(t, localfed.Options{Providers: specs})
	h := setupHub(t, fed, prices, controllers.Options{HubID: "bench"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.awaitProvidersReady(t, nProviders, 120*time.Second)
	obs := newPodObserver()
	if err := obs.run(ctx, h); err != nil {
		t.Fatal(err)
	}

	h.tenant(t, "bench", "100000")
	created := map[string]time.Time{}
	for i := range nWorkloads {
		name := fmt.Sprintf("w%02d", i)
		created[name] = time.Now()
		mustCreate(t, h.client, newWorkload("bench", name, flotillav1.ClassService, replicas))
		time.Sleep(200 * time.Millisecond)
	}
	var latencies []time.Duration
	hubenv.Await(t, 180*time.Second, "every workload's pods Running", func() (bool, string) {
		latencies = latencies[:0]
		obs.mu.Lock()
		defer obs.mu.Unlock()
		for name, at := range created {
			if len(obs.first[name]) < replicas {
				return false, name
			}
			latencies = append(latencies, latest(obs.first[name]).Sub(at))
		}
		return true, ""
	})
	res := e2eResult{Date: time.Now().UTC().Format(time.RFC3339), Providers: nProviders, Workloads: nWorkloads, ReplicasEach: replicas,
		CreateToRunningP50Sec: percentile(latencies, 0.50), CreateToRunningP99Sec: percentile(latencies, 0.99),
		CreateToRunningMaxSec: percentile(latencies, 1), Stages: map[string][2]float64{}}
	obs.mu.Lock()
	for stage, at := range map[string]func(string) time.Time{
		"1-lease":      func(app string) time.Time { return obs.lease[app] },
		"2-deployment": func(app string) time.Time { return obs.deploy[app] },
		"3-pods":       func(app string) time.Time { return latest(obs.created[app]) },
		"4-bound":      func(app string) time.Time { return latest(obs.bound[app]) },
		"5-running":    func(app string) time.Time { return latest(obs.first[app]) },
	} {
		var d []time.Duration
		for name, c := range created {
			d = append(d, at(name).Sub(c))
		}
		res.Stages[stage] = [2]float64{percentile(d, 0.5), percentile(d, 0.99)}
	}
	obs.mu.Unlock()
	t.Logf("create to all Running: p50 %.2fs p99 %.2fs max %.2fs; stages %v", res.CreateToRunningP50Sec, res.CreateToRunningP99Sec, res.CreateToRunningMaxSec, res.Stages)
	for k, v := range histogramMeans("workqueue_queue_duration_seconds", "workqueue_work_duration_seconds",
		"flotilla_scheduler_cycle_duration_seconds", "flotilla_bank_settlement_duration_seconds", "flotilla_remote_request_duration_seconds") {
		t.Logf("  %s: %s", k, v)
	}

	failover := func(victim string) float64 {
		apps := obs.appsOn(victim)
		obs.mu.Lock()
		obs.skip[victim] = true
		obs.mu.Unlock()
		start := time.Now()
		if err := fed.Provider(victim).Stop(ctx); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 120*time.Second, "the stopped provider's replicas Running elsewhere", func() (bool, string) {
			for _, app := range apps {
				if obs.runningElsewhere(app, victim) < replicas {
					return false, app
				}
			}
			return true, ""
		})
		return time.Since(start).Seconds()
	}
	res.FailoverDefaultSec = failover("p00")

	// Faster failover: 5s provider grace, 5s workload grace.
	h.stop()
	h.opts.ProviderGracePeriod = 5 * time.Second
	h.start(t)
	time.Sleep(5 * time.Second)
	res.FailoverGrace5Sec = failover("p01")
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
	out := map[string]string{}
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if !slices.Contains(names, mf.GetName()) {
			continue
		}
		sums := map[string][2]float64{}
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
		for k, v := range sums {
			if v[1] > 0 {
				out[k] = fmt.Sprintf("mean %.3fs n=%d", v[0]/v[1], int(v[1]))
			}
		}
	}
	return out
}
