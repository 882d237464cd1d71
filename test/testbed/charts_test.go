package testbed

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	flotillav1 "github.com/flotilla-dev/flotilla/api/v1alpha1"
	"github.com/flotilla-dev/flotilla/internal/fixture"
	"github.com/flotilla-dev/flotilla/internal/join"
	"github.com/flotilla-dev/flotilla/internal/localfed"
	"github.com/flotilla-dev/flotilla/internal/remote"
	"github.com/flotilla-dev/flotilla/test/hubenv"
)

// TestChartsRunAsPods installs the hub chart on a hub with a real node and
// the provider chart, agent included, on a provider with a real node, both
// with the images of `make images`: the manager and the agent run as pods,
// reach their own API servers through the kubernetes Service (kube-proxy)
// and each other's at the machine's address, and the provider joins and
// turns Ready with its Offer published.
func TestChartsRunAsPods(t *testing.T) {
	requireRealNodes(t)
	ctx := context.Background()
	fed, err := localfed.New(ctx, localfed.Options{BaseDir: t.TempDir(), Logf: t.Logf, HubRealNodes: 1,
		Providers: []localfed.ProviderSpec{{Name: "erin-1", Owner: "erin", Region: "eu-west", RealNodes: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fed.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	root := localfed.RepoRoot()
	helm := func(c *localfed.Cluster, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(root, "bin", "helm"), append(args, "--kubeconfig", c.Kubeconfig, "-n", flotillav1.SystemNamespace)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	helm(fed.Hub, "install", "flotilla-hub", filepath.Join(root, "charts", "flotilla-hub"), "--create-namespace",
		"--set", "hubID=hub", "--set", "image.repository=docker.io/flotilla/manager", "--set", "image.tag=dev",
		"--set", "image.pullPolicy=Never", "--set", "manager.providerGracePeriod=10s")

	hubCfg, err := fed.Hub.RESTConfig(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := client.New(hubCfg, client.Options{Scheme: remote.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(hubCfg.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	erin := fed.Provider("erin-1")
	hubURL, err := fed.Hub.MachineURL()
	if err != nil {
		t.Fatal(err)
	}
	erinURL, err := erin.MachineURL()
	if err != nil {
		t.Fatal(err)
	}
	joinKC, err := join.Issue(ctx, hub, join.Options{Name: erin.Name, Owner: "erin", Region: "eu-west",
		APIServerURL: erinURL, Server: hubURL, CAData: ca})
	if err != nil {
		t.Fatal(err)
	}
	erinCS, err := erin.Clientset(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := erinCS.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: flotillav1.SystemNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := erinCS.CoreV1().Secrets(flotillav1.SystemNamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "flotilla-hub-join"}, Data: map[string][]byte{"kubeconfig": joinKC}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := erin.InstallProviderChart("hub", "eu-west", "--set", "agent.enabled=true",
		"--set", "provider.apiServerURL="+erinURL, "--set", "agent.image.repository=docker.io/flotilla/agent",
		"--set", "agent.image.tag=dev", "--set", "agent.image.pullPolicy=Never", "--set", "offer.refreshInterval=5s",
		"--set", "offer.reserve.cpu=0", "--set", "offer.reserve.memory=0"); err != nil {
		t.Fatal(err)
	}

	hubCS, err := fed.Hub.Clientset(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	runningOn(t, hubCS, "app.kubernetes.io/name=flotilla-manager", fed.Hub.RealNodes[0])
	runningOn(t, erinCS, "app.kubernetes.io/name=flotilla-agent", erin.RealNodes[0])
	hubenv.Await(t, 120*time.Second, "erin-1 Ready on the hub with its Offer, all in pods", func() (bool, string) {
		p := &flotillav1.Provider{}
		if err := hub.Get(ctx, client.ObjectKey{Name: erin.Name}, p); err != nil {
			return false, err.Error()
		}
		var offers flotillav1.OfferList
		_ = hub.List(ctx, &offers, client.InNamespace(flotillav1.ProviderNamespace(erin.Name)))
		return p.Status.Phase == flotillav1.ProviderReady && len(offers.Items) == 1,
			fmt.Sprintf("provider %s %v; %d offers; %s", p.Status.Phase, p.Status.Conditions, len(offers.Items), podLogs(hubCS, erinCS))
	})

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
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get("http://" + pod.Status.PodIP + ":8080/")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return resp.StatusCode == http.StatusOK && strings.HasPrefix(string(b), "hello from "), fmt.Sprintf("%d %q", resp.StatusCode, b)
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
	}{{hub, "app.kubernetes.io/name=flotilla-manager"}, {provider, "app.kubernetes.io/name=flotilla-agent"}} {
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
