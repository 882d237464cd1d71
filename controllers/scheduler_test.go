package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/market"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

func TestSchedulesAWorkloadAcrossProviders(t *testing.T) {
	ctx := context.Background()
	const suite = "spread"
	for _, p := range []string{"spread-a", "spread-b", "spread-c"} {
		readyProvider(t, p, p)
		createOffer(t, p, "std", suite, "8", "0.01")
	}
	namespace(t, "tenant-spread")
	w := newWorkload("tenant-spread", "web", suite, 6, "1")
	w.Spec.Placement.MaxReplicasPerProvider = ptr.To[int32](2)
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	firstLeases := metricValueFor(t, "flotilla_scheduler_first_lease_duration_seconds", "", "")
	m := startManager(t, testHooks{})
	defer m.stop(t)

	hubenv.Await(t, 20*time.Second, "the workload to be scheduled", func() (bool, string) {
		got := &flotillav1.Workload{}
		_ = env.Client.Get(ctx, client.ObjectKeyFromObject(w), got)
		c := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadScheduled)
		return c != nil && c.Status == "True" && got.Status.Providers == 3, fmt.Sprintf("%+v", got.Status)
	})
	leases := leasesOf(t, "tenant-spread")
	perProvider := map[string]int32{}
	for _, l := range leases {
		perProvider[l.Spec.ProviderRef.Name] += l.Spec.Replicas
		if l.Spec.PricePerReplicaHour != "0.01" || l.Spec.Prices["cpu"] != "0.01" || l.Spec.Epoch != 1 {
			t.Errorf("lease %s: price %s, prices %v, epoch %d", l.Name, l.Spec.PricePerReplicaHour, l.Spec.Prices, l.Spec.Epoch)
		}
		if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].Name != "web" || !*l.OwnerReferences[0].Controller {
			t.Errorf("lease %s is not owned by its workload: %v", l.Name, l.OwnerReferences)
		}
	}
	for p, n := range perProvider {
		if n != 2 {
			t.Errorf("provider %s has %d replicas, want 2 (maxReplicasPerProvider)", p, n)
		}
	}
	hubenv.Await(t, 10*time.Second, "a Scheduled event per lease", func() (bool, string) {
		var evs corev1.EventList
		_ = env.Client.List(ctx, &evs, client.InNamespace("tenant-spread"))
		n := 0
		for _, e := range evs.Items {
			if e.Reason == "Scheduled" && e.InvolvedObject.Name == "web" && strings.HasPrefix(e.Message, "Scheduled 2 replicas on provider spread-") {
				n++
			}
		}
		return n == 3, fmt.Sprint(n, " events")
	})
	if v := metricValue(t, "flotilla_scheduler_leases_created_total"); v < 3 {
		t.Errorf("flotilla_scheduler_leases_created_total = %v, want at least 3", v)
	}
	// Three Leases, one Workload: its time to a first Lease, once.
	if v := metricValueFor(t, "flotilla_scheduler_first_lease_duration_seconds", "", "") - firstLeases; v != 1 {
		t.Errorf("flotilla_scheduler_first_lease_duration_seconds observed %v times, want once", v)
	}
	if v := metricValue(t, "flotilla_scheduler_cycle_duration_seconds"); v < 1 {
		t.Errorf("no scheduling cycle observed in flotilla_scheduler_cycle_duration_seconds")
	}
	hubenv.Await(t, 10*time.Second, "offer status to account the lease", func() (bool, string) {
		o := &flotillav1.Offer{}
		_ = env.Client.Get(ctx, client.ObjectKey{Namespace: "provider-spread-a", Name: "std"}, o)
		alloc, avail := o.Status.Allocated["cpu"], o.Status.Available["cpu"]
		return alloc.String() == "2" && avail.String() == "6" && o.Status.Leases == 1, fmt.Sprintf("%+v", o.Status)
	})

	// Scaling down returns the capacity.
	got := &flotillav1.Workload{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(w), got); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.Replicas = 3
	if err := env.Client.Patch(ctx, got, patch); err != nil {
		t.Fatal(err)
	}
	hubenv.Await(t, 10*time.Second, "leases to shrink to 3 replicas", func() (bool, string) {
		var sum int32
		for _, l := range leasesOf(t, "tenant-spread") {
			if l.DeletionTimestamp == nil {
				sum += l.Spec.Replicas
			}
		}
		return sum == 3, fmt.Sprint(sum)
	})
}

func TestUnschedulableWorkloadSaysWhy(t *testing.T) {
	ctx := context.Background()
	const suite = "why"
	readyProvider(t, "why-a", "why")
	createOffer(t, "why-a", "dear", suite, "8", "5")
	namespace(t, "tenant-why")
	w := newWorkload("tenant-why", "cheap", suite, 2, "1")
	w.Spec.Placement.MaxPricePerReplicaHour = ptr.To(flotillav1.Amount("1"))
	if err := env.Client.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	m := startManager(t, testHooks{})
	defer m.stop(t)
	hubenv.Await(t, 20*time.Second, "Scheduled=False with the price reason", func() (bool, string) {
		got := &flotillav1.Workload{}
		_ = env.Client.Get(ctx, client.ObjectKeyFromObject(w), got)
		c := apimeta.FindStatusCondition(got.Status.Conditions, flotillav1.WorkloadScheduled)
		if c == nil {
			return false, "no condition"
		}
		return c.Status == "False" && c.Reason == "PriceAboveCeiling" &&
			strings.Contains(c.Message, "2 replicas pending: 1 offer: price above the ceiling of 1 per replica-hour") &&
			got.Status.PendingReplicas == 2 && got.Status.Phase == flotillav1.WorkloadPending, c.Reason + ": " + c.Message
	})
	if n := len(leasesOf(t, "tenant-why")); n != 0 {
		t.Fatalf("%d leases created above the ceiling", n)
	}
}

// 50 one-replica workloads compete for 3 offers that fit 30 replicas. At
// every moment a watcher observes, and across a manager restart in the
// middle of a cycle, no offer holds more than its capacity; at the end
// exactly 30 workloads are scheduled and 20 wait with a reason.
func TestNoDoubleBookingAcrossRestart(t *testing.T) {
	ctx := context.Background()
	const suite = "contest"
	capacity := map[string]int64{}
	for i, p := range []string{"contest-a", "contest-b", "contest-c"} {
		readyProvider(t, p, p)
		createOffer(t, p, "std", suite, "10", fmt.Sprintf("0.0%d", i+1))
		capacity["provider-"+p+"/std"] = 10_000
	}
	namespaces := []string{"contest-1", "contest-2", "contest-3", "contest-4", "contest-5"}
	for _, ns := range namespaces {
		namespace(t, ns)
	}

	// The watcher sums leased cpu per offer on every Lease event.
	var mu sync.Mutex
	var violations []string
	observed := 0
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var watchers sync.WaitGroup
	watchers.Add(1)
	go func() {
		defer watchers.Done()
		_ = wait.PollUntilContextCancel(watchCtx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			var all flotillav1.LeaseList
			if err := env.Client.List(ctx, &all); err != nil {
				return false, nil
			}
			used := map[string]int64{}
			n := 0
			for _, l := range all.Items {
				key := l.Spec.OfferRef.Namespace + "/" + l.Spec.OfferRef.Name
				if _, ok := capacity[key]; !ok {
					continue
				}
				n++
				per := market.FromList(l.Spec.ResourcesPerReplica)
				used[key] += per[market.CPU] * int64(l.Spec.Replicas)
			}
			mu.Lock()
			defer mu.Unlock()
			observed = n
			for k, u := range used {
				if u > capacity[k] {
					violations = append(violations, fmt.Sprintf("%s holds %dm of %dm", k, u, capacity[k]))
				}
			}
			return false, nil
		})
	}()
	seen := func() int {
		mu.Lock()
		defer mu.Unlock()
		return observed
	}

	// Lease creations stall after the first 8, so the restart lands in the
	// middle of a cycle.
	m := startManager(t, testHooks{createLimit: 8})
	for i := range 50 {
		w := newWorkload(namespaces[i%len(namespaces)], fmt.Sprintf("job-%02d", i), suite, 1, "1")
		if err := env.Client.Create(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	hubenv.Await(t, 30*time.Second, "some leases before the restart", func() (bool, string) {
		return seen() >= 8, fmt.Sprint(seen())
	})
	m.stop(t)
	if n := seen(); n >= 30 {
		t.Fatalf("the restart came too late to test anything: %d leases already", n)
	}
	// A new leader takes over only after the old one is gone.
	time.Sleep(time.Second)
	m = startManager(t, testHooks{})
	defer m.stop(t)

	scheduled := func() (int, int, string) {
		ok, waiting := 0, 0
		detail := ""
		for _, ns := range namespaces {
			var ws flotillav1.WorkloadList
			_ = env.Client.List(ctx, &ws, client.InNamespace(ns))
			for _, w := range ws.Items {
				c := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadScheduled)
				switch {
				case c == nil:
				case c.Status == "True":
					ok++
				case c.Reason == "InsufficientCapacity":
					waiting++
				default:
					detail = w.Name + ": " + c.Reason + " " + c.Message
				}
			}
		}
		return ok, waiting, detail
	}
	hubenv.Await(t, 30*time.Second, "30 scheduled and 20 waiting", func() (bool, string) {
		ok, waiting, detail := scheduled()
		return ok == 30 && waiting == 20, fmt.Sprintf("scheduled %d, waiting %d, other %q", ok, waiting, detail)
	})
	stopWatch()
	watchers.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		t.Fatalf("offers over capacity at some moment: %v", violations[:min(5, len(violations))])
	}
	perWorkload := map[string]int32{}
	total := int32(0)
	for _, ns := range namespaces {
		for _, l := range leasesOf(t, ns) {
			perWorkload[ns+"/"+l.Spec.WorkloadRef.Name] += l.Spec.Replicas
			total += l.Spec.Replicas
		}
	}
	if total != 30 {
		t.Fatalf("%d replicas leased, want exactly 30", total)
	}
	for k, n := range perWorkload {
		if n != 1 {
			t.Errorf("workload %s has %d replicas leased, want 1", k, n)
		}
	}
}

// The informer cache may not show a Lease the scheduler created a moment
// ago; the scheduler must still count it. Lease lists here lag by 3s while
// workloads arrive one every 100ms, so many cycles run on a stale list.
func TestCreatedLeasesCountBeforeTheCacheShowsThem(t *testing.T) {
	ctx := context.Background()
	const suite = "lag"
	readyProvider(t, "lag-a", "lag")
	createOffer(t, "lag-a", "small", suite, "4", "0.01")
	m := startManager(t, testHooks{leaseListLag: 3 * time.Second})
	defer m.stop(t)
	// Each new workload's namespace sorts before the older ones, so on a
	// stale list it would be served first and take room already leased.
	var namespaces []string
	for i := range 8 {
		ns := fmt.Sprintf("lag-%d", 8-i)
		namespace(t, ns)
		namespaces = append(namespaces, ns)
		if err := env.Client.Create(ctx, newWorkload(ns, "w", suite, 1, "1")); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// Start the clock of the stale list with the first Lease.
			hubenv.Await(t, 20*time.Second, "the first lease", func() (bool, string) { return len(leasesOf(t, ns)) == 1, "" })
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(4 * time.Second) // past the lag, so every cycle has had its chance
	var total int32
	for _, ns := range namespaces {
		for _, l := range leasesOf(t, ns) {
			total += l.Spec.Replicas
		}
	}
	if total != 4 {
		t.Fatalf("%d one-core replicas leased on a 4-core offer, want exactly 4", total)
	}
}

// metricValue reads a counter's value, or a histogram's sample count, from
// the registry the manager's metrics endpoint serves.
func metricValue(t *testing.T, name string) float64 {
	t.Helper()
	return metricValueFor(t, name, "", "")
}

// metricValueFor sums the series of a metric whose label has the value
// (every series when label is empty).
func metricValueFor(t *testing.T, name, label, value string) float64 {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range f.Metric {
			if label != "" && !slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == label && l.GetValue() == value }) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
		return sum
	}
	t.Fatalf("metric %s is not registered", name)
	return 0
}

// A provider takes new Leases at its rate limit: the first burst at once,
// the rest as tokens come back, and Workloads say why they wait.
func TestProviderLeaseRateLimit(t *testing.T) {
	ctx := context.Background()
	const suite = "ratelimit"
	readyProvider(t, "rl-a", "rl-a")
	createOffer(t, "rl-a", "std", suite, "64", "0.01")
	namespace(t, "tenant-rl")
	for i := range 4 {
		if err := env.Client.Create(ctx, newWorkload("tenant-rl", fmt.Sprintf("w%d", i), suite, 1, "1")); err != nil {
			t.Fatal(err)
		}
	}
	m := startManager(t, testHooks{leaseRate: 0.25, leaseBurst: 2})
	defer m.stop(t)

	waiting := func() (int, []string) {
		var ws flotillav1.WorkloadList
		_ = env.Client.List(ctx, &ws, client.InNamespace("tenant-rl"))
		n := 0
		var msgs []string
		for _, w := range ws.Items {
			c := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.WorkloadScheduled)
			if c != nil && c.Status == "False" && strings.Contains(c.Message, "rate limit") {
				n++
				msgs = append(msgs, c.Message)
			}
		}
		return n, msgs
	}
	hubenv.Await(t, 10*time.Second, "two leases and two workloads waiting on the rate limit", func() (bool, string) {
		n, msgs := waiting()
		return len(leasesOf(t, "tenant-rl")) == 2 && n == 2, fmt.Sprint(len(leasesOf(t, "tenant-rl")), " leases; ", msgs)
	})
	// A token every 4s; no informer event announces it, the scheduler must
	// come back by itself well before its 30s resync.
	hubenv.Await(t, 8*time.Second, "a third lease once a token is back", func() (bool, string) {
		n := len(leasesOf(t, "tenant-rl"))
		return n == 3, fmt.Sprint(n, " leases")
	})
}

// A cycle hands its Lease creations to the creators and goes on: one
// Workload whose creation hangs holds its planned capacity, not the loop.
// When that creation fails, its capacity and its provider's rate token go
// back to the market.
func TestACycleDoesNotWaitForItsLeaseCreations(t *testing.T) {
	ctx := context.Background()
	const suite = "pipeline"
	readyProvider(t, "pipe-a", "pipe")
	createOffer(t, "pipe-a", "std", suite, "4", "0.01")
	namespace(t, "tenant-pipe")
	hanging, release := make(chan struct{}), make(chan struct{})
	var refused sync.Once
	hook := func(ctx context.Context, l *flotillav1.Lease) error {
		if l.Namespace != "tenant-pipe" || l.Spec.WorkloadRef.Name != "slow" {
			return nil
		}
		first := false
		refused.Do(func() { first = true })
		if !first {
			return nil
		}
		close(hanging)
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		return fmt.Errorf("refused once by the test")
	}
	// Three tokens, one per Lease that will exist, and none coming back: a
	// failed creation must not keep its own.
	m := startManager(t, testHooks{leaseCreate: hook, leaseRate: 1e-6, leaseBurst: 3})
	defer m.stop(t)
	if err := env.Client.Create(ctx, newWorkload("tenant-pipe", "slow", suite, 3, "1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hanging:
	case <-time.After(20 * time.Second):
		t.Fatal("slow's Lease was never sent")
	}
	if err := env.Client.Create(ctx, newWorkload("tenant-pipe", "quick", suite, 2, "1")); err != nil {
		t.Fatal(err)
	}
	replicas := func(workload string) int32 {
		var n int32
		for _, l := range leasesOfWorkload(t, "tenant-pipe", workload) {
			n += l.Spec.Replicas
		}
		return n
	}
	hubenv.Await(t, 10*time.Second, "the second Workload placed on what the first left", func() (bool, string) {
		return replicas("quick") == 1, fmt.Sprint(replicas("quick"), " replicas of quick leased")
	})
	time.Sleep(time.Second)
	if n := replicas("quick"); n != 1 {
		t.Fatalf("quick has %d replicas leased while slow's 3 are being created on a 4-core offer, want 1", n)
	}
	close(release)
	hubenv.Await(t, 20*time.Second, "the refused capacity given to both", func() (bool, string) {
		return replicas("quick") == 2 && replicas("slow") == 2, fmt.Sprint(replicas("quick"), " quick, ", replicas("slow"), " slow")
	})
	var events corev1.EventList
	if err := env.Client.List(ctx, &events, client.InNamespace("tenant-pipe"), client.MatchingFields{"involvedObject.name": "slow"}); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(events.Items, func(e corev1.Event) bool {
		return e.Reason == "FailedCreate" && strings.Contains(e.Message, "refused once by the test")
	}) {
		t.Errorf("no FailedCreate event on slow")
	}
}

// A throttled cycle comes back when the next whole token is there, not a
// fixed period later: tokens spent as creations returned would leave it
// just short, and the look after that would find two.
func TestThrottledCycleWaitsForTheNextWholeToken(t *testing.T) {
	s := NewScheduler(nil, nil, nil, nil)
	s.LeaseRate, s.LeaseBurst = 0.25, 2
	now := time.Now()
	spent := rate.NewLimiter(s.LeaseRate, s.LeaseBurst)
	spent.AllowN(now.Add(-time.Second), 2) // a quarter token back by now
	partial := rate.NewLimiter(s.LeaseRate, s.LeaseBurst)
	partial.AllowN(now.Add(-3*time.Second), 2) // three quarters
	s.limiters["spent"], s.limiters["partial"] = spent, partial
	for _, tc := range []struct {
		throttled []string
		want      time.Duration
	}{
		{[]string{"spent"}, 3 * time.Second},
		{[]string{"spent", "partial"}, time.Second},
		{[]string{"unknown"}, 4 * time.Second},
	} {
		got := s.nextToken(tc.throttled, now)
		if d := got - tc.want; d < 0 || d > 50*time.Millisecond {
			t.Errorf("next token for %v in %v, want just after %v", tc.throttled, got, tc.want)
		}
	}
}

// A Ready provider not heard from lately keeps its replicas but takes no
// new ones, and says why; once heard again it takes them.
func TestSilentProvidersTakeNoNewReplicas(t *testing.T) {
	ctx := context.Background()
	const suite, ns = "silent", "tenant-silent"
	readyProvider(t, "silent-cheap", "silent-cheap")
	readyProvider(t, "silent-dear", "silent-dear")
	createOffer(t, "silent-cheap", "std", suite, "4", "0.01")
	createOffer(t, "silent-dear", "std", suite, "4", "0.02")
	namespace(t, ns)
	var silent sync.Map
	silent.Store("silent-cheap", true)
	m := startManager(t, testHooks{silent: func(time.Time) map[string]bool {
		out := map[string]bool{}
		silent.Range(func(k, _ any) bool { out[k.(string)] = true; return true })
		return out
	}})
	defer m.stop(t)

	if err := env.Client.Create(ctx, newWorkload(ns, "first", suite, 2, "1")); err != nil {
		t.Fatal(err)
	}
	l := awaitOneLease(t, ns, "first")
	if l.Spec.ProviderRef.Name != "silent-dear" {
		t.Fatalf("first placed on %s, want the dearer provider while the cheaper one is silent", l.Spec.ProviderRef.Name)
	}

	// Three cores fit only the silent provider now.
	second := newWorkload(ns, "second", suite, 1, "3")
	if err := env.Client.Create(ctx, second); err != nil {
		t.Fatal(err)
	}
	hubenv.Await(t, 10*time.Second, "second waiting on the silent provider, saying so", func() (bool, string) {
		c := apimeta.FindStatusCondition(get(t, &flotillav1.Workload{}, ns, "second").Status.Conditions, flotillav1.WorkloadScheduled)
		return c != nil && c.Status == "False" && strings.Contains(c.Message, "provider silent-cheap: not heard from lately"), fmt.Sprintf("%+v", c)
	})
	if n := len(leasesOfWorkload(t, ns, "second")); n != 0 {
		t.Fatalf("second has %d leases on a silent provider", n)
	}
	silent.Delete("silent-cheap")
	m.scheduler.Trigger() // as the provider controller does when it hears it
	if l := awaitOneLease(t, ns, "second"); l.Spec.ProviderRef.Name != "silent-cheap" {
		t.Fatalf("second placed on %s once silent-cheap was heard again", l.Spec.ProviderRef.Name)
	}
	if ls := leasesOfWorkload(t, ns, "first"); len(ls) != 1 || ls[0].Spec.ProviderRef.Name != "silent-dear" {
		t.Errorf("first's leases changed: %d", len(ls))
	}
}
