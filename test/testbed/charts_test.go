package testbed

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/batchdigest"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// charted is a federation whose manager and agents run as pods from the
// charts, with the images of `make images`, on real nodes.
type charted struct {
	fed       *localfed.Federation
	hub       client.Client
	hubCS     kubernetes.Interface
	providers map[string]kubernetes.Interface
}

// startCharted starts a hub with a real node running the hub chart, and
// the providers of specs, each joined with the provider chart, agent
// included; it returns once every provider is Ready with its Offer.
func startCharted(t *testing.T, specs ...localfed.ProviderSpec) *charted {
	t.Helper()
	RequireRealNodes(t)
	ctx := context.Background()
	fed, err := localfed.New(ctx, localfed.Options{BaseDir: t.TempDir(), Logf: t.Logf, HubRealNodes: 1, Providers: specs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fed.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	if err := fed.InstallHubChart("hub"); err != nil {
		t.Fatal(err)
	}
	hubCfg, err := fed.Hub.RESTConfig(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &charted{fed: fed, providers: map[string]kubernetes.Interface{}}
	if c.hub, err = client.New(hubCfg, client.Options{Scheme: remote.NewScheme()}); err != nil {
		t.Fatal(err)
	}
	if c.hubCS, err = kubernetes.NewForConfig(hubCfg); err != nil {
		t.Fatal(err)
	}
	for _, p := range fed.Providers {
		if _, err := p.JoinWithAgentPod(ctx, c.hub, "hub", "--set", "offer.refreshInterval=5s"); err != nil {
			t.Fatal(err)
		}
		if c.providers[p.Name], err = p.Clientset(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	runningOn(t, c.hubCS, localfed.ManagerSelector, fed.Hub.RealNodes[0])
	for _, p := range fed.Providers {
		runningOn(t, c.providers[p.Name], localfed.AgentSelector, p.RealNodes[0])
	}
	hubenv.Await(t, 120*time.Second, "every provider Ready on the hub with its Offer, all in pods", func() (bool, string) {
		var ps flotillav1.ProviderList
		var offers flotillav1.OfferList
		_ = c.hub.List(ctx, &ps)
		_ = c.hub.List(ctx, &offers)
		ready, state := 0, ""
		for _, p := range ps.Items {
			if p.Status.Phase == flotillav1.ProviderReady {
				ready++
			}
			state += fmt.Sprintf("%s %s %v; ", p.Name, p.Status.Phase, p.Status.Conditions)
		}
		first := c.providers[fed.Providers[0].Name]
		return ready == len(specs) && len(offers.Items) == len(specs),
			fmt.Sprintf("%s%d offers; %s", state, len(offers.Items), podLogs(c.hubCS, first))
	})
	return c
}

// TestChartsRunAsPods: the manager and the agent run as pods from the
// charts, reach their own API servers through the kubernetes Service
// (kube-proxy) and each other's at the machine's address; the provider
// joins, and a tenant's Service Workload placed by the charted manager
// runs the web image on the provider's real node and answers over HTTP.
func TestChartsRunAsPods(t *testing.T) {
	c := startCharted(t, localfed.ProviderSpec{Name: "erin-1", Owner: "erin", Region: "eu-west", RealNodes: 1})
	ctx := context.Background()
	hub, hubCS, erinCS, erin := c.hub, c.hubCS, c.providers["erin-1"], c.fed.Provider("erin-1")

	// A tenant's Service Workload, placed by the charted manager, runs the
	// web image on erin's real node and answers the test.
	if _, err := hubCS.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := hub.Create(ctx, fixture.Account("team-a", "100")); err != nil {
		t.Fatal(err)
	}
	w := fixture.Workload("team-a", "web", fixture.Requests("100m", "64Mi"), fixture.RunAsUser(65532),
		fixture.Runs("docker.io/flotilla/web:dev"))
	if err := hub.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	hubenv.Await(t, 90*time.Second, "the web Workload's pod running on erin's real node", func() (bool, string) {
		pods, err := erinCS.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: flotillav1.LabelManaged + "=true"})
		if err != nil || len(pods.Items) == 0 {
			_ = hub.Get(ctx, client.ObjectKeyFromObject(w), w)
			return false, fmt.Sprintf("%v; workload %s %v", err, w.Status.Phase, w.Status.Conditions)
		}
		pod = pods.Items[0]
		return pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "" && pod.Spec.NodeName == erin.RealNodes[0],
			fmt.Sprintf("%s on %q: %s", pod.Status.Phase, pod.Spec.NodeName, podWhy(pod))
	})
	hubenv.Await(t, 30*time.Second, "an HTTP answer from the tenant's pod", func() (bool, string) {
		body, err := localfed.AskWeb(pod.Status.PodIP, 2*time.Second)
		return err == nil && strings.HasPrefix(body, "hello from "), fmt.Sprintf("%q %v", body, err)
	})
}

// runningOn waits for the pod matching selector to run on node.
func runningOn(t *testing.T, cs kubernetes.Interface, selector, node string) {
	t.Helper()
	hubenv.Await(t, 90*time.Second, selector+" running on "+node, func() (bool, string) {
		pods, err := cs.CoreV1().Pods(flotillav1.SystemNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil || len(pods.Items) == 0 {
			return false, fmt.Sprint(err)
		}
		p := pods.Items[0]
		return p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == node, fmt.Sprintf("%s on %q: %s", p.Status.Phase, p.Spec.NodeName, podWhy(p))
	})
}

// podLogs is the tail of the manager's and the agent's logs, for a failure.
func podLogs(hub, provider kubernetes.Interface) string {
	var b strings.Builder
	for _, x := range []struct {
		cs       kubernetes.Interface
		selector string
	}{{hub, localfed.ManagerSelector}, {provider, localfed.AgentSelector}} {
		pods, err := x.cs.CoreV1().Pods(flotillav1.SystemNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: x.selector})
		if err != nil || len(pods.Items) == 0 {
			continue
		}
		raw, err := x.cs.CoreV1().Pods(flotillav1.SystemNamespace).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](5)}).DoRaw(context.Background())
		fmt.Fprintf(&b, "\n%s: %s%s", x.selector, raw, errText(err))
	}
	return b.String()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestVerifiedBatchOnRealNodes runs a Batch Workload verified by three
// copies on three owners' real nodes. Each copy computes its digest in
// the container; kim's node holds a tampered batch image under the honest
// tag (a provider that cheats), so kim's copy computes another digest. The
// quorum picks the honest digest and kim loses reputation.
func TestVerifiedBatchOnRealNodes(t *testing.T) {
	c := startCharted(t,
		localfed.ProviderSpec{Name: "kim-1", Owner: "kim", Region: "eu-west", RealNodes: 1, TamperedImages: true},
		localfed.ProviderSpec{Name: "hana-1", Owner: "hana", Region: "eu-west", RealNodes: 1},
		localfed.ProviderSpec{Name: "ivan-1", Owner: "ivan", Region: "us-east", RealNodes: 1})
	ctx := context.Background()
	if _, err := c.hubCS.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "science"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.hub.Create(ctx, fixture.Account("science", "100")); err != nil {
		t.Fatal(err)
	}
	const input, rounds = "frames 1-240", 1000
	w := fixture.Workload("science", "render", fixture.Class(flotillav1.ClassBatch), fixture.Requests("100m", "32Mi"),
		fixture.RunAsUser(65532), fixture.Runs("docker.io/flotilla/batch:dev",
			corev1.EnvVar{Name: "INPUT", Value: input}, corev1.EnvVar{Name: "ROUNDS", Value: strconv.Itoa(rounds)}))
	w.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
	w.Spec.Verification = &flotillav1.VerificationSpec{Redundancy: 3, Quorum: 2, MaxExtraCopies: ptr.To[int32](0)}
	if err := c.hub.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	results := map[string]flotillav1.CopyResult{}
	hubenv.Await(t, 180*time.Second, "render decided, every copy judged", func() (bool, string) {
		_ = c.hub.Get(ctx, client.ObjectKeyFromObject(w), w)
		if w.Status.Verification == nil {
			return false, fmt.Sprintf("phase %s, no verification yet", w.Status.Phase)
		}
		for _, r := range w.Status.Verification.Results {
			results[r.Provider] = r
		}
		judged := 0
		for _, r := range results {
			if r.Verdict != "" {
				judged++
			}
		}
		return w.Status.Phase == flotillav1.WorkloadSucceeded && judged == 3, fmt.Sprintf("phase %s %+v", w.Status.Phase, w.Status.Verification)
	})
	honest := batchdigest.Compute(input, rounds)
	if w.Status.VerifiedDigest != honest {
		t.Errorf("verified digest %q, want the honest %q", w.Status.VerifiedDigest, honest)
	}
	for prov, verdict := range map[string]flotillav1.Verdict{"kim-1": flotillav1.VerdictDissented, "hana-1": flotillav1.VerdictAgreed, "ivan-1": flotillav1.VerdictAgreed} {
		r := results[prov]
		if r.Verdict != verdict || (verdict == flotillav1.VerdictAgreed) != (r.Digest == honest) || r.Digest == "" {
			t.Errorf("copy on %s: %+v, want %s (honest digest %s)", prov, r, verdict, honest)
		}
	}
	hubenv.Await(t, 60*time.Second, "kim's failed verification on record", func() (bool, string) {
		kim := &flotillav1.Provider{}
		_ = c.hub.Get(ctx, client.ObjectKey{Name: "kim-1"}, kim)
		return kim.Status.Reputation.VerificationsFailed == 1, fmt.Sprintf("%+v", kim.Status.Reputation)
	})
}
