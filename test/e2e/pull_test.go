package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

// auditEvent is what the test reads of an audit log line.
type auditEvent struct {
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	User      struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
	} `json:"objectRef"`
}

func readAudit(t *testing.T, path string) []auditEvent {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer f.Close()
	var out []auditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e auditEvent
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// TestPullModeFederation runs one Push-mode and one Pull-mode provider on
// the local federation, each with its real agent: Workloads spread over
// both; the pull provider's API server audit log shows no request from
// the hub; stopping its agent, then its whole cluster, moves its replicas,
// and when it comes back its stale namespaces are gone before it is Ready
// and every Workload runs exactly its replicas.
func TestPullModeFederation(t *testing.T) {
	ctx := context.Background()
	fed := testbed.NewForTest(t, localfed.Options{Providers: []localfed.ProviderSpec{
		{Name: "push-1", Owner: "alice", Nodes: []localfed.NodeSet{{Count: 1, CPU: "16", Memory: "32Gi"}}},
		{Name: "pull-1", Owner: "bob", Nodes: []localfed.NodeSet{{Count: 1, CPU: "16", Memory: "32Gi"}}, Audit: true},
	}})
	h := installHub(t, fed)
	for _, p := range fed.Providers {
		cs, err := p.Clientset(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		h.providers[p.Name] = cs
	}
	h.opts = controllers.Options{HubID: joinHubID, SettlementInterval: 2 * time.Second, ProviderGracePeriod: 6 * time.Second}
	h.start(t)
	joinProvider(t, h, fed.Provider("push-1"), "eu-west")
	// pull-1 sells cpu cheaper, so new replicas go there first.
	pull := joinPullProvider(t, h, fed.Provider("pull-1"), "eu-west", "--set", "offer.prices.cpu=0.005")
	h.awaitProvidersReady(t, 2, 90*time.Second)

	p := &flotillav1.Provider{}
	if err := h.client.Get(ctx, client.ObjectKey{Name: "pull-1"}, p); err != nil {
		t.Fatal(err)
	}
	if p.Spec.Mode != flotillav1.ModePull || p.Status.Mode != flotillav1.ModePull || p.Spec.APIServerURL != "" || p.Spec.KubeconfigSecretRef != nil {
		t.Fatalf("pull-1 recorded as %+v", p.Spec)
	}
	var secrets corev1.SecretList
	if err := h.client.List(ctx, &secrets, client.InNamespace(flotillav1.SystemNamespace)); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		if strings.Contains(s.Name, "pull-1") {
			t.Errorf("the hub holds Secret %s for the pull-mode provider", s.Name)
		}
	}

	h.tenant(t, "tenant-p", "100")
	// running counts the running pods of the tenant's Leases per provider.
	running := func() map[string]int {
		out := map[string]int{}
		for _, name := range []string{"push-1", "pull-1"} {
			n, _ := h.runningPods(name)
			out[name] = n
		}
		return out
	}
	want := map[string]int32{"api": 1, "web": 4}
	exactly := func() (bool, string) {
		var total int32
		var notes []string
		for name, n := range want {
			w := h.workload(t, "tenant-p", name)
			total += n
			notes = append(notes, fmt.Sprintf("%s ready %d/%d", name, w.Status.ReadyReplicas, n))
			if w.Status.ReadyReplicas != n || w.Status.ScheduledReplicas != n {
				return false, strings.Join(notes, ", ")
			}
		}
		r := running()
		return int32(r["push-1"]+r["pull-1"]) == total, fmt.Sprintf("%s; running %v", strings.Join(notes, ", "), r)
	}
	hubenv.Stage(t, "workloads spread over the push and the pull provider", func(t *testing.T) {
		api := newWorkload("tenant-p", "api", flotillav1.ClassService, 1)
		api.Spec.Placement.AttributeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"owner": "alice"}}
		mustCreate(t, h.client, api)
		mustCreate(t, h.client, newWorkload("tenant-p", "web", flotillav1.ClassService, 4))
		hubenv.Await(t, 90*time.Second, "api on push-1 and web on the cheaper pull-1, Ready", func() (bool, string) {
			ok, msg := exactly()
			r := running()
			return ok && r["push-1"] == 1 && r["pull-1"] == 4, msg
		})
	})
	hubenv.Stage(t, "P1.pull-no-credential: the pull provider's API server never heard from the hub", func(t *testing.T) {
		events := readAudit(t, fed.Provider("pull-1").AuditLog())
		fedUser := "system:serviceaccount:" + flotillav1.SystemNamespace + ":flotilla-federation"
		applied := 0
		for _, e := range events {
			if strings.HasPrefix(e.UserAgent, "flotilla-hub") {
				t.Fatalf("a request from the hub reached the pull provider: %+v", e)
			}
			if e.User.Username == fedUser {
				if !strings.HasPrefix(e.UserAgent, agent.UserAgent) {
					t.Fatalf("the federation identity was used by something other than the agent: %+v", e)
				}
				if e.Verb == "patch" || e.Verb == "create" {
					applied++
				}
			}
		}
		if len(events) == 0 || applied == 0 {
			t.Fatalf("%d audit events, %d writes by the agent's federation identity: the audit log does not show the agent applying", len(events), applied)
		}
		// The push provider, for contrast, is written by the hub.
		t.Logf("%d audit events on pull-1, %d applies by its agent", len(events), applied)
	})

	leasesOn := func(provider string) []string {
		var ls flotillav1.LeaseList
		_ = h.client.List(ctx, &ls, client.InNamespace("tenant-p"))
		var out []string
		for _, l := range ls.Items {
			if l.Spec.ProviderRef.Name == provider && l.Live() {
				out = append(out, string(l.UID))
			}
		}
		return out
	}
	// backAndFenced waits for pull-1 to be Ready again and checks that the
	// namespaces of its old Leases were already going when it was.
	backAndFenced := func(t *testing.T, old []string) {
		t.Helper()
		hubenv.Await(t, 120*time.Second, "pull-1 Ready again", func() (bool, string) {
			p := &flotillav1.Provider{}
			_ = h.client.Get(ctx, client.ObjectKey{Name: "pull-1"}, p)
			return p.Status.Phase == flotillav1.ProviderReady, string(p.Status.Phase)
		})
		nss, err := h.providers["pull-1"].CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: flotillav1.LabelManaged + "=true"})
		if err != nil {
			t.Fatal(err)
		}
		for _, ns := range nss.Items {
			if slices.Contains(old, ns.Labels[flotillav1.LabelLease]) && ns.DeletionTimestamp == nil {
				t.Errorf("pull-1 Ready with stale namespace %s of a failed-over lease", ns.Name)
			}
		}
		hubenv.Await(t, 90*time.Second, "every workload Ready with exactly its replicas", exactly)
		hubenv.Holds(t, 5*time.Second, "every workload runs exactly its replicas", exactly)
	}

	hubenv.Stage(t, "its agent stops: replicas move; back, stale work is fenced before Ready", func(t *testing.T) {
		old := leasesOn("pull-1")
		if len(old) == 0 {
			t.Fatal("no lease on pull-1")
		}
		pull.stopAgent()
		stopped := time.Now()
		hubenv.Await(t, 60*time.Second, "web Ready on push-1 alone", func() (bool, string) {
			w := h.workload(t, "tenant-p", "web")
			return w.Status.ReadyReplicas == 4 && len(leasesOn("pull-1")) == 0, fmt.Sprintf("ready %d, on pull-1 %v", w.Status.ReadyReplicas, leasesOn("pull-1"))
		})
		t.Logf("replicas moved %s after the agent stopped", time.Since(stopped).Round(100*time.Millisecond))
		// The partitioned provider keeps running what it had.
		if n, _ := h.runningPods("pull-1"); n == 0 {
			t.Error("pull-1's pods stopped while its agent was away; they must run until it is fenced")
		}
		pull.restartAgent()
		backAndFenced(t, old)
	})

	hubenv.Stage(t, "its whole cluster stops: replicas move; back, stale work is fenced before Ready", func(t *testing.T) {
		// New replicas go to the cheaper pull-1 again.
		mustCreate(t, h.client, newWorkload("tenant-p", "web2", flotillav1.ClassService, 2))
		want["web2"] = 2
		hubenv.Await(t, 90*time.Second, "web2 Ready on pull-1", func() (bool, string) {
			ok, msg := exactly()
			return ok && len(leasesOn("pull-1")) > 0, msg
		})
		old := leasesOn("pull-1")
		c := fed.Provider("pull-1")
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		hubenv.Await(t, 60*time.Second, "web2 Ready without pull-1", func() (bool, string) {
			w := h.workload(t, "tenant-p", "web2")
			return w.Status.ReadyReplicas == 2 && len(leasesOn("pull-1")) == 0, fmt.Sprintf("ready %d, on pull-1 %v", w.Status.ReadyReplicas, leasesOn("pull-1"))
		})
		t.Logf("replicas moved %s after the cluster stopped", time.Since(stopped).Round(100*time.Millisecond))
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		backAndFenced(t, old)
	})
}
