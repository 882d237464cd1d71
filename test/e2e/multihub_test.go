package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/controllers"
	"github.com/flotilla-dev/flotilla/internal/agent"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/join"
	"github.com/flotilla-dev/flotilla/internal/ledger"
	"github.com/flotilla-dev/flotilla/internal/ledgerstore"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/test/hubenv"
	"github.com/flotilla-dev/flotilla/test/testbed"
)

// acceptedCPU is the cpu, in millicores, of the Assignments a hub's agent
// accepted on provider, and how many there are.
func acceptedCPU(t *testing.T, h *hub, provider string) (int64, int) {
	t.Helper()
	var list flotillav1.AssignmentList
	if err := h.client.List(context.Background(), &list, client.InNamespace(flotillav1.ProviderNamespace(provider))); err != nil {
		t.Fatal(err)
	}
	var cpu int64
	n := 0
	for _, as := range list.Items {
		if as.Status.State == flotillav1.AssignmentAccepted && as.DeletionTimestamp == nil {
			cpu += as.Spec.ResourcesPerReplica.Cpu().MilliValue() * int64(as.Spec.Replicas)
			n++
		}
	}
	return cpu, n
}

// TestTwoHubsShareAProvider runs two hubs, each with its own control plane
// and manager, and one provider that serves both from one chart and one
// agent, in Pull mode: both place work on it at once and what it accepts
// never exceeds its capacity; with one hub stopped it keeps serving the
// other.
func TestTwoHubsShareAProvider(t *testing.T) {
	ctx := context.Background()
	fed := testbed.NewForTest(t, localfed.Options{Providers: []localfed.ProviderSpec{
		{Name: "second-hub", Owner: "ops", Nodes: []localfed.NodeSet{{Count: 1, CPU: "2", Memory: "4Gi"}}},
		{Name: "shared-1", Owner: "carol", Nodes: []localfed.NodeSet{{Count: 1, CPU: "8", Memory: "32Gi"}}},
	}})
	opts := controllers.Options{SettlementInterval: 2 * time.Second, ProviderGracePeriod: 6 * time.Second}
	hubs := map[string]*hub{"huba": installHubOn(t, fed, fed.Hub), "hubb": installHubOn(t, fed, fed.Provider("second-hub"))}
	for id, h := range hubs {
		h.opts = opts
		h.opts.HubID = id
		h.start(t)
	}
	provider := fed.Provider("shared-1")
	admin, err := provider.Clientset(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.SystemNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for id, h := range hubs {
		cfg, err := h.cluster.RESTConfig(30 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ca, err := join.CAData(cfg)
		if err != nil {
			t.Fatal(err)
		}
		kc, err := join.Issue(ctx, h.client, join.Options{Name: provider.Name, Owner: "carol", Region: "eu-west",
			Mode: flotillav1.ModePull, Server: cfg.Host, CAData: ca})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.CoreV1().Secrets(flotillav1.SystemNamespace).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "flotilla-hub-join-" + id}, Data: map[string][]byte{"kubeconfig": kc}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// 8 cpu, 2 reserved: 6 for both hubs.
	helmInstallProvider(t, provider, "eu-west", "--set", "provider.mode=Pull", "--set", "provider.apiServerURL=",
		"--set", "hubs[0].id=huba", "--set", "hubs[1].id=hubb",
		"--set", "offer.refreshInterval=2s", "--set", "agent.heartbeatInterval=2s", "--set", "agent.pullInterval=1s", "--set", "agent.witnessInterval=2s")
	agentKC, _ := tokenKubeconfig(t, provider, flotillav1.SystemNamespace, "flotilla-agent-token")
	agentFile := filepath.Join(t.TempDir(), "agent.kubeconfig")
	if err := os.WriteFile(agentFile, agentKC, 0o600); err != nil {
		t.Fatal(err)
	}
	bin, err := buildAgent()
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(ctx)
	var logs lockedBuffer
	cmd := exec.CommandContext(actx, bin, "--kubeconfig", agentFile, "--namespace", flotillav1.SystemNamespace)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopAgent()
		_ = cmd.Wait()
		if t.Failed() {
			out := logs.String()
			t.Logf("agent (last lines):\n%s", out[max(0, len(out)-6000):])
		}
	})
	for _, h := range hubs {
		h.awaitProvidersReady(t, 1, 90*time.Second)
		h.tenant(t, "team", "1000")
	}
	wl := func(name string, replicas int32) *flotillav1.Workload {
		return fixture.Workload("team", name, fixture.Replicas(replicas), fixture.Requests("1", "1Gi"), fixture.PodLabel("app", name), fixture.RunAsUser(65532))
	}
	ready := func(h *hub, name string, n int32) func() (bool, string) {
		return func() (bool, string) {
			w := h.workload(t, "team", name)
			return w.Status.ReadyReplicas == n, fmt.Sprintf("%s ready %d/%d", name, w.Status.ReadyReplicas, n)
		}
	}
	within := func() (bool, string) {
		a, na := acceptedCPU(t, hubs["huba"], provider.Name)
		b, nb := acceptedCPU(t, hubs["hubb"], provider.Name)
		return a+b <= 6000, fmt.Sprintf("hub a holds %dm in %d assignments, hub b %dm in %d: %dm of 6000m", a, na, b, nb, a+b)
	}

	hubenv.Stage(t, "both hubs place work on the provider", func(t *testing.T) {
		for _, h := range hubs {
			mustCreate(t, h.client, wl("first", 2))
		}
		for id, h := range hubs {
			hubenv.Await(t, 90*time.Second, "hub "+id+"'s first workload Ready", ready(h, "first", 2))
		}
		// Each hub's Offer shows what the other holds before both ask for
		// more at once: the agent refreshes it every 2 s, and a Workload
		// can now be Ready sooner than that after the other's was accepted.
		for id, h := range hubs {
			hubenv.Await(t, 30*time.Second, "hub "+id+"'s Offer less what the other hub holds", func() (bool, string) {
				var offers flotillav1.OfferList
				if err := h.client.List(ctx, &offers, client.InNamespace(flotillav1.ProviderNamespace(provider.Name))); err != nil || len(offers.Items) != 1 {
					return false, fmt.Sprintf("%d offers, %v", len(offers.Items), err)
				}
				cpu := offers.Items[0].Spec.Resources.Cpu().MilliValue()
				return cpu == 4000, fmt.Sprintf("the Offer sells %dm", cpu)
			})
		}
	})
	hubenv.Stage(t, "at once, both ask for more than is left: what it accepts never exceeds its capacity", func(t *testing.T) {
		for _, h := range hubs {
			mustCreate(t, h.client, wl("burst", 3))
		}
		hubenv.Holds(t, 20*time.Second, "the provider's accepted cpu within its capacity", within)
		a, _ := acceptedCPU(t, hubs["huba"], provider.Name)
		b, _ := acceptedCPU(t, hubs["hubb"], provider.Name)
		if a+b <= 4000 {
			t.Errorf("only %dm accepted of the 6000m asked for beyond the first 4000m: nothing of the burst was placed", a+b)
		}
		t.Logf("hub a holds %dm, hub b %dm", a, b)
	})
	hubenv.Stage(t, "hub a's operator cuts its ledger: the agent and a tenant's witness catch it", func(t *testing.T) {
		ha := hubs["huba"]
		witnessFile := filepath.Join(t.TempDir(), "team.witness")
		cli, err := buildFlotillactl()
		if err != nil {
			t.Fatal(err)
		}
		verify := func() (string, error) {
			out, err := exec.Command(cli, "ledger", "verify", "--witness", witnessFile, "--namespace", "team", "--kubeconfig", ha.cluster.Kubeconfig).CombinedOutput()
			return string(out), err
		}
		hubenv.Await(t, 30*time.Second, "the agent witnessing hub a's ledger", func() (bool, string) {
			cm, err := admin.CoreV1().ConfigMaps(flotillav1.SystemNamespace).Get(ctx, "flotilla-ledger-witness-huba", metav1.GetOptions{})
			return err == nil && cm.Data["status"] == agent.WitnessConsistent && cm.Data["entries"] != "0", fmt.Sprintf("%v %v", cm.Data, err)
		})
		if out, err := verify(); err != nil {
			t.Fatalf("the tenant's first look: %v\n%s", err, out)
		}
		// The honest head, anchored elsewhere, with the key pinned at join.
		anchor := flotillactl(t, "ledger", "anchor", "--kubeconfig", ha.cluster.Kubeconfig)
		anchorFile := filepath.Join(t.TempDir(), "head.anchor")
		if err := os.WriteFile(anchorFile, []byte(anchor), 0o600); err != nil {
			t.Fatal(err)
		}
		anchored, err := ledger.ParseAnchor(anchor)
		if err != nil {
			t.Fatalf("ledger anchor printed %q: %v", anchor, err)
		}
		pinned := base64.StdEncoding.EncodeToString(anchored.PublicKey)
		verifyAnchor := func() (string, error) {
			out, err := exec.Command(cli, "ledger", "verify", "--anchor", anchorFile, "--public-key", pinned, "--kubeconfig", ha.cluster.Kubeconfig).CombinedOutput()
			return string(out), err
		}
		if out, err := verifyAnchor(); err != nil {
			t.Fatalf("the honest ledger against its own anchor: %v\n%s", err, out)
		}
		// The manager stops; half the entries of the ledger's last chunk
		// go; the manager starts again on what is left.
		ha.stop()
		var chunks corev1.ConfigMapList
		if err := ha.client.List(ctx, &chunks, client.InNamespace(flotillav1.SystemNamespace), client.HasLabels{ledgerstore.ChunkLabel}); err != nil {
			t.Fatal(err)
		}
		last := chunks.Items[0]
		for _, c := range chunks.Items {
			if c.Name > last.Name {
				last = c
			}
		}
		entries, err := ledger.ReadJSONL(strings.NewReader(last.Data["entries.jsonl"]))
		if err != nil || len(entries) < 2 {
			t.Fatalf("the last chunk holds %d entries: %v", len(entries), err)
		}
		keep := entries[:len(entries)/2]
		cut := keep[len(keep)-1].Seq + 1
		var buf strings.Builder
		if err := ledger.WriteJSONL(&buf, keep); err != nil {
			t.Fatal(err)
		}
		last.Data["entries.jsonl"] = buf.String()
		if err := ha.client.Update(ctx, &last); err != nil {
			t.Fatal(err)
		}
		cutAt := time.Now()
		ha.start(t)
		hubenv.Await(t, 60*time.Second, "P4.agent-witness-catches-truncation: the agent to catch hub a's cut ledger", func() (bool, string) {
			cm, err := admin.CoreV1().ConfigMaps(flotillav1.SystemNamespace).Get(ctx, "flotilla-ledger-witness-huba", metav1.GetOptions{})
			return err == nil && cm.Data["status"] == agent.WitnessDiverged, fmt.Sprintf("%v %v", cm.Data, err)
		})
		t.Logf("the agent caught the cut %s after the manager restarted on it (report interval 2s)", time.Since(cutAt).Round(100*time.Millisecond))
		// The agent saves the witness before it records the Event, and the
		// recorder sends Events asynchronously.
		hubenv.Await(t, 30*time.Second, "a "+agent.ReasonLedgerDiverged+" event on the provider", func() (bool, string) {
			events, err := admin.CoreV1().Events(flotillav1.SystemNamespace).List(ctx, metav1.ListOptions{FieldSelector: "reason=" + agent.ReasonLedgerDiverged})
			return err == nil && len(events.Items) > 0, fmt.Sprintf("%v", err)
		})
		hubenv.Await(t, 30*time.Second, "the provider's Offer withdrawn from hub a", func() (bool, string) {
			err := ha.client.Get(ctx, client.ObjectKey{Namespace: flotillav1.ProviderNamespace(provider.Name), Name: "standard"}, &flotillav1.Offer{})
			return apierrors.IsNotFound(err), fmt.Sprintf("%v", err)
		})
		if cm, err := admin.CoreV1().ConfigMaps(flotillav1.SystemNamespace).Get(ctx, "flotilla-ledger-witness-hubb", metav1.GetOptions{}); err != nil ||
			cm.Data["status"] != agent.WitnessConsistent {
			t.Errorf("hub b's witness after hub a's cut: %v %v", cm.Data, err)
		}
		out, err := verify()
		if err == nil || !strings.Contains(out, fmt.Sprintf("entry %d", cut)) {
			t.Errorf("T4.witness-names-truncation: ledger verify --witness after the cut at entry %d: %v\n%s", cut, err, out)
		}
		if out, err := verifyAnchor(); err == nil || !strings.Contains(out, "does NOT verify") {
			t.Errorf("the cut ledger against the anchored head: %v\n%s", err, out)
		}
	})
	hubenv.Stage(t, "hub a stops, manager and control plane: the provider keeps serving hub b", func(t *testing.T) {
		aHeld, _ := acceptedCPU(t, hubs["huba"], provider.Name)
		hubs["huba"].stop()
		if err := fed.Hub.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		hb := hubs["hubb"]
		hubenv.Holds(t, 15*time.Second, "hub b's provider Ready and its first workload running", func() (bool, string) {
			p := &flotillav1.Provider{}
			_ = hb.client.Get(ctx, client.ObjectKey{Name: provider.Name}, p)
			ok, msg := ready(hb, "first", 2)()
			return ok && p.Status.Phase == flotillav1.ProviderReady, fmt.Sprintf("%s; provider %s", msg, p.Status.Phase)
		})
		// New work from hub b still lands, in what hub b itself frees (hub
		// a's work keeps running and holds its share while hub a is away).
		if err := hb.client.Delete(ctx, hb.workload(t, "team", "first")); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, hb.client, wl("after", 1))
		hubenv.Await(t, 90*time.Second, "hub b's new workload Ready", ready(hb, "after", 1))
		if b, _ := acceptedCPU(t, hb, provider.Name); aHeld+b > 6000 {
			t.Errorf("hub a held %dm when it stopped, hub b holds %dm now: more than the 6000m there is", aHeld, b)
		}
	})
}
