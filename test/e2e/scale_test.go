package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/hollow"
	"github.com/flotilla-dev/flotilla/internal/join"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

// scaleResult is bench/results/scale.json.
type scaleResult struct {
	Date         string `json:"date"`
	Providers    int    `json:"providers"`
	Workloads    int    `json:"workloads"`
	ReplicasEach int    `json:"replicasPerWorkload"`
	// The manager's own process: peak resident memory and CPU time over
	// the whole run.
	ManagerPeakRSSMiB float64 `json:"managerPeakRSSMiB"`
	ManagerCPUSec     float64 `json:"managerCPUSeconds"`
	// Scheduling cycles, from the manager's histogram (p99 is the upper
	// bound of the bucket it falls in).
	Cycles       int     `json:"schedulingCycles"`
	CycleMeanSec float64 `json:"schedulingCycleMeanSeconds"`
	CycleP99Sec  float64 `json:"schedulingCycleP99UpperBoundSeconds"`
	// Lease creations, from the start of the cycle that planned each: the
	// creations go on after their cycle.
	LeaseCreateMeanSec float64 `json:"leaseCreateMeanSeconds"`
	LeaseCreateP99Sec  float64 `json:"leaseCreateP99UpperBoundSeconds"`

	// PlacementComplete is false when SCALE_MINUTES ran out first: the
	// counts say how far it got, the failover was not run, and a
	// percentile that was not reached reads -1 (Workloads not yet
	// assigned count as later than every one that was).
	PlacementComplete bool `json:"placementComplete"`
	WorkloadsCreated  int  `json:"workloadsCreated"`
	WorkloadsAssigned int  `json:"workloadsAssigned"`
	WorkloadsRunning  int  `json:"workloadsRunning"`

	AssignedP50 float64 `json:"createToAssignedP50Seconds"`
	AssignedP99 float64 `json:"createToAssignedP99Seconds"`
	RunningP50  float64 `json:"createToRunningP50Seconds"`
	RunningP99  float64 `json:"createToRunningP99Seconds"`
	JoinSec     float64 `json:"allProvidersReadySeconds"`
	Stopped     int     `json:"providersStopped"`
	FailoverSec float64 `json:"failoverSeconds"`
	// Steps of the failover: every stopped provider Lost, and their
	// replicas placed elsewhere (the rest, to running, is FailoverSec).
	FailoverLostSec     float64 `json:"failoverLostSeconds"`
	FailoverAssignedSec float64 `json:"failoverPlacedSeconds"`
	// From the Leases themselves (whole seconds): when the last of the
	// stopped providers' Leases closed, and when the last replacement
	// Lease was created, Active and ready (its Ready condition's time).
	FailoverMoved      int     `json:"failoverReplicasMoved"`
	FailoverClosedSec  float64 `json:"failoverLeasesClosedSeconds"`
	FailoverCreatedSec float64 `json:"failoverReplacementsCreatedSeconds"`
	FailoverReadySec   float64 `json:"failoverReplacementsReadySeconds"`
	// FailoverTimeline is each step of the failover over the Leases it
	// applies to, from watch events stamped as they came: the stopped
	// providers' Leases closed and their replacements created (from the
	// stop), then each step of a replacement from the one before.
	FailoverTimeline map[string]stepStats `json:"failoverTimeline,omitempty"`
	// FailoverControllers is each controller's work during the failover:
	// reconciles, and the mean wait in its queue and reconcile time;
	// PlacementControllers the same from the first Workload created to
	// the end of the placement.
	FailoverControllers  map[string]controllerWork `json:"failoverControllers,omitempty"`
	PlacementControllers map[string]controllerWork `json:"placementControllers,omitempty"`
	// PlacementFailovers counts the Leases failed over during the
	// placement, when no provider was stopped: each is a live provider
	// the hub took for Lost.
	PlacementFailovers float64 `json:"placementFailovers"`
	// LeaseStatusWrites counts the Lease controller's status writes by
	// kind over the whole run, and FailoverLeaseStatusWrites during the
	// failover.
	LeaseStatusWrites         map[string]float64 `json:"leaseStatusWrites,omitempty"`
	FailoverLeaseStatusWrites map[string]float64 `json:"failoverLeaseStatusWrites,omitempty"`
	GracePeriods              float64            `json:"gracePeriodsSeconds"`
	FailoverGoal              float64            `json:"failoverGoalSeconds"`
	CreateSeconds             float64            `json:"createAllWorkloadsSeconds"`
	// Rate is the Workloads created a second (0: all at once, 16 at a
	// time); Throughput the replicas assigned a second, from the first
	// Workload created to the last fully assigned. Latency means little
	// without the arrival rate: created all at once, the last Workloads
	// wait for the hub to write every one before them.
	Rate       float64 `json:"workloadsPerSecond"`
	Throughput float64 `json:"replicasAssignedPerSecond"`
	// Where the time went from the first Workload created to the last
	// running: CPU seconds per process (the hub's components, the manager,
	// and the bench itself, which runs the hollow providers), and the
	// hub API server's most frequent requests.
	PhaseCPUSec map[string]float64 `json:"placementCPUSeconds"`
	TopRequests []string           `json:"placementTopRequests"`
	// The floor: CPU seconds per process and the API server's requests
	// over IdleSeconds with every provider joined and no Workload yet,
	// what the agents cost the hub while nothing changes.
	IdleSeconds     float64            `json:"idleSeconds"`
	IdleCPUSec      map[string]float64 `json:"idleCPUSeconds"`
	IdleTopRequests []string           `json:"idleTopRequests"`
	// The waits on storage during the placement and the failover.
	PlacementStorage storageLatency `json:"placementStorage"`
	FailoverStorage  storageLatency `json:"failoverStorage"`
	// AgentErrors counts the hollow agents' errors over the whole run, by
	// what failed and the API server's status code (0: no answer).
	AgentErrors map[string]int `json:"agentErrors"`
}

// envInt reads the whole number in the environment variable name, no
// smaller than least; def when it is unset.
func envInt(t *testing.T, name string, def, least int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		t.Fatalf("%s=%q: a whole number of at least %d", name, v, least)
	}
	return n
}

// TestBenchScale measures a real hub (control plane and manager, the
// manager as a process of its own) with hollow providers: the manager's
// peak memory and CPU, the scheduling cycle, create-to-assigned and
// create-to-running (as the hollow agents report), and the failover of
// 10 % of the providers at once with the default grace periods. Sizes
// come from FLOTILLA_SCALE_PROVIDERS, _WORKLOADS and _REPLICAS. It runs
// only from `make bench-scale` and writes bench/results/scale.json.
func TestBenchScale(t *testing.T) {
	if os.Getenv("FLOTILLA_BENCH_SCALE") == "" {
		t.Skip("measurement, not a test: run make bench-scale")
	}
	nProviders := envInt(t, "FLOTILLA_SCALE_PROVIDERS", 50, 1)
	nWorkloads := envInt(t, "FLOTILLA_SCALE_WORKLOADS", 200, 1)
	replicas := envInt(t, "FLOTILLA_SCALE_REPLICAS", 10, 1)
	rate := envInt(t, "FLOTILLA_SCALE_RATE", 0, 0)
	// The placement's time limit from the first Workload created; a
	// thousand providers do not finish on two cores.
	limit := time.Duration(envInt(t, "FLOTILLA_SCALE_MINUTES", 60, 1)) * time.Minute
	// The Workloads keep the default grace period (5 s), shorter than the
	// provider's: replacement starts when the provider is Lost.
	const hubID, providerGrace = "scale", 20 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Off by default, as kwokctl runs it: with it on (SCALE_APF=1) in the
	// twelfth round the heartbeats' priority level rejected renewals
	// (429) on the saturated API server; see docs/performance.md.
	fed := testbed.NewForTest(t, localfed.Options{HubPriorityAndFairness: os.Getenv("FLOTILLA_SCALE_APF") == "1"})
	h := installHub(t, fed)
	root := hubenv.RepoRoot()
	managerBin := filepath.Join(t.TempDir(), "manager")
	if out, err := exec.Command("go", "build", "-C", root, "-o", managerBin, "./cmd/manager").CombinedOutput(); err != nil {
		t.Fatalf("building the manager: %v\n%s", err, out)
	}
	metricsAddr, pprofAddr := freeAddr(t), freeAddr(t)
	mgr := exec.CommandContext(ctx, managerBin, "--kubeconfig", fed.Hub.Kubeconfig, "--hub-id", hubID,
		"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", "0", "--pprof-bind-address", pprofAddr,
		"--provider-grace-period", providerGrace.String())
	// Kept (not committed) for reading after the run.
	logFile, err := os.Create(filepath.Join(root, "bench", "results", "scale-manager.log"))
	if err != nil {
		t.Fatal(err)
	}
	mgr.Stdout, mgr.Stderr = logFile, logFile
	if err := mgr.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = mgr.Wait() }()

	// Hollow providers, each with its own join credential.
	hubCfg, err := fed.Hub.RESTConfig(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := join.CAData(hubCfg)
	if err != nil {
		t.Fatal(err)
	}
	// The agents' errors, kept beside the manager's log: a provider found
	// Lost while its agent ran says why here.
	agentLog, err := os.Create(filepath.Join(root, "bench", "results", "scale-hollow-errors.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer agentLog.Close()
	sink := &errorSink{mu: &sync.Mutex{}, w: agentLog, counts: map[string]int{}}
	agentErrors := logr.New(sink)
	joinStart := time.Now()
	providers := make([]*hollow.Provider, nProviders)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range nProviders {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			name := fmt.Sprintf("h%04d", i)
			kc, err := join.Issue(ctx, h.client, join.Options{Name: name, Owner: "owner-" + name, Region: "hollow", Mode: flotillav1.ModePull,
				Server: hubCfg.Host, CAData: ca})
			if err != nil {
				t.Error(err)
				return
			}
			cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
			if err != nil {
				t.Error(err)
				return
			}
			p, err := hollow.Start(ctx, cfg, hollow.Options{HubID: hubID, Name: name, Owner: "owner-" + name, Region: "hollow",
				CPU: "64", Memory: "256Gi", CPUPrice: "0.010", Pull: 5 * time.Second}, agentErrors)
			if err != nil {
				t.Error(err)
				return
			}
			providers[i] = p
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	defer func() {
		for _, p := range providers {
			p.Stop()
		}
	}()
	h.awaitProvidersReady(t, nProviders, 10*time.Minute)
	res := scaleResult{Date: time.Now().UTC().Format(time.RFC3339), Providers: nProviders, Workloads: nWorkloads, ReplicasEach: replicas,
		JoinSec: time.Since(joinStart).Seconds()}
	t.Logf("%d hollow providers Ready after %.1fs", nProviders, res.JoinSec)

	// Workloads, watched for the moment each is fully assigned and fully
	// running.
	h.tenant(t, "scale", "100000000")
	var mu sync.Mutex
	created, assigned, running := map[string]time.Time{}, map[string]time.Time{}, map[string]time.Time{}
	hubRest, err := fed.Hub.RESTConfig(0)
	if err != nil {
		t.Fatal(err)
	}
	wc, err := client.NewWithWatch(hubRest, client.Options{Scheme: hubenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	onWorkload := func(w *flotillav1.Workload) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if _, seen := assigned[w.Name]; !seen && w.Status.ScheduledReplicas >= int32(replicas) {
			assigned[w.Name] = now
		}
		if _, seen := running[w.Name]; !seen && w.Status.ReadyReplicas >= int32(replicas) {
			running[w.Name] = now
		}
	}
	// Polled every second: the figures are within a second, and a poll
	// is one request where a watch of thousands of Workloads updated by
	// every report would cost the API server more.
	go func() {
		for ctx.Err() == nil {
			var ws flotillav1.WorkloadList
			if err := wc.List(ctx, &ws, client.InNamespace("scale")); err == nil {
				for i := range ws.Items {
					onWorkload(&ws.Items[i])
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()

	procs := componentNames(fed.Hub.PIDs())
	procs["manager"], procs["bench (hollow providers)"] = mgr.Process.Pid, os.Getpid()
	apiHTTP, err := rest.HTTPClientFor(hubRest)
	if err != nil {
		t.Fatal(err)
	}
	apiMetricsURL, etcdURL := strings.TrimSuffix(hubRest.Host, "/")+"/metrics", etcdMetricsURL(procs["etcd"])
	if etcdURL == "" {
		t.Logf("etcd's client address not found: its disk latency is not recorded")
	}
	// The floor, before any Workload.
	const idle = 30 * time.Second
	idleCPU := processCPU(procs)
	idleReq, err := apiRequests(ctx, hubRest)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(idle)
	res.IdleSeconds, res.IdleCPUSec = idle.Seconds(), map[string]float64{}
	for name, v := range processCPU(procs) {
		res.IdleCPUSec[name] = v - idleCPU[name]
	}
	if after, err := apiRequests(ctx, hubRest); err == nil {
		res.IdleTopRequests = topDelta(idleReq, after, 15)
	}
	t.Logf("idle for %v, CPU seconds per process: %v", idle, res.IdleCPUSec)

	cpuBefore := processCPU(procs)
	placementBefore := scrapeMetrics(t, metricsAddr)
	storageBefore := scrapeStorage(ctx, apiHTTP, apiMetricsURL, etcdURL)
	reqBefore, err := apiRequests(ctx, hubRest)
	if err != nil {
		t.Fatal(err)
	}
	resultsDir := filepath.Join(root, "bench", "results")
	profile := make(chan string, 1)
	go func() { profile <- cpuProfile(ctx, pprofAddr, resultsDir, 60*time.Second) }()
	apiProfile := make(chan string, 1)
	go func() { apiProfile <- apiServerProfile(ctx, hubRest, resultsDir, 60*time.Second) }()
	// The hollow providers' side, in this process, over the same minute.
	stopSelf := selfProfile(t, filepath.Join(resultsDir, "scale-hollow-cpu.pprof"), 60*time.Second)
	defer stopSelf()

	createStart := time.Now()
	jobs := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				w := fixture.Workload("scale", fmt.Sprintf("w%05d", i), fixture.Replicas(int32(replicas)), fixture.Requests("100m", "128Mi"),
					fixture.Selecting("region", "hollow"))
				mu.Lock()
				created[w.Name] = time.Now()
				mu.Unlock()
				if err := h.client.Create(ctx, w); err != nil {
					t.Error(err)
				}
			}
		})
	}
	var pace <-chan time.Time
	if rate > 0 {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		pace = tick.C
	}
	deadline := createStart.Add(limit)
	for i := range nWorkloads {
		if pace != nil {
			<-pace
		}
		if time.Now().After(deadline) {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	res.CreateSeconds = time.Since(createStart).Seconds()
	for {
		mu.Lock()
		res.WorkloadsCreated, res.WorkloadsAssigned, res.WorkloadsRunning = len(created), len(assigned), len(running)
		mu.Unlock()
		res.PlacementComplete = res.WorkloadsRunning == nWorkloads
		if res.PlacementComplete || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("%d of %d Workloads created, %d assigned, %d running", res.WorkloadsCreated, nWorkloads, res.WorkloadsAssigned, res.WorkloadsRunning)
	cpuAfter := processCPU(procs)
	res.PhaseCPUSec = map[string]float64{}
	for name, v := range cpuAfter {
		res.PhaseCPUSec[name] = v - cpuBefore[name]
	}
	if reqAfter, err := apiRequests(ctx, hubRest); err == nil {
		res.TopRequests = topDelta(reqBefore, reqAfter, 30)
	}
	placementAfter := scrapeMetrics(t, metricsAddr)
	storageAfter := scrapeStorage(ctx, apiHTTP, apiMetricsURL, etcdURL)
	res.PlacementStorage = storageAfter.since(storageBefore)
	t.Logf("storage during the placement: %+v", res.PlacementStorage)
	res.PlacementControllers = controllerStats(placementAfter).since(controllerStats(placementBefore))
	res.PlacementFailovers = counter(placementAfter, "flotilla_failovers_total") - counter(placementBefore, "flotilla_failovers_total")
	logControllers(t, "the placement", res.PlacementControllers)
	t.Logf("Leases failed over during the placement (no provider stopped): %.0f", res.PlacementFailovers)
	if err := os.WriteFile(filepath.Join(resultsDir, "scale-manager-cpu.txt"), []byte(<-profile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(resultsDir, "scale-apiserver-cpu.txt"), []byte(<-apiProfile), 0o644); err != nil {
		t.Fatal(err)
	}
	// The manager's memory at the end of the placement, where its peak
	// usually is.
	heap := fetchProfile(ctx, &http.Client{Timeout: time.Minute}, "http://"+pprofAddr+"/debug/pprof/heap",
		filepath.Join(resultsDir, "scale-manager-heap.pprof"), "-sample_index=inuse_space", "-nodecount=30")
	if err := os.WriteFile(filepath.Join(resultsDir, "scale-manager-heap.txt"), []byte(heap), 0o644); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	res.AssignedP50, res.AssignedP99 = since(created, assigned, 0.5), since(created, assigned, 0.99)
	res.RunningP50, res.RunningP99 = since(created, running, 0.5), since(created, running, 0.99)
	// Up to the last Workload fully assigned, or to now when some never were.
	n, last := res.WorkloadsAssigned, time.Now()
	if res.PlacementComplete {
		n, last = nWorkloads, time.Time{}
		for _, at := range assigned {
			if at.After(last) {
				last = at
			}
		}
	}
	res.Throughput = float64(n*replicas) / last.Sub(createStart).Seconds()
	mu.Unlock()
	res.Rate = float64(rate)
	t.Logf("create to assigned p50 %.2fs p99 %.2fs; to running p50 %.2fs p99 %.2fs (all created in %.1fs, %d a second; %.1f replicas assigned a second)",
		res.AssignedP50, res.AssignedP99, res.RunningP50, res.RunningP99, res.CreateSeconds, rate, res.Throughput)

	// What is measured so far is kept, should the failover not end.
	write := func(res *scaleResult) {
		m := scrapeMetrics(t, metricsAddr)
		res.Cycles, res.CycleMeanSec, res.CycleP99Sec = histogramStats(m, "flotilla_scheduler_cycle_duration_seconds")
		_, res.LeaseCreateMeanSec, res.LeaseCreateP99Sec = histogramStats(m, "flotilla_scheduler_lease_create_duration_seconds")
		res.ManagerPeakRSSMiB, res.ManagerCPUSec = processStats(t, mgr.Process.Pid)
		res.LeaseStatusWrites = leaseStatusWrites(m)
		res.AgentErrors = sink.tally()
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			t.Fatalf("encoding the results: %v", err)
		}
		if err := os.WriteFile(filepath.Join(resultsDir, "scale.json"), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(&res)
	if !res.PlacementComplete {
		t.Logf("placement not complete after %v: no failover measured", limit)
		return
	}

	// Fail over 10 % of the providers at once.
	before := scrapeMetrics(t, metricsAddr)
	workBefore, writesBefore := controllerStats(before), leaseStatusWrites(before)
	res.Stopped = max(1, nProviders/10)
	stopped := map[string]bool{}
	for _, p := range providers[:res.Stopped] {
		stopped[p.Name] = true
	}
	tctx, stopTimeline := context.WithCancel(ctx)
	defer stopTimeline()
	tl := watchTimeline(tctx, t, wc, hubID, stopped)
	failStart := time.Now()
	storageBefore = scrapeStorage(ctx, apiHTTP, apiMetricsURL, etcdURL)
	for _, p := range providers[:res.Stopped] {
		p.Stop()
	}
	providers = providers[res.Stopped:]
	res.GracePeriods = providerGrace.Seconds()
	res.FailoverGoal = res.GracePeriods + 10
	// The steps of the failover, each when it is complete for every
	// stopped provider or Workload: Lost, replicas placed elsewhere, and
	// running there.
	hubenv.Await(t, 30*time.Minute, "the stopped providers' replicas running elsewhere", func() (bool, string) {
		if res.FailoverLostSec == 0 {
			var ps flotillav1.ProviderList
			if err := h.client.List(ctx, &ps); err != nil {
				return false, err.Error()
			}
			lost := 0
			for _, p := range ps.Items {
				if stopped[p.Name] && p.Status.Phase == flotillav1.ProviderLost {
					lost++
				}
			}
			if lost < res.Stopped {
				return false, fmt.Sprintf("%d of %d stopped providers Lost", lost, res.Stopped)
			}
			res.FailoverLostSec = time.Since(failStart).Seconds()
		}
		var ws flotillav1.WorkloadList
		if err := h.client.List(ctx, &ws, client.InNamespace("scale")); err != nil {
			return false, err.Error()
		}
		unplaced, notReady := 0, 0
		for _, w := range ws.Items {
			placed := w.Status.ScheduledReplicas >= int32(replicas)
			for _, pl := range w.Status.Placements {
				if stopped[pl.Provider] {
					placed = false
				}
			}
			if !placed {
				unplaced++
			}
			if !placed || w.Status.ReadyReplicas < int32(replicas) {
				notReady++
			}
		}
		if unplaced == 0 && res.FailoverAssignedSec == 0 {
			res.FailoverAssignedSec = time.Since(failStart).Seconds()
		}
		return notReady == 0, fmt.Sprintf("%d workloads not yet placed elsewhere, %d not yet whole", unplaced, notReady)
	})
	res.FailoverSec = time.Since(failStart).Seconds()
	stopTimeline()
	res.FailoverTimeline = tl.steps(failStart)
	for _, step := range timelineSteps {
		if st, ok := res.FailoverTimeline[step.key]; ok {
			t.Logf("failover, %s: p50 %.2fs, p90 %.2fs, max %.2fs (%d Leases)", step.what, st.P50, st.P90, st.Max, st.N)
		}
	}
	t.Logf("failover: every stopped provider Lost after %.1fs, replicas placed elsewhere after %.1fs, running after %.1fs",
		res.FailoverLostSec, res.FailoverAssignedSec, res.FailoverSec)
	res.FailoverMoved, res.FailoverClosedSec, res.FailoverCreatedSec, res.FailoverReadySec = failoverSteps(ctx, t, h.client, stopped, failStart)
	after := scrapeMetrics(t, metricsAddr)
	res.FailoverStorage = scrapeStorage(ctx, apiHTTP, apiMetricsURL, etcdURL).since(storageBefore)
	res.FailoverControllers = controllerStats(after).since(workBefore)
	res.FailoverLeaseStatusWrites = map[string]float64{}
	for kind, n := range leaseStatusWrites(after) {
		res.FailoverLeaseStatusWrites[kind] = n - writesBefore[kind]
	}
	t.Logf("Lease status writes during the failover: %v", res.FailoverLeaseStatusWrites)
	logControllers(t, "the failover", res.FailoverControllers)
	t.Logf("failover, from the Leases: %d replicas moved; the last stopped provider's Lease closed after %.0fs; the last replacement created after %.0fs, ready after %.0fs",
		res.FailoverMoved, res.FailoverClosedSec, res.FailoverCreatedSec, res.FailoverReadySec)
	t.Logf("failover of %d providers: %.1fs (goal %.0fs)", res.Stopped, res.FailoverSec, res.FailoverGoal)

	write(&res)
	t.Logf("manager: peak RSS %.0f MiB, %.0f s of CPU; %d scheduling cycles, mean %.3fs, p99 <= %.3fs; Lease created after its cycle's start: mean %.3fs, p99 <= %.3fs",
		res.ManagerPeakRSSMiB, res.ManagerCPUSec, res.Cycles, res.CycleMeanSec, res.CycleP99Sec, res.LeaseCreateMeanSec, res.LeaseCreateP99Sec)
}

// since is the p-th percentile of to[k]-from[k], in seconds.
// Keys of from missing in to count as later than all; -1 when the
// percentile falls among them.
func since(from, to map[string]time.Time, p float64) float64 {
	var d []time.Duration
	for k, c := range from {
		if at, ok := to[k]; ok {
			d = append(d, at.Sub(c))
		} else {
			d = append(d, math.MaxInt64)
		}
	}
	if len(d) == 0 {
		return -1
	}
	if v := percentile(d, p); v < float64(math.MaxInt64/time.Second) {
		return v
	}
	return -1
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrapeMetrics reads the manager's metrics endpoint once, line by line,
// for the readers below.
func scrapeMetrics(t *testing.T, addr string) []string {
	t.Helper()
	lines, err := metricLines(context.Background(), http.DefaultClient, "http://"+addr+"/metrics")
	if err != nil {
		t.Fatalf("reading the manager's metrics: %v", err)
	}
	return lines
}

// histogramStats reads a histogram out of the metrics: the count, the
// mean and the upper bound of the bucket the 99th percentile falls in (-1
// when it falls beyond the largest finite one).
func histogramStats(metrics []string, name string) (int, float64, float64) {
	h := readHistogram(metrics, name)
	return int(h.count), h.mean(), h.bound(0.99)
}

// leaseStatusWrites reads the Lease controller's status writes by kind
// out of the metrics.
func leaseStatusWrites(metrics []string) map[string]float64 {
	out := map[string]float64{}
	const prefix = `flotilla_lease_status_writes_total{kind="`
	for _, line := range metrics {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			kind, value, _ := strings.Cut(rest, `"} `)
			out[kind], _ = strconv.ParseFloat(value, 64)
		}
	}
	return out
}

// controllerWork is what a controller did over a time: reconciles, and
// the sums (then, from since, the means) of its items' wait in the queue
// and of its reconciles.
type controllerWork struct {
	Reconciles           int     `json:"reconciles"`
	QueueWaitMean        float64 `json:"queueWaitMeanSeconds"`
	ReconcileMean        float64 `json:"reconcileMeanSeconds"`
	queued, waited, took float64
}

type controllerWorks map[string]controllerWork

// controllerStats reads controller-runtime's queue and reconcile
// histograms out of the metrics, by controller.
func controllerStats(metrics []string) controllerWorks {
	out := controllerWorks{}
	label := func(line, key string) string {
		_, rest, ok := strings.Cut(line, key+`="`)
		if !ok {
			return ""
		}
		v, _, _ := strings.Cut(rest, `"`)
		return v
	}
	series := []struct {
		prefix, label string
		set           func(*controllerWork, float64)
	}{
		{"workqueue_queue_duration_seconds_sum{", "name", func(c *controllerWork, v float64) { c.waited = v }},
		{"workqueue_queue_duration_seconds_count{", "name", func(c *controllerWork, v float64) { c.queued = v }},
		{"controller_runtime_reconcile_time_seconds_sum{", "controller", func(c *controllerWork, v float64) { c.took = v }},
		{"controller_runtime_reconcile_time_seconds_count{", "controller", func(c *controllerWork, v float64) { c.Reconciles = int(v) }},
	}
	for _, line := range metrics {
		for _, m := range series {
			if !strings.HasPrefix(line, m.prefix) {
				continue
			}
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			name := label(line, m.label)
			c := out[name]
			m.set(&c, v)
			out[name] = c
		}
	}
	return out
}

// logControllers logs each controller's work during phase.
func logControllers(t *testing.T, phase string, works map[string]controllerWork) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(works)) {
		c := works[name]
		t.Logf("during %s, controller %s: %d reconciles, mean %.3fs in the queue and %.3fs reconciling", phase, name, c.Reconciles, c.QueueWaitMean, c.ReconcileMean)
	}
}

// counter reads an unlabelled counter out of the metrics; 0 when absent.
func counter(metrics []string, name string) float64 {
	for _, line := range metrics {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// since is the work done after before, with its means.
func (w controllerWorks) since(before controllerWorks) map[string]controllerWork {
	out := map[string]controllerWork{}
	for name, c := range w {
		b := before[name]
		d := controllerWork{Reconciles: c.Reconciles - b.Reconciles}
		if n := c.queued - b.queued; n > 0 {
			d.QueueWaitMean = (c.waited - b.waited) / n
		}
		if d.Reconciles > 0 {
			d.ReconcileMean = (c.took - b.took) / float64(d.Reconciles)
		}
		if d.Reconciles > 0 || d.QueueWaitMean > 0 {
			out[name] = d
		}
	}
	return out
}

// processStats reads a process's peak resident memory (MiB) and CPU time
// (seconds) from /proc.
func processStats(t *testing.T, pid int) (float64, float64) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var rss float64
	for line := range strings.SplitSeq(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			rss = kb / 1024
		}
	}
	cpu, err := cpuSeconds(pid)
	if err != nil {
		t.Fatal(err)
	}
	return rss, cpu
}

// failoverSteps reads, from the Leases of the scale namespace, how many
// replicas the stopped providers' Leases held, how long after start the
// last of them closed, and the last Lease created since was created and
// turned ready: where a slow failover spends its time.
func failoverSteps(ctx context.Context, t *testing.T, c client.Client, stopped map[string]bool, start time.Time) (moved int, closed, created, ready float64) {
	t.Helper()
	var ls flotillav1.LeaseList
	if err := c.List(ctx, &ls, client.InNamespace("scale")); err != nil {
		t.Logf("listing the Leases after the failover: %v", err)
		return -1, -1, -1, -1
	}
	since := func(at time.Time) float64 { return max(0, at.Sub(start.Truncate(time.Second)).Seconds()) }
	for _, l := range ls.Items {
		switch {
		case stopped[l.Spec.ProviderRef.Name]:
			if c := l.Ended(); c != nil {
				closed = max(closed, since(c.LastTransitionTime.Time))
			}
			if l.Status.Outcome == flotillav1.OutcomeFailedOver {
				moved += int(l.Spec.Replicas)
			}
		case !l.CreationTimestamp.Before(&metav1.Time{Time: start.Truncate(time.Second)}):
			created = max(created, since(l.CreationTimestamp.Time))
			if c := apimeta.FindStatusCondition(l.Status.Conditions, flotillav1.ConditionReady); c != nil && c.Status == metav1.ConditionTrue {
				ready = max(ready, since(c.LastTransitionTime.Time))
			}
		}
	}
	return moved, closed, created, ready
}

// errorSink writes a logger's errors, one line each with the time, and
// counts them by message and status code; it drops the rest.
type errorSink struct {
	mu     *sync.Mutex
	w      io.Writer
	counts map[string]int
	values []any
}

func (s *errorSink) Init(logr.RuntimeInfo)        {}
func (s *errorSink) Enabled(int) bool             { return false }
func (s *errorSink) Info(int, string, ...any)     {}
func (s *errorSink) WithName(string) logr.LogSink { return s }
func (s *errorSink) WithValues(kv ...any) logr.LogSink {
	return &errorSink{mu: s.mu, w: s.w, counts: s.counts, values: append(slices.Clip(s.values), kv...)}
}

func (s *errorSink) Error(err error, msg string, kv ...any) {
	line := fmt.Sprintf("%s %s: %v %v %v\n", time.Now().UTC().Format("15:04:05.000"), msg, err, s.values, kv)
	var code int32
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code = status.Status().Code
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[fmt.Sprintf("%s %d", msg, code)]++
	_, _ = io.WriteString(s.w, line)
}

func (s *errorSink) tally() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.counts)
}
