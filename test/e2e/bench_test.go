package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

// podObserver polls every provider's managed pods and remembers, per app
// label, which pods run where and since when.
type podObserver struct {
	mu      sync.Mutex
	first   map[string]map[string]time.Time // app -> pod -> first seen Running
	running map[string]map[string]int       // provider -> app -> running pods now
	skip    map[string]bool
}

func (o *podObserver) run(ctx context.Context, h *hub) {
	for {
		for name, cs := range h.providers {
			o.mu.Lock()
			skip := o.skip[name]
			o.mu.Unlock()
			if skip {
				continue
			}
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			pods, err := cs.CoreV1().Pods("").List(lctx, metav1.ListOptions{LabelSelector: flotillav1.LabelManaged + "=true"})
			cancel()
			if err != nil {
				continue
			}
			now := time.Now()
			counts := map[string]int{}
			o.mu.Lock()
			for _, p := range pods.Items {
				if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
					continue
				}
				app := p.Labels["app"]
				counts[app]++
				if o.first[app] == nil {
					o.first[app] = map[string]time.Time{}
				}
				if _, ok := o.first[app][name+"/"+p.Namespace+"/"+p.Name]; !ok {
					o.first[app][name+"/"+p.Namespace+"/"+p.Name] = now
				}
			}
			o.running[name] = counts
			o.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runningElsewhere counts an app's running pods on providers other than except.
func (o *podObserver) runningElsewhere(app, except string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for prov, counts := range o.running {
		if prov != except && !o.skip[prov] {
			n += counts[app]
		}
	}
	return n
}

type e2eResult struct {
	Date                  string  `json:"date"`
	Providers             int     `json:"providers"`
	Workloads             int     `json:"workloads"`
	ReplicasEach          int     `json:"replicasPerWorkload"`
	CreateToRunningP50Sec float64 `json:"createToAllRunningP50Seconds"`
	CreateToRunningP99Sec float64 `json:"createToAllRunningP99Seconds"`
	CreateToRunningMaxSec float64 `json:"createToAllRunningMaxSeconds"`
	FailoverDefaultSec    float64 `json:"failoverDefaultSeconds"`
	FailoverGrace5Sec     float64 `json:"failoverProviderGrace5sWorkloadGrace5sSeconds"`
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
	var specs []testbed.ProviderSpec
	prices := map[string]string{}
	for i := range nProviders {
		name := fmt.Sprintf("p%02d", i)
		specs = append(specs, testbed.ProviderSpec{Name: name, Owner: fmt.Sprintf("o%02d", i), Region: "eu-west",
			Nodes: []testbed.NodeSet{{Count: 2, CPU: "16", Memory: "64Gi"}}})
		prices[name] = "0.010"
	}
	fed := testbed.NewForTest(t, testbed.Options{Providers: specs})
	h := setupHub(t, fed, prices, controllers.Options{HubID: "bench"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hubenv.Await(t, 120*time.Second, "every provider Ready", func() (bool, string) {
		var ps flotillav1.ProviderList
		_ = h.client.List(ctx, &ps)
		n := 0
		for _, p := range ps.Items {
			if p.Status.Phase == flotillav1.ProviderReady {
				n++
			}
		}
		return n == nProviders, fmt.Sprint(n)
	})
	obs := &podObserver{first: map[string]map[string]time.Time{}, running: map[string]map[string]int{}, skip: map[string]bool{}}
	go obs.run(ctx, h)

	mustCreate(t, h.client, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}})
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
			pods := obs.first[name]
			if len(pods) < replicas {
				return false, name
			}
			var last time.Time
			for _, ts := range pods {
				if ts.After(last) {
					last = ts
				}
			}
			latencies = append(latencies, last.Sub(at))
		}
		return true, ""
	})
	res := e2eResult{Date: time.Now().UTC().Format(time.RFC3339), Providers: nProviders, Workloads: nWorkloads, ReplicasEach: replicas,
		CreateToRunningP50Sec: percentile(latencies, 0.50), CreateToRunningP99Sec: percentile(latencies, 0.99),
		CreateToRunningMaxSec: percentile(latencies, 1)}
	t.Logf("create to all Running: p50 %.2fs p99 %.2fs max %.2fs", res.CreateToRunningP50Sec, res.CreateToRunningP99Sec, res.CreateToRunningMaxSec)

	failover := func(victim string) float64 {
		var apps []string
		obs.mu.Lock()
		for app, n := range obs.running[victim] {
			if n > 0 {
				apps = append(apps, app)
			}
		}
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
