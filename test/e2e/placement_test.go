package e2e

import (
	"context"

	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/internal/metering"
	"github.com/flotilla-dev/flotilla/internal/money"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

// Four providers; dave-1 is the dearest, so it takes replicas only when
// another provider fails.
func placementFederation(t *testing.T) *hub {
	nodes := []localfed.NodeSet{{Count: 2, CPU: "4", Memory: "8Gi"}}
	fed := testbed.NewForTest(t, localfed.Options{Providers: []localfed.ProviderSpec{
		{Name: "alice-1", Owner: "alice", Region: "eu-west", Nodes: nodes},
		{Name: "bob-1", Owner: "bob", Region: "us-east", Nodes: nodes},
		{Name: "carol-1", Owner: "carol", Region: "eu-west", Nodes: nodes},
		{Name: "dave-1", Owner: "dave", Region: "us-east", Nodes: nodes},
	}})
	prices := map[string]string{"alice-1": "0.010", "bob-1": "0.011", "carol-1": "0.012", "dave-1": "0.050"}
	h := setupHub(t, fed, prices, controllers.Options{HubID: "e2e", SettlementInterval: 2 * time.Second, FeeBPS: 250})
	h.awaitProvidersReady(t, 4, 60*time.Second)
	return h
}

func runningPerProvider(h *hub) (map[string]int, string) {
	out := map[string]int{}
	for name := range h.providers {
		n, err := h.runningPods(name)
		if err != nil {
			out[name] = -1
			continue
		}
		out[name] = n
	}
	return out, fmt.Sprint(out)
}

func ready(w *flotillav1.Workload) bool {
	c := apimeta.FindStatusCondition(w.Status.Conditions, flotillav1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue
}

func TestPlacementFailoverAndFencing(t *testing.T) {
	ctx := context.Background()
	h := placementFederation(t)
	h.tenant(t, "team-a", "100")

	hubenv.Stage(t, "six replicas, at most two per provider, on the three cheapest", func(t *testing.T) {
		// Six replicas, at most two per provider, on the three cheapest.
		web := newWorkload("team-a", "web", flotillav1.ClassService, 6)
		web.Spec.Placement.MaxReplicasPerProvider = ptr.To[int32](2)
		mustCreate(t, h.client, web)
		hubenv.Await(t, 60*time.Second, "6 pods Running across alice, bob and carol, and the Workload Ready", func() (bool, string) {
			per, s := runningPerProvider(h)
			w := h.workload(t, "team-a", "web")
			return per["alice-1"] == 2 && per["bob-1"] == 2 && per["carol-1"] == 2 && per["dave-1"] == 0 && ready(w),
				s + " phase " + string(w.Status.Phase)
		})
		// What Flux, Argo CD and kubectl wait see.
		h.awaitKStatus(t, h.workload(t, "team-a", "web"), "Current")
		if out, err := h.kubectl(t, "wait", "--for=condition=Ready", "workload/web", "-n", "team-a", "--timeout=60s"); err != nil {
			t.Fatalf("kubectl wait --for=condition=Ready workload/web: %v\n%s", err, out)
		}
	})

	hubenv.Stage(t, "a batch job runs to completion and its lease closes", func(t *testing.T) {
		// A batch job runs to completion and its Lease closes.
		job := newWorkload("team-a", "job", flotillav1.ClassBatch, 1)
		job.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
		mustCreate(t, h.client, job)
		hubenv.Await(t, 60*time.Second, "the batch Workload Succeeded with its Lease Closed", func() (bool, string) {
			w := h.workload(t, "team-a", "job")
			var ls flotillav1.LeaseList
			_ = h.client.List(ctx, &ls, client.InNamespace("team-a"), client.MatchingLabels{flotillav1.LabelWorkload: "job"})
			closed := len(ls.Items) > 0
			for _, l := range ls.Items {
				closed = closed && l.Status.Phase == flotillav1.LeaseClosed
			}
			return w.Status.Phase == flotillav1.WorkloadSucceeded && closed, fmt.Sprintf("phase %s, %d leases", w.Status.Phase, len(ls.Items))
		})
		h.awaitKStatus(t, h.workload(t, "team-a", "job"), "Current")
		var ls flotillav1.LeaseList
		_ = h.client.List(ctx, &ls, client.InNamespace("team-a"), client.MatchingLabels{flotillav1.LabelWorkload: "job"})
		h.awaitKStatus(t, &ls.Items[0], "Current") // Closed, Completed
	})

	stopped := h.fed.Provider("bob-1")
	hubenv.Stage(t, "a stopped provider's replicas move to dave-1 under a new epoch", func(t *testing.T) {
		// Stop a provider: its replicas move to dave-1 and the Workload is
		// Ready again.
		start := time.Now()
		if err := stopped.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		h.awaitKStatus(t, &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: "bob-1"}}, "Failed") // Lost
		hubenv.Await(t, 90*time.Second, "bob-1's replicas Running on dave-1 and web Ready", func() (bool, string) {
			per, s := runningPerProvider(h)
			w := h.workload(t, "team-a", "web")
			return per["alice-1"] == 2 && per["carol-1"] == 2 && per["dave-1"] == 2 && ready(w), s
		})
		t.Logf("failover took %s (provider grace 20s, workload grace 5s)", time.Since(start).Round(time.Second))
		var leases flotillav1.LeaseList
		if err := h.client.List(ctx, &leases, client.InNamespace("team-a"), client.MatchingLabels{flotillav1.LabelWorkload: "web"}); err != nil {
			t.Fatal(err)
		}
		for _, l := range leases.Items {
			if l.Spec.ProviderRef.Name == "dave-1" && l.Spec.Epoch != 2 {
				t.Errorf("replacement lease %s has epoch %d, want 2", l.Name, l.Spec.Epoch)
			}
		}
	})

	hubenv.Stage(t, "the provider returns fenced and exactly six replicas run", func(t *testing.T) {
		// Start it again: its stale namespace is fenced before it takes
		// work, and the Workload runs exactly six replicas.
		if err := stopped.Start(ctx); err != nil {
			t.Fatal(err)
		}
		h.awaitFenced(t, "bob-1", 60*time.Second)
		hubenv.Await(t, 30*time.Second, "exactly six web pods", func() (bool, string) {
			per, s := runningPerProvider(h)
			total := 0
			for _, n := range per {
				total += n
			}
			return total == 6 && per["bob-1"] == 0, s
		})
	})

	hubenv.Stage(t, "web is metered at the locked prices", func(t *testing.T) {
		// Metering: every live web Lease is charged for the replica-seconds the
		// hub saw ready, at its locked price, never more than its replicas for
		// its lifetime; bob-1's failed-over Lease is metered no later than it
		// was lost.
		hubenv.Await(t, 45*time.Second, "web's usage metered at the locked prices", func() (bool, string) {
			var ls flotillav1.LeaseList
			_ = h.client.List(ctx, &ls, client.InNamespace("team-a"), client.MatchingLabels{flotillav1.LabelWorkload: "web"})
			var total money.Micro
			var msgs []string
			ok := len(ls.Items) > 0
			for _, l := range ls.Items {
				u := l.Status.Usage
				price := money.MustParse(string(l.Spec.PricePerReplicaHour))
				cost, err := money.Parse(string(u.Cost))
				total += cost
				msgs = append(msgs, fmt.Sprintf("%s %s %ds %s (metered until %v, lost %v, created %v)", l.Spec.ProviderRef.Name, l.Status.Phase,
					u.ReplicaSeconds, u.Cost, u.MeteredUntil, l.Status.LostTime, l.CreationTimestamp))
				life := time.Since(l.CreationTimestamp.Time) + time.Second
				ok = ok && err == nil && cost == metering.Cost(u.ReplicaSeconds, price) &&
					u.ReplicaSeconds <= int64(l.Spec.Replicas)*int64(life/time.Second) &&
					(l.Status.Phase == flotillav1.LeaseClosed || u.ReplicaSeconds > 0)
				if l.Spec.ProviderRef.Name == "bob-1" && u.MeteredUntil != nil && l.Status.LostTime != nil {
					ok = ok && !u.MeteredUntil.After(l.Status.LostTime.Time)
				}
			}
			w := h.workload(t, "team-a", "web")
			wcost, _ := money.Parse(string(w.Status.Cost))
			return ok && wcost == total, fmt.Sprintf("%v; workload cost %s, leases %s", msgs, w.Status.Cost, total)
		})
	})

	hubenv.Stage(t, "a cordoned provider drains", func(t *testing.T) {
		// Cordoning a provider drains it: its replicas are placed elsewhere
		// first, then its Leases close and its namespaces go.
		carol := &flotillav1.Provider{}
		if err := h.client.Get(ctx, client.ObjectKey{Name: "carol-1"}, carol); err != nil {
			t.Fatal(err)
		}
		patch := client.MergeFrom(carol.DeepCopy())
		carol.Spec.Unschedulable = true
		if err := h.client.Patch(ctx, carol, patch); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 60*time.Second, "carol-1 drained", func() (bool, string) {
			per, s := runningPerProvider(h)
			nss, _ := h.managedNamespaces("carol-1")
			w := h.workload(t, "team-a", "web")
			return per["carol-1"] == 0 && len(nss) == 0 && per["alice-1"]+per["bob-1"]+per["dave-1"] == 6 && ready(w), s
		})
		carol = &flotillav1.Provider{}
		_ = h.client.Get(ctx, client.ObjectKey{Name: "carol-1"}, carol)
		patch = client.MergeFrom(carol.DeepCopy())
		carol.Spec.Unschedulable = false
		if err := h.client.Patch(ctx, carol, patch); err != nil {
			t.Fatal(err)
		}
	})

	hubenv.Stage(t, "the hub goes away and returns changing nothing", func(t *testing.T) {
		// The hub goes away: workloads keep running on providers, and a new
		// manager picks up from the objects alone, creating nothing new.
		before := h.leaseNames(t)
		h.stop()
		hubenv.Holds(t, 10*time.Second, "6 web pods running with the hub down", func() (bool, string) {
			per, s := runningPerProvider(h)
			return per["alice-1"]+per["bob-1"]+per["carol-1"]+per["dave-1"] == 6, s
		})
		restarted := time.Now()
		h.start(t)
		// The restarted manager works: it probes the providers again.
		hubenv.Await(t, 30*time.Second, "every provider probed by the restarted manager", func() (bool, string) {
			var ps flotillav1.ProviderList
			_ = h.client.List(ctx, &ps)
			fresh, s := 0, ""
			for _, p := range ps.Items {
				// Status keeps whole seconds.
				if t := p.Status.LastProbeTime; t != nil && !t.Time.Before(restarted.Truncate(time.Second)) {
					fresh++
				}
				s += fmt.Sprintf("%s probed %v; ", p.Name, p.Status.LastProbeTime)
			}
			return fresh == len(ps.Items) && fresh > 0, s
		})
		hubenv.Holds(t, 10*time.Second, "the Leases unchanged by a restarted hub", func() (bool, string) {
			after := h.leaseNames(t)
			return slices.Equal(before, after), fmt.Sprintf("before %v, after %v", before, after)
		})
		if w := h.workload(t, "team-a", "web"); !ready(w) {
			t.Fatalf("web not Ready after the hub restarted: %+v", w.Status)
		}
	})

	hubenv.Stage(t, "a workload deleted while a provider is stopped is cleaned up when it returns", func(t *testing.T) {
		// Delete a Workload while one of its providers is stopped: the other
		// namespaces go at once, the stopped provider's when it returns.
		api := newWorkload("team-a", "api", flotillav1.ClassService, 3)
		api.Spec.Placement.MaxReplicasPerProvider = ptr.To[int32](1)
		mustCreate(t, h.client, api)
		var apiProviders []string
		// A provider that just restarted takes a while before its controller
		// manager (leader election) creates pods again.
		apiStart := time.Now()
		hubenv.Await(t, 150*time.Second, "api Ready on three providers", func() (bool, string) {
			w := h.workload(t, "team-a", "api")
			apiProviders = apiProviders[:0]
			for _, p := range w.Status.Placements {
				apiProviders = append(apiProviders, p.Provider)
			}
			var ls flotillav1.LeaseList
			_ = h.client.List(ctx, &ls, client.InNamespace("team-a"), client.MatchingLabels{flotillav1.LabelWorkload: "api"})
			state := ""
			for _, c := range w.Status.Conditions {
				state += fmt.Sprintf("%s=%s %s: %.120s; ", c.Type, c.Status, c.Reason, c.Message)
			}
			for _, l := range ls.Items {
				state += fmt.Sprintf("[%s %s ready=%d err=%q] ", l.Spec.ProviderRef.Name, l.Status.Phase, l.Status.ReadyReplicas, l.Status.LastError)
			}
			return ready(w) && len(apiProviders) == 3, state
		})
		t.Logf("api Ready after %s", time.Since(apiStart).Round(time.Second))
		slices.Sort(apiProviders)
		gone := h.fed.Provider(apiProviders[0])
		if err := gone.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h.client.Delete(ctx, h.workload(t, "team-a", "api")); err != nil {
			t.Fatal(err)
		}
		apiNamespaces := func(provider string) int {
			var n int
			nss, _ := h.providers[provider].CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app=api"})
			for _, p := range nss.Items {
				if p.DeletionTimestamp == nil {
					n++
				}
			}
			return n
		}
		hubenv.Await(t, 30*time.Second, "api's pods gone from the running providers", func() (bool, string) {
			left := 0
			for _, p := range apiProviders[1:] {
				left += apiNamespaces(p)
			}
			return left == 0, fmt.Sprint(left, " pods left")
		})
		if err := gone.Start(ctx); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 60*time.Second, "api's namespace gone from the returning provider", func() (bool, string) {
			n := apiNamespaces(gone.Name)
			var ls flotillav1.LeaseList
			_ = h.client.List(ctx, &ls, client.InNamespace("team-a"), client.MatchingLabels{flotillav1.LabelWorkload: "api"})
			return n == 0 && len(ls.Items) == 0, fmt.Sprintf("%d pods, %d leases", n, len(ls.Items))
		})
	})

	hubenv.Stage(t, "the books add up to the micro-credit", func(t *testing.T) {
		// The books, with a failover in the middle: once every Lease of
		// team-a is settled and gone, the tenant spent exactly what providers
		// earned plus the hub's fees, and the stored ledger verifies with the
		// live balances equal to the recomputed ones.
		for _, name := range []string{"web", "job"} {
			if err := h.client.Delete(ctx, h.workload(t, "team-a", name)); err != nil {
				t.Fatal(err)
			}
		}
		hubenv.Await(t, 60*time.Second, "team-a's leases settled and gone", func() (bool, string) {
			var ls flotillav1.LeaseList
			_ = h.client.List(ctx, &ls, client.InNamespace("team-a"))
			var names []string
			for _, l := range ls.Items {
				names = append(names, l.Name+" "+strings.Join(l.Finalizers, ","))
			}
			return len(ls.Items) == 0, strings.Join(names, "; ")
		})
		var acct *flotillav1.Account
		hubenv.Await(t, 30*time.Second, "team-a's escrow refunded", func() (bool, string) {
			acct = &flotillav1.Account{}
			_ = h.client.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: flotillav1.AccountName}, acct)
			return acct.Status.Held == "0" && acct.Status.Spent != "" && acct.Status.Spent != "0", fmt.Sprintf("%+v", acct.Status)
		})
		// The head first: the bank stores entries before it publishes them.
		head, err := ledgerstore.ReadHead(ctx, h.client)
		if err != nil {
			t.Fatal(err)
		}
		store := &ledgerstore.Store{Client: h.client, Reader: h.client, Namespace: flotillav1.SystemNamespace}
		entries, err := store.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if int(head.Entries) > len(entries) {
			t.Fatalf("the head counts %d entries, %d are stored", head.Entries, len(entries))
		}
		if err := ledger.Verify(entries[:int(head.Entries)], head.PublicKey, head.Hash); err != nil {
			t.Fatalf("stored ledger: %v", err)
		}
		bal, err := ledger.Balances(entries)
		if err != nil {
			t.Fatal(err)
		}
		var earned money.Micro
		for a, v := range bal {
			switch {
			case strings.HasPrefix(a, "provider:"):
				earned += v
			case strings.HasPrefix(a, "escrow:") && v != 0:
				t.Errorf("%s still holds %s", a, v)
			}
		}
		spent := money.MustParse("100") - bal["tenant:team-a"]
		if spent <= 0 || spent != earned+bal["hub"] {
			t.Errorf("team-a spent %s; providers earned %s and fees are %s: they must add up to the micro-credit", spent, earned, bal["hub"])
		}
		if bal["provider:bob-1"] <= 0 {
			t.Errorf("bob-1, lost in the middle, was paid %s for what it ran before", bal["provider:bob-1"])
		}
		if got := money.MustParse(string(acct.Status.Spent)); got != spent {
			t.Errorf("the Account says %s spent, the ledger %s", got, spent)
		}
		out := flotillactl(t, "ledger", "verify", "--hub", "--kubeconfig", h.fed.Hub.Kubeconfig)
		if !strings.Contains(out, "live balances of") || !strings.Contains(out, "equal the ones recomputed from the ledger") {
			t.Errorf("flotillactl ledger verify --hub:\n%s", out)
		}
		t.Logf("team-a spent %s: providers earned %s, fees %s, in %d ledger entries", spent, earned, bal["hub"], len(entries))
	})
}

// liveLeases counts Leases not Closed and the namespaces managed on all
// providers; after things settle they must match (no orphans).
func (h *hub) orphans(t *testing.T) (int, int) {
	t.Helper()
	var ls flotillav1.LeaseList
	if err := h.client.List(context.Background(), &ls); err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, l := range ls.Items {
		if l.Status.Phase != flotillav1.LeaseClosed && l.DeletionTimestamp == nil {
			live++
		}
	}
	nss := 0
	for name := range h.providers {
		n, err := h.managedNamespaces(name)
		if err != nil {
			return live, -1
		}
		nss += len(n)
	}
	return live, nss
}

func TestFreezeAndManagerKill(t *testing.T) {
	ctx := context.Background()
	h := placementFederation(t)
	h.tenant(t, "team-b", "100")
	hubenv.Stage(t, "web runs on alice-1 and bob-1", func(t *testing.T) {
		web := newWorkload("team-b", "web", flotillav1.ClassService, 4)
		web.Spec.Placement.MaxReplicasPerProvider = ptr.To[int32](2)
		mustCreate(t, h.client, web)
		hubenv.Await(t, 60*time.Second, "web Ready on alice-1 and bob-1", func() (bool, string) {
			per, s := runningPerProvider(h)
			return per["alice-1"] == 2 && per["bob-1"] == 2 && ready(h.workload(t, "team-b", "web")), s
		})
	})

	frozen := h.fed.Provider("alice-1")
	// A frozen provider hangs every request until the client timeout. It
	// becomes Lost and its work moves, while work on the others goes on.
	hubenv.Stage(t, "a frozen provider is Lost, its work moves, and it returns fenced", func(t *testing.T) {
		if err := frozen.Freeze(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		other := newWorkload("team-b", "other", flotillav1.ClassService, 1)
		other.Spec.Placement.AttributeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"owner": "carol"}}
		mustCreate(t, h.client, other)
		hubenv.Await(t, 30*time.Second, "a new workload Ready on carol-1 while alice-1 hangs", func() (bool, string) {
			w := h.workload(t, "team-b", "other")
			return ready(w), string(w.Status.Phase)
		})
		t.Logf("a workload on another provider became Ready %s after the freeze", time.Since(start).Round(100*time.Millisecond))
		hubenv.Await(t, 90*time.Second, "alice-1 Lost, its lease failed over and web Ready elsewhere", func() (bool, string) {
			p := &flotillav1.Provider{}
			_ = h.client.Get(ctx, client.ObjectKey{Name: "alice-1"}, p)
			w := h.workload(t, "team-b", "web")
			onAlice := 0
			for _, pl := range w.Status.Placements {
				if pl.Provider == "alice-1" {
					onAlice++
				}
			}
			return p.Status.Phase == flotillav1.ProviderLost && onAlice == 0 && ready(w), string(p.Status.Phase) + " " + string(w.Status.Phase)
		})
		t.Logf("frozen provider's work moved after %s", time.Since(start).Round(time.Second))
		if err := frozen.Thaw(); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 60*time.Second, "alice-1 fenced and Ready again", func() (bool, string) {
			p := &flotillav1.Provider{}
			_ = h.client.Get(ctx, client.ObjectKey{Name: "alice-1"}, p)
			nss, err := h.managedNamespaces("alice-1")
			var ls flotillav1.LeaseList
			_ = h.client.List(ctx, &ls, client.MatchingLabels{flotillav1.LabelProvider: "alice-1"})
			state := fmt.Sprint(p.Status.Phase, nss, err)
			for _, l := range ls.Items {
				state += fmt.Sprintf(" [%s %s %s %v]", l.Name, l.Status.Namespace, l.Status.Phase, l.DeletionTimestamp)
			}
			return err == nil && len(nss) == 0 && p.Status.Phase == flotillav1.ProviderReady, state
		})
	})

	// Kill the manager in the middle of scheduling and start another:
	// no duplicate Leases, no orphaned namespaces, everything converges.
	hubenv.Stage(t, "a manager killed mid-cycle: no duplicate, no orphan", func(t *testing.T) {
		for i := range 8 {
			mustCreate(t, h.client, newWorkload("team-b", fmt.Sprintf("burst-%d", i), flotillav1.ClassService, 1))
		}
		time.Sleep(300 * time.Millisecond)
		h.stop()
		h.start(t)
		hubenv.Await(t, 90*time.Second, "every burst workload Ready with exactly one replica leased", func() (bool, string) {
			var ls flotillav1.LeaseList
			_ = h.client.List(ctx, &ls, client.InNamespace("team-b"))
			per := map[string]int32{}
			for _, l := range ls.Items {
				if l.Status.Phase != flotillav1.LeaseClosed {
					per[l.Spec.WorkloadRef.Name] += l.Spec.Replicas
				}
			}
			for i := range 8 {
				name := fmt.Sprintf("burst-%d", i)
				if per[name] != 1 || !ready(h.workload(t, "team-b", name)) {
					return false, fmt.Sprint(per)
				}
			}
			return true, ""
		})
		hubenv.Await(t, 30*time.Second, "one namespace per live lease", func() (bool, string) {
			live, nss := h.orphans(t)
			return live == nss, fmt.Sprintf("%d live leases, %d managed namespaces", live, nss)
		})
	})

}
