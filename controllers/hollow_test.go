package controllers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/hollow"
	"github.com/flotilla-dev/flotilla/internal/usage"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

const hollowHub = "hl"

// TestHollowProviders checks the scale benchmark's hollow providers
// against a real hub: they join with their join credentials, publish
// Offers, take and run Assignments, sign usage reports, and misbehave on
// request (silence, refusal, late reports), and the hub treats them as it
// treats real pull-mode agents.
func TestHollowProviders(t *testing.T) {
	ctx := context.Background()
	const ns = "tenant-hollow"
	account(t, ns, "1000")
	mgr := newTestManager(t)
	mctx, cancel := context.WithCancel(ctx)
	if _, err := Setup(mctx, mgr, Options{HubID: hollowHub, ProviderGracePeriod: 4 * time.Second, ProbeInterval: 300 * time.Millisecond,
		SchedulerInterval: 50 * time.Millisecond, SettlementInterval: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	defer run(t, mgr, mctx, cancel)()

	start := func(name, price string, refresh time.Duration) *hollow.Provider {
		t.Helper()
		p, err := hollow.Start(ctx, joinConfig(t, name, "hollow-land", flotillav1.ModePull), hollow.Options{
			HubID: hollowHub, Name: name, Owner: name, Region: "hollow-land", CPU: "4", Memory: "8Gi", CPUPrice: price,
			Heartbeat: time.Second, Pull: time.Second, Refresh: refresh, Witness: time.Second}, logr.Discard())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
		return p
	}
	a := start("hollow-a", "0.01", time.Second)
	// b refreshes its Offer rarely, so it still advertises what it has
	// lost to its owner when it refuses.
	b := start("hollow-b", "0.02", time.Hour)
	phase := func(name string) flotillav1.ProviderPhase {
		return get(t, &flotillav1.Provider{}, "", name).Status.Phase
	}
	awaitPhase := func(name string, want flotillav1.ProviderPhase) {
		t.Helper()
		hubenv.Await(t, 30*time.Second, name+" "+string(want), func() (bool, string) { return phase(name) == want, string(phase(name)) })
	}
	readyOn := func(name string) map[string]int32 {
		out := map[string]int32{}
		for _, l := range leasesOfWorkload(t, ns, name) {
			if l.Live() {
				out[l.Spec.ProviderRef.Name] += l.Status.ReadyReplicas
			}
		}
		return out
	}

	hubenv.Stage(t, "hollow providers join, heartbeat and publish their Offers", func(t *testing.T) {
		awaitPhase("hollow-a", flotillav1.ProviderReady)
		awaitPhase("hollow-b", flotillav1.ProviderReady)
		for _, name := range []string{"hollow-a", "hollow-b"} {
			var offers flotillav1.OfferList
			if err := env.Client.List(ctx, &offers, client.InNamespace(flotillav1.ProviderNamespace(name))); err != nil {
				t.Fatal(err)
			}
			if len(offers.Items) != 1 || offers.Items[0].Spec.Resources.Cpu().String() != "4" {
				t.Errorf("%s: offers %+v, want one of 4 cores", name, offers.Items)
			}
		}
	})

	web := fixture.Workload(ns, "web", fixture.Replicas(2), fixture.Requests("1", "1Gi"), fixture.Selecting("region", "hollow-land"))
	hubenv.Stage(t, "a Workload runs on the cheaper one, which signs its usage", func(t *testing.T) {
		if err := env.Client.Create(ctx, web); err != nil {
			t.Fatal(err)
		}
		hubenv.Await(t, 30*time.Second, "web 2/2 on hollow-a", func() (bool, string) {
			r := readyOn("web")
			var as flotillav1.AssignmentList
			_ = env.Client.List(ctx, &as, client.InNamespace(flotillav1.ProviderNamespace("hollow-a")))
			var st []flotillav1.AssignmentStatus
			for _, x := range as.Items {
				st = append(st, x.Status)
			}
			return r["hollow-a"] == 2, fmt.Sprintf("ready %v; assignments %+v", r, st)
		})
		awaitKStatus(t, web, "Current")
		p := get(t, &flotillav1.Provider{}, "", "hollow-a")
		pub, err := base64.StdEncoding.DecodeString(p.Spec.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		lease := awaitOneLease(t, ns, "web")
		hubenv.Await(t, 20*time.Second, "a signed usage line for web's lease", func() (bool, string) {
			cm := &corev1.ConfigMap{}
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace("hollow-a"), Name: usage.ConfigMapName}, cm); err != nil {
				return false, err.Error()
			}
			r, err := usage.Parse([]byte(cm.Data[usage.DataKey]))
			if err != nil {
				return false, err.Error()
			}
			for i := range r.Lines {
				if r.Lines[i].Lease == string(lease.UID) && r.Lines[i].Verify(pub, "hollow-a") {
					return true, ""
				}
			}
			b, _ := json.Marshal(r)
			return false, string(b)
		})
		// The agent keeps what it witnessed as the ledger grows (its
		// in-memory cluster once kept no resource versions, and every save
		// after the first failed).
		witnessed := func() uint64 {
			cm, err := a.Local.CoreV1().ConfigMaps(flotillav1.SystemNamespace).Get(ctx, agent.WitnessConfigMap, metav1.GetOptions{})
			if err != nil {
				return 0
			}
			n, _ := strconv.ParseUint(cm.Data["entries"], 10, 64)
			return n
		}
		first := uint64(0)
		hubenv.Await(t, 20*time.Second, "a first head witnessed", func() (bool, string) { first = witnessed(); return first > 0, "" })
		// The ledger grows when the Lease's usage is next written: a flush
		// (lease.MeterFlush) at the look after it (lease.PullSyncInterval).
		hubenv.Await(t, 60*time.Second, "a later head witnessed and saved", func() (bool, string) {
			n := witnessed()
			return n > first, fmt.Sprintf("%d entries witnessed, first %d", n, first)
		})
	})

	hubenv.Stage(t, "a silent provider is Lost; a refusing one refuses with its reason", func(t *testing.T) {
		b.SetBehaviour(hollow.Behaviour{Refuse: true})
		a.SetBehaviour(hollow.Behaviour{Silent: true})
		awaitPhase("hollow-a", flotillav1.ProviderLost)
		hubenv.Await(t, 30*time.Second, "hollow-b's refusal on web's Scheduled condition", func() (bool, string) {
			c := apimeta.FindStatusCondition(get(t, &flotillav1.Workload{}, ns, "web").Status.Conditions, flotillav1.WorkloadScheduled)
			return c != nil && strings.Contains(c.Message, "refused") && strings.Contains(c.Message, "hollow-b"), fmt.Sprintf("%+v", c)
		})
		for _, l := range leasesOfWorkload(t, ns, "web") {
			if l.Spec.ProviderRef.Name == "hollow-b" && l.Status.Outcome != flotillav1.OutcomeRefused {
				t.Errorf("lease %s on hollow-b: outcome %q, want Refused", l.Name, l.Status.Outcome)
			}
		}
	})

	hubenv.Stage(t, "the silent one comes back: its stale replicas are fenced and web runs exactly 2", func(t *testing.T) {
		b.SetBehaviour(hollow.Behaviour{})
		a.SetBehaviour(hollow.Behaviour{})
		hubenv.Await(t, 60*time.Second, "web 2/2 again", func() (bool, string) {
			r := readyOn("web")
			return r["hollow-a"]+r["hollow-b"] == 2, fmt.Sprint(r)
		})
		// What each hollow cluster runs is what its Leases say, no more.
		for _, p := range []*hollow.Provider{a, b} {
			var pods corev1.PodList
			hubenv.Await(t, 20*time.Second, p.Name+" runs only its Leases' replicas", func() (bool, string) {
				if err := p.Federation.List(ctx, &pods); err != nil {
					return false, err.Error()
				}
				return int32(len(pods.Items)) == readyOn("web")[p.Name], fmt.Sprintf("%d pods, %d ready on the hub", len(pods.Items), readyOn("web")[p.Name])
			})
		}
	})

	hubenv.Stage(t, "a late reporter's replicas count only once they run", func(t *testing.T) {
		a.SetBehaviour(hollow.Behaviour{ReportDelay: time.Hour})
		b.SetBehaviour(hollow.Behaviour{ReportDelay: time.Hour})
		late := fixture.Workload(ns, "late", fixture.Replicas(1), fixture.Requests("1", "1Gi"), fixture.Selecting("region", "hollow-land"))
		if err := env.Client.Create(ctx, late); err != nil {
			t.Fatal(err)
		}
		l := awaitOneLease(t, ns, "late")
		hubenv.Await(t, 20*time.Second, "late's Assignment accepted and applied", func() (bool, string) {
			var as flotillav1.AssignmentList
			_ = env.Client.List(ctx, &as, client.InNamespace(flotillav1.ProviderNamespace(l.Spec.ProviderRef.Name)))
			for _, x := range as.Items {
				if x.Spec.LeaseRef.UID == string(l.UID) {
					return x.Status.AppliedHash == x.Spec.Hash, fmt.Sprintf("%+v", x.Status)
				}
			}
			return false, "no assignment"
		})
		time.Sleep(2 * time.Second) // two report rounds
		if w := get(t, &flotillav1.Workload{}, ns, "late"); w.Status.ReadyReplicas != 0 {
			t.Fatalf("late reports %d ready replicas while its provider holds them back", w.Status.ReadyReplicas)
		}
		a.SetBehaviour(hollow.Behaviour{})
		b.SetBehaviour(hollow.Behaviour{})
		hubenv.Await(t, 30*time.Second, "late Ready once its provider runs it", func() (bool, string) {
			w := get(t, &flotillav1.Workload{}, ns, "late")
			return w.Status.ReadyReplicas == 1, fmt.Sprint(w.Status.ReadyReplicas)
		})
	})
}

// An agent reports its replicas ready within about a second of their
// starting, not at its next pull: nothing on the hub wakes it when pods
// start on its cluster. Its pull interval here is a minute.
func TestAgentReportsReadyBeforeItsNextPull(t *testing.T) {
	ctx := context.Background()
	const ns, name, hub = "tenant-ready-soon", "ready-soon", "rs"
	account(t, ns, "1000")
	mgr := newTestManager(t)
	mctx, cancel := context.WithCancel(ctx)
	if _, err := Setup(mctx, mgr, Options{HubID: hub, ProviderGracePeriod: 10 * time.Second, ProbeInterval: 300 * time.Millisecond,
		SchedulerInterval: 50 * time.Millisecond, SettlementInterval: time.Second}); err != nil {
		t.Fatal(err)
	}
	defer run(t, mgr, mctx, cancel)()
	p, err := hollow.Start(ctx, joinConfig(t, name, "ready-soon-land", flotillav1.ModePull), hollow.Options{
		HubID: hub, Name: name, Owner: name, Region: "ready-soon-land", CPU: "4", Memory: "8Gi", CPUPrice: "0.01",
		Heartbeat: time.Second, Pull: time.Minute, Refresh: time.Second}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	hubenv.Await(t, 30*time.Second, name+" Ready", func() (bool, string) {
		ph := get(t, &flotillav1.Provider{}, "", name).Status.Phase
		return ph == flotillav1.ProviderReady, string(ph)
	})
	if err := env.Client.Create(ctx, fixture.Workload(ns, "web", fixture.Replicas(1), fixture.Requests("1", "1Gi"),
		fixture.Selecting("region", "ready-soon-land"))); err != nil {
		t.Fatal(err)
	}
	hubenv.Await(t, 20*time.Second, "web's Assignment reporting its replica ready", func() (bool, string) {
		var as flotillav1.AssignmentList
		_ = env.Client.List(ctx, &as, client.InNamespace(flotillav1.ProviderNamespace(name)))
		if len(as.Items) != 1 {
			return false, fmt.Sprintf("%d assignments", len(as.Items))
		}
		st := as.Items[0].Status
		return st.ReadyReplicas == 1, fmt.Sprintf("%+v", st)
	})
}
