package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/endpoint"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/internal/render"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

// realNodeIP is the address of the provider's real node, where its node
// ports answer.
func (h *hub) realNodeIP(t *testing.T, provider string) string {
	t.Helper()
	nodes, err := h.providers[provider].CoreV1().Nodes().List(context.Background(), metav1.ListOptions{LabelSelector: "flotilla.dev/node-kind=real"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				return a.Address
			}
		}
	}
	t.Fatalf("provider %s has no real node with an address", provider)
	return ""
}

// exposeNodePorts records the provider's real node as where its endpoints
// may be, and has its Offer expose node ports there, as the administrator
// (flotillactl hub issue-join --endpoint-range) and the owner
// (offer.exposure) would.
func (h *hub) exposeNodePorts(t *testing.T, provider string) string {
	t.Helper()
	ctx := context.Background()
	ip := h.realNodeIP(t, provider)
	p := &flotillav1.Provider{}
	if err := h.client.Get(ctx, client.ObjectKey{Name: provider}, p); err != nil {
		t.Fatal(err)
	}
	p.Spec.EndpointRanges = []string{ip + "/32"}
	if err := h.client.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	o := &flotillav1.Offer{}
	if err := h.client.Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace(provider), Name: "standard"}, o); err != nil {
		t.Fatal(err)
	}
	o.Spec.Exposure = &flotillav1.ExposureSpec{Type: flotillav1.ExposeNodePort, Address: ip}
	if err := h.client.Update(ctx, o); err != nil {
		t.Fatal(err)
	}
	return ip
}

func endpointsOf(w *flotillav1.Workload, provider string) []flotillav1.WorkloadEndpoint {
	var out []flotillav1.WorkloadEndpoint
	for _, e := range w.Status.Endpoints {
		if e.Provider == provider {
			out = append(out, e)
		}
	}
	return out
}

// exposeGrace is the provider grace period of the exposed-service runs.
const exposeGrace = 20 * time.Second

// exposedWeb starts three providers with a real node each (alice-1, bob-1
// and, dearest, dave-1) exposing node ports, a hub serving stable
// addresses, and the Workload team-a/web: two replicas of the test web
// server on two providers, port 8080 exposed with a stable address. It
// returns the hub, the federation and the entry point's address.
func exposedWeb(t *testing.T) (*hub, *localfed.Federation, string) {
	t.Helper()
	testbed.RequireRealNodes(t)
	fed := testbed.NewForTest(t, localfed.Options{Providers: []localfed.ProviderSpec{
		{Name: "alice-1", Owner: "alice", Region: "eu-west", RealNodes: 1},
		{Name: "bob-1", Owner: "bob", Region: "us-east", RealNodes: 1},
		{Name: "dave-1", Owner: "dave", Region: "us-east", RealNodes: 1},
	}})
	entry := freeAddr(t)
	prices := map[string]string{"alice-1": "0.010", "bob-1": "0.011", "dave-1": "0.050"}
	h := setupHub(t, fed, prices, controllers.Options{HubID: "e2e", SettlementInterval: 2 * time.Second, FeeBPS: 250,
		ProviderGracePeriod: exposeGrace, EntryBindAddress: entry, EntryURL: "http://" + entry})
	for name := range prices {
		h.exposeNodePorts(t, name)
	}
	h.awaitProvidersReady(t, 3, 90*time.Second)
	h.tenant(t, "team-a", "100")
	web := fixture.Workload("team-a", "web", fixture.Class(flotillav1.ClassService), fixture.Replicas(2),
		fixture.Requests("100m", "64Mi"), fixture.RunAsUser(65532), fixture.Runs("docker.io/flotilla/web:dev"))
	web.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	web.Spec.Placement.MaxReplicasPerProvider = ptr.To[int32](1)
	web.Spec.Expose = &flotillav1.ExposeSpec{StableAddress: true, Ports: []flotillav1.ExposedPort{
		{Name: "http", Port: 8080, Protocol: flotillav1.ExposeHTTP, HealthPath: "/healthz"}}}
	mustCreate(t, h.client, web)
	return h, fed, entry
}

// TestExposedServiceOnRealNodes runs an exposed web Workload on two
// providers' real nodes: each endpoint in its status answers from outside
// the provider (a NodePort through kube-proxy), and so does its stable
// address; a provider whose pods stop listening while they stay Ready is
// neither counted nor paid and loses reputation; and when a provider
// vanishes, requests through the stable address keep succeeding.
func TestExposedServiceOnRealNodes(t *testing.T) {
	ctx := context.Background()
	h, fed, entry := exposedWeb(t)
	const grace = exposeGrace
	hc := &http.Client{Timeout: 5 * time.Second}

	var w *flotillav1.Workload
	hubenv.Stage(t, "each endpoint in the status answers from outside its provider, and so does the stable address", func(t *testing.T) {
		hubenv.Await(t, 180*time.Second, "web Ready with two reachable endpoints, on alice-1 and bob-1", func() (bool, string) {
			w = h.workload(t, "team-a", "web")
			return ready(w) && len(w.Status.Endpoints) == 2 && !slices.ContainsFunc(w.Status.Endpoints, func(e flotillav1.WorkloadEndpoint) bool {
				return !e.Reachable
			}) && len(endpointsOf(w, "alice-1")) == 1 && len(endpointsOf(w, "bob-1")) == 1, fmt.Sprintf("ready %d endpoints %+v", w.Status.ReadyReplicas, w.Status.Endpoints)
		})
		for _, e := range w.Status.Endpoints {
			body, err := localfed.Fetch(hc, "http://"+e.Address+"/")
			if err != nil || !strings.HasPrefix(body, "hello from ") {
				t.Errorf("endpoint %s of %s: %q %v", e.Address, e.Provider, body, err)
			}
		}
		if w.Status.Address != "http://"+entry+"/team-a/web/" {
			t.Fatalf("stable address %q", w.Status.Address)
		}
		pods := map[string]bool{}
		for range 8 {
			body, err := localfed.Fetch(hc, w.Status.Address)
			if err != nil || !strings.HasPrefix(body, "hello from ") {
				t.Fatalf("through the stable address: %q %v", body, err)
			}
			pods[body] = true
		}
		if len(pods) != 2 {
			t.Errorf("the stable address reached %v, want both replicas", pods)
		}
	})

	bobLease := func() *flotillav1.Lease {
		var ls flotillav1.LeaseList
		if err := h.client.List(ctx, &ls, client.InNamespace("team-a"), client.MatchingLabels{flotillav1.LabelProvider: "bob-1"}); err != nil {
			t.Fatal(err)
		}
		for i := range ls.Items {
			if ls.Items[i].Status.Phase == flotillav1.LeaseActive {
				return &ls.Items[i]
			}
		}
		return nil
	}
	hubenv.Stage(t, "P9.ready-but-unreachable: bob's pods stop listening but stay Ready: not counted, not paid, reputation lost", func(t *testing.T) {
		l := bobLease()
		if l == nil {
			t.Fatal("no Active lease on bob-1")
		}
		deploys := h.providers["bob-1"].AppsV1().Deployments(render.Namespace("e2e", l.UID))
		// The owner swaps the container's port: the pod runs, Ready (it has
		// no readiness probe), and nothing answers on 8080.
		patch := `{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":"PORT","value":"9999"}]}]}}}}`
		if _, err := deploys.Patch(ctx, render.WorkloadName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 90*time.Second, "bob's lease unreachable, counted once", func() (bool, string) {
			l = bobLease()
			return l != nil && l.Status.UnreachableCount >= 1 && l.Status.ReadyReplicas == 0 && l.Status.RunningReplicas == 0,
				fmt.Sprintf("%+v", l.Status.Endpoints)
		})
		metered := l.Status.Usage.ReplicaSeconds
		hubenv.Await(t, 60*time.Second, "bob's reputation counts it", func() (bool, string) {
			p := &flotillav1.Provider{}
			_ = h.client.Get(ctx, client.ObjectKey{Name: "bob-1"}, p)
			return p.Status.Reputation.EndpointsUnreachable >= 1, fmt.Sprintf("%+v", p.Status.Reputation)
		})
		if body, err := localfed.Fetch(hc, w.Status.Address); err != nil || !strings.HasPrefix(body, "hello from ") {
			t.Errorf("the stable address while bob does not serve: %q %v", body, err)
		}
		// Several settlements later, nothing more is metered or paid for it.
		time.Sleep(10 * time.Second)
		l = bobLease()
		if l.Status.Usage.ReplicaSeconds != metered {
			t.Errorf("metered %d replica-seconds more while unreachable", l.Status.Usage.ReplicaSeconds-metered)
		}
		store := &ledgerstore.Store{Client: h.client, Reader: h.client, Namespace: flotillav1.SystemNamespace}
		entries, err := store.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var paid int64
		for _, e := range entries {
			if e.Kind == ledger.UsageSettled && strings.HasSuffix(e.Lease, l.Name) {
				paid += e.ReplicaSeconds
			}
		}
		if paid > metered {
			t.Errorf("the ledger pays bob for %d replica-seconds of this lease, more than the %d metered before it stopped answering", paid, metered)
		}
		t.Logf("bob's lease: %d replica-seconds metered and %d settled by the time it stopped answering; nothing after", metered, paid)
		// The owner puts it right: counted again.
		patch = `{"spec":{"template":{"spec":{"containers":[{"name":"app","env":null}]}}}}`
		if _, err := deploys.Patch(ctx, render.WorkloadName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 90*time.Second, "bob serving and counted again", func() (bool, string) {
			l = bobLease()
			return l != nil && l.Status.ReadyReplicas == 1, fmt.Sprintf("%+v", l.Status.Endpoints)
		})
	})

	hubenv.Stage(t, "bob vanishes: requests through the stable address keep succeeding", func(t *testing.T) {
		f := h.stableAddressFailover(t, fed.Provider("bob-1"), w.Status.Address, "dave-1")
		t.Logf("stable address during the failover: %d of %d requests failed (%d after the hub marked bob down), slowest %.3fs; bob's endpoint marked down %.1fs after it vanished",
			f.Failed, f.Requests, f.FailedAfterDown, f.SlowestSec, f.MarkedDownSec)
		if f.FailedAfterDown > 0 {
			t.Errorf("%d requests failed after the hub marked bob's endpoint down", f.FailedAfterDown)
		}
		if f.MarkedDownSec > grace.Seconds() {
			t.Errorf("bob's endpoint was marked down %.1fs after it vanished, longer than the provider grace period %s", f.MarkedDownSec, grace)
		}
		h.awaitFenced(t, "bob-1", 90*time.Second)
	})
}

// failoverOfAnAddress is what clients of a stable address saw while one
// provider serving it vanished.
type failoverOfAnAddress struct {
	Requests        int `json:"requests"`
	Failed          int `json:"failed"`
	FailedAfterDown int `json:"failedAfterMarkedDown"`
	// FailedShare is Failed over Requests.
	FailedShare float64 `json:"failedShare"`
	SlowestSec  float64 `json:"slowestRequestSeconds"`
	// MarkedDownSec is from the provider vanishing to the hub listing its
	// endpoint as not reachable; ReplacedSec to the Workload Ready again
	// with the replacement's endpoint reachable.
	MarkedDownSec float64 `json:"markedDownSeconds"`
	ReplacedSec   float64 `json:"replacedSeconds"`
}

// stableAddressFailover sends requests to url every 50 ms while the
// provider p (its real node cut off the network and its control plane
// stopped: a machine switched off) vanishes, until the Workload team-a/web
// is Ready again with an endpoint on replacement answering; then brings p
// back. Every request has a 5 s timeout.
func (h *hub) stableAddressFailover(t *testing.T, p *localfed.Cluster, url, replacement string) failoverOfAnAddress {
	t.Helper()
	ctx := context.Background()
	hc := &http.Client{Timeout: 5 * time.Second}
	var mu sync.Mutex
	var f failoverOfAnAddress
	var downAt time.Time
	var slowest time.Duration
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			start := time.Now()
			_, err := localfed.Fetch(hc, url)
			mu.Lock()
			f.Requests++
			slowest = max(slowest, time.Since(start))
			if err != nil {
				f.Failed++
				if !downAt.IsZero() {
					f.FailedAfterDown++
				}
			}
			mu.Unlock()
		}
	}()
	cut := time.Now()
	if err := p.SetRealNodesReachable(false); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	hubenv.Await(t, 60*time.Second, "the hub marks "+p.Name+"'s endpoint down", func() (bool, string) {
		w := h.workload(t, "team-a", "web")
		eps := endpointsOf(w, p.Name)
		down := len(eps) == 0 || !eps[0].Reachable
		if down {
			mu.Lock()
			downAt = time.Now()
			mu.Unlock()
		}
		return down, fmt.Sprintf("%+v", eps)
	})
	hubenv.Await(t, 120*time.Second, "web Ready again with "+replacement+"'s replica reachable", func() (bool, string) {
		w := h.workload(t, "team-a", "web")
		eps := endpointsOf(w, replacement)
		return ready(w) && len(eps) == 1 && eps[0].Reachable, fmt.Sprintf("ready %d endpoints %+v", w.Status.ReadyReplicas, w.Status.Endpoints)
	})
	replaced := time.Since(cut)
	close(stop)
	<-done
	if err := p.SetRealNodesReachable(true); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	f.FailedShare = float64(f.Failed) / float64(max(f.Requests, 1))
	f.SlowestSec, f.MarkedDownSec, f.ReplacedSec = slowest.Seconds(), downAt.Sub(cut).Seconds(), replaced.Seconds()
	return f
}

// exposeResult is bench/results/expose.json.
type exposeResult struct {
	Date string `json:"date"`
	// GraceSec is the provider grace period, the goal for MarkedDownSec.
	GraceSec float64 `json:"providerGracePeriodSeconds"`
	// CheckIntervalSec and CheckTimeoutSec are the hub's endpoint checks.
	CheckIntervalSec float64               `json:"endpointCheckIntervalSeconds"`
	CheckTimeoutSec  float64               `json:"endpointCheckTimeoutSeconds"`
	Rounds           []failoverOfAnAddress `json:"rounds"`
	MaxMarkedDownSec float64               `json:"maxMarkedDownSeconds"`
	MaxFailedShare   float64               `json:"maxFailedShare"`
	FailedAfterDown  int                   `json:"failedAfterMarkedDown"`
}

// TestBenchStableAddress measures what clients of a stable address see
// when a provider serving it vanishes (its real node off the network and
// its control plane stopped), three times in a row on a local federation
// of three providers with a real node each: the share of failed requests,
// the slowest request, how long until the hub marks the endpoint down and
// until the replacement answers. It runs only from `make bench-e2e` and
// writes bench/results/expose.json.
func TestBenchStableAddress(t *testing.T) {
	if os.Getenv("FLOTILLA_BENCH_E2E") == "" {
		t.Skip("measurement, not a test: run make bench-e2e")
	}
	h, fed, entry := exposedWeb(t)
	url := "http://" + entry + "/team-a/web/"
	res := exposeResult{Date: time.Now().UTC().Format("2006-01-02"), GraceSec: exposeGrace.Seconds(),
		CheckIntervalSec: endpoint.DefaultInterval.Seconds(), CheckTimeoutSec: endpoint.DefaultTimeout.Seconds()}
	serving := func() (on []string, off string) {
		w := h.workload(t, "team-a", "web")
		for _, p := range []string{"alice-1", "bob-1", "dave-1"} {
			if eps := endpointsOf(w, p); len(eps) == 1 && eps[0].Reachable {
				on = append(on, p)
			} else {
				off = p
			}
		}
		return on, off
	}
	for round := range 3 {
		var on []string
		var off string
		hubenv.Await(t, 180*time.Second, "web Ready with two reachable endpoints", func() (bool, string) {
			on, off = serving()
			return ready(h.workload(t, "team-a", "web")) && len(on) == 2, fmt.Sprint(on)
		})
		// The dearer of the two goes, so that the replacement is the one
		// provider left.
		gone := on[1]
		f := h.stableAddressFailover(t, fed.Provider(gone), url, off)
		t.Logf("round %d, %s vanished: %d of %d requests failed (%d after marked down), slowest %.3fs, marked down after %.1fs, replaced after %.1fs",
			round+1, gone, f.Failed, f.Requests, f.FailedAfterDown, f.SlowestSec, f.MarkedDownSec, f.ReplacedSec)
		res.Rounds = append(res.Rounds, f)
		res.MaxMarkedDownSec = max(res.MaxMarkedDownSec, f.MarkedDownSec)
		res.MaxFailedShare = max(res.MaxFailedShare, f.FailedShare)
		res.FailedAfterDown += f.FailedAfterDown
		h.awaitFenced(t, gone, 120*time.Second)
	}
	out := filepath.Join(hubenv.RepoRoot(), "bench", "results", "expose.json")
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", out)
}
