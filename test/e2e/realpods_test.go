package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

// answering returns the addresses of the provider's running web replicas
// that answer HTTP now, and what the others said.
func (h *hub) answering(provider string) ([]string, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pods, err := h.providers[provider].CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: flotillav1.LabelManaged + "=true"})
	if err != nil {
		return nil, err.Error()
	}
	var ok []string
	var why []string
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || p.Status.PodIP == "" {
			why = append(why, p.Name+" "+string(p.Status.Phase))
			continue
		}
		body, err := localfed.AskWeb(p.Status.PodIP, 2*time.Second)
		if err != nil || !strings.HasPrefix(body, "hello from ") {
			why = append(why, fmt.Sprintf("%s %q %v", p.Name, body, err))
			continue
		}
		ok = append(ok, p.Status.PodIP)
	}
	slices.Sort(ok)
	return ok, strings.Join(why, "; ")
}

// TestFailoverAndFencingWithRealPods is the failover and fencing scenario
// with containers that really run on each provider's real node: a stopped
// provider's replicas move and answer elsewhere, and when it returns its
// stale containers really stop (their addresses no longer answer), so no
// replica runs twice. The manager runs in this process only so that the
// test reads its state directly; the charts' pods are exercised by the
// testbed's chart tests.
func TestFailoverAndFencingWithRealPods(t *testing.T) {
	testbed.RequireRealNodes(t)
	ctx := context.Background()
	fed := testbed.NewForTest(t, localfed.Options{Providers: []localfed.ProviderSpec{
		{Name: "alice-1", Owner: "alice", Region: "eu-west", RealNodes: 1},
		{Name: "bob-1", Owner: "bob", Region: "us-east", RealNodes: 1},
		{Name: "dave-1", Owner: "dave", Region: "us-east", RealNodes: 1},
	}})
	prices := map[string]string{"alice-1": "0.010", "bob-1": "0.011", "dave-1": "0.050"}
	h := setupHub(t, fed, prices, controllers.Options{HubID: "e2e", SettlementInterval: 2 * time.Second, FeeBPS: 250})
	h.awaitProvidersReady(t, 3, 90*time.Second)
	h.tenant(t, "team-a", "100")

	web := fixture.Workload("team-a", "web", fixture.Class(flotillav1.ClassService), fixture.Replicas(4),
		fixture.Requests("100m", "64Mi"), fixture.RunAsUser(65532), fixture.Runs("docker.io/flotilla/web:dev"))
	web.Spec.Placement.MaxReplicasPerProvider = ptr.To[int32](2)
	mustCreate(t, h.client, web)

	var bobs []string
	hubenv.Stage(t, "four replicas answer HTTP, two on alice's node and two on bob's", func(t *testing.T) {
		hubenv.Await(t, 120*time.Second, "two answering replicas on alice-1 and on bob-1, web Ready", func() (bool, string) {
			a, whyA := h.answering("alice-1")
			b, whyB := h.answering("bob-1")
			bobs = b
			return len(a) == 2 && len(b) == 2 && ready(h.workload(t, "team-a", "web")),
				fmt.Sprintf("alice %v (%s), bob %v (%s)", a, whyA, b, whyB)
		})
	})

	bob := fed.Provider("bob-1")
	hubenv.Stage(t, "bob's control plane stops: its replicas answer from dave's node", func(t *testing.T) {
		start := time.Now()
		if err := bob.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		h.awaitKStatus(t, &flotillav1.Provider{ObjectMeta: metav1.ObjectMeta{Name: "bob-1"}}, "Failed") // Lost
		hubenv.Await(t, 120*time.Second, "two answering replicas on dave-1 and web Ready", func() (bool, string) {
			d, why := h.answering("dave-1")
			return len(d) == 2 && ready(h.workload(t, "team-a", "web")), fmt.Sprintf("dave %v (%s)", d, why)
		})
		t.Logf("failover with real pods took %s", time.Since(start).Round(time.Second))
		// bob's kubelet cannot hear its API server: its containers run on,
		// as a partitioned node's do, until bob returns and is fenced.
		for _, ip := range bobs {
			if _, err := localfed.AskWeb(ip, 2*time.Second); err != nil {
				t.Logf("bob's replica %s during the outage: %v", ip, err)
			}
		}
	})

	hubenv.Stage(t, "bob returns fenced: its containers really stop and four replicas run", func(t *testing.T) {
		if err := bob.Start(ctx); err != nil {
			t.Fatal(err)
		}
		h.awaitFenced(t, "bob-1", 90*time.Second)
		hubenv.Await(t, 90*time.Second, "bob's old replicas no longer answer", func() (bool, string) {
			var still []string
			for _, ip := range bobs {
				if _, err := localfed.AskWeb(ip, time.Second); err == nil {
					still = append(still, ip)
				}
			}
			return len(still) == 0, fmt.Sprintf("still answering: %v", still)
		})
		a, _ := h.answering("alice-1")
		b, _ := h.answering("bob-1")
		d, _ := h.answering("dave-1")
		if len(a)+len(b)+len(d) != 4 || len(b) != 0 {
			t.Errorf("answering replicas: alice %v, bob %v, dave %v; want four, none on bob", a, b, d)
		}
	})
}
