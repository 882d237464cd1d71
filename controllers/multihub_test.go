package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/internal/render"
)

// raceAssignment is an Assignment of one replica of 2 cpu from hub, with
// the objects the hub renders reduced to a namespace, a quota and a
// Deployment.
func raceAssignment(t *testing.T, hub, provider string, i int) *flotillav1.Assignment {
	t.Helper()
	uid := string(uuid.NewUUID())
	ns := render.Namespace(hub, types.UID(uid))
	labels := map[string]string{flotillav1.LabelLease: uid, flotillav1.LabelHub: hub, flotillav1.LabelEpoch: "1", flotillav1.LabelManaged: "true"}
	objs := []any{
		map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns, "labels": labels}},
		map[string]any{"apiVersion": "v1", "kind": "ResourceQuota", "metadata": map[string]any{"name": "lease", "namespace": ns, "labels": labels},
			"spec": map[string]any{"hard": map[string]any{"requests.cpu": "2", "pods": "1"}}},
		map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "app", "namespace": ns, "labels": labels},
			"spec": map[string]any{"replicas": 0, "selector": map[string]any{"matchLabels": map[string]any{"app": "x"}},
				"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "x"}},
					"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "example.org/app:1"}}}}}},
	}
	as := &flotillav1.Assignment{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("a-%02d", i), Namespace: flotillav1.ProviderNamespace(provider)},
		Spec: flotillav1.AssignmentSpec{LeaseRef: flotillav1.AssignmentLeaseReference{Namespace: "t", Name: fmt.Sprintf("l-%d", i), UID: uid},
			Class: flotillav1.ClassService, Replicas: 1, PricePerReplicaHour: "0.01", Epoch: 1, Namespace: ns, Hash: "h",
			ResourcesPerReplica: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")}}}
	for _, o := range objs {
		raw, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		as.Spec.Objects = append(as.Spec.Objects, runtime.RawExtension{Raw: raw})
	}
	return as
}

// hubsAgent is the real agent's work for one of the hubs a cluster serves.
func hubsAgent(t *testing.T, hub, provider string, shared *agent.Shared) *agent.Agent {
	t.Helper()
	cfg, err := agent.ParseConfig([]byte(fmt.Sprintf(`{"hubID": %q, "provider": {"name": %q, "owner": "o", "mode": "Pull"},
		"offer": {"name": "std", "reserve": {"cpu": "0", "memory": "0"}}}`, hub, provider)))
	if err != nil {
		t.Fatal(err)
	}
	return &agent.Agent{Log: logr.Discard(), Namespace: "mh-agent", Local: kubernetes.NewForConfigOrDie(env.Config),
		Hub: env.Client, Federation: env.Client, Config: cfg, Shared: shared}
}

func decided(t *testing.T, provider string) (accepted, refused int) {
	t.Helper()
	var list flotillav1.AssignmentList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(flotillav1.ProviderNamespace(provider))); err != nil {
		t.Fatal(err)
	}
	for _, as := range list.Items {
		if as.Status.Reason != "" && as.Status.Reason != agent.ReasonInsufficientCapacity && as.Status.Reason != "Accepted" {
			t.Errorf("assignment %s: %s %s", as.Name, as.Status.Reason, as.Status.Message)
		}
		switch as.Status.State {
		case flotillav1.AssignmentAccepted:
			accepted++
		case flotillav1.AssignmentRefused:
			refused++
		}
	}
	return accepted, refused
}

// Two hubs place work on one cluster at once, each through its own agent
// loop: the cluster's 16 cpu are never accepted twice, each hub's Offer
// leaves out what the other holds, and an agent that restarts while the
// other hub is away counts that hub's work from its quotas.
func TestHubsShareCapacityWithoutOverselling(t *testing.T) {
	ctx := context.Background()
	namespace(t, "mh-agent")
	namespace(t, flotillav1.ProviderNamespace("mh-a"))
	namespace(t, flotillav1.ProviderNamespace("mh-b"))
	node(t, "mh-node") // 16 cpu
	// No node lifecycle controller runs here to lift the not-ready taint.
	n := get(t, &corev1.Node{}, "", "mh-node")
	n.Spec.Taints = nil
	if err := env.Client.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	shared := agent.NewShared("mha", "mhb")
	a, b := hubsAgent(t, "mha", "mh-a", shared), hubsAgent(t, "mhb", "mh-b", shared)

	// Both hubs assign 12 replicas of 2 cpu (48 cpu in all) while both
	// agents run their rounds.
	var wg sync.WaitGroup
	for _, side := range []struct {
		hub, provider string
		ag            *agent.Agent
	}{{"mha", "mh-a", a}, {"mhb", "mh-b", b}} {
		wg.Go(func() {
			for i := range 12 {
				if err := env.Client.Create(ctx, raceAssignment(t, side.hub, side.provider, i)); err != nil {
					t.Error(err)
				}
			}
		})
		wg.Go(func() {
			for range 30 {
				_ = side.ag.SyncAssignments(ctx)
			}
		})
	}
	wg.Wait()
	for _, ag := range []*agent.Agent{a, b} {
		if err := ag.SyncAssignments(ctx); err != nil {
			t.Fatal(err)
		}
	}
	accA, refA := decided(t, "mh-a")
	accB, refB := decided(t, "mh-b")
	t.Logf("hub a: %d accepted, %d refused; hub b: %d accepted, %d refused", accA, refA, accB, refB)
	if accA+refA != 12 || accB+refB != 12 {
		t.Errorf("undecided assignments: a %d+%d, b %d+%d of 12 each", accA, refA, accB, refB)
	}
	if accA+accB != 8 {
		t.Errorf("P4.hubs-cannot-oversell-shared-capacity: %d replicas of 2 cpu accepted on 16 cpu across two hubs, want exactly 8", accA+accB)
	}

	// Each hub is offered what the other does not hold.
	for _, side := range []struct {
		ag       *agent.Agent
		provider string
		other    int
	}{{a, "mh-a", accB}, {b, "mh-b", accA}} {
		if err := side.ag.PublishOffer(ctx); err != nil {
			t.Fatal(err)
		}
		o := get(t, &flotillav1.Offer{}, flotillav1.ProviderNamespace(side.provider), "std")
		if got, want := o.Spec.Resources.Cpu().MilliValue(), int64(16000-2000*side.other); got != want {
			t.Errorf("%s is offered %dm cpu, want %dm: the other hub holds %d replicas", side.provider, got, want, side.other)
		}
	}

	// The agent restarts while the hub that holds work is away: that hub's
	// work counts from the quotas its Lease namespaces hold, so the other
	// hub's new work still does not fit. Which hub won the race is chance,
	// so the away hub is whichever holds more.
	stay, stayProvider, away := "mha", "mh-a", "mhb"
	if accB < accA {
		stay, stayProvider, away = "mhb", "mh-b", "mha"
	}
	restarted := hubsAgent(t, stay, stayProvider, agent.NewShared("mha", "mhb"))
	extra := raceAssignment(t, stay, stayProvider, 99)
	if err := env.Client.Create(ctx, extra); err != nil {
		t.Fatal(err)
	}
	if err := restarted.SyncAssignments(ctx); err != nil {
		t.Fatal(err)
	}
	got := get(t, &flotillav1.Assignment{}, extra.Namespace, extra.Name)
	if got.Status.State != flotillav1.AssignmentRefused || got.Status.Reason != agent.ReasonInsufficientCapacity {
		t.Errorf("with the cluster full and hub %s away, a new assignment of hub %s: %s %s %s", away, stay, got.Status.State, got.Status.Reason, got.Status.Message)
	}
}
